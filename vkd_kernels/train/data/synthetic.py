"""The embedded synthetic video benchmark: classes decided by motion in time.

Design (fixed before any method was run; not tuned for any method):

* A clip is ``frames`` RGB frames of ``size x size`` pixels (default 8 x 32 x 32).
* One *actor* shape moves on a straight line and its opacity oscillates in time::

      centre(t) = p0 + v t                 |v| = speed ~ U(speed_range) px/frame
      opacity(t) = 0.6 + 0.4 sin(2 pi f t / T + phi)            phi ~ U(0, 2 pi)

  (opacity, not size: a size change would add edge motion in every direction.)

  **The label is (direction, frequency)**: ``label = 2 * d + j`` with the direction
  d in {right, down, left, up} (angle 90 d degrees + a jitter of up to
  ``angle_jitter`` degrees) and the oscillation frequency f = ``frequencies[j]``
  cycles per clip, f in {1, 2, 3} (Nyquist is 4 for T = 8). 4 x 3 = 12 classes,
  balanced.
* Appearance distractors that carry no label, all random per clip: the actor's
  shape (disk, square, diamond), colour (at least 0.25 away from the background's
  mean grey level, else it is pushed dark or light), base radius r0, speed and phase;
  a background (a random mid-range colour plus static texture noise); a second, static
  *distractor* shape of random shape and colour whose brightness flickers at random every frame (white noise in time);
  and per-frame pixel noise.
* Why the label is temporal: playing a clip backwards gives, exactly, a clip of the
  opposite direction with the same frequency (``reverse_params``; a test checks it),
  so the set of frames alone cannot tell the direction, and any single frame shows
  only a shape at some opacity. Telling 1, 2 or 3 oscillations per clip apart needs
  the whole clip's temporal pattern: its temporal spectrum.

* Optional training-time augmentation (``augment=True``, :func:`augment_clip`): the same
  colour and position transform on every frame of a clip, drawn afresh at every read, so
  a small fixed labelled set cannot be memorised through its colours and positions;
  ``views=V`` draws from a fixed pool of V views per clip instead (view = epoch mod V),
  so the labelled set stays finite: the headroom benchmark's 5 clips per class x 8 views
  (with a fresh view every epoch CE never converged: reproduction/RESULTS.md).

Everything is drawn from ``numpy.random.default_rng([seed, stream])``, so a split is
a pure function of (seed, stream, sizes); a split draws from its own stream unless
``stream`` names another. The streams: ``train``, ``val``, ``test``, ``tune`` (the
tuning split of the headroom benchmark's weight sweep, never the reported one) and
``pretrain`` (the teacher's abundant pre-training clips); being independent random
streams of continuous parameters, no two streams share a clip. Clips are stored as
uint8 (N, 3, T, H, W).
"""
from __future__ import annotations

import math
from typing import Dict, List, Literal, Optional

import numpy as np
import torch
from torch.utils.data import Dataset

DIRECTIONS = ("right", "down", "left", "up")
SHAPES = ("disk", "square", "diamond")
SPLITS = {"train": 0, "val": 1, "test": 2, "tune": 3, "pretrain": 4}      # split -> its RNG stream


def class_names(frequencies=(1, 2, 3)) -> List[str]:
    return [f"{d}-f{f}" for d in DIRECTIONS for f in frequencies]


def sample_params(rng: np.random.Generator, label: int, *, frames: int = 8, size: int = 32,
                  frequencies=(1, 2, 3), speed_range=(1.4, 2.4), angle_jitter: float = 20.0,
                  noise: float = 0.04) -> Dict:
    """Random clip parameters for ``label``: everything but (direction, frequency) is a distractor."""
    d, j = divmod(int(label), len(frequencies))
    angle = math.radians(90.0 * d + rng.uniform(-angle_jitter, angle_jitter))
    speed = rng.uniform(*speed_range)
    v = speed * np.array([math.cos(angle), math.sin(angle)])         # (x, y) px/frame; y grows downwards
    r0 = rng.uniform(0.12, 0.17) * size
    margin = 1.05 * r0 + 1.0
    travel = v * (frames - 1)
    lo, hi = margin + np.abs(travel) / 2, size - margin - np.abs(travel) / 2
    mid = rng.uniform(lo, np.maximum(hi, lo + 1e-6))
    bg = rng.uniform(0.3, 0.7, 3)
    colour = rng.uniform(0, 1, 3)
    if abs(colour.mean() - bg.mean()) < 0.25:                          # keep the actor visible
        colour = colour * 0.3 if bg.mean() > 0.5 else 0.7 + colour * 0.3
    return dict(
        frames=frames, size=size, label=int(label),
        p0=mid - travel / 2, v=v, r0=r0, freq=float(frequencies[j]), phase=rng.uniform(0, 2 * math.pi),
        shape=SHAPES[rng.integers(len(SHAPES))], colour=colour, bg=bg,
        texture=rng.normal(0, 0.03, (size, size, 1)),
        dis_shape=SHAPES[rng.integers(len(SHAPES))], dis_colour=rng.uniform(0, 1, 3),
        dis_centre=rng.uniform(0.15 * size, 0.85 * size, 2), dis_radius=rng.uniform(0.07, 0.12) * size,
        flicker=rng.uniform(0.3, 1.0, frames),
        noise=rng.normal(0, noise, (frames, size, size, 3)) if noise > 0 else np.zeros((frames, size, size, 3)),
    )


