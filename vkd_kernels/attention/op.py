"""Attention-transfer maps and loss (docs/ops.md 3a): public functions, torch.library ops, autograd.

``vkd::attention_transfer`` is the whole loss in a fixed number of launches (2 + 1 +
the batch sum forward, 1 + 1 per gradient backward, whatever the options):

    forward   parts_s, parts_t = map(fs), map(ft)     one read of each feature; C split
                                                      over K programs (kernels.splits)
              per = finish(parts_s, parts_t)          per sample: the K partials added in
                                                      order (raw map a in parts[:, 0]),
                                                      pooling, normalisation, distance
              loss = per.sum() (mean / sum)           the per-sample terms, pre-scaled
    backward  da_s, da_t = finish_backward(a_s, a_t, g)   distance, normalisation and
                                                      pooling backward on the maps
              dx = p |x|^(p-1) sign(x) da / C         one read of x, one write of dx

Only the inputs that need a gradient and the (N, K, P) partial maps (K <= C / 64) are kept
for backward.
``vkd::attention_raw_map`` is the channel reduction alone, for :func:`attention_map`.
Every backend module (triton_kernels, native) offers ``splits``, ``forward``,
``backward``, ``finish_forward`` and ``finish_backward``; the math of the finish is
csrc/common/attention.h (and its Triton twin).
"""
from __future__ import annotations

import torch

from .. import _backend
from .._checks import check_choice, finite_check_enabled, new_output, raise_if_not_finite
from .._math import accumulation_dtype
from .._ops import custom_op
from .layout import MODES, Geometry, check_exponent, check_feature, check_transfer, map_shape, view_ncp
from .reference import normalize, raw_map_reference, transfer_distance


@custom_op("vkd::attention_raw_map")
def _raw_map_op(x: torch.Tensor, p: float, channel_dim: int, backend: str, name: str) -> torch.Tensor:
    with _backend.device_guard(x.device):
        x3 = view_ncp(x, channel_dim)
        kernels = _backend.kernels(__package__, backend)
        parts = new_output((x3.shape[0], kernels.splits(x3), x3.shape[2]),
                           accumulation_dtype(x.dtype), x.device)
        kernels.forward(x3, p, parts)
        a = parts[:, 0] if parts.shape[1] == 1 else parts.sum(1)
        if finite_check_enabled(x.device):
            raise_if_not_finite(a, **{name: x})
        return a.view(map_shape(x, channel_dim))


@_raw_map_op.register_fake
def _(x, p, channel_dim, backend, name):
    return x.new_empty(map_shape(x, channel_dim), dtype=accumulation_dtype(x.dtype))


def _map_backward(grad: torch.Tensor, x: torch.Tensor, p: float, channel_dim: int, backend: str) -> torch.Tensor:
    """dx = p |x|^(p-1) sign(x) grad / C with grad (N, P) in the accumulation dtype."""
    x3 = view_ncp(x, channel_dim)
    dx = new_output(x3.shape, x.dtype, x.device)
    _backend.kernels(__package__, backend).backward(x3, grad, p, dx)
    return dx.view(x.movedim(channel_dim, 1).shape).movedim(1, channel_dim)


@custom_op("vkd::attention_raw_map_backward")
def _raw_map_backward_op(grad: torch.Tensor, x: torch.Tensor, p: float, channel_dim: int,
                         backend: str) -> torch.Tensor:
    with _backend.device_guard(x.device):
        g = grad.to(accumulation_dtype(x.dtype)).reshape(x.shape[0], -1)
        return _map_backward(g, x, p, channel_dim, backend)


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


def _geometry(fs, ft, cs, ct, mode, distance, reduction) -> Geometry:
    return Geometry(fs.shape[0], map_shape(fs, cs)[1:], map_shape(ft, ct)[1:], mode, distance, reduction)


