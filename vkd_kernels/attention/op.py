"""Attention-transfer maps and loss (docs/ops.md 3a): public functions, torch.library ops, autograd.

The fused part is the one that touches the features: ``vkd::attention_raw_map``
reads each feature once and writes a[n, p] = mean_c |x[n, c, p]|^p; its backward
reads the feature once more and writes dx = p |x|^(p-1) sign(x) dL/da / C. Both are
custom ops (opaque single nodes under torch.compile). Pooling, normalisation,
difference and reduction run on the C-times-smaller maps (reference.py), where autograd
yields dL/da exactly. Nothing of feature size is kept for backward but the inputs.
"""
from __future__ import annotations

import torch

from .. import _backend
from .._checks import check_choice, finite_check_enabled, new_output, raise_if_not_finite
from .._math import accumulation_dtype
from .layout import MODES, check_exponent, check_feature, check_transfer, map_shape, view_ncp
from .reference import normalize, raw_map_reference, transfer_distance


@torch.library.custom_op("vkd::attention_raw_map", mutates_args=())
def _raw_map_op(x: torch.Tensor, p: float, channel_dim: int, backend: str, name: str) -> torch.Tensor:
    with _backend.device_guard(x.device):
        x3 = view_ncp(x, channel_dim)
        a = new_output((x3.shape[0], x3.shape[2]), accumulation_dtype(x.dtype), x.device)
        _backend.kernels(__package__, backend).forward(x3, p, a)
        if finite_check_enabled(x.device):
            raise_if_not_finite(a, **{name: x})
        return a.view(map_shape(x, channel_dim))


@_raw_map_op.register_fake
def _(x, p, channel_dim, backend, name):
    return x.new_empty(map_shape(x, channel_dim), dtype=accumulation_dtype(x.dtype))


@torch.library.custom_op("vkd::attention_raw_map_backward", mutates_args=())
def _raw_map_backward_op(grad: torch.Tensor, x: torch.Tensor, p: float, channel_dim: int,
                         backend: str) -> torch.Tensor:
    with _backend.device_guard(x.device):
        x3 = view_ncp(x, channel_dim)
        dx = new_output(x3.shape, x.dtype, x.device)
        g = grad.to(accumulation_dtype(x.dtype)).reshape(x3.shape[0], x3.shape[2])
        _backend.kernels(__package__, backend).backward(x3, g, p, dx)
        moved = x.movedim(channel_dim, 1).shape
        return dx.view(moved).movedim(1, channel_dim)


@_raw_map_backward_op.register_fake
def _(grad, x, p, channel_dim, backend):
    return torch.empty_like(x)


def _setup_context(ctx, inputs, output):
    x, *options = inputs
    ctx.save_for_backward(x)
    ctx.options = options


def _autograd_backward(ctx, grad):
    (x,) = ctx.saved_tensors
    return _raw_map_backward_op(grad, x, *ctx.options[:3]), None, None, None, None


_raw_map_op.register_autograd(_autograd_backward, setup_context=_setup_context)


def raw_map(x: torch.Tensor, p: float, channel_dim: int, backend: str, name: str = "x") -> torch.Tensor:
    """mean_c |x|^p as (N, *map) in the accumulation dtype, on the resolved backend
    (``name``: the argument named by a NaN/inf error)."""
    chosen = _backend.resolve("attention_map", backend, x.device)
    if chosen == "reference":
        return raw_map_reference(x, p, channel_dim)
    return _raw_map_op(x, p, channel_dim, chosen, name)


def attention_map(x: torch.Tensor, p: float = 2, *, channel_dim: int = 1, mode: str = "spatiotemporal",
                  backend: str = "auto") -> torch.Tensor:
    """Attention-transfer map of a feature (docs/ops.md 3a).

    x: (N, C, *map), e.g. (N, C, T, H, W), channel axis at ``channel_dim``.
    Returns (N, *map) = a / max(||a||_2, 1e-12) with a = mean_c |x|^p, the norm taken
    over all map axes per sample (``mode="spatiotemporal"``) or over the axes after T
    per (sample, frame) (``"per_frame"``), in x's dtype.
    """
    check_choice("mode", mode, MODES)
    axis = check_feature("x", x, channel_dim, mode)
    return normalize(raw_map(x, check_exponent(p), axis, backend), mode).to(x.dtype)


def attention_transfer_loss(fs: torch.Tensor, ft: torch.Tensor, *, p: float = 2, channel_dim: int = 1,
                            mode: str = "spatiotemporal", distance: str = "mse", reduction: str = "mean",
                            backend: str = "auto") -> torch.Tensor:
    """Attention-transfer loss between student fs (N, Cs, *map_s) and teacher ft (N, Ct, *map_t).

    Cs and Ct may differ; where the map sizes differ, each axis of the larger map is
    adaptive-average-pooled to the smaller. Maps are normalised as in
    :func:`attention_map`, then ``distance="mse"``: (a_s - a_t)^2 per map element
    (reduction "mean" = the common code convention), or ``"l2"``: the per-sample L2
    norm ||a_s - a_t|| (reduction "mean" = averaged over the batch, the paper's form).
    ``reduction="none"`` returns the per-element (mse) or per-sample (l2) values.
    Gradients reach ft too when it requires grad.
    """
    cs, ct = check_transfer(fs, ft, channel_dim, mode, distance, reduction)
    p = check_exponent(p)
    a_s, a_t = raw_map(fs, p, cs, backend, "fs"), raw_map(ft, p, ct, backend, "ft")
    loss = transfer_distance(a_s, a_t, mode, distance, reduction)
    return loss.to(fs.dtype)
