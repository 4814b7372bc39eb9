"""GKD (generative feature distillation; docs/methods.md, method A) in one public module:
everything a training loop needs to run the method on its own networks.

* :class:`GenerativeAttentionHead` (lambda (N, C, T) from F (N, C, T, H, W); its tail
  :func:`attention_head_tail` in exact compact form) and :func:`attention_apply`
  (F_fg = F * lambda * sum(F) / sum(F * lambda)): the fused ops of docs/ops.md 3b;
* :class:`ConditionalVAE`, which generates F from lambda, and the losses
  :func:`cvae_loss`, :func:`generative_distillation_loss` (L_GD),
  :func:`attention_distillation_loss` (L_AD); :func:`group_count` for GroupNorm widths.

The reference trainer's ``GKDNet`` (vkd_kernels/train/models/gkd_net.py) is built from
these. ``vkd_kernels.methods.gkd`` is the former name of the CVAE part (an alias).

Each network (teacher and student) carries, on its last feature stage F (N, C, T, H, W),
an attention head giving lambda (N, C, T) and a :class:`ConditionalVAE`:

    encoder   h  = ReLU(GN(Conv3d(F; C -> C, kernel (1, H, W))))           (N, C, T)
              [mu, log s2] = MLP_{2C -> C -> C -> 2C}([h, lambda])          per time step
    sample    z  = mu + e * exp(log s2 / 2),  e ~ N(0, I)
    decoder   F_hat = ReLU(GN(ConvTranspose3d(MLP_{2C -> C -> C -> C}([z, lambda]); (1, H, W))))
    prior     p(z | lambda) = N(lambda, I): at inference z = e + lambda

    L_cvae = mean((F - F_hat)^2) + kl_weight * mean(-0.5 (1 + log s2 - (mu - lambda)^2 - s2))

The losses of the distillation, all plain means so they are independent of the shapes:
L_GD (generative distillation) = mean((F_hat_s - F_hat_t)^2) with both CVAEs fed the
student's (F_s, lambda_s); L_AD (attention distillation) = mean((lambda_s - lambda_t)^2);
L_rec = mean((Dec(e + lambda, lambda) - F)^2).

Departures from the published code, on purpose: group-norm group counts are the largest
divisor of C that is <= gn_groups (the code hard-codes 32, which fails for C not a multiple
of 32). The MLPs put a ReLU between layers and none after the last, so mu, log s2 and
the decoder's pre-activation are unconstrained (our reading of docs/methods.md).
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import nn
from torch.nn import functional as F

from .attention import GenerativeAttentionHead, attention_apply, attention_head_tail

__all__ = ["GenerativeAttentionHead", "attention_head_tail", "attention_apply", "ConditionalVAE", "cvae_loss",
           "generative_distillation_loss", "attention_distillation_loss", "group_count"]


def group_count(channels: int, gn_groups: int) -> int:
    """The largest divisor of ``channels`` that is <= ``gn_groups`` (GroupNorm needs a divisor)."""
    if channels < 1 or gn_groups < 1:
        raise ValueError(f"channels and gn_groups must be >= 1, got {channels} and {gn_groups}")
    return max(g for g in range(1, min(channels, gn_groups) + 1) if channels % g == 0)


def _mlp(widths) -> nn.Sequential:
    layers = []
    for i, (width_in, width_out) in enumerate(zip(widths[:-1], widths[1:])):
        layers.append(nn.Linear(width_in, width_out))
        if i < len(widths) - 2:
            layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class ConditionalVAE(nn.Module):
    """The GKD conditional VAE of one network's feature F (N, C, T, H, W), conditioned on
    the attention map lambda (N, C, T). ``spatial_size`` = (H, W) of F."""

    def __init__(self, channels: int, spatial_size: Tuple[int, int], gn_groups: int = 32):
        super().__init__()
        if isinstance(spatial_size, int):
            spatial_size = (spatial_size, spatial_size)
        if len(spatial_size) != 2 or min(spatial_size) < 1:
            raise ValueError(f"spatial_size must be (H, W) with H, W >= 1, got {spatial_size!r}")
        if channels < 1:
            raise ValueError(f"channels must be >= 1, got {channels}")
        self.channels, self.spatial_size = channels, tuple(spatial_size)
        groups = group_count(channels, gn_groups)
        kernel = (1,) + self.spatial_size
        self.encoder_conv = nn.Conv3d(channels, channels, kernel)
        self.encoder_norm = nn.GroupNorm(groups, channels)
        self.encoder_mlp = _mlp((2 * channels, channels, channels, 2 * channels))
        self.decoder_mlp = _mlp((2 * channels, channels, channels, channels))
        self.decoder_conv = nn.ConvTranspose3d(channels, channels, kernel)
        self.decoder_norm = nn.GroupNorm(groups, channels)

    def _check(self, feature: Optional[torch.Tensor], lam: torch.Tensor) -> None:
        if lam.dim() != 3 or lam.shape[1] != self.channels:
            raise ValueError(f"lam must be (N, {self.channels}, T), got {tuple(lam.shape)}")
        if feature is not None:
            expected = (lam.shape[0], self.channels, lam.shape[2]) + self.spatial_size
            if tuple(feature.shape) != expected:
                raise ValueError(f"feature must have shape {expected} (N, C, T, H, W) to match lam "
                                 f"{tuple(lam.shape)}, got {tuple(feature.shape)}")

    def encode(self, feature: torch.Tensor, lam: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """(mu, log s2), each (N, C, T)."""
        self._check(feature, lam)
        h = F.relu(self.encoder_norm(self.encoder_conv(feature).flatten(2)))          # (N, C, T)
        stats = self.encoder_mlp(torch.cat([h, lam], 1).transpose(1, 2))              # (N, T, 2C)
        mu, logvar = stats.transpose(1, 2).chunk(2, dim=1)
        return mu, logvar

    def decode(self, z: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
        """F_hat (N, C, T, H, W) from z, lambda (N, C, T)."""
        self._check(None, lam)
        h = self.decoder_mlp(torch.cat([z, lam], 1).transpose(1, 2)).transpose(1, 2)  # (N, C, T)
        out = self.decoder_conv(h.unsqueeze(-1).unsqueeze(-1))                       # (N, C, T, H, W)
        return F.relu(self.decoder_norm(out))

    def forward(self, feature: torch.Tensor, lam: torch.Tensor,
                noise: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(F_hat, mu, log s2): reconstruct ``feature`` through the posterior sample."""
        mu, logvar = self.encode(feature, lam)
        noise = torch.randn_like(mu) if noise is None else noise
        return self.decode(mu + noise * torch.exp(0.5 * logvar), lam), mu, logvar

    def generate(self, lam: torch.Tensor, noise: Optional[torch.Tensor] = None) -> torch.Tensor:
        """F_hat from the prior N(lambda, I): Dec(e + lambda, lambda)."""
        noise = torch.randn_like(lam) if noise is None else noise
        return self.decode(noise + lam, lam)


def cvae_loss(feature: torch.Tensor, reconstruction: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor,
              lam: torch.Tensor, kl_weight: float = 0.1) -> torch.Tensor:
    """mean((F - F_hat)^2) + kl_weight * mean(KL(N(mu, s2) || N(lambda, I)))."""
    kl = -0.5 * (1 + logvar - (mu - lam) ** 2 - logvar.exp())
    return F.mse_loss(reconstruction, feature) + kl_weight * kl.mean()


def generative_distillation_loss(generated_student: torch.Tensor, generated_teacher: torch.Tensor) -> torch.Tensor:
    """L_GD = mean((F_hat_s - F_hat_t)^2); both generated from the student's (F_s, lambda_s)."""
    return F.mse_loss(generated_student, generated_teacher)


def attention_distillation_loss(lam_student: torch.Tensor, lam_teacher: torch.Tensor) -> torch.Tensor:
    """L_AD = mean((lambda_s - lambda_t)^2)."""
    if lam_student.shape != lam_teacher.shape:
        raise ValueError(f"lam_teacher has shape {tuple(lam_teacher.shape)} but lam_student has shape "
                         f"{tuple(lam_student.shape)}; give the student an adapter to the teacher's width")
    return F.mse_loss(lam_student, lam_teacher)
