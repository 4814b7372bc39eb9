"""Eager PyTorch of the attention-transfer maps: the raw map written the way a user would
(x.pow(p).mean over channels; the oracle and the ``backend="reference"`` path), and the
pass on the raw maps every backend shares: adaptive average pooling to a common size,
L2 normalisation, distance and reduction. The maps are C times smaller than the
features, and autograd through these ops gives the exact dL/da that the fused backward
then spreads over the channels in one pass.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .._math import accumulation_dtype, safe_sqrt
from .layout import NORM_EPS


def raw_map_reference(x: torch.Tensor, p: float, channel_dim: int) -> torch.Tensor:
    """mean_c |x|^p (N, *map), in float32 for float16/bfloat16 inputs."""
    x = x.to(accumulation_dtype(x.dtype))
    return (x.square() if p == 2 else x.abs().pow(p)).mean(channel_dim)


def pool_to(a: torch.Tensor, size: tuple) -> torch.Tensor:
    """Adaptive average pooling of a map (N, *map) to (N, *size) (identity if equal)."""
    if tuple(a.shape[1:]) == tuple(size):
        return a
    pool = (F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.adaptive_avg_pool3d)[len(size) - 1]
    return pool(a.unsqueeze(1), size).squeeze(1)


def normalize(a: torch.Tensor, mode: str) -> torch.Tensor:
    """a / max(||a||_2, 1e-12) over (T, H, W) per sample, or over (H, W) per frame."""
    return F.normalize(a.flatten(1 if mode == "spatiotemporal" else 2), dim=-1, eps=NORM_EPS).view(a.shape)


def safe_norm(d: torch.Tensor) -> torch.Tensor:
    """Per-sample L2 norm of d (N, ...) with gradient 0 (not NaN) where d == 0."""
    return safe_sqrt(d.flatten(1).square().sum(1))


def transfer_distance(a_s: torch.Tensor, a_t: torch.Tensor, mode: str, distance: str,
                      reduction: str) -> torch.Tensor:
    """The loss of docs/ops.md 3a from raw maps a_s (N, *map_s), a_t (N, *map_t)."""
    size = tuple(min(s, t) for s, t in zip(a_s.shape[1:], a_t.shape[1:]))
    d = normalize(pool_to(a_s, size), mode) - normalize(pool_to(a_t, size), mode)
    per = d.square() if distance == "mse" else safe_norm(d)
    if reduction == "mean":
        return per.mean()
    return per.sum() if reduction == "sum" else per
