"""The CPU C++ and CUDA C++ backends of attention transfer: calls into vkd_kernels._C with
pointers and strides (same interface as triton_kernels)."""
from __future__ import annotations

import torch

from .. import _ext


def splits(x: torch.Tensor) -> int:
    """K, the channel splits of the map launch of x (N, C, P) (the CPU: 1; CUDA: csrc/cuda/attention.cu)."""
    return _ext.EXT.attention_map_splits(_ext.device_arg(x.device), *x.shape)


def forward(x: torch.Tensor, p: float, parts: torch.Tensor) -> None:
    """Writes parts (N, K, P) with sum_k parts[:, k] = mean_c |x|^p for x (N, C, P) strided."""
    N, C, P = x.shape
    _ext.EXT.attention_map_forward(_ext.device_arg(x.device), N, C, P, p, _ext.dtype_code(x.dtype),
                                   _ext.ptr(x), tuple(x.stride()), _ext.ptr(parts), (parts.stride()[0], 1),
                                   _ext.stream(x.device))


def backward(x: torch.Tensor, grad: torch.Tensor, p: float, dx: torch.Tensor) -> None:
    """Writes dx (N, C, P) = p |x|^(p-1) sign(x) grad[n, p] / C (grad in the accumulation dtype)."""
    N, C, P = x.shape
    _ext.EXT.attention_map_backward(_ext.device_arg(x.device), N, C, P, p, _ext.dtype_code(x.dtype),
                                    _ext.ptr(x), tuple(x.stride()), _ext.ptr(grad), tuple(grad.stride()),
                                    _ext.ptr(dx), tuple(dx.stride()), _ext.stream(x.device))


def _finish(backward: bool, geometry, parts_s, parts_t, out=None, grad=None, da_s=None, da_t=None) -> None:
    *sizes, scale = geometry.launch_args(parts_s, parts_t)
    N, g = parts_s.shape[0], None
    scratch = [parts_s.new_empty((N, geometry.Q)) if backward and pooled else None
               for pooled in (geometry.pooled_s, geometry.pooled_t and da_t is not None)]
    if grad is not None:
        g = grad.reshape(N, -1)
    _ext.EXT.attention_transfer(_ext.device_arg(parts_s.device), backward, N, tuple(sizes), scale, geometry.l2,
                                geometry.none, parts_s.dtype == torch.float64, _ext.ptr(parts_s), _ext.ptr(parts_t),
                                _ext.ptr(out), _ext.ptr(g), g.stride(0) if g is not None else 0,
                                g.stride(1) if g is not None else 0, _ext.ptr(da_s), _ext.ptr(da_t),
                                _ext.ptr(scratch[0]), _ext.ptr(scratch[1]), _ext.stream(parts_s.device))


def finish_forward(geometry, parts_s, parts_t, out) -> None:
    """The per-sample loss terms (or d^2) into out; the raw maps into parts[:, 0] (layout.Geometry)."""
    _finish(False, geometry, parts_s, parts_t, out=out)


def finish_backward(geometry, parts_s, parts_t, grad, da_s, da_t) -> None:
    """dL/da_s (and dL/da_t when da_t is given) from the raw maps parts[:, 0] and grad."""
    _finish(True, geometry, parts_s, parts_t, grad=grad, da_s=da_s, da_t=da_t)