@custom_op("vkd::attention_transfer")
def _transfer_op(fs: torch.Tensor, ft: torch.Tensor, p: float, cs: int, ct: int, mode: str, distance: str,
                 reduction: str, backend: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(per-sample loss terms (N,) or d^2 (N, *size) for mse "none", parts_s, parts_t)."""
    with _backend.device_guard(fs.device):
        kernels = _backend.kernels(__package__, backend)
        geometry = _geometry(fs, ft, cs, ct, mode, distance, reduction)
        parts = []
        for x, axis in ((fs, cs), (ft, ct)):
            x3 = view_ncp(x, axis)
            part = new_output((x3.shape[0], kernels.splits(x3), x3.shape[2]),
                              accumulation_dtype(x.dtype), x.device)
            kernels.forward(x3, p, part)
            parts.append(part)
        per = new_output(geometry.out_shape(), accumulation_dtype(fs.dtype), fs.device)
        kernels.finish_forward(geometry, *parts, per)
        if finite_check_enabled(fs.device):  # NaN/inf in a feature reach its map, then every term
            raise_if_not_finite(per, fs=fs, ft=ft)
        return per, parts[0], parts[1]


@_transfer_op.register_fake
def _(fs, ft, p, cs, ct, mode, distance, reduction, backend):
    kernels = _backend.kernels(__package__, backend)
    geometry = _geometry(fs, ft, cs, ct, mode, distance, reduction)
    acc = accumulation_dtype(fs.dtype)
    parts = [x.new_empty((x.shape[0], kernels.splits(view_ncp(x, axis)), view_ncp(x, axis).shape[2]),
                         dtype=acc) for x, axis in ((fs, cs), (ft, ct))]
    return (fs.new_empty(geometry.out_shape(), dtype=acc), *parts)


@custom_op("vkd::attention_transfer_backward")
def _transfer_backward_op(grad: torch.Tensor, fs: torch.Tensor, ft: torch.Tensor, parts_s: torch.Tensor,
                          parts_t: torch.Tensor, p: float, cs: int, ct: int, mode: str, distance: str,
                          reduction: str, backend: str, need_s: bool,
                          need_t: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(dfs, dft); each empty unless needed."""
    with _backend.device_guard(fs.device):
        kernels = _backend.kernels(__package__, backend)
        geometry = _geometry(fs, ft, cs, ct, mode, distance, reduction)
        N, acc = fs.shape[0], parts_s.dtype
        da_s = new_output((N, parts_s.shape[2]), acc, fs.device)
        da_t = new_output((N, parts_t.shape[2]), acc, fs.device) if need_t else None
        kernels.finish_backward(geometry, parts_s, parts_t, grad.to(acc), da_s, da_t)
        dfs = _map_backward(da_s, fs, p, cs, backend) if need_s else fs.new_empty(0)
        dft = _map_backward(da_t, ft, p, ct, backend) if need_t else ft.new_empty(0)
        return dfs, dft


@_transfer_backward_op.register_fake
def _(grad, fs, ft, parts_s, parts_t, p, cs, ct, mode, distance, reduction, backend, need_s, need_t):
    return (torch.empty_like(fs) if need_s else fs.new_empty(0)), (torch.empty_like(ft) if need_t else ft.new_empty(0))


def _shape_only(x: torch.Tensor) -> torch.Tensor:
    """A stand-in with x's shape and no storage (one element, stride 0, never read: empty,
    so no fill is launched)."""
    return x.new_empty(()).expand(x.shape)


def _transfer_setup_context(ctx, inputs, output):
    fs, ft, *options = inputs
    # A feature is re-read only for its own gradient; otherwise only its shape is kept, so
    # a teacher's feature under no_grad is freed with the forward, as in torch.compile's graph.
    kept = [x if need else _shape_only(x) for x, need in zip((fs, ft), ctx.needs_input_grad[:2])]
    ctx.save_for_backward(*kept, output[1], output[2])
    ctx.set_materialize_grads(False)  # no zeros for the gradients of the saved-only outputs
    ctx.options = options


def _transfer_autograd_backward(ctx, grad, _grad_s, _grad_t):
    fs, ft, parts_s, parts_t = ctx.saved_tensors
    need_s, need_t = ctx.needs_input_grad[:2]
    if grad is None:  # only the saved-only outputs reached the loss
        return (None,) * (2 + len(ctx.options))
    dfs, dft = _transfer_backward_op(grad, fs, ft, parts_s, parts_t, *ctx.options, need_s, need_t)
    return (dfs if need_s else None, dft if need_t else None) + (None,) * len(ctx.options)


_transfer_op.register_autograd(_transfer_autograd_backward, setup_context=_transfer_setup_context)


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
    limit = _geometry(fs, ft, cs, ct, mode, distance, reduction).index_limit()
    chosen = _backend.resolve("attention_map", backend, fs.device, _backend.native_unsupported(limit))
    if chosen == "reference":
        loss = transfer_distance(raw_map_reference(fs, p, cs), raw_map_reference(ft, p, ct), mode, distance, reduction)
    else:
        per = _transfer_op(fs, ft, p, cs, ct, mode, distance, reduction, chosen)[0]
        loss = per if reduction == "none" else per.sum()
    return loss.to(fs.dtype)
