"""Temporal spectrum loss (docs/ops.md section 1)."""
from .loss import TemporalSpectrumLoss
from .op import temporal_spectrum_loss

__all__ = ["temporal_spectrum_loss", "TemporalSpectrumLoss"]
