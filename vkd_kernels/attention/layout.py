"""Options, validation and the canonical (N, C, P) view of the attention-transfer maps.

A feature x with the channel axis at ``channel_dim`` is read as a strided view
(N, C, P): N = the leading (batch) axis, C = channels, P = prod of the remaining
(map) axes, e.g. (T, H, W) for video. The raw map a[n, p] = mean_c |x[n, c, p]|^p is
returned with the map axes restored: (N, T, H, W) for (N, C, T, H, W).
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Optional

import torch

from .._backend import INDEX32_LIMIT
from .._checks import check_choice, check_float_tensor, check_positive_number

MODES = ("spatiotemporal", "per_frame")
DISTANCES = ("mse", "l2")
REDUCTIONS = ("mean", "sum", "none")
NORM_EPS = 1e-12  # as F.normalize: a / max(||a||, eps), so an all-zero map stays 0 (no NaN)


def check_exponent(p) -> float:
    check_positive_number("p", p, allow_zero=False)
    return float(p)


def channel_axis(x: torch.Tensor, channel_dim) -> int:
    """The validated, non-negative channel axis of feature ``x`` (needs N, C and >= 1 map axis)."""
    if x.dim() < 3:
        raise ValueError(f"features must have at least 3 dims (N, C, *map), got shape {tuple(x.shape)}")
    if isinstance(channel_dim, bool) or not isinstance(channel_dim, int) or not -x.dim() <= channel_dim < x.dim():
        raise ValueError(f"channel_dim={channel_dim!r} is out of range for a {x.dim()}-d feature")
    channel_dim %= x.dim()
    if channel_dim == 0:
        raise ValueError("channel_dim must not be 0 (the batch axis)")
    return channel_dim


def map_shape(x: torch.Tensor, channel_dim: int) -> tuple:
    """(N, *map) = the shape of x without its channel axis."""
    return tuple(s for i, s in enumerate(x.shape) if i != channel_dim)


def view_ncp(x: torch.Tensor, channel_dim: int) -> torch.Tensor:
    """x as (N, C, P): a view when the strides allow (contiguous, channels_last), else a copy."""
    moved = x.movedim(channel_dim, 1)
    return moved.reshape(moved.shape[0], moved.shape[1], -1)


def check_feature(name: str, x, channel_dim, mode: str) -> int:
    check_float_tensor(name, x)
    axis = channel_axis(x, channel_dim)
    if mode == "per_frame" and x.dim() < 4:
        raise ValueError(f"mode='per_frame' needs {name} with a time axis and a map axis "
                         f"(N, C, T, H[, W]), got shape {tuple(x.shape)}")
    return axis


def check_transfer(fs, ft, channel_dim, mode, distance, reduction) -> tuple:
    """Validate a transfer-loss call; the channel axes of fs and ft."""
    check_choice("mode", mode, MODES)
    check_choice("distance", distance, DISTANCES)
    check_choice("reduction", reduction, REDUCTIONS)
    cs = check_feature("fs", fs, channel_dim, mode)
    ct = check_feature("ft", ft, channel_dim, mode)
    if fs.device != ft.device:
        raise ValueError(f"ft is on {ft.device} but fs is on {fs.device}")
    if fs.dtype != ft.dtype:
        raise TypeError(f"ft has dtype {ft.dtype} but fs has dtype {fs.dtype}")
    if fs.dim() != ft.dim() or fs.shape[0] != ft.shape[0]:
        raise ValueError(f"fs {tuple(fs.shape)} and ft {tuple(ft.shape)} must have the same rank and batch size")
    if fs.dim() - 2 > 3 and map_shape(fs, cs) != map_shape(ft, ct):
        raise ValueError("maps with more than 3 axes must have equal shapes (no adaptive pooling beyond 3-d)")
    return cs, ct


def count(shape) -> int:
    return math.prod(shape)


@functools.lru_cache(maxsize=256)
def longest_bin(size_in: int, size_out: int) -> int:
    """The longest adaptive-pooling bin [floor(o I / O), ceil((o + 1) I / O)) along one axis."""
    return max(-(-(o + 1) * size_in // size_out) - o * size_in // size_out for o in range(size_out))


def _three_axes(shape: tuple, per_frame: bool) -> tuple:
    """A map's axes as the (T, H, W) the finishing kernels read: 1 to 3 axes padded in
    front with 1s; more (equal shapes only) flattened, keeping the frame axis per frame."""
    if len(shape) > 3:
        return (shape[0], 1, count(shape[1:])) if per_frame else (1, 1, count(shape))
    if per_frame and len(shape) == 2:
        return (shape[0], 1, shape[1])
    return (1,) * (3 - len(shape)) + tuple(shape)


@dataclass(frozen=True)
class Geometry:
    """What the finishing kernels of one transfer-loss call need: the raw maps (N, *map_s),
    (N, *map_t), their common pooled size (N, *size) and the loss options."""

    N: int
    map_s: tuple
    map_t: tuple
    mode: str
    distance: str
    reduction: str

    @property
    def size(self) -> tuple:
        return tuple(min(s, t) for s, t in zip(self.map_s, self.map_t))

    @property
    def Q(self) -> int:
        return count(self.size)

    @property
    def l2(self) -> bool:
        return self.distance == "l2"

    @property
    def none(self) -> bool:
        """mse with reduction "none": the kernels write d^2 per element, not per sample."""
        return self.reduction == "none" and not self.l2

    @property
    def pooled_s(self) -> bool:
        return tuple(self.map_s) != self.size

    @property
    def pooled_t(self) -> bool:
        return tuple(self.map_t) != self.size

    @property
    def scale(self) -> float:
        if self.reduction != "mean":
            return 1.0
        return 1.0 / (self.N * (1 if self.l2 else self.Q))

    def out_shape(self) -> tuple:
        """Shape of the kernels' per-sample terms: (N, *size) for mse "none", else (N,)."""
        return (self.N,) + self.size if self.none else (self.N,)

    def index_limit(self) -> Optional[str]:
        """Why the C++ finish (32-bit indices within a sample, csrc/common/attention.h)
        cannot take these maps, or None: each map must have < 2^31 elements and, on a
        pooled side, every axis (in + 1) (out + 1) < 2^31."""
        for name, shape in (("fs", self.map_s), ("ft", self.map_t)):
            if count(shape) >= INDEX32_LIMIT:
                return f"the {name} map of {count(shape)} elements per sample reaches 2^31"
            sizes = _three_axes(shape, self.mode == "per_frame")
            pooled = _three_axes(self.size, self.mode == "per_frame")
            if tuple(shape) != self.size and any((i + 1) * (o + 1) >= INDEX32_LIMIT for i, o in zip(sizes, pooled)):
                return f"pooling the {name} map {tuple(shape)} to {self.size} needs (in + 1) (out + 1) < 2^31 per axis"
        return None

    def launch_args(self, parts_s, parts_t) -> tuple:
        """(Ks, Kt, Ps, Pt, raw sizes (3 + 3), pooled sizes (3), longest bins (3 + 3), frames, scale)."""
        per_frame = self.mode == "per_frame"
        s, t, o = (_three_axes(m, per_frame) for m in (self.map_s, self.map_t, self.size))
        bins = [longest_bin(i, j) for i, j in zip(s, o)] + [longest_bin(i, j) for i, j in zip(t, o)]
        frames = o[0] if per_frame else 1
        return (parts_s.shape[1], parts_t.shape[1], count(self.map_s), count(self.map_t), *s, *t, *o, *bins,
                frames, self.scale)
