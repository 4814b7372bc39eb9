"""Attention-transfer maps and loss (docs/ops.md section 3a).

The GKD head and attention_apply live in :mod:`vkd_kernels.gkd`; their names are
re-exported here too, where they used to live."""
from ..gkd import GenerativeAttentionHead, attention_apply, attention_head_tail
from .module import AttentionTransferLoss
from .op import attention_map, attention_transfer_loss

__all__ = ["attention_map", "attention_transfer_loss", "AttentionTransferLoss", "attention_head_tail",
           "attention_apply", "GenerativeAttentionHead"]
