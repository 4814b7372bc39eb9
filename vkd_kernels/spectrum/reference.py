"""Eager PyTorch reference of the temporal spectrum loss (the oracle and the fallback).

Written the way a user would: torch.fft.rfft along time, magnitude, difference,
reduction. float16/bfloat16 are computed in float32 (torch.fft refuses bfloat16 and
takes float16 only for power-of-two T) and the result is cast back.
"""
from __future__ import annotations

from typing import Optional

import torch

from .._math import safe_sqrt
from .layout import SpectrumProblem


def safe_magnitude(power: torch.Tensor, eps: float) -> torch.Tensor:
    """sqrt(power + eps) with gradient 0 (not NaN) where power + eps == 0."""
    return safe_sqrt(power + eps)


def spectrum_of(x: torch.Tensor, time_dim: int, norm: str, spectrum: str, eps: float) -> torch.Tensor:
    compute_dtype = torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype
    X = torch.fft.rfft(x.to(compute_dtype), dim=time_dim, norm=norm)
    power = X.real.square() + X.imag.square()
    if spectrum == "power":
        return power
    magnitude = safe_magnitude(power, eps)
    return magnitude if spectrum == "magnitude" else torch.log(magnitude + eps)


def temporal_spectrum_loss_reference(student: torch.Tensor, teacher: torch.Tensor, problem: SpectrumProblem,
                                     weights: Optional[torch.Tensor], *, norm: str, spectrum: str,
                                     spatial: str, reduction: str) -> torch.Tensor:
    """The loss of docs/ops.md section 1 for a validated ``problem`` (see layout.make_problem)."""
    td = problem.time_dim
    a_s, a_t = (spectrum_of(x.reshape(problem.unfolded_shape), td, norm, spectrum, problem.eps)
                for x in (student, teacher))
    spatial_dims = tuple(range(len(problem.out_shape), a_s.dim()))  # empty for spatial="pixel"
    if spatial_dims:
        a_s, a_t = a_s.mean(dim=spatial_dims), a_t.mean(dim=spatial_dims)
    d = (a_s - a_t).square()
    if weights is not None:
        d = d * weights.to(d.dtype).view((-1,) + (1,) * (d.dim() - td - 1))
    if reduction == "mean":
        d = d.mean()
    elif reduction == "sum":
        d = d.sum()
    return d.to(student.dtype)
