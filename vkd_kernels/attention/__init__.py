"""Attention maps (docs/ops.md section 3): attention transfer and the GKD attention head."""
from .apply import attention_apply
from .head import attention_head_tail
from .loss import AttentionTransferLoss
from .module import GenerativeAttentionHead
from .op import attention_map, attention_transfer_loss

__all__ = ["attention_map", "attention_transfer_loss", "AttentionTransferLoss", "attention_head_tail",
           "attention_apply", "GenerativeAttentionHead"]
