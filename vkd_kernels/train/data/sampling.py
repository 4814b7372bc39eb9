"""Frame index sampling and clip transforms (no torchvision).

* ``segment_indices``: TSN/TSM uniform segments: split [0, n) into ``num_segments``
  equal segments, one frame from each (random within it when training, the centre
  when testing).
* ``dense_indices``: ``clip_len`` frames ``frame_interval`` apart from a random start
  (training) or the centred start (testing); short videos loop.
* ``train_transform`` / ``val_transform``: uint8 (T, H, W, 3) -> float (3, T, s, s):
  random-scale crop (area 0.25..1 of the short side square, aspect 3/4..4/3) and an
  optional horizontal flip (off where direction is the label), or resize of the short
  side to ``scale_size`` and a centre crop; then mean/std normalisation.
* multi-view testing (``vkd evaluate --clips N --crops M``): ``segment_views`` /
  ``dense_views`` give N clips' indices, ``crop_views`` M spatial crops of each
  (1 centre, 3 along the long side, 10 = five crops and their mirror images). One view
  (N = M = 1) is exactly the single test clip above.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1, 1)


def segment_indices(num_frames: int, num_segments: int, train: bool, rng: np.random.Generator) -> np.ndarray:
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    edges = np.linspace(0, num_frames, num_segments + 1)
    if train:
        idx = edges[:-1] + rng.uniform(0, 1, num_segments) * (edges[1:] - edges[:-1])
    else:
        idx = (edges[:-1] + edges[1:]) / 2
    return np.minimum(idx.astype(np.int64), num_frames - 1)


def dense_indices(num_frames: int, clip_len: int, frame_interval: int, train: bool,
                  rng: np.random.Generator) -> np.ndarray:
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    span = (clip_len - 1) * frame_interval + 1
    room = max(num_frames - span, 0)
    start = int(rng.integers(room + 1)) if train else room // 2
    return (start + np.arange(clip_len) * frame_interval) % num_frames


def segment_views(num_frames: int, num_segments: int, num_clips: int) -> np.ndarray:
    """(num_clips, num_segments) test indices: clip j takes, in each of the uniform
    segments, the frame at (j + 1/2) / num_clips of the segment (TSN segment offsets);
    one clip is the segment centres of ``segment_indices``."""
    if num_clips == 1:
        return segment_indices(num_frames, num_segments, False, None)[None]
    edges = np.linspace(0, num_frames, num_segments + 1)
    offsets = (np.arange(num_clips)[:, None] + 0.5) / num_clips
    idx = edges[:-1] + offsets * (edges[1:] - edges[:-1])
    return np.minimum(idx.astype(np.int64), num_frames - 1)


def dense_views(num_frames: int, clip_len: int, frame_interval: int, num_clips: int) -> np.ndarray:
    """(num_clips, clip_len) test indices: clips whose starts are the centres of
    ``num_clips`` equal parts of the possible starts [0, n - span] (mmaction2's test clips,
    ``SampleFrames(test_mode=True)``, up to the rounding that makes one clip the centred
    clip of ``dense_indices``); a video shorter than a clip loops, every clip from 0."""
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    span = (clip_len - 1) * frame_interval + 1
    room = max(num_frames - span, 0)
    starts = ((2 * np.arange(num_clips) + 1) * room) // (2 * num_clips)
    return (starts[:, None] + np.arange(clip_len)[None] * frame_interval) % num_frames


def _normalise(x: torch.Tensor) -> torch.Tensor:
    """uint8 (T, H, W, 3) -> float (3, T, H, W), ImageNet mean/std."""
    x = x.permute(3, 0, 1, 2).float() / 255.0
    return (x - MEAN) / STD


def _resize(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """float (3, T, H, W) -> (3, T, h, w), bilinear."""
    return F.interpolate(x.transpose(0, 1), size=(h, w), mode="bilinear", align_corners=False,
                         antialias=True).transpose(0, 1)


def train_transform(frames: torch.Tensor, size: int, rng: np.random.Generator, flip: bool = True,
                    scale=(0.25, 1.0), ratio=(3 / 4, 4 / 3)) -> torch.Tensor:
    x = _normalise(frames)
    _, _, h, w = x.shape
    side = min(h, w)
    area = side * side * rng.uniform(*scale)
    r = math.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1])))
    ch, cw = min(h, int(round(math.sqrt(area / r)))), min(w, int(round(math.sqrt(area * r))))
    top, left = int(rng.integers(h - ch + 1)), int(rng.integers(w - cw + 1))
    x = _resize(x[:, :, top:top + ch, left:left + cw], size, size)
    if flip and rng.uniform() < 0.5:
        x = x.flip(-1)
    return x


def val_transform(frames: torch.Tensor, size: int, scale_size: int) -> torch.Tensor:
    return crop_views(frames, size, scale_size, 1)[0]


CROPS = (1, 3, 10)


def crop_windows(h: int, w: int, size: int, crops: int):
    """[(top, left, mirrored)] of the ``crops`` test crops of a (h, w) frame: 1 the centre;
    3 the start, centre and end along the long side (centred along the short one, as
    mmaction2's ThreeCrop); 10 the four corners and the centre, each also mirrored
    (TenCrop)."""
    if crops not in CROPS:
        raise ValueError(f"crops must be one of {CROPS}, got {crops!r}")
    top, left = (h - size) // 2, (w - size) // 2
    if crops == 1:
        return [(top, left, False)]
    if crops == 3:
        if w >= h:
            return [(top, 0, False), (top, left, False), (top, w - size, False)]
        return [(0, left, False), (top, left, False), (h - size, left, False)]
    five = [(0, 0), (0, w - size), (h - size, 0), (h - size, w - size), (top, left)]
    return [(t, left, m) for m in (False, True) for t, left in five]


def crop_views(frames: torch.Tensor, size: int, scale_size: int, crops: int = 1) -> torch.Tensor:
    """uint8 (T, H, W, 3) -> float (crops, 3, T, size, size): the short side resized to
    ``scale_size`` (at least ``size``), then the :func:`crop_windows`."""
    x = _normalise(frames)
    _, _, h, w = x.shape
    f = scale_size / min(h, w)
    x = _resize(x, max(size, round(h * f)), max(size, round(w * f)))
    _, _, h, w = x.shape
    views = []
    for top, left, mirrored in crop_windows(h, w, size, crops):
        view = x[:, :, top:top + size, left:left + size]
        views.append(view.flip(-1) if mirrored else view)
    return torch.stack(views)
