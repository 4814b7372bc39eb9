"""Attention maps (ops.md section 3): attention transfer and the GKD attention head."""
from .loss import AttentionTransferLoss
from .op import attention_map, attention_transfer_loss

__all__ = ["attention_map", "attention_transfer_loss", "AttentionTransferLoss"]
