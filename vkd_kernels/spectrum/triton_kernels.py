"""Triton kernels of the temporal spectrum loss (docs/ops.md section 1).

The DFT of a tile of lines is a matrix product with the twiddles, done by ``tl.dot``:
X[BLOCK_L, T_PAD] @ C[T_PAD, K_PAD] -> Re, and likewise Im; the backward is the
transposed product. T and K are padded to powers of two >= 16 (tl.dot's minimum).
Forward fuses DFT, spectrum, difference, weights and a per-program partial sum;
backward recomputes the spectra (nothing is stored between passes).

Two kernel shapes: ``pixel`` (P = 1: each program takes BLOCK_L lines) and
``group`` (P > 1, spatial="mean": each program takes one group of P lines and loops
over it in BLOCK_L tiles). Dot precision: tf32x3 for float32 (float32 accuracy on
tensor cores), tf32 for float16/bfloat16 (exact for their mantissas), ieee for float64.

``launch_constexprs`` is the single place configs are chosen; ``launch_configs``
enumerates every config the launchers can produce, and the launch-capture test
(python_tests/test_triton_aot.py) checks that the launches it captures from the ops
cover them, then compiles each captured launch for sm_80 and sm_90.
"""
from __future__ import annotations

from typing import Iterator, Optional

import torch
import triton
import triton.language as tl

from .._checks import new_output
from .._triton_jit import scalar as _scalar
from .._triton_specs import DOT_PRECISION, TRITON_TYPES, check_grid
from .layout import MAX_FUSED_T, SpectrumProblem, accumulation_dtype, view_strides


@triton.jit
def _twiddles(T, K, scale, T_PAD: tl.constexpr, K_PAD: tl.constexpr, IS_FP64: tl.constexpr):
    """scale * cos and scale * sin of 2 pi k t / T as [T_PAD, K_PAD], zero in the padding."""
    t = tl.arange(0, T_PAD)[:, None]
    k = tl.arange(0, K_PAD)[None, :]
    if IS_FP64:
        angle = ((t * k) % T).to(tl.float64) * (6.283185307179586 / T.to(tl.float64))
    else:
        angle = ((t * k) % T).to(tl.float32) * (6.283185307179586 / T.to(tl.float32))
    valid = (t < T) & (k < K)
    return tl.where(valid, scale * tl.cos(angle), 0.0), tl.where(valid, scale * tl.sin(angle), 0.0)


@triton.jit
def _spectrum(x, cos, sin, mode, eps, PRECISION: tl.constexpr):
    """Re, Im, A and the factor r (dA/dRe = r Re) of every line of x [BLOCK_L, T_PAD].

    mode (0 magnitude, 1 power, 2 log_magnitude) is a runtime scalar: a uniform select
    costs nothing here and keeps the number of compiled variants down."""
    re = tl.dot(x, cos, input_precision=PRECISION)
    im = -tl.dot(x, sin, input_precision=PRECISION)
    power = re * re + im * im
    magnitude = tl.sqrt(power + eps)
    safe = tl.where(magnitude > 0, magnitude, 1.0)
    a = tl.where(mode == 1, power, tl.where(mode == 0, magnitude, tl.log(magnitude + eps)))
    factor = tl.where(mode == 1, 2.0,
                      tl.where(magnitude > 0, tl.where(mode == 0, 1.0 / safe, 1.0 / (safe * (safe + eps))), 0.0))
    return re, im, a, factor


@triton.jit
def _input_grad(grad_a, re, im, factor, cos, sin, PRECISION: tl.constexpr):
    """dx [BLOCK_L, T_PAD] from dL/dA [BLOCK_L, K_PAD]: (gA r Re) C^T - (gA r Im) S^T."""
    g = grad_a * factor
    return (tl.dot(g * re, tl.trans(cos), input_precision=PRECISION)
            - tl.dot(g * im, tl.trans(sin), input_precision=PRECISION))


@triton.jit
def _load_lines(ptr, b, s, stride_b, stride_t, stride_s, line_mask, T, T_PAD: tl.constexpr,
                IS_FP64: tl.constexpr):
    """Lines x[b, :, s] as [BLOCK_L, T_PAD] in the accumulation dtype, zero padded."""
    t = tl.arange(0, T_PAD)
    offsets = (b * stride_b + s * stride_s)[:, None] + t[None, :].to(tl.int64) * stride_t
    x = tl.load(ptr + offsets, mask=line_mask[:, None] & (t[None, :] < T), other=0.0)
    return x.to(tl.float64) if IS_FP64 else x.to(tl.float32)


