"""GKD's conditional VAE of one network's feature, conditioned on its attention map
(the architecture is in the vkd_kernels.gkd docstring and docs/methods.md, method A)."""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import nn
from torch.nn import functional as F


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
