"""Eager reference of the GKD head's tail: the plain torch layers (the oracle and the
``backend="reference"`` path), building the (N, C, L) tensors."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def tail_reference(y, conv_weight, conv_bias, gn_weight, gn_bias, gn_groups, linear_weight, linear_bias,
                   upsample_length, eps):
    """The plain layers: builds the (N, C, L) tensors (the oracle)."""
    u = F.interpolate(y, size=upsample_length, mode="nearest")
    h = F.relu(F.group_norm(F.conv1d(u, conv_weight, conv_bias, padding=1), gn_groups, gn_weight, gn_bias, eps))
    return torch.sigmoid(F.linear(h, linear_weight, linear_bias))
