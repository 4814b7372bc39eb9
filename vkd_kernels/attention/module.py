"""nn.Module form of the attention-transfer loss."""
from __future__ import annotations

import torch
from torch import nn

from .._backend import BACKENDS
from .._checks import check_choice
from .layout import DISTANCES, MODES, REDUCTIONS, check_exponent
from .op import attention_transfer_loss


class AttentionTransferLoss(nn.Module):
    """``loss = AttentionTransferLoss(p=2, ...)(fs, ft)``; options as in
    :func:`vkd_kernels.attention_transfer_loss`."""

    def __init__(self, p: float = 2, *, channel_dim: int = 1, mode: str = "spatiotemporal", distance: str = "mse",
                 reduction: str = "mean", backend: str = "auto"):
        super().__init__()
        check_choice("mode", mode, MODES)
        check_choice("distance", distance, DISTANCES)
        check_choice("reduction", reduction, REDUCTIONS)
        check_choice("backend", backend, BACKENDS)
        self.options = dict(p=check_exponent(p), channel_dim=channel_dim, mode=mode, distance=distance,
                            reduction=reduction, backend=backend)

    def forward(self, fs: torch.Tensor, ft: torch.Tensor) -> torch.Tensor:
        return attention_transfer_loss(fs, ft, **self.options)

    def extra_repr(self) -> str:
        return ", ".join(f"{key}={value!r}" for key, value in self.options.items())
