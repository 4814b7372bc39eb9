"""Temporal spectrum loss (docs/ops.md section 1)."""
from .module import TemporalSpectrumLoss
from .op import temporal_spectrum_loss

__all__ = ["temporal_spectrum_loss", "TemporalSpectrumLoss"]
