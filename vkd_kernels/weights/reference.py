"""Eager PyTorch reference of the weight-spectrum distance (the oracle and the fallback).

Written per layer, the way a user would: each weight flattened to (#kernels, P), its
coefficients by the Kronecker-product DCT matrix (or torch.fft.fftn), squared, pooled
over the group, normalised, compared. float16/bfloat16 are computed in float32.
"""
from __future__ import annotations

from typing import Sequence

import torch

from .layout import _kron, accumulation_dtype, dct_matrix, normalize, spectrum_distance


def energy_reference(group: Sequence[torch.Tensor], transform: str) -> torch.Tensor:
    """e (P,): the mean over the group's kernels of each squared coefficient."""
    total, count = 0, 0
    for w in group:
        kernel = tuple(w.shape[2:])
        x = w.to(accumulation_dtype(w.dtype)).reshape(-1, *kernel)
        if transform == "dct":
            basis = _kron([dct_matrix(n, x.dtype).to(x.device) for n in kernel])
            power = (x.reshape(len(x), -1) @ basis.T).square()
        else:
            f = torch.fft.fftn(x, dim=tuple(range(1, x.dim())), norm="ortho").reshape(len(x), -1)
            power = f.real.square() + f.imag.square()
        total = total + power.sum(0)
        count += len(x)
    return total / count


def spectrum_reference(group: Sequence[torch.Tensor], transform: str, drop_dc: bool, eps: float) -> torch.Tensor:
    """p (P,) or (P - 1,) with drop_dc."""
    e = energy_reference(group, transform)
    return normalize(e[1:] if drop_dc else e, eps)


def weight_spectrum_distance_reference(student: Sequence, teacher: Sequence, *, transform: str, distance: str,
                                       drop_dc: bool, reduction: str, eps: float) -> torch.Tensor:
    """``student``: validated groups; ``teacher``: groups or 1-d distributions."""
    d = []
    for s_group, t_item in zip(student, teacher):
        ps = spectrum_reference(s_group, transform, drop_dc, eps)
        pt = t_item if isinstance(t_item, torch.Tensor) else spectrum_reference(t_item, transform, drop_dc, eps)
        d.append(spectrum_distance(ps, pt.to(ps.dtype), distance, eps))
    d = torch.stack(d)
    return d.mean() if reduction == "mean" else d.sum()


