"""attention_apply (docs/ops.md 3b): F_fg = F * lam * sum(F) / sum(F * lam), fused.

F (N, C, T, *spatial) is read as N C T rows of S = prod(spatial) elements, viewed
(N, C, T, S) with its own strides (contiguous and channels_last_3d features are read
in place; a layout whose spatial axes do not merge into one stride is copied by
``reshape``); lam (N, C, T) is constant along each row. The sums run per sample
(``per_sample=True``: B = N groups of C T rows) or over the batch (``False``, the
published code: B = 1). With q_r = sum_s F[r, s], s1 = sum_r q_r, s2 = sum_r lam_r q_r,
k = s1 / s2 per group:

    forward   q = reduce(F)                                one read of F
              s1, s2 = finish(q, lam)                      per group, rows in order
              out = F * (k lam_r)       (affine)           one read of F, one write
    backward  m_r = sum_s F g           (reduce)           one read of F and g
              G = finish(m, lam)
              dF = g * (k lam_r) + (G / s2) (1 - k lam_r)  (affine) one read of g, one write
              dlam_r = k (m_r - (G / s2) q_r)              (same launch)

Three launches each way (custom ops ``vkd::attention_apply`` and
``vkd::attention_apply_backward``; Triton, CUDA C++, CPU C++ with the math in
csrc/common/apply.h): the kernels take k = s1 / s2 and G / s2 from the (B, 2) group
sums themselves, so no torch op runs between them. Only F, lam, q and the group sums
are kept for backward (spatial "mean": not F). Where s2 == 0 (e.g. lam or F all zero
in a group) k and 1/s2 are taken as 0: that group's output and gradients are 0, never NaN.

``spatial="mean"`` (mean_s F_fg, what GKD's classifier reads) is k lam_r q_r / S: the
same passes with the affine on rows of one element, x = q with the affine's scale 1 / S,
so F is read once and no F-sized output exists; backward, g (N, C, T) gives F_fg the
gradient g_r / S at every position of row r, so m_r = q_r g_r / S needs no read of F (one
product on (N, C T) in place of the reduce pass), and the affine pass reads g broadcast
over the row (stride 0), scaled by 1 / S, while it writes dF: one write, no read of F.
Three launches each way (forward four for float16 / bfloat16 F: q / S is cast to F's dtype
first, as q itself may exceed its range).
"""
from __future__ import annotations

import math

import torch

from ... import _backend
from ..._backend import BACKENDS
from ..._checks import check_choice, finite_check_enabled, new_output, raise_if_not_finite
from ..._math import accumulation_dtype
from ..._ops import custom_op
from .layout import SPATIAL, check_apply, rows_view
from .reference import attention_apply_reference


def _groups(F: torch.Tensor, per_sample: bool) -> int:
    return F.shape[0] if per_sample else 1


