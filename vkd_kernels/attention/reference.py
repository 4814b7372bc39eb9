"""Eager PyTorch reference of the attention maps (the oracle and the fallback), written
the way a user would: x.pow(p).mean over channels, then the shared tiny pass."""
from __future__ import annotations

import torch

from .layout import accumulation_dtype


def raw_map_reference(x: torch.Tensor, p: float, channel_dim: int) -> torch.Tensor:
    """mean_c |x|^p (N, *map), in float32 for float16/bfloat16 inputs."""
    x = x.to(accumulation_dtype(x.dtype))
    return (x.square() if p == 2 else x.abs().pow(p)).mean(channel_dim)
