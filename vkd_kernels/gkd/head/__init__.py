"""The GKD generative attention head (docs/ops.md 3b): lambda (N, C, T) from a feature,
its tail in exact compact form with a fused weighted GroupNorm + ReLU."""
from .layout import column_classes
from .module import GenerativeAttentionHead
from .op import attention_head_tail
from .reference import tail_reference

__all__ = ["attention_head_tail", "tail_reference", "column_classes", "GenerativeAttentionHead"]