@triton.jit
def _bin_weights(w_ptr, K, K_PAD: tl.constexpr, IS_FP64: tl.constexpr):
    """The (K,) bin weights (float32, or float64 for a float64 launch) in the accumulation dtype."""
    k = tl.arange(0, K_PAD)
    w = tl.load(w_ptr + k, mask=k < K, other=0.0)
    return w.to(tl.float64) if IS_FP64 else w.to(tl.float32)


@triton.jit
def _pixel_forward(
    xs_ptr, xt_ptr,            # student, teacher: (B, T, S) strided
    w_ptr,                     # (K,) bin weights (float32 or float64)
    out_ptr,                   # STORE_D: d (B, K, S) strided; else partial sums, one per program
    B, T, S, K,                # problem sizes
    mode, scale: tl.float64, eps: tl.float64,  # spectrum (0 magnitude, 1 power, 2 log), norm scale, eps
    xs_sb, xs_st, xs_ss,       # student strides
    xt_sb, xt_st, xt_ss,       # teacher strides
    d_sb, d_sk, d_ss,          # d strides (STORE_D)
    STORE_D: tl.constexpr, T_PAD: tl.constexpr,
    K_PAD: tl.constexpr, BLOCK_L: tl.constexpr, PRECISION: tl.constexpr, IS_FP64: tl.constexpr,
):
    pid = tl.program_id(0)
    line = pid.to(tl.int64) * BLOCK_L + tl.arange(0, BLOCK_L)
    b = line // S
    s = line % S
    line_mask = b < B  # not line < B * S: an int32 product, wrong from 2**31 lines on
    scale, eps = _scalar(scale, IS_FP64), _scalar(eps, IS_FP64)
    cos, sin = _twiddles(T, K, scale, T_PAD, K_PAD, IS_FP64)
    xs = _load_lines(xs_ptr, b, s, xs_sb, xs_st, xs_ss, line_mask, T, T_PAD, IS_FP64)
    xt = _load_lines(xt_ptr, b, s, xt_sb, xt_st, xt_ss, line_mask, T, T_PAD, IS_FP64)
    _, _, a_s, _ = _spectrum(xs, cos, sin, mode, eps, PRECISION)
    _, _, a_t, _ = _spectrum(xt, cos, sin, mode, eps, PRECISION)
    w = _bin_weights(w_ptr, K, K_PAD, IS_FP64)
    diff = a_s - a_t
    d = tl.where(line_mask[:, None], w[None, :] * diff * diff, 0.0)
    if STORE_D:
        k = tl.arange(0, K_PAD)
        offsets = (b * d_sb + s * d_ss)[:, None] + k[None, :].to(tl.int64) * d_sk
        tl.store(out_ptr + offsets, d.to(out_ptr.dtype.element_ty), mask=line_mask[:, None] & (k[None, :] < K))
    else:
        tl.store(out_ptr + pid, tl.sum(tl.sum(d, axis=1), axis=0))


