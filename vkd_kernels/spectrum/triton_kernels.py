"""Triton kernels of the temporal spectrum loss (docs/ops.md section 1).

The DFT of a tile of BLOCK_L lines is a matrix product with the twiddles, done by
``tl.dot``: X[BLOCK_L, T_PAD] @ C[T_PAD, K_PAD] -> Re, and likewise Im; the backward is
the transposed product. T_PAD is the power of two >= max(T, 16) (tl.dot's minimum). The
dots cover the bins k < K_PAD = max(16, T_PAD / 2); when K_PAD = T_PAD / 2 (T_PAD >= 32)
the one bin beyond them, k = T_PAD / 2, exists only for T = T_PAD, where it is the
Nyquist bin (twiddles cos(pi t) = (-1)^t, sin 0): it is a row sum of its own (NYQUIST),
so T = 32 and 64 run dots of N = 16 and 32 rather than padding K = 17 and 33 to 32 and 64
(half the tensor-core work and half the accumulator registers).
Forward fuses DFT, spectrum, difference, weights and a per-program partial sum (already
multiplied by the reduction's scale, so the caller's sum is the loss); backward
recomputes the spectra (nothing is stored between passes).

Two kernel shapes: ``pixel`` (P = 1: each program takes a tile of BLOCK_L lines) and
``group`` (P > 1, spatial="mean": each program takes one group of P lines and loops
over it in tiles of BLOCK_L).

Memory access. A pixel tile is BLOCK_L // BLOCK_S batch rows b times BLOCK_S
consecutive positions s, split from the program id (a scalar), so the compiler sees that
s, hence the addresses, run contiguously (stride_s == 1 is specialised to a constant):
the load layout puts consecutive s in consecutive lanes (coalesced) and, with ALIGN = 4,
4 of them in one thread (ld.global.v4 for float32). ALIGN = 4 when S (and P) and every
b and t stride are multiples of 4 (S = 196 is, 49 is not): the kernels restate those
scalars as multiples of ALIGN (a no-op) so the compiler knows the rows stay aligned;
at ALIGN = 1 (S = 49) the rows are only element-aligned, and the loads stay coalesced
but scalar. BLOCK_S = 16 for S > 1 (runs of 64 B of float32: 94% of the lanes busy at
S = 196, 77% at 49); BLOCK_S = 1 for S = 1 (time last: the lines are contiguous along t).

Dot precision. tf32x3 for float32 (float32 accuracy on tensor cores: a = a_hi + a_lo,
a b ~ a_lo b_hi + a_hi b_lo + a_hi b_hi in three tf32 dots), split here rather than by
the compiler's input_precision="tf32x3", whose split of the loop-invariant twiddles is
hoisted in a replicated dot-operand layout (128 registers per 32x32 operand: the group
backward spilled 10.5 KB); split here, the twiddle halves stay in a plain blocked
layout. tf32 for float16/bfloat16 (their values are exact in tf32), ieee for float64.

``launch_constexprs`` and ``_launch_options`` (the table _TILES) are the one place
configs are chosen;
``launch_configs`` enumerates every config the launchers can produce, and the
launch-capture tests (python_tests/test_triton_aot.py, test_triton_spills.py,
test_spectrum_static.py) check that the launches captured from the ops cover them,
compile each for sm_80 and sm_90, and read back registers, spills, layouts and grids.
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
def _multiple(value, ALIGN: tl.constexpr):
    """``value`` (a multiple of ALIGN: the launcher checked) restated so the compiler knows."""
    return value // ALIGN * ALIGN


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
def _nyquist_twiddles(T, scale, T_PAD: tl.constexpr):
    """scale * cos(pi t) = scale * (-1)^t as [T_PAD]: the bin k = T_PAD / 2 of T = T_PAD."""
    t = tl.arange(0, T_PAD)
    return tl.where(t < T, tl.where(t % 2 == 0, scale, -scale), 0.0)


@triton.jit
def _tf32_split(x):
    """x = hi + lo: hi keeps the 10 mantissa bits tf32 holds (exact in a tf32 dot), lo the rest
    (exact in float32; a tf32 dot rounds it at 2**-11 of itself, 2**-21 of x)."""
    hi = (x.to(tl.uint32, bitcast=True) & 0xFFFFE000).to(tl.float32, bitcast=True)
    return hi, x - hi


@triton.jit
def _dot(a, b, PRECISION: tl.constexpr):
    """a @ b at PRECISION; "tf32x3" as three tf32 dots of the split halves (module docstring)."""
    if PRECISION == "tf32x3":
        a_hi, a_lo = _tf32_split(a)
        b_hi, b_lo = _tf32_split(b)
        acc = tl.dot(a_lo, b_hi, input_precision="tf32")
        acc = tl.dot(a_hi, b_lo, acc, input_precision="tf32")
        return tl.dot(a_hi, b_hi, acc, input_precision="tf32")
    else:
        return tl.dot(a, b, input_precision=PRECISION)


@triton.jit
def _amplitude(power, mode, eps):
    """A and the factor r (dA/dRe = r Re, dA/dIm = r Im) from P = Re^2 + Im^2.

    mode (0 magnitude, 1 power, 2 log_magnitude) is a runtime scalar: a uniform select
    costs nothing here and keeps the number of compiled variants down."""
    magnitude = tl.sqrt(power + eps)
    safe = tl.where(magnitude > 0, magnitude, 1.0)
    a = tl.where(mode == 1, power, tl.where(mode == 0, magnitude, tl.log(magnitude + eps)))
    factor = tl.where(mode == 1, 2.0,
                      tl.where(magnitude > 0, tl.where(mode == 0, 1.0 / safe, 1.0 / (safe * (safe + eps))), 0.0))
    return a, factor


@triton.jit
def _spectrum(x, cos, sin, mode, eps, PRECISION: tl.constexpr):
    """Re, Im, A and r of the dot bins of every line of x [BLOCK_L, T_PAD]: [BLOCK_L, K_PAD]."""
    re = _dot(x, cos, PRECISION)
    im = -_dot(x, sin, PRECISION)
    a, factor = _amplitude(re * re + im * im, mode, eps)
    return re, im, a, factor


@triton.jit
def _nyquist_spectrum(x, nyquist, mode, eps):
    """Re, A and r of the Nyquist bin of every line of x (its Im is 0): [BLOCK_L]."""
    re = tl.sum(x * nyquist[None, :], axis=1)
    a, factor = _amplitude(re * re, mode, eps)
    return re, a, factor


@triton.jit
def _input_grad(grad_a, re, im, factor, cos, sin, PRECISION: tl.constexpr):
    """dx [BLOCK_L, T_PAD] from dL/dA [BLOCK_L, K_PAD]: (gA r Re) C^T - (gA r Im) S^T."""
    g = grad_a * factor
    return _dot(g * re, tl.trans(cos), PRECISION) - _dot(g * im, tl.trans(sin), PRECISION)


@triton.jit
def _pixel_lines(B, S, BLOCK_L: tl.constexpr, BLOCK_S: tl.constexpr):
    """The lines (b, s) of this program's tile, [BLOCK_L] each, and which exist: BLOCK_L //
    BLOCK_S batch rows times BLOCK_S consecutive s (contiguous in groups of BLOCK_S)."""
    pid = tl.program_id(0)
    blocks_s = tl.cdiv(S, BLOCK_S)
    r = tl.arange(0, BLOCK_L)
    b = (pid // blocks_s).to(tl.int64) * (BLOCK_L // BLOCK_S) + r // BLOCK_S
    s = (pid % blocks_s).to(tl.int64) * BLOCK_S + r % BLOCK_S
    return b, s, (b < B) & (s < S)


@triton.jit
def _line_offsets(b, s, stride_b, stride_x, stride_s, n, ALIGN: tl.constexpr):
    """Offsets [BLOCK_L, n] of x[b, j, s] for j < n (j: t or k), int64."""
    j = tl.arange(0, n)
    return ((b * _multiple(stride_b, ALIGN) + s * stride_s)[:, None]
            + j[None, :].to(tl.int64) * _multiple(stride_x, ALIGN))


@triton.jit
def _load_lines(ptr, b, s, stride_b, stride_t, stride_s, line_mask, T, T_PAD: tl.constexpr,
                ALIGN: tl.constexpr, IS_FP64: tl.constexpr):
    """Lines x[b, :, s] as [BLOCK_L, T_PAD] in the accumulation dtype, zero padded."""
    t = tl.arange(0, T_PAD)
    offsets = _line_offsets(b, s, stride_b, stride_t, stride_s, T_PAD, ALIGN)
    x = tl.load(ptr + offsets, mask=line_mask[:, None] & (t[None, :] < T), other=0.0)
    return x.to(tl.float64) if IS_FP64 else x.to(tl.float32)


@triton.jit
def _bin_weights(w_ptr, K, K_PAD: tl.constexpr, IS_FP64: tl.constexpr):
    """The bin weights of the dot bins [K_PAD] and of the Nyquist bin k = K_PAD (0 where absent)
    in the accumulation dtype (w is float32, or float64 for a float64 launch)."""
    k = tl.arange(0, K_PAD)
    w = tl.load(w_ptr + k, mask=k < K, other=0.0)
    w_nyquist = tl.load(w_ptr + K_PAD, mask=K > K_PAD, other=0.0)
    acc = tl.float64 if IS_FP64 else tl.float32
    return w.to(acc), w_nyquist.to(acc)


@triton.jit
def _pixel_forward(
    xs_ptr, xt_ptr,            # student, teacher: (B, T, S) strided
    w_ptr,                     # (K,) bin weights (float32 or float64)
    out_ptr,                   # STORE_D: d (B, K, S) strided; else partial sums, one per program
    B, T, S, K,                # problem sizes
    mode, scale: tl.float64, eps: tl.float64,  # spectrum (0 magnitude, 1 power, 2 log), norm scale, eps
    sum_scale: tl.float64,     # factor of the partial sums (1/count for reduction="mean")
    xs_sb, xs_st, xs_ss,       # student strides
    xt_sb, xt_st, xt_ss,       # teacher strides
    d_sb, d_sk, d_ss,          # d strides (STORE_D)
    STORE_D: tl.constexpr, T_PAD: tl.constexpr, K_PAD: tl.constexpr, BLOCK_L: tl.constexpr,
    BLOCK_S: tl.constexpr, ALIGN: tl.constexpr, PRECISION: tl.constexpr, IS_FP64: tl.constexpr,
):
    NYQUIST: tl.constexpr = 2 * K_PAD == T_PAD
    b, s, line_mask = _pixel_lines(B, _multiple(S, ALIGN), BLOCK_L, BLOCK_S)
    scale, eps = _scalar(scale, IS_FP64), _scalar(eps, IS_FP64)
    cos, sin = _twiddles(T, K, scale, T_PAD, K_PAD, IS_FP64)
    xs = _load_lines(xs_ptr, b, s, xs_sb, xs_st, xs_ss, line_mask, T, T_PAD, ALIGN, IS_FP64)
    xt = _load_lines(xt_ptr, b, s, xt_sb, xt_st, xt_ss, line_mask, T, T_PAD, ALIGN, IS_FP64)
    _, _, a_s, _ = _spectrum(xs, cos, sin, mode, eps, PRECISION)
    _, _, a_t, _ = _spectrum(xt, cos, sin, mode, eps, PRECISION)
    w, w_n = _bin_weights(w_ptr, K, K_PAD, IS_FP64)
    k = tl.arange(0, K_PAD)
    d_mask = line_mask[:, None] & (k[None, :] < K)
    diff = a_s - a_t
    d = tl.where(d_mask, w[None, :] * diff * diff, 0.0)
    if NYQUIST:
        nyquist = _nyquist_twiddles(T, scale, T_PAD)
        _, a_sn, _ = _nyquist_spectrum(xs, nyquist, mode, eps)
        _, a_tn, _ = _nyquist_spectrum(xt, nyquist, mode, eps)
        n_mask = line_mask & (tl.zeros_like(s) + K > K_PAD)  # (a tensor: the interpreter wants one)
        d_n = tl.where(n_mask, w_n * (a_sn - a_tn) * (a_sn - a_tn), 0.0)
    if STORE_D:
        offsets = _line_offsets(b, s, d_sb, d_sk, d_ss, K_PAD, ALIGN)
        tl.store(out_ptr + offsets, d.to(out_ptr.dtype.element_ty), mask=d_mask)
        if NYQUIST:
            offsets_n = b * _multiple(d_sb, ALIGN) + s * d_ss + K_PAD * _multiple(d_sk, ALIGN)
            tl.store(out_ptr + offsets_n, d_n.to(out_ptr.dtype.element_ty), mask=n_mask)
    else:
        total = tl.sum(tl.sum(d, axis=1), axis=0)
        if NYQUIST:
            total += tl.sum(d_n, axis=0)
        tl.store(out_ptr + tl.program_id(0), total * _scalar(sum_scale, IS_FP64))


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
    T_PAD: tl.constexpr, K_PAD: tl.constexpr, BLOCK_L: tl.constexpr, BLOCK_S: tl.constexpr,
    ALIGN: tl.constexpr, PRECISION: tl.constexpr, IS_FP64: tl.constexpr,
):
    NYQUIST: tl.constexpr = 2 * K_PAD == T_PAD
    b, s, line_mask = _pixel_lines(B, _multiple(S, ALIGN), BLOCK_L, BLOCK_S)
    scale, eps = _scalar(scale, IS_FP64), _scalar(eps, IS_FP64)
    grad_scale = _scalar(grad_scale, IS_FP64)
    cos, sin = _twiddles(T, K, scale, T_PAD, K_PAD, IS_FP64)
    xs = _load_lines(xs_ptr, b, s, xs_sb, xs_st, xs_ss, line_mask, T, T_PAD, ALIGN, IS_FP64)
    xt = _load_lines(xt_ptr, b, s, xt_sb, xt_st, xt_ss, line_mask, T, T_PAD, ALIGN, IS_FP64)
    re_s, im_s, a_s, r_s = _spectrum(xs, cos, sin, mode, eps, PRECISION)
    re_t, im_t, a_t, r_t = _spectrum(xt, cos, sin, mode, eps, PRECISION)
    k = tl.arange(0, K_PAD)
    g_mask = line_mask[:, None] & (k[None, :] < K)
    g_offsets = _line_offsets(b, s, g_sb, g_sk, g_ss, K_PAD, ALIGN)
    go = tl.load(g_ptr + g_offsets, mask=g_mask, other=0.0).to(a_s.dtype) * grad_scale
    w, w_n = _bin_weights(w_ptr, K, K_PAD, IS_FP64)
    grad_a = tl.where(g_mask, 2.0 * w[None, :] * (a_s - a_t) * go, 0.0)
    if NYQUIST:
        nyquist = _nyquist_twiddles(T, scale, T_PAD)
        re_sn, a_sn, r_sn = _nyquist_spectrum(xs, nyquist, mode, eps)
        re_tn, a_tn, r_tn = _nyquist_spectrum(xt, nyquist, mode, eps)
        n_mask = line_mask & (tl.zeros_like(s) + K > K_PAD)  # (a tensor: the interpreter wants one)
        g_n = b * _multiple(g_sb, ALIGN) + s * g_ss + K_PAD * _multiple(g_sk, ALIGN)
        go_n = tl.load(g_ptr + g_n, mask=n_mask, other=0.0).to(a_s.dtype) * grad_scale
        grad_n = tl.where(n_mask, 2.0 * w_n * (a_sn - a_tn) * go_n, 0.0)
    t = tl.arange(0, T_PAD)
    x_mask = line_mask[:, None] & (t[None, :] < T)
    if NEED_S:
        dx = _input_grad(grad_a, re_s, im_s, r_s, cos, sin, PRECISION)
        if NYQUIST:
            dx += (grad_n * r_sn * re_sn)[:, None] * nyquist[None, :]
        offsets = _line_offsets(b, s, dxs_sb, dxs_st, dxs_ss, T_PAD, ALIGN)
        tl.store(dxs_ptr + offsets, dx.to(dxs_ptr.dtype.element_ty), mask=x_mask)
    if NEED_T:
        dx = _input_grad(-grad_a, re_t, im_t, r_t, cos, sin, PRECISION)
        if NYQUIST:
            dx -= (grad_n * r_tn * re_tn)[:, None] * nyquist[None, :]
        offsets = _line_offsets(b, s, dxt_sb, dxt_st, dxt_ss, T_PAD, ALIGN)
        tl.store(dxt_ptr + offsets, dx.to(dxt_ptr.dtype.element_ty), mask=x_mask)


@triton.jit
def _group_mean_spectrum(x_ptr, b, g, P, T, stride_b, stride_t, stride_s, cos, sin, nyquist, mode, eps,
                         T_PAD: tl.constexpr, K_PAD: tl.constexpr, BLOCK_L: tl.constexpr, ALIGN: tl.constexpr,
                         PRECISION: tl.constexpr, IS_FP64: tl.constexpr):
    """Mean of A over the P lines of group (b, g): the dot bins [K_PAD] and the Nyquist bin."""
    NYQUIST: tl.constexpr = 2 * K_PAD == T_PAD
    total = tl.zeros((K_PAD,), tl.float64 if IS_FP64 else tl.float32)
    total_n = tl.zeros((), tl.float64 if IS_FP64 else tl.float32)
    for p0 in range(0, P, BLOCK_L):
        p = p0 + tl.arange(0, BLOCK_L)
        line_mask = p < P
        x = _load_lines(x_ptr, b, g * P + p, stride_b, stride_t, stride_s, line_mask, T, T_PAD, ALIGN, IS_FP64)
        _, _, a, _ = _spectrum(x, cos, sin, mode, eps, PRECISION)
        total += tl.sum(tl.where(line_mask[:, None], a, 0.0), axis=0)
        if NYQUIST:
            _, a_n, _ = _nyquist_spectrum(x, nyquist, mode, eps)
            total_n += tl.sum(tl.where(line_mask, a_n, 0.0), axis=0)
    return total / P, total_n / P


@triton.jit
def _group_input_grad(x_ptr, dx_ptr, b, g, P, T, stride_b, stride_t, stride_s, dstride_b, dstride_t,
                      dstride_s, grad_a, grad_n, cos, sin, nyquist, mode, eps,
                      T_PAD: tl.constexpr, K_PAD: tl.constexpr, BLOCK_L: tl.constexpr, ALIGN: tl.constexpr,
                      PRECISION: tl.constexpr, IS_FP64: tl.constexpr):
    """Writes dx for the P lines of group (b, g) given dL/dA of the dot bins [K_PAD] and of
    the Nyquist bin (both already / P)."""
    NYQUIST: tl.constexpr = 2 * K_PAD == T_PAD
    t = tl.arange(0, T_PAD)
    for p0 in range(0, P, BLOCK_L):
        p = p0 + tl.arange(0, BLOCK_L)
        line_mask = p < P
        s = g * P + p
        x = _load_lines(x_ptr, b, s, stride_b, stride_t, stride_s, line_mask, T, T_PAD, ALIGN, IS_FP64)
        re, im, _, r = _spectrum(x, cos, sin, mode, eps, PRECISION)
        dx = _input_grad(tl.where(line_mask[:, None], grad_a[None, :], 0.0), re, im, r, cos, sin, PRECISION)
        if NYQUIST:
            re_n, _, r_n = _nyquist_spectrum(x, nyquist, mode, eps)
            dx += (tl.where(line_mask, grad_n * r_n * re_n, 0.0))[:, None] * nyquist[None, :]
        offsets = _line_offsets(b, s, dstride_b, dstride_t, dstride_s, T_PAD, ALIGN)
        tl.store(dx_ptr + offsets, dx.to(dx_ptr.dtype.element_ty), mask=line_mask[:, None] & (t[None, :] < T))


@triton.jit
def _group_forward(
    xs_ptr, xt_ptr,            # student, teacher: (B, T, S) strided, S = G * P
    w_ptr,                     # (K,) bin weights (float32 or float64)
    out_ptr,                   # STORE_D: d (B, K, G) strided; else partial sums, one per group
    B, T, S, K, P,             # problem sizes; groups of P consecutive s
    mode, scale: tl.float64, eps: tl.float64, sum_scale: tl.float64,
    xs_sb, xs_st, xs_ss, xt_sb, xt_st, xt_ss,
    d_sb, d_sk, d_sg,
    STORE_D: tl.constexpr, T_PAD: tl.constexpr, K_PAD: tl.constexpr, BLOCK_L: tl.constexpr,
    ALIGN: tl.constexpr, PRECISION: tl.constexpr, IS_FP64: tl.constexpr,
):
    pid = tl.program_id(0)
    P = _multiple(P, ALIGN)
    G = S // P
    b = pid.to(tl.int64) // G
    g = pid.to(tl.int64) % G
    scale, eps = _scalar(scale, IS_FP64), _scalar(eps, IS_FP64)
    cos, sin = _twiddles(T, K, scale, T_PAD, K_PAD, IS_FP64)
    nyquist = _nyquist_twiddles(T, scale, T_PAD)
    a_s, a_sn = _group_mean_spectrum(xs_ptr, b, g, P, T, xs_sb, xs_st, xs_ss, cos, sin, nyquist, mode, eps,
                                     T_PAD, K_PAD, BLOCK_L, ALIGN, PRECISION, IS_FP64)
    a_t, a_tn = _group_mean_spectrum(xt_ptr, b, g, P, T, xt_sb, xt_st, xt_ss, cos, sin, nyquist, mode, eps,
                                     T_PAD, K_PAD, BLOCK_L, ALIGN, PRECISION, IS_FP64)
    w, w_n = _bin_weights(w_ptr, K, K_PAD, IS_FP64)
    d = w * (a_s - a_t) * (a_s - a_t)
    d_n = w_n * (a_sn - a_tn) * (a_sn - a_tn)  # 0 where there is no Nyquist bin (w_n = 0)
    if STORE_D:
        k = tl.arange(0, K_PAD).to(tl.int64)
        tl.store(out_ptr + b * d_sb + g * d_sg + k * d_sk, d.to(out_ptr.dtype.element_ty), mask=k < K)
        tl.store(out_ptr + b * d_sb + g * d_sg + K_PAD * d_sk, d_n.to(out_ptr.dtype.element_ty), mask=K > K_PAD)
    else:
        tl.store(out_ptr + pid, (tl.sum(d, axis=0) + d_n) * _scalar(sum_scale, IS_FP64))


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
    T_PAD: tl.constexpr, K_PAD: tl.constexpr, BLOCK_L: tl.constexpr, ALIGN: tl.constexpr,
    PRECISION: tl.constexpr, IS_FP64: tl.constexpr,
):
    pid = tl.program_id(0)
    P = _multiple(P, ALIGN)
    G = S // P
    b = pid.to(tl.int64) // G
    g = pid.to(tl.int64) % G
    scale, eps = _scalar(scale, IS_FP64), _scalar(eps, IS_FP64)
    grad_scale = _scalar(grad_scale, IS_FP64)
    cos, sin = _twiddles(T, K, scale, T_PAD, K_PAD, IS_FP64)
    nyquist = _nyquist_twiddles(T, scale, T_PAD)
    a_s, a_sn = _group_mean_spectrum(xs_ptr, b, g, P, T, xs_sb, xs_st, xs_ss, cos, sin, nyquist, mode, eps,
                                     T_PAD, K_PAD, BLOCK_L, ALIGN, PRECISION, IS_FP64)
    a_t, a_tn = _group_mean_spectrum(xt_ptr, b, g, P, T, xt_sb, xt_st, xt_ss, cos, sin, nyquist, mode, eps,
                                     T_PAD, K_PAD, BLOCK_L, ALIGN, PRECISION, IS_FP64)
    k = tl.arange(0, K_PAD).to(tl.int64)
    go = tl.load(g_ptr + b * g_sb + g * g_sg + k * g_sk, mask=k < K, other=0.0).to(a_s.dtype) * grad_scale
    go_n = tl.load(g_ptr + b * g_sb + g * g_sg + K_PAD * g_sk, mask=K > K_PAD, other=0.0).to(a_s.dtype) * grad_scale
    w, w_n = _bin_weights(w_ptr, K, K_PAD, IS_FP64)
    grad_a = 2.0 * w * (a_s - a_t) * go / P
    grad_n = 2.0 * w_n * (a_sn - a_tn) * go_n / P
    if NEED_S:
        _group_input_grad(xs_ptr, dxs_ptr, b, g, P, T, xs_sb, xs_st, xs_ss, dxs_sb, dxs_st, dxs_ss,
                          grad_a, grad_n, cos, sin, nyquist, mode, eps, T_PAD, K_PAD, BLOCK_L, ALIGN, PRECISION,
                          IS_FP64)
    if NEED_T:
        _group_input_grad(xt_ptr, dxt_ptr, b, g, P, T, xt_sb, xt_st, xt_ss, dxt_sb, dxt_st, dxt_ss,
                          -grad_a, -grad_n, cos, sin, nyquist, mode, eps, T_PAD, K_PAD, BLOCK_L, ALIGN, PRECISION,
                          IS_FP64)


KERNELS = (_pixel_forward, _pixel_backward, _group_forward, _group_backward)


def _pad(n: int) -> int:
    return max(16, triton.next_power_of_2(n))


# (BLOCK_L, num_warps) per kernel, T_PAD and dot precision: each the largest tile found
# with no spill on sm_90 for every layout and NEED_S / NEED_T (python_tests/
# test_triton_spills.py reads ptxas -v of every captured launch; the register allocator
# is not monotonic in the tile, so each entry is what was measured, not a rule).
# - 64 rows on 4 warps is one warpgroup's wgmma M: the default wherever it fits.
# - ieee (float64: FMA dots, 8-byte accumulators) takes 32 rows, 16 in the backward
#   kernels and at T_PAD 64 (32 rows spill 4-156 B there).
# - tf32x3 at T_PAD 64 holds the twiddles' [64, 32] halves and the operands of three dots:
#   64 or 32 rows spill 150-1200 B at 4 or 8 warps; 16 rows on 8 warps fit (16 rows run
#   mma.sync, not wgmma: only for T = 33..64). The group backward spills at 64 rows from
#   T_PAD 32 on (36 B with odd rows), so it takes 16 there.
# - tf32 (float16/bfloat16: one dot, not three) fits 64 rows except in the backward at
#   T_PAD 64 (20-560 B): 16 rows there; the group backward's loop also unpipelined (a
#   third entry: num_stages 1; at the default 3 it spilled 8-20 B with 16 rows on 4 or 8
#   warps). ieee at T_PAD 64 backward: 16 rows on 8 warps (on 4: 96-128 B).
_FORWARD = {(16, "tf32x3"): (64, 4), (32, "tf32x3"): (64, 4), (64, "tf32x3"): (16, 8),
            (16, "tf32"): (64, 4), (32, "tf32"): (64, 4), (64, "tf32"): (64, 4),
            (16, "ieee"): (32, 4), (32, "ieee"): (32, 4), (64, "ieee"): (16, 4)}
_TILES = {
    "_pixel_forward": _FORWARD,
    "_group_forward": _FORWARD,
    "_pixel_backward": {(16, "tf32x3"): (64, 4), (32, "tf32x3"): (64, 4), (64, "tf32x3"): (16, 8),
                        (16, "tf32"): (64, 4), (32, "tf32"): (64, 4), (64, "tf32"): (16, 4),
                        (16, "ieee"): (32, 4), (32, "ieee"): (16, 4), (64, "ieee"): (16, 8)},
    "_group_backward": {(16, "tf32x3"): (64, 4), (32, "tf32x3"): (16, 4), (64, "tf32x3"): (16, 8),
                        (16, "tf32"): (64, 4), (32, "tf32"): (64, 4), (64, "tf32"): (16, 8, 1),
                        (16, "ieee"): (16, 4), (32, "ieee"): (16, 4), (64, "ieee"): (16, 8)},
}


def launch_constexprs(kernel, T: int, dtype: torch.dtype) -> dict:
    """The constexprs of ``kernel`` for T and dtype (T_PAD, K_PAD, BLOCK_L, PRECISION,
    IS_FP64): with _launch_options the one place configs are chosen (BLOCK_S and ALIGN
    depend on the layout: _grid)."""
    T_PAD = _pad(T)
    precision = DOT_PRECISION[dtype]
    return dict(T_PAD=T_PAD, K_PAD=max(16, T_PAD // 2), BLOCK_L=_TILES[kernel.__name__][T_PAD, precision][0],
                PRECISION=precision, IS_FP64=dtype == torch.float64)


def _launch_options(kernel, T: int, dtype: torch.dtype) -> dict:
    tile = _TILES[kernel.__name__][_pad(T), DOT_PRECISION[dtype]]
    return dict(num_warps=tile[1], **({"num_stages": tile[2]} if len(tile) > 2 else {}))


def _align(pr: SpectrumProblem, *tensors: Optional[torch.Tensor]) -> int:
    """4 when S, P and every b and t stride (k and s strides of d and dL/dd) are multiples of 4,
    else 1 (the ALIGN constexpr: module docstring)."""
    sizes = [pr.S, pr.P if pr.P > 1 else 4] + [st for x in tensors if x is not None for st in x.stride()[:2]]
    return 4 if all(n % 4 == 0 for n in sizes) else 1


def _grid(pr: SpectrumProblem, c: dict, *tensors: Optional[torch.Tensor]) -> tuple:
    """(grid, size arguments, layout constexprs) of a call: a program per group of P > 1
    lines (the group kernels), else per tile of BLOCK_L lines (the pixel kernels)."""
    align = _align(pr, *tensors)
    if pr.P > 1:
        return check_grid((pr.B * pr.G,)), (pr.B, pr.T, pr.S, pr.K, pr.P), dict(ALIGN=align)
    block_s = 1 if pr.S == 1 else 16
    programs = triton.cdiv(pr.B, c["BLOCK_L"] // block_s) * triton.cdiv(pr.S, block_s)
    return check_grid((programs,)), (pr.B, pr.T, pr.S, pr.K), dict(BLOCK_S=block_s, ALIGN=align)


def forward(pr: SpectrumProblem, xs: torch.Tensor, xt: torch.Tensor, w: torch.Tensor,
            d: Optional[torch.Tensor], sum_scale: float = 1.0) -> Optional[torch.Tensor]:
    """Writes d (B, K, G) if given; else returns the partial sums of d times sum_scale."""
    kernel = _group_forward if pr.P > 1 else _pixel_forward
    c = launch_constexprs(kernel, pr.T, xs.dtype)
    grid, sizes, layout = _grid(pr, c, xs, xt, d)
    out = d if d is not None else new_output(grid, accumulation_dtype(xs.dtype), xs.device)
    kernel[grid](xs, xt, w, out, *sizes, pr.mode, pr.scale, pr.eps, sum_scale,
                 *view_strides(xs), *view_strides(xt), *view_strides(d), STORE_D=d is not None,
                 **c, **layout, **_launch_options(kernel, pr.T, xs.dtype))
    return None if d is not None else out


def backward(pr: SpectrumProblem, xs: torch.Tensor, xt: torch.Tensor, w: torch.Tensor,
             grad: torch.Tensor, grad_scale: float, dxs: Optional[torch.Tensor],
             dxt: Optional[torch.Tensor]) -> None:
    """Writes the gradients dxs, dxt (B, T, S) where not None."""
    kernel = _group_backward if pr.P > 1 else _pixel_backward
    c = launch_constexprs(kernel, pr.T, xs.dtype)
    grid, sizes, layout = _grid(pr, c, xs, xt, grad, dxs, dxt)
    kernel[grid](xs, xt, w, grad, dxs if dxs is not None else xs,
                 dxt if dxt is not None else xt, *sizes, pr.mode, pr.scale, pr.eps, grad_scale,
                 *view_strides(xs), *view_strides(xt), *view_strides(grad),
                 *view_strides(dxs), *view_strides(dxt),
                 NEED_S=dxs is not None, NEED_T=dxt is not None,
                 **c, **layout, **_launch_options(kernel, pr.T, xs.dtype))


def launch_configs() -> Iterator[tuple]:
    """(kernel, constexprs, launch options) of every config the launchers can produce:
    each T of 2..MAX_FUSED_T, each dtype, each layout (BLOCK_S, ALIGN), STORE_D both
    ways, each NEED_S / NEED_T pair a backward can need. The launch-capture test checks
    its captured launches cover them."""
    pixel_layouts = (dict(BLOCK_S=1, ALIGN=1), dict(BLOCK_S=16, ALIGN=1), dict(BLOCK_S=16, ALIGN=4))
    group_layouts = (dict(ALIGN=1), dict(ALIGN=4))
    for T in range(2, MAX_FUSED_T + 1):
        for dtype in TRITON_TYPES:
            for kernel, layouts in ((_pixel_forward, pixel_layouts), (_group_forward, group_layouts)):
                c, options = launch_constexprs(kernel, T, dtype), _launch_options(kernel, T, dtype)
                for layout in layouts:
                    for store_d in (False, True):
                        # the op's d of the group kernels is (N, G, K) with K last: its k stride of 1
                        # keeps ALIGN at 1 whenever STORE_D
                        if not (store_d and kernel is _group_forward and layout["ALIGN"] == 4):
                            yield kernel, dict(c, STORE_D=store_d, **layout), options
            for kernel, layouts in ((_pixel_backward, pixel_layouts), (_group_backward, group_layouts)):
                c, options = launch_constexprs(kernel, T, dtype), _launch_options(kernel, T, dtype)
                for layout in layouts:
                    for need_s, need_t in ((True, False), (False, True), (True, True)):
                        yield kernel, dict(c, NEED_S=need_s, NEED_T=need_t, **layout), options
