"""attention_apply (docs/ops.md 3b): F_fg = F * lam * sum(F) / sum(F * lam), fused.

F (N, C, T, *spatial) is read as N C T rows of S = prod(spatial) elements, viewed
(N, C, T, S) with its own strides (contiguous and channels_last_3d features are read
in place; a layout whose spatial axes do not merge into one stride is copied by
``reshape``); lam (N, C, T) is constant along each row. The sums run per sample
(``per_sample=True``: B = N groups of C T rows) or over the batch (``False``, the
published code: B = 1). With q_r = sum_s F[r, s], s1 = sum_r q_r, s2 = sum_r lam_r q_r,
k = s1 / s2 per group:

    forward   q = reduce(F)                                one read of F
              out = F * (k lam_r)       (affine)           one read of F, one write
    backward  m_r = sum_s F g           (reduce)           one read of F and g
              G = sum_r lam_r m_r
              dF = g * (k lam_r) + (G / s2) (1 - k lam_r)  (affine) one read of g, one write
              dlam_r = k (m_r - (G / s2) q_r)

The two row kernels ``reduce`` and ``affine`` (custom ops ``vkd::attention_apply`` and
``vkd::attention_apply_backward``; Triton, CUDA C++, CPU C++ with the math in
csrc/common/apply.h) do all the feature-sized work; the finish between them (s1, s2, k,
G: sums over the (N, C T) row statistics) is a few tiny deterministic torch ops. Only
F, lam and q are kept for backward. Where s2 == 0 (e.g. lam or F all zero in a group)
k and 1/s2 are taken as 0: that group's output and gradients are 0, never NaN.
"""
from __future__ import annotations

import torch

from ... import _backend
from ..._backend import BACKENDS
from ..._checks import check_choice, finite_check_enabled, new_output, raise_if_not_finite
from ..._math import accumulation_dtype
from .layout import check_apply, rows_view
from .reference import attention_apply_reference


def _safe_inverse(s: torch.Tensor) -> torch.Tensor:
    nonzero = s != 0
    return torch.where(nonzero, 1.0 / torch.where(nonzero, s, torch.ones_like(s)), 0.0)


def _factors(q: torch.Tensor, lam: torch.Tensor, per_sample: bool):
    """(alpha = k lam (N, C T), k, 1/s2 (B, 1)) from the row sums q (N, C T)."""
    B = q.shape[0] if per_sample else 1
    q_b, lam_b = q.view(B, -1), lam.reshape(B, -1).to(q.dtype)
    inv_s2 = _safe_inverse((lam_b * q_b).sum(-1, keepdim=True))
    k = q_b.sum(-1, keepdim=True) * inv_s2
    return (k * lam_b).view(q.shape), k, inv_s2


@torch.library.custom_op("vkd::attention_apply", mutates_args=())
def _apply_op(F: torch.Tensor, lam: torch.Tensor, per_sample: bool,
              backend: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(out (F.shape, contiguous), q (N, C T) row sums in the accumulation dtype)."""
    with _backend.device_guard(F.device):
        rows = rows_view(F)
        N, C, T, _ = rows.shape
        q = new_output((N, C * T), accumulation_dtype(F.dtype), F.device)
        _backend.kernels(__package__, backend).reduce(rows, None, q)
        alpha = _factors(q, lam, per_sample)[0]
        if finite_check_enabled(F.device):  # on the (N, C T) factors: NaN/inf in F or lam reach them
            raise_if_not_finite(alpha, F=F, lam=lam)
        out = new_output(rows.shape, F.dtype, F.device)
        _backend.kernels(__package__, backend).affine(rows, alpha, None, out)
        return out.view(F.shape), q


@_apply_op.register_fake
def _(F, lam, per_sample, backend):
    return F.new_empty(F.shape), F.new_empty((F.shape[0], lam[0].numel()), dtype=accumulation_dtype(F.dtype))


@torch.library.custom_op("vkd::attention_apply_backward", mutates_args=())
def _apply_backward_op(grad: torch.Tensor, F: torch.Tensor, lam: torch.Tensor, q: torch.Tensor, per_sample: bool,
                       backend: str, need_F: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(dF (F.shape, contiguous; empty unless need_F), dlam (N, C, T))."""
    with _backend.device_guard(F.device):
        rows, g = rows_view(F), rows_view(grad)
        m = new_output(q.shape, q.dtype, F.device)
        _backend.kernels(__package__, backend).reduce(rows, g, m)
        alpha, k, inv_s2 = _factors(q, lam, per_sample)
        B = k.shape[0]
        g_over_s2 = (lam.reshape(B, -1).to(q.dtype) * m.view(B, -1)).sum(-1, keepdim=True) * inv_s2
        d_lam = (k * (m.view(B, -1) - g_over_s2 * q.view(B, -1))).to(lam.dtype).view(lam.shape)
        if not need_F:
            return F.new_empty(0), d_lam
        beta = (g_over_s2 * (1.0 - alpha.view(B, -1))).view(q.shape)
        d_F = new_output(rows.shape, F.dtype, F.device)
        _backend.kernels(__package__, backend).affine(g, alpha, beta, d_F)
        return d_F.view(F.shape), d_lam


@_apply_backward_op.register_fake
def _(grad, F, lam, q, per_sample, backend, need_F):
    return F.new_empty(F.shape if need_F else (0,)), torch.empty_like(lam)


def _setup_context(ctx, inputs, output):
    F, lam, per_sample, backend = inputs
    ctx.save_for_backward(F, lam, output[1])
    ctx.options = (per_sample, backend)


def _autograd_backward(ctx, grad, _grad_q):
    F, lam, q = ctx.saved_tensors
    d_F, d_lam = _apply_backward_op(grad, F, lam, q, *ctx.options, ctx.needs_input_grad[0])
    return (d_F if ctx.needs_input_grad[0] else None), (d_lam if ctx.needs_input_grad[1] else None), None, None


_apply_op.register_autograd(_autograd_backward, setup_context=_setup_context)


def attention_apply(F: torch.Tensor, lam: torch.Tensor, *, per_sample: bool = True,
                    backend: str = "auto") -> torch.Tensor:
    """F_fg = F * lam * sum(F) / sum(F * lam) for F (N, C, T, *spatial), lam (N, C, T).

    lam is broadcast over the spatial axes; the sums run per sample (``per_sample=True``)
    or over the whole batch (``False``, as the published code). ``backend="reference"``
    evaluates the plain formula (which yields NaN where sum(F * lam) == 0); any other
    backend the fused form of the module docstring (0 there; "auto": Triton on CUDA,
    the C++ kernel on CPU). The output is contiguous.
    """
    check_choice("backend", backend, BACKENDS)
    check_apply(F, lam, per_sample)
    chosen = _backend.resolve("attention_apply", backend, F.device)
    if chosen == "reference":
        return attention_apply_reference(F, lam, per_sample)
    return _apply_op(F, lam, per_sample, chosen)[0]
