"""Layout and validation of attention_apply: F (N, C, T, *spatial) read as N C T rows of
S = prod(spatial) elements, (N, C, T, S) with its own strides; lam (N, C, T)."""
from __future__ import annotations

import torch

from ..._checks import check_float_tensor

#: ``spatial`` of attention_apply: the full F_fg, or its mean over the spatial axes
SPATIAL = ("keep", "mean")


def rows_view(x: torch.Tensor) -> torch.Tensor:
    """x (N, C, T, *spatial) as (N, C, T, S), a view where the strides allow."""
    return x.reshape(x.shape[:3] + (-1,))


def check_apply(F, lam, per_sample):
    check_float_tensor("F", F)
    check_float_tensor("lam", lam)
    if F.dim() < 3 or lam.shape != F.shape[:3]:
        raise ValueError(f"lam must be F.shape[:3] = (N, C, T), got F {tuple(F.shape)} and lam {tuple(lam.shape)}")
    if lam.device != F.device:
        raise ValueError(f"lam is on {lam.device} but F is on {F.device}")
    if lam.dtype != F.dtype:
        raise TypeError(f"lam has dtype {lam.dtype} but F has dtype {F.dtype}")
    check_per_sample(per_sample)


def check_per_sample(per_sample) -> bool:
    """``per_sample``, or a TypeError if it is not a bool."""
    if not isinstance(per_sample, bool):
        raise TypeError(f"per_sample must be a bool, got {type(per_sample).__name__}")
    return per_sample