@triton.jit
def _pixel_backward(
    xs_ptr, xt_ptr,            # student, teacher: (B, T, S) strided
    w_ptr,                     # (K,) bin weights (float32 or float64)
    g_ptr,                     # dL/dd as (B, K, S) strided (strides 0 for a scalar loss)
    dxs_ptr, dxt_ptr,          # gradients (B, T, S) strided (unused unless NEED_S / NEED_T)
    B, T, S, K,
    mode, scale: tl.float64, eps: tl.float64, grad_scale: tl.float64,  # grad_scale: 1/count ("mean"), else 1
    xs_sb, xs_st, xs_ss, xt_sb, xt_st, xt_ss,
    g_sb, g_sk, g_ss,
    dxs_sb, dxs_st, dxs_ss, dxt_sb, dxt_st, dxt_ss,
    NEED_S: tl.constexpr, NEED_T: tl.constexpr,
    T_PAD: tl.constexpr, K_PAD: tl.constexpr, BLOCK_L: tl.constexpr, PRECISION: tl.constexpr,
    IS_FP64: tl.constexpr,
):
    pid = tl.program_id(0)
    line = pid.to(tl.int64) * BLOCK_L + tl.arange(0, BLOCK_L)
    b = line // S
    s = line % S
    line_mask = b < B  # not line < B * S: an int32 product, wrong from 2**31 lines on
    scale, eps = _scalar(scale, IS_FP64), _scalar(eps, IS_FP64)
    k = tl.arange(0, K_PAD)
    grad_scale = _scalar(grad_scale, IS_FP64)
    cos, sin = _twiddles(T, K, scale, T_PAD, K_PAD, IS_FP64)
    xs = _load_lines(xs_ptr, b, s, xs_sb, xs_st, xs_ss, line_mask, T, T_PAD, IS_FP64)
    xt = _load_lines(xt_ptr, b, s, xt_sb, xt_st, xt_ss, line_mask, T, T_PAD, IS_FP64)
    re_s, im_s, a_s, r_s = _spectrum(xs, cos, sin, mode, eps, PRECISION)
    re_t, im_t, a_t, r_t = _spectrum(xt, cos, sin, mode, eps, PRECISION)
    g_mask = line_mask[:, None] & (k[None, :] < K)
    g_offsets = (b * g_sb + s * g_ss)[:, None] + k[None, :].to(tl.int64) * g_sk
    go = tl.load(g_ptr + g_offsets, mask=g_mask, other=0.0).to(a_s.dtype) * grad_scale
    w = _bin_weights(w_ptr, K, K_PAD, IS_FP64)
    grad_a = tl.where(g_mask, 2.0 * w[None, :] * (a_s - a_t) * go, 0.0)
    t = tl.arange(0, T_PAD)
    x_mask = line_mask[:, None] & (t[None, :] < T)
    if NEED_S:
        dx = _input_grad(grad_a, re_s, im_s, r_s, cos, sin, PRECISION)
        offsets = (b * dxs_sb + s * dxs_ss)[:, None] + t[None, :].to(tl.int64) * dxs_st
        tl.store(dxs_ptr + offsets, dx.to(dxs_ptr.dtype.element_ty), mask=x_mask)
    if NEED_T:
        dx = _input_grad(-grad_a, re_t, im_t, r_t, cos, sin, PRECISION)
        offsets = (b * dxt_sb + s * dxt_ss)[:, None] + t[None, :].to(tl.int64) * dxt_st
        tl.store(dxt_ptr + offsets, dx.to(dxt_ptr.dtype.element_ty), mask=x_mask)


@triton.jit
def _group_mean_spectrum(x_ptr, b, g, P, T, K, stride_b, stride_t, stride_s, cos, sin, mode, eps,
                         T_PAD: tl.constexpr, K_PAD: tl.constexpr,
                         BLOCK_L: tl.constexpr, PRECISION: tl.constexpr, IS_FP64: tl.constexpr):
    """Mean of A over the P lines of group (b, g) as [K_PAD]."""
    total = tl.zeros((K_PAD,), tl.float64 if IS_FP64 else tl.float32)
    for p0 in range(0, P, BLOCK_L):
        p = p0 + tl.arange(0, BLOCK_L)
        line_mask = p < P
        x = _load_lines(x_ptr, b, g * P + p, stride_b, stride_t, stride_s, line_mask, T, T_PAD, IS_FP64)
        _, _, a, _ = _spectrum(x, cos, sin, mode, eps, PRECISION)
        total += tl.sum(tl.where(line_mask[:, None], a, 0.0), axis=0)
    return total / P


@triton.jit
def _group_input_grad(x_ptr, dx_ptr, b, g, P, T, K, stride_b, stride_t, stride_s, dstride_b,
                      dstride_t, dstride_s, grad_a, cos, sin, mode, eps,
                      T_PAD: tl.constexpr, K_PAD: tl.constexpr, BLOCK_L: tl.constexpr,
                      PRECISION: tl.constexpr, IS_FP64: tl.constexpr):
    """Writes dx for the P lines of group (b, g) given dL/dA [K_PAD] (already / P)."""
    t = tl.arange(0, T_PAD)
    for p0 in range(0, P, BLOCK_L):
        p = p0 + tl.arange(0, BLOCK_L)
        line_mask = p < P
        s = g * P + p
        x = _load_lines(x_ptr, b, s, stride_b, stride_t, stride_s, line_mask, T, T_PAD, IS_FP64)
        re, im, _, r = _spectrum(x, cos, sin, mode, eps, PRECISION)
        dx = _input_grad(tl.where(line_mask[:, None], grad_a[None, :], 0.0), re, im, r, cos, sin, PRECISION)
        offsets = (b * dstride_b + s * dstride_s)[:, None] + t[None, :].to(tl.int64) * dstride_t
        tl.store(dx_ptr + offsets, dx.to(dx_ptr.dtype.element_ty), mask=line_mask[:, None] & (t[None, :] < T))


