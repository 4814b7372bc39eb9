"""Argument checks shared by every op: each error names the offending argument."""
from __future__ import annotations

import os
from typing import Iterable

import torch

FLOAT_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


def check_choice(name: str, value, choices: Iterable) -> None:
    choices = tuple(choices)
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")


def check_float_tensor(name: str, value) -> None:
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if value.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must be float32, float64, float16 or bfloat16, got {value.dtype}")
    if value.numel() == 0:
        raise ValueError(f"{name} is empty (shape {tuple(value.shape)})")


def check_pair(first: str, a: torch.Tensor, second: str, b: torch.Tensor, same_shape: bool = True) -> None:
    """Both float tensors, same device and dtype (and shape if asked)."""
    check_float_tensor(first, a)
    check_float_tensor(second, b)
    if a.device != b.device:
        raise ValueError(f"{second} is on {b.device} but {first} is on {a.device}")
    if a.dtype != b.dtype:
        raise TypeError(f"{second} has dtype {b.dtype} but {first} has dtype {a.dtype}")
    if same_shape and a.shape != b.shape:
        raise ValueError(f"{second} has shape {tuple(b.shape)} but {first} has shape {tuple(a.shape)}")


def check_positive_number(name: str, value, allow_zero: bool = True) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    if not (value >= 0 if allow_zero else value > 0) or value != value or value == float("inf"):
        raise ValueError(f"{name} must be {'>= 0' if allow_zero else '> 0'} and finite, got {value}")


def finite_check_enabled(device: torch.device) -> bool:
    """Whether fused ops check their result for NaN/inf.

    On by default on the CPU (free); off on CUDA, where it would cost a device sync
    per call and where AMP's GradScaler relies on inf propagating. ``VKD_CHECK_FINITE``
    = 1 or 0 forces it on or off everywhere.
    """
    flag = os.environ.get("VKD_CHECK_FINITE")
    if flag is not None:
        return flag == "1"
    return device.type == "cpu"


def raise_if_not_finite(result: torch.Tensor, **inputs: torch.Tensor) -> None:
    """Raise a ValueError naming the input that made ``result`` non-finite."""
    if torch.isfinite(result).all():
        return
    for name, tensor in inputs.items():
        if tensor is not None and not torch.isfinite(tensor).all():
            raise ValueError(f"{name} contains NaN or inf values")
    raise ValueError(
        f"the result overflowed in {result.dtype} although the inputs are finite; "
        "compute in a wider dtype (float32) or rescale the inputs"
    )


def new_output(shape, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Allocation of every buffer a kernel writes. With ``VKD_POISON_OUTPUTS=1``
    (tests) it is filled with NaN, so an element a kernel forgets to write fails."""
    if os.environ.get("VKD_POISON_OUTPUTS") == "1":
        return torch.full(shape, float("nan"), dtype=dtype, device=device)
    return torch.empty(shape, dtype=dtype, device=device)
