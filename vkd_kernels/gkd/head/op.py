"""The GKD generative attention head (docs/ops.md 3b): the tail in exact compact form.

Tail: y (N, C1, T) -> nearest upsample to L -> Conv1d(C1 -> C, k=3, zero pad 1)
-> GroupNorm(G, C) -> ReLU -> Linear(L -> T') over the upsampled axis -> sigmoid.

Compact form. The upsampled U[:, :, l] = y[:, :, src[l]] (src: torch's own nearest
rule, so any L and T work, L < T included). The conv output column l depends on l
only through the triple (src[l-1], src[l], src[l+1]) (a padding column where l-1 or
l+1 falls outside). Runs of equal src give at most three distinct triples per
source step (interior, left edge, right edge; one when a run has length 1), so the
L columns fall into J <= 3T classes with counts w_j. Then, exactly:

    Z[:, :, j]  = b + W_0 y[a_j] + W_1 y[b_j] + W_2 y[c_j]     (GEMMs on T columns, then
                  a 0/1 selection (J x 3T) GEMM picks the three taps of each class)
    mean, var   = sum_j w_j Z / (C/G L), sum_j w_j (Z - mean)^2 / (C/G L)  per group
    Hh_j        = ReLU(GN-affine((Z_j - mean) rstd))
    Linear(Hh)  = sum_j A[:, j] Hh_j + bias,   A[:, j] = sum_{l in class j} W_lin[:, l]

since ReLU acts columnwise and the Linear is linear in the columns. No (N, C, L)
tensor is built: about L/T times fewer FLOPs than the plain layers, identical up to
float rounding. Autograd through these ops is the exact backward in the same
compact form (dW_lin scatters dA back to the columns of each class: T' L adds).

Launches (``vkd::head_tail`` and its backward, one custom op each way): forward
Wc = the conv weight as (C1, 3C) (a copy), Pt = y^T Wc (bmm), Z = S Pt, the fused
+ bias / weighted GroupNorm / ReLU kernel (H written (J + 1, N, C): the ones row J is
the Linear's bias column), A = W_lin E (E the 0/1 (L, J) class matrix), out = A H
(one mm over all samples), sigmoid + bias + transpose kernel. Backward: one kernel per
GroupNorm group over all samples (dout = dlambda lambda (1 - lambda), dH = A^T dout in
registers, the GroupNorm + ReLU backward, dZ, and dgamma, dbeta, dbias with no second
stage), then GEMMs only: [dA | dbias_lin] = H dout^T, dW_lin = dA E^T, dPt = S^T dZ,
dy = Wc dPt^T, dWc = y dPt (y and dW_conv in their layouts: two copies). S, E and the
class counts are built on the device once per (T, L) (layout.selection). The kernels
are CPU C++, CUDA C++ and Triton with the math in csrc/common/head.h; BLAS/cuBLAS do the
GEMMs.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch.utils.flop_counter import register_flop_formula

from ... import _backend
from ..._backend import BACKENDS
from ..._checks import check_choice, new_output
from ..._math import accumulation_dtype
from ..._ops import custom_op
from .layout import check_tail, index_limit, num_classes, selection
from .reference import tail_reference


def _norm_size(C: int, groups: int, L: int) -> float:
    return float((C // groups) * L)


@custom_op("vkd::head_tail")
def _tail_op(y: torch.Tensor, conv_weight: torch.Tensor, conv_bias: Optional[torch.Tensor],
             gn_weight: Optional[torch.Tensor], gn_bias: Optional[torch.Tensor], groups: int,
             linear_weight: torch.Tensor, linear_bias: Optional[torch.Tensor], L: int, eps: float,
             backend: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(lambda (N, C, T'), then for backward: Wc (C1, 3C), Z (N, J, C), H (J + 1, N, C),
    stats (N, G, 2), A (T', J))."""
    with _backend.device_guard(y.device):
        kernels = _backend.kernels(__package__, backend)
        N, C1, T = y.shape
        C, TP = conv_weight.shape[0], linear_weight.shape[0]
        S, E, w = selection(T, L, y.device, y.dtype)
        J = S.shape[0]
        Wc = conv_weight.permute(1, 2, 0).clone(memory_format=torch.contiguous_format).view(C1, 3 * C)
        Pt = torch.bmm(y.transpose(1, 2), Wc.expand(N, C1, 3 * C))  # (N, T, 3C): [n, t, (k, c)] = W_k y[n, :, t]
        Z = torch.matmul(S, Pt.view(N, 3 * T, C))  # (N, J, C): the distinct conv columns (no bias)
        H = new_output((J + 1, N, C), y.dtype, y.device)
        stats = new_output((N, groups, 2), accumulation_dtype(y.dtype), y.device)
        kernels.forward(Z, w, conv_bias, gn_weight, gn_bias, groups, _norm_size(C, groups, L), eps, H, stats)
        A = torch.mm(linear_weight, E)
        out = torch.mm(A, H[:J].view(J, N * C))
        lam = new_output((N, C, TP), y.dtype, y.device)
        kernels.output(out, linear_bias, lam)
        return lam, Wc, Z, H, stats, A


