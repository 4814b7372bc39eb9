"""The CPU C++ and CUDA C++ backends of attention_apply's passes: calls into vkd_kernels._C
with pointers and strides (same interface as triton_kernels)."""
from __future__ import annotations

import torch

from ... import _ext

_NO_STRIDES = (0, 0, 0, 0)


def _apply_rows(pass_: int, shape, B: int, dtype, x=None, y=None, rows=None, lam=None, sums=None, bsums=None, m=None,
                q=None, dlam=None, out=None, scale: float = 1.0) -> None:
    device = next(t for t in (x, rows, lam) if t is not None).device
    strides = [tuple(t.stride()) if t is not None else _NO_STRIDES for t in (x, y, out)]
    _ext.EXT.apply_rows(_ext.device_arg(device), pass_, *shape, B, _ext.dtype_code(dtype), _ext.ptr(x), strides[0],
                        _ext.ptr(y), strides[1], _ext.ptr(rows), _ext.ptr(lam), _ext.ptr(sums), _ext.ptr(bsums),
                        _ext.ptr(m), _ext.ptr(q), _ext.ptr(dlam), _ext.ptr(out), strides[2], scale,
                        _ext.stream(device))


def reduce(x: torch.Tensor, y, rows: torch.Tensor) -> None:
    """Writes rows (N C T,) = sum_s x (y None) or sum_s x y for x, y (N, C, T, S) strided."""
    _apply_rows(0, x.shape, 1, x.dtype, x=x, y=y, rows=rows)


def finish(v: torch.Tensor, lam: torch.Tensor, sums: torch.Tensor) -> None:
    """Writes sums (B, 2) = (sum v, sum lam v) per group of R / B rows (v, lam (R,) contiguous)."""
    _apply_rows(1, (1, 1, lam.numel(), 1), sums.shape[0], lam.dtype, rows=v, lam=lam, sums=sums)


def affine(x: torch.Tensor, lam: torch.Tensor, sums: torch.Tensor, out, backward=None, scale: float = 1.0) -> None:
    """Forward (backward None): out = scale x k lam. Backward, backward = (bsums, m, q, dlam):
    out = scale (x k lam + (G / s2)(1 - k lam)) (skipped when out is None) and dlam (times scale)."""
    bsums, m, q, dlam = backward if backward is not None else (None,) * 4
    _apply_rows(2, x.shape, sums.shape[0], x.dtype, x=x, lam=lam, sums=sums, bsums=bsums, m=m, q=q, dlam=dlam,
                out=out, scale=scale)
