"""GenerativeAttentionHead: the GKD paper's attention-map generator as an nn.Module."""
from __future__ import annotations

from typing import Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn

from .op import attention_head_tail


class GenerativeAttentionHead(nn.Module):
    """lambda (N, C, T) in (0, 1) from a feature (N, C, T, H, W) (docs/ops.md 3b).

    Y = ReLU(GN(Conv3d(F; C -> C1, kernel (1, H, W)))) is the first block; the tail
    (upsample to L, Conv1d k=3, GN, ReLU, Linear L -> T, sigmoid) runs in the exact
    compact form with ``fused=True`` (:func:`attention_head_tail`) or as the plain torch
    layers with ``fused=False``; the layers are real modules either way, so the
    state_dicts are the same and the two modes agree to float rounding.
    hidden_channels C1 defaults to C // 2, upsample_length L to C (the paper's choice).
    """

    def __init__(self, in_channels: int, time_steps: int, spatial_size: Union[int, Sequence[int]],
                 hidden_channels: Optional[int] = None, upsample_length: Optional[int] = None, gn_groups: int = 32,
                 fused: bool = True, eps: float = 1e-5):
        super().__init__()
        H, W = (spatial_size, spatial_size) if isinstance(spatial_size, int) else tuple(spatial_size)
        C1 = hidden_channels or max(1, in_channels // 2)
        L = upsample_length or in_channels
        for name, value in (("in_channels", in_channels), ("hidden_channels", C1)):
            if value % gn_groups:
                raise ValueError(f"gn_groups={gn_groups} must divide {name}={value}")
        self.time_steps, self.spatial_size, self.upsample_length, self.fused = time_steps, (H, W), L, fused
        self.conv3d = nn.Conv3d(in_channels, C1, kernel_size=(1, H, W))
        self.gn1 = nn.GroupNorm(gn_groups, C1, eps=eps)
        self.conv1d = nn.Conv1d(C1, in_channels, kernel_size=3, padding=1)
        self.gn2 = nn.GroupNorm(gn_groups, in_channels, eps=eps)
        self.linear = nn.Linear(L, time_steps)

    def first_block(self, features: torch.Tensor) -> torch.Tensor:
        """Y (N, C1, T)."""
        if features.dim() != 5 or tuple(features.shape[2:]) != (self.time_steps,) + self.spatial_size:
            raise ValueError(f"features must be (N, C, {self.time_steps}, {self.spatial_size[0]}, "
                             f"{self.spatial_size[1]}), got {tuple(features.shape)}")
        return F.relu(self.gn1(self.conv3d(features))).flatten(2)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        y = self.first_block(features)
        if not self.fused:
            u = F.interpolate(y, size=self.upsample_length, mode="nearest")
            return torch.sigmoid(self.linear(F.relu(self.gn2(self.conv1d(u)))))
        params = (self.conv1d.weight, self.conv1d.bias, self.gn2.weight, self.gn2.bias, self.linear.weight,
                  self.linear.bias)
        device = y.device.type
        if torch.is_autocast_enabled(device):  # as the layers would run: in autocast's dtype (the
            dtype = torch.get_autocast_dtype(device)  # op then computes in float32, rounds once)
            y, params = y.to(dtype), tuple(None if p is None else p.to(dtype) for p in params)
        conv_weight, conv_bias, gn_weight, gn_bias, linear_weight, linear_bias = params
        return attention_head_tail(y, conv_weight, conv_bias, gn_weight, gn_bias, self.gn2.num_groups,
                                   linear_weight, linear_bias, upsample_length=self.upsample_length,
                                   eps=self.gn2.eps)

    def extra_repr(self) -> str:
        return f"upsample_length={self.upsample_length}, fused={self.fused}"