def reverse_params(p: Dict, frequencies=(1, 2, 3)) -> Dict:
    """The parameters of ``p``'s clip played backwards: the opposite direction, same frequency."""
    T = p["frames"]
    q = dict(p)
    q["p0"], q["v"] = p["p0"] + p["v"] * (T - 1), -p["v"]
    q["phase"] = (math.pi - p["phase"] - 2 * math.pi * p["freq"] * (T - 1) / T) % (2 * math.pi)
    q["flicker"], q["noise"] = p["flicker"][::-1].copy(), p["noise"][::-1].copy()
    d, j = divmod(p["label"], len(frequencies))
    q["label"] = ((d + 2) % 4) * len(frequencies) + j
    return q


def _coverage(shape: str, dx: np.ndarray, dy: np.ndarray, r) -> np.ndarray:
    """Anti-aliased coverage in [0, 1] of a shape of radius r at offsets (dx, dy)."""
    if shape == "disk":
        dist = np.sqrt(dx * dx + dy * dy)
    elif shape == "square":
        dist = np.maximum(np.abs(dx), np.abs(dy)) / 0.85
    else:
        dist = (np.abs(dx) + np.abs(dy)) / 1.3
    return np.clip(r - dist + 0.5, 0.0, 1.0)


def render(p: Dict) -> np.ndarray:
    """float32 (T, H, W, 3) in [0, 1] for the parameters ``p``."""
    T, S = p["frames"], p["size"]
    ys, xs = np.mgrid[0:S, 0:S].astype(np.float64) + 0.5                 # pixel centres
    frame0 = p["bg"] + p["texture"]
    t = np.arange(T, dtype=np.float64)
    centres = p["p0"][None] + t[:, None] * p["v"][None]                    # (T, 2)
    strength = 0.6 + 0.4 * np.sin(2 * math.pi * p["freq"] * t / T + p["phase"])   # (T,) in [0.2, 1]
    dis = _coverage(p["dis_shape"], xs - p["dis_centre"][0], ys - p["dis_centre"][1], p["dis_radius"])
    act = _coverage(p["shape"], xs[None] - centres[:, 0, None, None], ys[None] - centres[:, 1, None, None],
                    p["r0"]) * strength[:, None, None]                      # (T, S, S)
    clip = np.broadcast_to(frame0, (T, S, S, 3)).copy()
    alpha = dis[None, ..., None]
    clip = clip * (1 - alpha) + alpha * (p["dis_colour"] * p["flicker"][:, None, None, None])
    clip = clip * (1 - act[..., None]) + act[..., None] * p["colour"]
    return np.clip(clip + p["noise"], 0.0, 1.0).astype(np.float32)


def augment_clip(x: torch.Tensor, rng: np.random.Generator, shift: int = 4) -> torch.Tensor:
    """A label-preserving appearance augmentation of a centred clip ``x`` (3, T, H, W).

    Every frame gets the same transform, so motion and the opacity oscillation (the
    label) are unchanged while colour and position (the distractors) are redrawn:
    the channels permuted, each multiplied by a gain ``g ~ U(0.6, 1.4)`` and a random
    sign (a centred channel's sign flip inverts its contrast), and the clip shifted by
    up to ``shift`` px in x and y, the uncovered border filled with 0 (the clip's mean).
    """
    gain = rng.uniform(0.6, 1.4, 3) * rng.choice([-1.0, 1.0], 3)
    x = x[torch.from_numpy(rng.permutation(3))] * torch.from_numpy(gain).to(x.dtype)[:, None, None, None]
    dy, dx = (int(d) for d in rng.integers(-shift, shift + 1, 2))
    out = torch.zeros_like(x)
    H, W = x.shape[-2:]
    out[..., max(dy, 0):H + min(dy, 0), max(dx, 0):W + min(dx, 0)] = \
        x[..., max(-dy, 0):H + min(-dy, 0), max(-dx, 0):W + min(-dx, 0)]
    return out


