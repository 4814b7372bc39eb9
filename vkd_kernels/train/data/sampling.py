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
    x = _normalise(frames)
    _, _, h, w = x.shape
    f = scale_size / min(h, w)
    x = _resize(x, max(size, round(h * f)), max(size, round(w * f)))
    _, _, h, w = x.shape
    top, left = (h - size) // 2, (w - size) // 2
    return x[:, :, top:top + size, left:left + size]
