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
