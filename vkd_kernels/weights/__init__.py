"""Weight-spectrum distance (docs/ops.md section 2): parameter distribution distillation."""
from .module import WeightSpectrumLoss, conv_weight_groups
from .op import weight_spectrum, weight_spectrum_distance

__all__ = ["conv_weight_groups", "weight_spectrum", "weight_spectrum_distance", "WeightSpectrumLoss"]
