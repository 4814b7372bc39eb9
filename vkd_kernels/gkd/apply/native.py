"""The CPU C++ and CUDA C++ backends of attention_apply's row passes: calls into
vkd_kernels._C with pointers and strides (same interface as triton_kernels)."""
from __future__ import annotations

import torch

from ... import _ext


def _apply_rows(affine: bool, x, y, rows, a, b, out) -> None:
    N, C, T, S = x.shape
    strides = [tuple(t.stride()) if t is not None else (0, 0, 0, 0) for t in (x, y, out)]
    _ext.EXT.apply_rows(_ext.device_arg(x.device), affine, N, C, T, S, _ext.dtype_code(x.dtype), _ext.ptr(x),
                        strides[0], _ext.ptr(y), strides[1], _ext.ptr(rows), _ext.ptr(a), _ext.ptr(b), _ext.ptr(out),
                        strides[2], _ext.stream(x.device))


def reduce(x: torch.Tensor, y, rows: torch.Tensor) -> None:
    """Writes rows (N C T,) = sum_s x (y None) or sum_s x y for x, y (N, C, T, S) strided."""
    _apply_rows(False, x, y, rows, None, None, None)


def affine(x: torch.Tensor, a: torch.Tensor, b, out: torch.Tensor) -> None:
    """Writes out = x a[row] + b[row] (b None: 0) for x, out (N, C, T, S) strided."""
    _apply_rows(True, x, None, None, a, b, out)
