"""The CPU C++ and CUDA C++ backends of the GKD head's weighted GroupNorm + ReLU: calls
into vkd_kernels._C with pointers (same interface as triton_kernels)."""
from __future__ import annotations

from ... import _ext


def forward(Z, w, gamma, beta, groups: int, M: float, eps: float, H, stats) -> None:
    """Weighted GroupNorm + ReLU of the head's compact tail: writes H (N, J, C) and stats (N, G, 2)."""
    N, J, C = Z.shape
    _ext.EXT.head_norm(_ext.device_arg(Z.device), False, N, J, C, groups, M, eps, _ext.dtype_code(Z.dtype),
                       _ext.ptr(Z), _ext.ptr(w), _ext.ptr(gamma), _ext.ptr(beta), _ext.ptr(H), _ext.ptr(stats),
                       0, 0, 0, 0, _ext.stream(Z.device))


def backward(Z, w, gamma, beta, stats, dH, groups: int, M: float, dZ, dgamma, dbeta) -> None:
    """Writes dZ (N, J, C) and the per-sample partial sums dgamma, dbeta (N, C)."""
    N, J, C = Z.shape
    _ext.EXT.head_norm(_ext.device_arg(Z.device), True, N, J, C, groups, M, 1.0, _ext.dtype_code(Z.dtype),
                       _ext.ptr(Z), _ext.ptr(w), _ext.ptr(gamma), _ext.ptr(beta), 0, _ext.ptr(stats), _ext.ptr(dH),
                       _ext.ptr(dZ), _ext.ptr(dgamma), _ext.ptr(dbeta), _ext.stream(Z.device))
