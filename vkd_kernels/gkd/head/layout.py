"""Layout of the GKD head's tail (docs/ops.md 3b): the compact column classes of a
nearest upsample T -> L followed by a k=3 conv, and the validation of a call.

The upsampled U[:, :, l] = y[:, :, src[l]] (src: torch's own nearest rule, so any L
and T work, L < T included). Conv output column l depends on l only through the
triple (src[l-1], src[l], src[l+1]) (a padding column where l-1 or l+1 falls
outside): runs of equal src give at most three distinct triples per source step, so
the L columns fall into J <= 3T classes with counts w_j (op.py uses them).
"""
from __future__ import annotations

import functools
from typing import Optional, Tuple

import torch
import torch.nn.functional as F

from ..._backend import INDEX32_LIMIT
from ..._checks import check_float_tensor, check_positive_number


@functools.lru_cache(maxsize=64)
def _classes_cpu(T: int, L: int) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(triples (J, 3) into [zero, y_0 .. y_{T-1}], class of each column (L,), counts (J,))."""
    src = F.interpolate(torch.arange(T, dtype=torch.float64).view(1, 1, T), size=L, mode="nearest")
    src = src.view(L).long() + 1  # 0 is the zero padding column
    padded = F.pad(src, (1, 1))   # zero padding outside [0, L)
    triples = torch.stack((padded[:-2], padded[1:-1], padded[2:]), dim=1)
    classes, inverse, counts = torch.unique(triples, dim=0, return_inverse=True, return_counts=True)
    return classes, inverse, counts


def num_classes(T: int, L: int) -> int:
    """J, the number of column classes (real tensors even when called under a fake mode)."""
    from torch._subclasses.fake_tensor import unset_fake_temporarily
    with unset_fake_temporarily():
        return int(_classes_cpu(T, L)[0].shape[0])


def column_classes(T: int, L: int, device: torch.device):
    """The compact column classes of a nearest upsample T -> L followed by a k=3 conv."""
    return tuple(t.to(device) for t in _classes_cpu(T, L))


@functools.lru_cache(maxsize=64)
def selection(T: int, L: int, device: torch.device, dtype: torch.dtype) -> Tuple[torch.Tensor, ...]:
    """(S (J, 3T), E (L, J), counts (J,)) on ``device``, built once per (T, L, device, dtype)
    (no host-to-device copy per call): S[j, 3 t + k] = 1 where tap k of class j reads
    y[:, :, t] (padding taps read nothing); E[l, j] = 1 where column l is of class j."""
    triples, inverse, counts = _classes_cpu(T, L)
    S = torch.zeros(triples.shape[0], T, 3, dtype=torch.float64)
    for k in range(3):
        real = triples[:, k] > 0
        S[real.nonzero()[:, 0], triples[real, k] - 1, k] = 1.0
    E = F.one_hot(inverse, triples.shape[0])
    return S.view(-1, 3 * T).to(device, dtype), E.to(device, dtype), counts.to(device, dtype)


def index_limit(y: torch.Tensor, conv_weight: torch.Tensor, linear_weight: torch.Tensor,
                upsample_length: int) -> Optional[str]:
    """Why the C++ kernels (32-bit indices within a GroupNorm group, csrc/common/head.h)
    cannot take this tail, or None: (J + 1) C and T' C must be < 2^31."""
    J, C, TP = num_classes(y.shape[2], upsample_length), conv_weight.shape[0], linear_weight.shape[0]
    if max((J + 1) * C, TP * C) >= INDEX32_LIMIT:
        return f"(J + 1) C = {(J + 1) * C} or T' C = {TP * C} reaches 2^31 (J = {J} column classes, C = {C})"
    return None


def check_tail(y, conv_weight, conv_bias, gn_weight, gn_bias, gn_groups, linear_weight, linear_bias,
                upsample_length, eps):
    check_float_tensor("y", y)
    if y.dim() != 3:
        raise ValueError(f"y must be (N, C1, T), got shape {tuple(y.shape)}")
    N, C1, T = y.shape
    if isinstance(upsample_length, bool) or not isinstance(upsample_length, int) or upsample_length < 1:
        raise ValueError(f"upsample_length must be an int >= 1, got {upsample_length!r}")
    check_float_tensor("conv_weight", conv_weight)
    if conv_weight.dim() != 3 or conv_weight.shape[1:] != (C1, 3):
        raise ValueError(f"conv_weight must be (C, {C1}, 3), got {tuple(conv_weight.shape)}")
    C = conv_weight.shape[0]
    if isinstance(gn_groups, bool) or not isinstance(gn_groups, int) or gn_groups < 1 or C % gn_groups:
        raise ValueError(f"gn_groups must be a positive int dividing C={C}, got {gn_groups!r}")
    check_float_tensor("linear_weight", linear_weight)
    if linear_weight.dim() != 2 or linear_weight.shape[1] != upsample_length:
        raise ValueError(f"linear_weight must be (T_out, {upsample_length}), got {tuple(linear_weight.shape)}")
    for name, value, shape in (("conv_bias", conv_bias, (C,)), ("gn_weight", gn_weight, (C,)),
                               ("gn_bias", gn_bias, (C,)), ("linear_bias", linear_bias, linear_weight.shape[:1])):
        if value is None:
            continue
        check_float_tensor(name, value)
        if tuple(value.shape) != tuple(shape):
            raise ValueError(f"{name} must have shape {tuple(shape)}, got {tuple(value.shape)}")
    for name, value in (("conv_weight", conv_weight), ("conv_bias", conv_bias), ("gn_weight", gn_weight),
                        ("gn_bias", gn_bias), ("linear_weight", linear_weight), ("linear_bias", linear_bias)):
        if value is not None and (value.device != y.device or value.dtype != y.dtype):
            raise ValueError(f"{name} ({value.dtype}, {value.device}) must match y ({y.dtype}, {y.device})")
    check_positive_number("eps", eps, allow_zero=False)
