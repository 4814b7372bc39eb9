"""Numeric conventions every op shares: the accumulation dtype and a NaN-free sqrt."""
from __future__ import annotations

import torch


def accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype the kernels accumulate (and write partial sums and maps) in: float64 for
    float64 inputs, float32 for every other float dtype."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def safe_sqrt(value: torch.Tensor) -> torch.Tensor:
    """sqrt(value) for value >= 0, with value 0 and gradient 0 (not the NaN/inf of
    torch.sqrt's gradient) where value <= 0."""
    positive = value > 0
    return torch.where(positive, torch.sqrt(torch.where(positive, value, torch.ones_like(value))), 0.0)