@_tail_op.register_fake
def _(y, conv_weight, conv_bias, gn_weight, gn_bias, groups, linear_weight, linear_bias, L, eps, backend):
    N, C1, T = y.shape
    C, TP = conv_weight.shape[0], linear_weight.shape[0]
    J = num_classes(int(T), L)  # J depends on the value of T (a symbolic T is specialised)
    return (y.new_empty((N, C, TP)), y.new_empty((C1, 3 * C)), y.new_empty((N, J, C)), y.new_empty((J + 1, N, C)),
            y.new_empty((N, groups, 2), dtype=accumulation_dtype(y.dtype)), y.new_empty((TP, J)))


@custom_op("vkd::head_tail_backward")
def _tail_backward_op(dlam: torch.Tensor, y: torch.Tensor, conv_bias: Optional[torch.Tensor],
                      gn_weight: Optional[torch.Tensor], gn_bias: Optional[torch.Tensor], lam: torch.Tensor,
                      Wc: torch.Tensor, Z: torch.Tensor, H: torch.Tensor, stats: torch.Tensor, A: torch.Tensor,
                      groups: int, L: int, backend: str,
                      need_y: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor,
                                             torch.Tensor, torch.Tensor]:
    """(dy (empty unless need_y), dconv_weight, dconv_bias, dgn_weight, dgn_bias, dlinear_weight,
    dlinear_bias); the gradient of an absent (None) parameter is empty."""
    with _backend.device_guard(y.device):
        kernels = _backend.kernels(__package__, backend)
        N, C1, T = y.shape
        J, C = Z.shape[1], Z.shape[2]
        TP = A.shape[0]
        S, E, w = selection(T, L, y.device, y.dtype)
        dout = new_output((TP, N, C), y.dtype, y.device)
        dZ = new_output(Z.shape, y.dtype, y.device)
        grads = [new_output((C,), y.dtype, y.device) if t is not None else None
                 for t in (gn_weight, gn_bias, conv_bias)]
        kernels.backward(Z, w, conv_bias, gn_weight, gn_bias, stats, lam, dlam, A, groups, _norm_size(C, groups, L),
                         dout, dZ, *grads)
        dAT = torch.mm(H.view(J + 1, N * C), dout.view(TP, N * C).t())  # (J + 1, T'): [dA^T; dbias_lin]
        d_linear_weight = torch.mm(dAT[:J].t(), E.t())
        dPt = torch.matmul(S.t(), dZ)  # (N, 3T, C)
        dy = torch.bmm(Wc.expand(N, C1, 3 * C), dPt.view(N, T, 3 * C).transpose(1, 2)) if need_y else y.new_empty(0)
        dWc = torch.mm(y.transpose(0, 1).reshape(C1, N * T), dPt.view(N * T, 3 * C))
        d_conv_weight = dWc.view(C1, 3, C).permute(2, 0, 1).contiguous()
        dgamma, dbeta, dcb = (g if g is not None else y.new_empty(0) for g in grads)  # outputs never alias
        return dy, d_conv_weight, dcb, dgamma, dbeta, d_linear_weight, dAT[J]


@_tail_backward_op.register_fake
def _(dlam, y, conv_bias, gn_weight, gn_bias, lam, Wc, Z, H, stats, A, groups, L, backend, need_y):
    N, C1, T = y.shape
    C, TP = Z.shape[2], A.shape[0]
    present = [y.new_empty((C,)) if t is not None else y.new_empty(0) for t in (conv_bias, gn_weight, gn_bias)]
    return (y.new_empty(y.shape) if need_y else y.new_empty(0), y.new_empty((C, C1, 3)), *present,
            y.new_empty((TP, L)), y.new_empty((Z.shape[1] + 1, TP))[-1])  # dbias_lin: the last row of [dA^T; dbias]


def _setup_context(ctx, inputs, output):
    y, conv_weight, conv_bias, gn_weight, gn_bias, groups, linear_weight, linear_bias, L, eps, backend = inputs
    lam, Wc, Z, H, stats, A = output
    ctx.save_for_backward(y, conv_bias, gn_weight, gn_bias, lam, Wc, Z, H, stats, A)
    ctx.options = (groups, L, backend)
    ctx.has_linear_bias = linear_bias is not None
    ctx.set_materialize_grads(False)  # no zeros for the gradients of the saved-only outputs


