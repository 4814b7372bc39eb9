"""The CPU C++ and CUDA C++ backends of the temporal spectrum loss: calls into
vkd_kernels._C with pointers and strides (same interface as triton_kernels)."""
from __future__ import annotations

from typing import Optional

import torch

from .. import _ext
from .._checks import new_output
from .layout import SpectrumProblem, accumulation_dtype, view_strides


def _problem(pr: SpectrumProblem, w: torch.Tensor) -> dict:
    """The binding's problem dict; w (K,) contiguous in the accumulation dtype."""
    return dict(B=pr.B, T=pr.T, S=pr.S, P=pr.P, mode=pr.mode, eps=pr.eps, weights=_ext.ptr(w))


def forward(pr: SpectrumProblem, xs: torch.Tensor, xt: torch.Tensor, w: torch.Tensor,
            d: Optional[torch.Tensor], sum_scale: float = 1.0) -> Optional[torch.Tensor]:
    """Writes d (B, K, G) if given; else returns the partial sums of d times sum_scale."""
    device = xs.device
    partials = None
    if d is None:
        count = _ext.EXT.spectrum_num_partials(_ext.device_arg(device), _problem(pr, w), _ext.dtype_code(xs.dtype))
        partials = new_output((count,), accumulation_dtype(xs.dtype), device)
    _ext.EXT.spectrum_forward(
        _ext.device_arg(device), _problem(pr, w), _ext.dtype_code(xs.dtype), pr.scale, _ext.ptr(xs),
        view_strides(xs), _ext.ptr(xt), view_strides(xt), _ext.ptr(d), view_strides(d), _ext.ptr(partials),
        0 if partials is None else partials.numel(), sum_scale, _ext.stream(device))
    return partials


def backward(pr: SpectrumProblem, xs: torch.Tensor, xt: torch.Tensor, w: torch.Tensor,
             grad: torch.Tensor, grad_scale: float, dxs: Optional[torch.Tensor],
             dxt: Optional[torch.Tensor]) -> None:
    """Writes the gradients dxs, dxt (B, T, S) where not None."""
    device = xs.device
    _ext.EXT.spectrum_backward(
        _ext.device_arg(device), _problem(pr, w), _ext.dtype_code(xs.dtype), pr.scale, _ext.ptr(xs),
        view_strides(xs), _ext.ptr(xt), view_strides(xt), _ext.ptr(grad), view_strides(grad), grad_scale,
        _ext.ptr(dxs), view_strides(dxs), _ext.ptr(dxt), view_strides(dxt), _ext.stream(device))
