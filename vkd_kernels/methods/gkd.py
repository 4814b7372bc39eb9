"""Former home of GKD's conditional VAE and losses, kept as an alias: use :mod:`vkd_kernels.gkd`."""
from ..gkd import (  # noqa: F401
    ConditionalVAE,
    attention_distillation_loss,
    cvae_loss,
    generative_distillation_loss,
    group_count,
)

__all__ = ["ConditionalVAE", "cvae_loss", "generative_distillation_loss", "attention_distillation_loss",
           "group_count"]
