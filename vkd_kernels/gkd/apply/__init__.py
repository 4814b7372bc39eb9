"""attention_apply (docs/ops.md 3b): F_fg = F * lam * sum(F) / sum(F * lam), fused."""
from .module import AttentionApply
from .op import attention_apply
from .reference import attention_apply_reference

__all__ = ["attention_apply", "attention_apply_reference", "AttentionApply"]
