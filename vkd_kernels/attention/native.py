"""The CPU C++ and CUDA C++ backends of the attention raw map: calls into
vkd_kernels._C with pointers and strides (same interface as triton_kernels)."""
from __future__ import annotations

import torch

from .. import _ext


def forward(x: torch.Tensor, p: float, a: torch.Tensor) -> None:
    """Writes a (N, P) = mean_c |x|^p for x (N, C, P) strided."""
    N, C, P = x.shape
    _ext.EXT.attention_map_forward(_ext.device_arg(x.device), N, C, P, p, _ext.dtype_code(x.dtype),
                                   _ext.ptr(x), tuple(x.stride()), _ext.ptr(a), tuple(a.stride()),
                                   _ext.stream(x.device))


def backward(x: torch.Tensor, grad: torch.Tensor, p: float, dx: torch.Tensor) -> None:
    """Writes dx (N, C, P) = p |x|^(p-1) sign(x) grad[n, p] / C (grad in the accumulation dtype)."""
    N, C, P = x.shape
    _ext.EXT.attention_map_backward(_ext.device_arg(x.device), N, C, P, p, _ext.dtype_code(x.dtype),
                                    _ext.ptr(x), tuple(x.stride()), _ext.ptr(grad), tuple(grad.stride()),
                                    _ext.ptr(dx), tuple(dx.stride()), _ext.stream(x.device))


def head_norm_forward(Z, w, gamma, beta, groups: int, M: float, eps: float, H, stats) -> None:
    """Weighted GroupNorm + ReLU of the head's compact tail: writes H (N, J, C) and stats (N, G, 2)."""
    N, J, C = Z.shape
    _ext.EXT.head_norm(_ext.device_arg(Z.device), False, N, J, C, groups, M, eps, _ext.dtype_code(Z.dtype),
                       _ext.ptr(Z), _ext.ptr(w), _ext.ptr(gamma), _ext.ptr(beta), _ext.ptr(H), _ext.ptr(stats),
                       0, 0, 0, 0, _ext.stream(Z.device))


def head_norm_backward(Z, w, gamma, beta, stats, dH, groups: int, M: float, dZ, dgamma, dbeta) -> None:
    """Writes dZ (N, J, C) and the per-sample partial sums dgamma, dbeta (N, C)."""
    N, J, C = Z.shape
    _ext.EXT.head_norm(_ext.device_arg(Z.device), True, N, J, C, groups, M, 1.0, _ext.dtype_code(Z.dtype),
                       _ext.ptr(Z), _ext.ptr(w), _ext.ptr(gamma), _ext.ptr(beta), 0, _ext.ptr(stats), _ext.ptr(dH),
                       _ext.ptr(dZ), _ext.ptr(dgamma), _ext.ptr(dbeta), _ext.stream(Z.device))


def _apply_rows(affine: bool, x, y, rows, a, b, out) -> None:
    N, C, T, S = x.shape
    strides = [tuple(t.stride()) if t is not None else (0, 0, 0, 0) for t in (x, y, out)]
    _ext.EXT.apply_rows(_ext.device_arg(x.device), affine, N, C, T, S, _ext.dtype_code(x.dtype), _ext.ptr(x),
                        strides[0], _ext.ptr(y), strides[1], _ext.ptr(rows), _ext.ptr(a), _ext.ptr(b), _ext.ptr(out),
                        strides[2], _ext.stream(x.device))


def apply_reduce(x: torch.Tensor, y, rows: torch.Tensor) -> None:
    """Writes rows (N C T,) = sum_s x (y None) or sum_s x y for x, y (N, C, T, S) strided."""
    _apply_rows(False, x, y, rows, None, None, None)


def apply_affine(x: torch.Tensor, a: torch.Tensor, b, out: torch.Tensor) -> None:
    """Writes out = x a[row] + b[row] (b None: 0) for x, out (N, C, T, S) strided."""
    _apply_rows(True, x, None, None, a, b, out)
