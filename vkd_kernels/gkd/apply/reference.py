"""Eager reference of attention_apply: the plain formula, as the published code writes it."""
from __future__ import annotations

import torch


def attention_apply_reference(F: torch.Tensor, lam: torch.Tensor, per_sample: bool = True) -> torch.Tensor:
    """The plain formula (autograd through it): F * lam * sum(F) / sum(F * lam)."""
    weighted = F * lam.view(lam.shape + (1,) * (F.dim() - 3))
    dims = tuple(range(1, F.dim())) if per_sample else tuple(range(F.dim()))
    shape = (-1,) + (1,) * (F.dim() - 1)
    return weighted * (F.sum(dims).reshape(shape) / weighted.sum(dims).reshape(shape))
