"""nn.Module form of attention_apply."""
from __future__ import annotations

import torch
from torch import nn

from ..._backend import BACKENDS
from ..._checks import check_choice
from .layout import SPATIAL, check_per_sample
from .op import attention_apply


class AttentionApply(nn.Module):
    """``F_fg = AttentionApply(per_sample=True)(F, lam)``: F * lam * sum(F) / sum(F * lam)
    for F (N, C, T, *spatial), lam (N, C, T); options as in :func:`attention_apply`
    (``spatial="mean"``: its mean over the spatial axes, (N, C, T))."""

    def __init__(self, *, per_sample: bool = True, spatial: str = "keep", backend: str = "auto"):
        super().__init__()
        check_choice("backend", backend, BACKENDS)
        check_choice("spatial", spatial, SPATIAL)
        self.per_sample, self.spatial, self.backend = check_per_sample(per_sample), spatial, backend

    def forward(self, F: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
        return attention_apply(F, lam, per_sample=self.per_sample, spatial=self.spatial, backend=self.backend)

    def extra_repr(self) -> str:
        return f"per_sample={self.per_sample}, spatial={self.spatial!r}, backend={self.backend!r}"