def _autograd_backward(ctx, dlam, *_saved_only):
    if dlam is None:
        return (None,) * 11
    y, conv_bias, gn_weight, gn_bias, lam, Wc, Z, H, stats, A = ctx.saved_tensors
    dy, dcw, dcb, dgw, dgb, dlw, dlb = _tail_backward_op(dlam, y, conv_bias, gn_weight, gn_bias, lam, Wc, Z, H, stats,
                                                         A, *ctx.options, ctx.needs_input_grad[0])
    return (dy if ctx.needs_input_grad[0] else None, dcw, dcb if conv_bias is not None else None,
            dgw if gn_weight is not None else None, dgb if gn_bias is not None else None, None, dlw,
            dlb if ctx.has_linear_bias else None, None, None, None)


_tail_op.register_autograd(_autograd_backward, setup_context=_setup_context)


def _flops(y_shape, C: int, TP: int, L: int, backward: bool) -> int:
    """The multiply-adds x 2 of the tail's GEMMs (for torch.utils.flop_counter, which cannot
    see inside the custom ops)."""
    N, C1, T = y_shape
    J = num_classes(int(T), L)
    if not backward:  # Pt, Z, A, A H
        return 2 * (N * T * C1 * 3 * C + N * J * 3 * T * C + TP * L * J + TP * J * N * C)
    # [dA | dbias], dW_lin, dPt, dy, dWc
    return 2 * ((J + 1) * N * C * TP + TP * J * L + N * 3 * T * J * C + 2 * N * C1 * 3 * C * T)


@register_flop_formula(torch.ops.vkd.head_tail)
def _(y_shape, conv_weight_shape, *args, out_shape=None, **kwargs) -> int:
    return _flops(y_shape, conv_weight_shape[0], out_shape[0][2], args[-3], backward=False)


@register_flop_formula(torch.ops.vkd.head_tail_backward)
def _(dlam_shape, y_shape, *args, out_shape=None, **kwargs) -> int:
    return _flops(y_shape, dlam_shape[1], dlam_shape[2], args[-3], backward=True)


def tail_compact(y, conv_weight, conv_bias, gn_weight, gn_bias, gn_groups, linear_weight, linear_bias,
                 upsample_length, eps, backend):
    """The same function in compact form (module docstring); never builds (N, C, L).
    Works channels-last, (N, columns, C), so that the conv and the Linear are plain GEMMs;
    the weighted GroupNorm + ReLU is one fused kernel (``backend``) forward and backward.
    float16/bfloat16 arguments are computed in float32 and the result rounded once: every
    tensor here is (C x T)-sized, and half-precision intermediates (the GEMM outputs, the
    GroupNorm input) would cost up to ~1e-1 relative error in the gradients."""
    if y.dtype in (torch.float16, torch.bfloat16):
        upcast = [t.float() if isinstance(t, torch.Tensor) else t
                  for t in (y, conv_weight, conv_bias, gn_weight, gn_bias)]
        return tail_compact(*upcast, gn_groups, linear_weight.float(),
                            None if linear_bias is None else linear_bias.float(), upsample_length, eps,
                            backend).to(y.dtype)
    # the kernels read the 1-D parameters at [c]: a strided view is copied (a no-op otherwise)
    conv_bias, gn_weight, gn_bias, linear_bias = (None if t is None else t.contiguous()
                                                  for t in (conv_bias, gn_weight, gn_bias, linear_bias))
    return _tail_op(y, conv_weight, conv_bias, gn_weight, gn_bias, gn_groups, linear_weight, linear_bias,
                    upsample_length, eps, backend)[0]


def attention_head_tail(y: torch.Tensor, conv_weight: torch.Tensor, conv_bias, gn_weight, gn_bias, gn_groups: int,
                        linear_weight: torch.Tensor, linear_bias, *, upsample_length: int, eps: float = 1e-5,
                        backend: str = "auto") -> torch.Tensor:
    """lambda (N, C, T') = sigmoid(Linear_L->T'(ReLU(GN(Conv1d(upsample_L(y)))))) from y (N, C1, T).

    conv_weight (C, C1, 3) with padding 1, GroupNorm(gn_groups, C) affine (gn_weight,
    gn_bias, eps), linear_weight (T', L = upsample_length); biases may be None.
    ``backend="reference"`` runs the plain layers; the others the exact compact form
    (module docstring; about L/T times fewer FLOPs) with the weighted GroupNorm + ReLU
    on that backend's kernel ("auto": Triton on CUDA, the C++ kernel on CPU).
    """
    check_choice("backend", backend, BACKENDS)
    args = (y, conv_weight, conv_bias, gn_weight, gn_bias, gn_groups, linear_weight, linear_bias, upsample_length,
            float(eps) if isinstance(eps, (int, float)) and not isinstance(eps, bool) else eps)
    check_tail(*args)
    limit = index_limit(y, conv_weight, linear_weight, upsample_length)
    chosen = _backend.resolve("attention_head_tail", backend, y.device, _backend.native_unsupported(limit))
    return tail_reference(*args) if chosen == "reference" else tail_compact(*args, chosen)