@triton.jit
def _group_forward(
    xs_ptr, xt_ptr,            # student, teacher: (B, T, S) strided, S = G * P
    w_ptr,                     # (K,) bin weights (float32 or float64)
    out_ptr,                   # STORE_D: d (B, K, G) strided; else partial sums, one per group
    B, T, S, K, P,             # problem sizes; groups of P consecutive s
    mode, scale: tl.float64, eps: tl.float64,
    xs_sb, xs_st, xs_ss, xt_sb, xt_st, xt_ss,
    d_sb, d_sk, d_sg,
    STORE_D: tl.constexpr, T_PAD: tl.constexpr,
    K_PAD: tl.constexpr, BLOCK_L: tl.constexpr, PRECISION: tl.constexpr, IS_FP64: tl.constexpr,
):
    pid = tl.program_id(0)
    G = S // P
    b = pid.to(tl.int64) // G
    g = pid.to(tl.int64) % G
    scale, eps = _scalar(scale, IS_FP64), _scalar(eps, IS_FP64)
    cos, sin = _twiddles(T, K, scale, T_PAD, K_PAD, IS_FP64)
    a_s = _group_mean_spectrum(xs_ptr, b, g, P, T, K, xs_sb, xs_st, xs_ss, cos, sin, mode, eps, T_PAD,
                               K_PAD, BLOCK_L, PRECISION, IS_FP64)
    a_t = _group_mean_spectrum(xt_ptr, b, g, P, T, K, xt_sb, xt_st, xt_ss, cos, sin, mode, eps, T_PAD,
                               K_PAD, BLOCK_L, PRECISION, IS_FP64)
    w = _bin_weights(w_ptr, K, K_PAD, IS_FP64)
    d = w * (a_s - a_t) * (a_s - a_t)
    if STORE_D:
        k = tl.arange(0, K_PAD).to(tl.int64)
        tl.store(out_ptr + b * d_sb + g * d_sg + k * d_sk, d.to(out_ptr.dtype.element_ty), mask=k < K)
    else:
        tl.store(out_ptr + pid, tl.sum(d, axis=0))


@triton.jit
def _group_backward(
    xs_ptr, xt_ptr, w_ptr,     # as in _group_forward
    g_ptr,                     # dL/dd as (B, K, G) strided (strides 0 for a scalar loss)
    dxs_ptr, dxt_ptr,          # gradients (B, T, S) strided (unused unless NEED_S / NEED_T)
    B, T, S, K, P,
    mode, scale: tl.float64, eps: tl.float64, grad_scale: tl.float64,
    xs_sb, xs_st, xs_ss, xt_sb, xt_st, xt_ss,
    g_sb, g_sk, g_sg,
    dxs_sb, dxs_st, dxs_ss, dxt_sb, dxt_st, dxt_ss,
    NEED_S: tl.constexpr, NEED_T: tl.constexpr,
    T_PAD: tl.constexpr, K_PAD: tl.constexpr, BLOCK_L: tl.constexpr, PRECISION: tl.constexpr,
    IS_FP64: tl.constexpr,
):
    pid = tl.program_id(0)
    G = S // P
    b = pid.to(tl.int64) // G
    g = pid.to(tl.int64) % G
    scale, eps = _scalar(scale, IS_FP64), _scalar(eps, IS_FP64)
    k = tl.arange(0, K_PAD).to(tl.int64)
    grad_scale = _scalar(grad_scale, IS_FP64)
    cos, sin = _twiddles(T, K, scale, T_PAD, K_PAD, IS_FP64)
    a_s = _group_mean_spectrum(xs_ptr, b, g, P, T, K, xs_sb, xs_st, xs_ss, cos, sin, mode, eps, T_PAD,
                               K_PAD, BLOCK_L, PRECISION, IS_FP64)
    a_t = _group_mean_spectrum(xt_ptr, b, g, P, T, K, xt_sb, xt_st, xt_ss, cos, sin, mode, eps, T_PAD,
                               K_PAD, BLOCK_L, PRECISION, IS_FP64)
    go = tl.load(g_ptr + b * g_sb + g * g_sg + k * g_sk, mask=k < K, other=0.0).to(a_s.dtype) * grad_scale
    w = _bin_weights(w_ptr, K, K_PAD, IS_FP64)
    grad_a = 2.0 * w * (a_s - a_t) * go / P
    if NEED_S:
        _group_input_grad(xs_ptr, dxs_ptr, b, g, P, T, K, xs_sb, xs_st, xs_ss, dxs_sb, dxs_st, dxs_ss,
                          grad_a, cos, sin, mode, eps, T_PAD, K_PAD, BLOCK_L, PRECISION, IS_FP64)
    if NEED_T:
        _group_input_grad(xt_ptr, dxt_ptr, b, g, P, T, K, xt_sb, xt_st, xt_ss, dxt_sb, dxt_st, dxt_ss,
                          -grad_a, cos, sin, mode, eps, T_PAD, K_PAD, BLOCK_L, PRECISION, IS_FP64)