@custom_op("vkd::attention_apply")
def _apply_op(F: torch.Tensor, lam: torch.Tensor, per_sample: bool, spatial: str,
              backend: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(out (F.shape, or (N, C, T) for spatial "mean"; contiguous), q (N, C T) row sums,
    sums (B, 2) = (s1, s2) per group), q and sums in the accumulation dtype."""
    with _backend.device_guard(F.device):
        kernels = _backend.kernels(__package__, backend)
        rows = rows_view(F)
        N, C, T, S = rows.shape
        acc = accumulation_dtype(F.dtype)
        q = new_output((N, C * T), acc, F.device)
        sums = new_output((_groups(F, per_sample), 2), acc, F.device)
        lam_rows = lam.reshape(-1).contiguous()  # the kernels read lam[r] at r: a strided view is copied
        kernels.reduce(rows, None, q)
        kernels.finish(q, lam_rows, sums)
        if finite_check_enabled(F.device):  # on the (B, 2) sums: NaN/inf in F or lam reach them
            raise_if_not_finite(sums, F=F, lam=lam)
        if spatial == "mean":  # the affine pass on rows of one element: the row sums q, scaled by 1 / S
            # (an F of lower precision than q gets the row means, cast: q itself may exceed F's range)
            x, scale = (q, 1.0 / S) if q.dtype == F.dtype else ((q / S).to(F.dtype), 1.0)
            out = new_output((N, C, T), F.dtype, F.device)
            kernels.affine(x.view(N, C, T, 1), lam_rows, sums, out.view(N, C, T, 1), scale=scale)
            return out, q, sums
        # allocated in F's shape (the kernel writes its rows view): an output that is not a
        # view of a buffer made here can be modified in place under autograd
        out = new_output(F.shape, F.dtype, F.device)
        kernels.affine(rows, lam_rows, sums, out.view(rows.shape))
        return out, q, sums


@_apply_op.register_fake
def _(F, lam, per_sample, spatial, backend):
    acc = accumulation_dtype(F.dtype)
    return (F.new_empty(F.shape if spatial == "keep" else F.shape[:3]),
            F.new_empty((F.shape[0], lam[0].numel()), dtype=acc),
            F.new_empty((_groups(F, per_sample), 2), dtype=acc))


@custom_op("vkd::attention_apply_backward")
def _apply_backward_op(grad: torch.Tensor, F: torch.Tensor, lam: torch.Tensor, q: torch.Tensor,
                       sums: torch.Tensor, per_sample: bool, spatial: str, backend: str,
                       need_F: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(dF (F.shape, contiguous; empty unless need_F), dlam (N, C, T)). For spatial "mean"
    grad is (N, C, T): the gradient of F_fg is grad / S at every position of a row, so the
    passes run on m' = q grad (m = m' / S) and on grad broadcast over the row (stride 0),
    and the affine pass scales dF and dlam, both linear in (m, g), by 1 / S."""
    with _backend.device_guard(F.device):
        kernels = _backend.kernels(__package__, backend)
        lam_rows = lam.reshape(-1).contiguous()  # the kernels read lam[r] at r: a strided view is copied
        N, C, T = F.shape[:3]
        S = math.prod(F.shape[3:])
        if spatial == "mean":  # F: its shape only (a stand-in, never read)
            m, scale = q * grad.reshape(q.shape), 1.0 / S  # in q's dtype (type promotion)
            g = grad.view(N, C, T, 1).expand(N, C, T, S)
        else:
            rows, g, scale = rows_view(F), rows_view(grad), 1.0
            m = new_output(q.shape, q.dtype, F.device)
            kernels.reduce(rows, g, m)
        bsums = new_output(sums.shape, sums.dtype, F.device)
        d_lam = new_output(lam.shape, lam.dtype, F.device)
        kernels.finish(m, lam_rows, bsums)
        d_F = new_output((N, C, T, S), F.dtype, F.device) if need_F else None
        kernels.affine(g, lam_rows, sums, d_F, (bsums, m, q, d_lam.view(-1)), scale=scale)
        return (d_F.view(F.shape) if need_F else F.new_empty(0)), d_lam


@_apply_backward_op.register_fake
def _(grad, F, lam, q, sums, per_sample, spatial, backend, need_F):
    return F.new_empty(F.shape if need_F else (0,)), torch.empty_like(lam)


def _setup_context(ctx, inputs, output):
    F, lam, per_sample, spatial, backend = inputs
    # spatial "mean": the backward needs F's shape only (one element, stride 0: freed with the forward)
    kept = F if spatial == "keep" else F.new_empty(()).expand(F.shape)
    ctx.save_for_backward(kept, lam, output[1], output[2])
    ctx.set_materialize_grads(False)  # no zeros for the gradients of the saved-only outputs
    ctx.options = (per_sample, spatial, backend)


def _autograd_backward(ctx, grad, _grad_q, _grad_sums):
    F, lam, q, sums = ctx.saved_tensors
    if grad is None:  # only the saved-only outputs reached the loss
        return None, None, None, None, None
    d_F, d_lam = _apply_backward_op(grad, F, lam, q, sums, *ctx.options, ctx.needs_input_grad[0])
    return (d_F if ctx.needs_input_grad[0] else None), (d_lam if ctx.needs_input_grad[1] else None), None, None, None


_apply_op.register_autograd(_autograd_backward, setup_context=_setup_context)


def attention_apply(F: torch.Tensor, lam: torch.Tensor, *, per_sample: bool = True, spatial: str = "keep",
                    backend: str = "auto") -> torch.Tensor:
    """F_fg = F * lam * sum(F) / sum(F * lam) for F (N, C, T, *spatial), lam (N, C, T).

    lam is broadcast over the spatial axes; the sums run per sample (``per_sample=True``)
    or over the whole batch (``False``, as the published code). ``backend="reference"``
    evaluates the plain formula (which yields NaN where sum(F * lam) == 0); any other
    backend the fused form of the module docstring (0 there; "auto": Triton on CUDA,
    the C++ kernel on CPU). The output is contiguous.

    ``spatial="mean"`` returns F_fg averaged over the spatial axes, (N, C, T), as the GKD
    classifier consumes it: k lam_r q_r / S from the row sums (one read of F, no F-sized
    output; the reference: the formula, then the mean).
    """
    check_choice("backend", backend, BACKENDS)
    check_choice("spatial", spatial, SPATIAL)
    check_apply(F, lam, per_sample)
    chosen = _backend.resolve("attention_apply", backend, F.device)
    if chosen == "reference":
        out = attention_apply_reference(F, lam, per_sample)
        return out if spatial == "keep" or F.dim() == 3 else out.mean(tuple(range(3, F.dim())))
    return _apply_op(F, lam, per_sample, spatial, chosen)[0]