def generate(num_clips: int, *, seed: int = 0, split: str = "train", frames: int = 8, size: int = 32,
             frequencies=(1, 2, 3), epoch: int = 0, **options) -> tuple:
    """(clips uint8 (N, 3, T, H, W), labels int64 (N,)), balanced classes in a random order;
    a pure function of (seed, split (the stream), epoch, sizes)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {sorted(SPLITS)}, got {split!r}")
    rng = np.random.default_rng([int(seed), SPLITS[split]] + ([int(epoch)] if epoch else []))
    num_classes = 4 * len(frequencies)
    labels = rng.permutation(np.arange(num_clips) % num_classes)
    clips = np.empty((num_clips, 3, frames, size, size), dtype=np.uint8)
    for i, label in enumerate(labels):
        p = sample_params(rng, label, frames=frames, size=size, frequencies=frequencies, **options)
        clips[i] = np.round(render(p) * 255).astype(np.uint8).transpose(3, 0, 1, 2)
    return torch.from_numpy(clips), torch.from_numpy(labels.astype(np.int64))


class SyntheticMotion(Dataset):
    """The synthetic benchmark as a Dataset of (clip float32 (3, T, H, W), label).

    Each clip is centred per channel (its own mean colour over T, H, W removed) and
    scaled: (x / 255 - mean_clip) / 0.25. Without that per-sample centring, the
    random background colour dominates the first layers and small 3-D CNNs stay at
    chance for many epochs (measured while fixing the design, before any method ran).
    ``fresh_each_epoch=True`` (the training split of the recipes) draws new clips every
    epoch (``set_epoch``), from (seed, split, epoch): a procedural benchmark has no
    reason to show a model the same clips twice, and a fixed small set is memorised
    through its appearance distractors instead of learnt through its motion (which
    is what the headroom benchmark uses: a small fixed labelled set for the student,
    ``stream: pretrain`` with fresh clips for the teacher's pre-training).
    ``stream``: draw from that split's RNG stream instead of ``split``'s own (e.g. the
    validation of a weight sweep reads ``tune``, never the reported ``val``).
    ``augment=True``: every read of a clip passes through :func:`augment_clip`, drawn
    from ``default_rng([seed, stream, view, index, 1])`` with view = epoch (a fresh view
    every epoch) or, with ``views=V``, epoch mod V (a fixed pool of V views per clip:
    V x num_clips distinct training examples); deterministic, so a resumed run sees the
    same clips. A fixed small set then no longer offers colour and position to memorise.
    """

    def __init__(self, num_clips: int = 2400, *, seed: int = 0, split: str = "train", frames: int = 8,
                 size: int = 32, frequencies=(1, 2, 3), fresh_each_epoch: bool = False,
                 stream: Optional[Literal["train", "val", "test", "tune", "pretrain"]] = None,
                 augment: bool = False, views: Optional[int] = None, **options):
        if stream is not None and stream not in SPLITS:
            raise ValueError(f"stream must be one of {sorted(SPLITS)} or null, got {stream!r}")
        self.options = dict(num_clips=num_clips, seed=seed, split=stream or split, frames=frames, size=size,
                            frequencies=tuple(frequencies), **options)
        if not isinstance(augment, bool):
            raise ValueError(f"augment must be true or false, got {augment!r}")
        if views is not None and (isinstance(views, bool) or not isinstance(views, int) or views < 1
                                  or not augment):
            raise ValueError(f"views must be a positive integer (with augment: true) or null, got {views!r}")
        self.fresh_each_epoch, self.augment, self.views, self.epoch = fresh_each_epoch, augment, views, 0
        self.clips, self.labels = generate(**self.options)
        self.num_classes = 4 * len(frequencies)
        self.classes = class_names(tuple(frequencies))

    def set_epoch(self, epoch: int) -> None:
        if self.fresh_each_epoch and epoch != self.epoch:
            self.clips, self.labels = generate(epoch=epoch, **self.options)
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        x = self.clips[index].float() / 255.0
        x = (x - x.mean((1, 2, 3), keepdim=True)) / 0.25
        if self.augment:
            o = self.options
            view = self.epoch if self.views is None else self.epoch % self.views
            x = augment_clip(x, np.random.default_rng([o["seed"], SPLITS[o["split"]], view, int(index), 1]))
        return x, self.labels[index]
