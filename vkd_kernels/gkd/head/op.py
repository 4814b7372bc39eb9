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

Backends: the GEMMs (the (T x C1) @ (C1 x 3C) conv taps, the 0/1 (J x 3T) tap selection
and the (T' x J) Linear) run in torch (BLAS/cuBLAS do them better than a hand-written
kernel); the weighted GroupNorm + ReLU, the rest of the work, is one fused op
``vkd::head_norm_relu`` (CPU C++, CUDA C++, Triton; math in csrc/common/head.h)
with its fused backward, instead of ~15 elementwise ops forward and ~40 backward.
"""
from __future__ import annotations

from typing import Optional

import torch

from ... import _backend
from ..._backend import BACKENDS
from ..._checks import check_choice, new_output
from ..._math import accumulation_dtype
from .layout import check_tail, selection
from .reference import tail_reference


@torch.library.custom_op("vkd::head_norm_relu", mutates_args=())
def _norm_op(Z: torch.Tensor, w: torch.Tensor, gamma: Optional[torch.Tensor], beta: Optional[torch.Tensor],
             groups: int, M: float, eps: float, backend: str) -> tuple[torch.Tensor, torch.Tensor]:
    """ReLU(GroupNorm) of the distinct columns Z (N, J, C) with class counts w: (H, stats (N, G, 2))."""
    with _backend.device_guard(Z.device):
        H = new_output(Z.shape, Z.dtype, Z.device)
        stats = new_output((Z.shape[0], groups, 2), accumulation_dtype(Z.dtype), Z.device)
        _backend.kernels(__package__, backend).forward(Z, w, gamma, beta, groups, M, eps, H, stats)
        return H, stats


@_norm_op.register_fake
def _(Z, w, gamma, beta, groups, M, eps, backend):
    return torch.empty_like(Z), Z.new_empty((Z.shape[0], groups, 2), dtype=accumulation_dtype(Z.dtype))


@torch.library.custom_op("vkd::head_norm_relu_backward", mutates_args=())
def _norm_backward_op(dH: torch.Tensor, Z: torch.Tensor, w: torch.Tensor, gamma: Optional[torch.Tensor],
                      beta: Optional[torch.Tensor], stats: torch.Tensor, groups: int, M: float,
                      backend: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(dZ (N, J, C), dgamma (C,), dbeta (C,)); dgamma / dbeta empty where gamma / beta are None."""
    with _backend.device_guard(Z.device):
        N, _, C = Z.shape
        dZ = new_output(Z.shape, Z.dtype, Z.device)
        dgamma = new_output((N, C), Z.dtype, Z.device) if gamma is not None else None
        dbeta = new_output((N, C), Z.dtype, Z.device) if beta is not None else None
        _backend.kernels(__package__, backend).backward(Z, w, gamma, beta, stats, dH.contiguous(), groups,
                                                                  M, dZ, dgamma, dbeta)
        return dZ, *(d.sum(0) if d is not None else Z.new_empty(0) for d in (dgamma, dbeta))


@_norm_backward_op.register_fake
def _(dH, Z, w, gamma, beta, stats, groups, M, backend):
    C = Z.shape[2]
    return (torch.empty_like(Z),) + tuple(Z.new_empty(C if t is not None else 0) for t in (gamma, beta))


def _setup_context(ctx, inputs, output):
    Z, w, gamma, beta, groups, M, eps, backend = inputs
    ctx.save_for_backward(Z, w, gamma, beta, output[1])
    ctx.options = (groups, M, backend)


def _autograd_backward(ctx, dH, _dstats):
    Z, w, gamma, beta, stats = ctx.saved_tensors
    groups, M, backend = ctx.options
    dZ, dgamma, dbeta = _norm_backward_op(dH, Z, w, gamma, beta, stats, groups, M, backend)
    return (dZ, None, dgamma if gamma is not None else None, dbeta if beta is not None else None,
            None, None, None, None)


_norm_op.register_autograd(_autograd_backward, setup_context=_setup_context)


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
    N, C1, T = y.shape
    C, L = conv_weight.shape[0], upsample_length
    S, inverse, w = selection(T, L, y.device, y.dtype)
    # Pt[n, 3 t + k, c] = (W_k y[n, :, t])[c]: one (T x C1) @ (C1 x 3C) GEMM per sample
    Pt = torch.matmul(y.transpose(1, 2), conv_weight.permute(1, 2, 0).reshape(C1, 3 * C)).view(N, 3 * T, C)
    Z = torch.matmul(S, Pt)  # (N, J, C): the distinct conv columns
    if conv_bias is not None:
        Z = Z + conv_bias
    H, _ = _norm_op(Z.contiguous(), w, gn_weight, gn_bias, gn_groups, float((C // gn_groups) * L), eps, backend)
    A = linear_weight.new_zeros(linear_weight.shape[0], S.shape[0]).index_add(1, inverse, linear_weight)
    out = torch.matmul(A, H)  # (N, T', C)
    if linear_bias is not None:
        out = out + linear_bias[:, None]
    return torch.sigmoid(out).transpose(1, 2)


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
    chosen = _backend.resolve("attention_head_tail", backend, y.device)
    return tail_reference(*args) if chosen == "reference" else tail_compact(*args, chosen)
