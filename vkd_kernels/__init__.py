"""vkd-kernels: fused loss kernels for knowledge distillation of video models.

Every op has a Triton kernel (the default on CUDA), a CUDA C++ and a CPU C++ kernel
(``vkd_kernels._C``) and an eager reference; pick one with ``backend=`` or the
``VKD_BACKEND`` environment variable.
"""
from . import gkd  # GKD's head, apply, CVAE and losses in one package (vkd_kernels.gkd)
from ._backend import BACKENDS
from ._ext import EXT_ERROR
from .attention import AttentionTransferLoss, attention_map, attention_transfer_loss
from .gkd import AttentionApply, GenerativeAttentionHead, attention_apply, attention_head_tail
from .spectrum import TemporalSpectrumLoss, temporal_spectrum_loss
from .weights import WeightSpectrumLoss, conv_weight_groups, weight_spectrum, weight_spectrum_distance

__version__ = "0.1.0"   # the one definition: pyproject.toml reads it (dynamic version)
__all__ = ["BACKENDS", "EXT_ERROR", "TemporalSpectrumLoss", "temporal_spectrum_loss",
           "attention_map", "attention_transfer_loss", "AttentionTransferLoss", "attention_head_tail",
           "attention_apply", "AttentionApply", "GenerativeAttentionHead",
           "WeightSpectrumLoss", "conv_weight_groups", "weight_spectrum", "weight_spectrum_distance", "gkd"]