KERNELS = (_pixel_forward, _pixel_backward, _group_forward, _group_backward)

def _pad(n: int) -> int:
    return max(16, triton.next_power_of_2(n))


def launch_constexprs(T: int, dtype: torch.dtype) -> dict:
    """The constexprs every kernel of a call shares: the one place configs are chosen."""
    T_PAD = _pad(T)
    block = max(16, min(128, 2048 // T_PAD)) // (2 if dtype == torch.float64 else 1)
    return dict(T_PAD=T_PAD, K_PAD=_pad(T_PAD // 2 + 1), BLOCK_L=max(16, block),
                PRECISION=DOT_PRECISION[dtype], IS_FP64=dtype == torch.float64)


def _launch_options(T: int) -> dict:
    return dict(num_warps=4 if T <= 32 else 8)


def _grid(pr: SpectrumProblem, constexprs: dict) -> tuple:
    """(grid, size arguments, grouped) of a call: a program per group of P > 1 lines
    (the group kernels), else per BLOCK_L lines (the pixel kernels)."""
    if pr.P > 1:
        programs, sizes, grouped = pr.B * pr.G, (pr.B, pr.T, pr.S, pr.K, pr.P), True
    else:
        programs, sizes, grouped = triton.cdiv(pr.B * pr.S, constexprs["BLOCK_L"]), (pr.B, pr.T, pr.S, pr.K), False
    return check_grid((programs,)), sizes, grouped


def forward(pr: SpectrumProblem, xs: torch.Tensor, xt: torch.Tensor, w: torch.Tensor,
            d: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    """Writes d (B, K, G) if given; else returns the partial sums of d."""
    c = launch_constexprs(pr.T, xs.dtype)
    grid, sizes, grouped = _grid(pr, c)
    out = d if d is not None else new_output(grid, accumulation_dtype(xs.dtype), xs.device)
    kernel = _group_forward if grouped else _pixel_forward
    kernel[grid](xs, xt, w, out, *sizes, pr.mode, pr.scale, pr.eps,
                        *view_strides(xs), *view_strides(xt), *view_strides(d), STORE_D=d is not None,
                        **c, **_launch_options(pr.T))
    return None if d is not None else out


def backward(pr: SpectrumProblem, xs: torch.Tensor, xt: torch.Tensor, w: torch.Tensor,
             grad: torch.Tensor, grad_scale: float, dxs: Optional[torch.Tensor],
             dxt: Optional[torch.Tensor]) -> None:
    """Writes the gradients dxs, dxt (B, T, S) where not None."""
    c = launch_constexprs(pr.T, xs.dtype)
    grid, sizes, grouped = _grid(pr, c)
    kernel = _group_backward if grouped else _pixel_backward
    kernel[grid](xs, xt, w, grad, dxs if dxs is not None else xs,
                        dxt if dxt is not None else xt, *sizes, pr.mode, pr.scale, pr.eps, grad_scale,
                        *view_strides(xs), *view_strides(xt), *view_strides(grad),
                        *view_strides(dxs), *view_strides(dxt),
                        NEED_S=dxs is not None, NEED_T=dxt is not None,
                        **c, **_launch_options(pr.T))


def launch_configs() -> Iterator[tuple]:
    """(kernel, constexprs, launch options) of every config the launchers can produce:
    each T of 2..MAX_FUSED_T, each dtype, STORE_D both ways, each NEED_S / NEED_T pair a
    backward can need. The launch-capture test checks its captured launches cover them."""
    for T in range(2, MAX_FUSED_T + 1):
        for dtype in TRITON_TYPES:
            c, options = launch_constexprs(T, dtype), _launch_options(T)
            for kernel in (_pixel_forward, _group_forward):
                for store_d in (False, True):
                    yield kernel, dict(c, STORE_D=store_d), options
            for kernel in (_pixel_backward, _group_backward):
                for need_s, need_t in ((True, False), (False, True), (True, True)):
                    yield kernel, dict(c, NEED_S=need_s, NEED_T=need_t), options
