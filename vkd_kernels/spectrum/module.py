"""nn.Module form of the temporal spectrum loss."""
from __future__ import annotations

from typing import Optional, Sequence, Union

import torch
from torch import nn

from .._backend import BACKENDS
from .._checks import check_choice
from .layout import NORMS, REDUCTIONS, SPATIAL, SPECTRA
from .op import temporal_spectrum_loss


class TemporalSpectrumLoss(nn.Module):
    """``loss = TemporalSpectrumLoss(...)(student, teacher)``; options as in
    :func:`vkd_kernels.temporal_spectrum_loss`. ``bin_weights`` is a buffer, so it
    follows ``.to(device)``."""

    def __init__(self, *, time_dim: int = 2, num_segments: Optional[int] = None, spectrum: str = "magnitude",
                 norm: str = "backward", bin_weights: Union[None, torch.Tensor, Sequence[float]] = None,
                 drop_dc: bool = False, spatial: str = "pixel", reduction: str = "mean", eps: float = 1e-12,
                 backend: str = "auto"):
        super().__init__()
        check_choice("spectrum", spectrum, SPECTRA)
        check_choice("norm", norm, NORMS)
        check_choice("spatial", spatial, SPATIAL)
        check_choice("reduction", reduction, REDUCTIONS)
        check_choice("backend", backend, BACKENDS)
        self.options = dict(time_dim=time_dim, num_segments=num_segments, spectrum=spectrum, norm=norm,
                            drop_dc=drop_dc, spatial=spatial, reduction=reduction, eps=eps, backend=backend)
        self.register_buffer("bin_weights", None if bin_weights is None
                             else torch.as_tensor(bin_weights, dtype=torch.float32), persistent=False)

    def forward(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        return temporal_spectrum_loss(student, teacher, bin_weights=self.bin_weights, **self.options)

    def extra_repr(self) -> str:
        return ", ".join(f"{key}={value!r}" for key, value in self.options.items())
