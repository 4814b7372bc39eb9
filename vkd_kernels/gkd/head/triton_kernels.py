"""Triton kernels of the GKD head's tail around its GEMMs (docs/ops.md 3b; the math of
csrc/common/head.h), on the channels-last distinct columns Z (N, J, C):

- ``_head_norm_forward``: one program per (sample, group) over its J x Cg block, in
  [BLOCK_J, BLOCK_C] tiles: + conv bias, statistics weighted by the class counts w, then
  normalise + affine + ReLU, written as H (J + 1, N, C) (row J = 1: the Linear's bias
  column, so that dL/dbias comes out of the dA GEMM) and (mean, rstd) per group;
- ``_head_output``: lambda[n, c, t] = sigmoid(out[t, n C + c] + bias[t]) (out = A H);
- ``_head_norm_backward``: one program per group over every sample (so dgamma, dbeta and
  dbias need no second stage): dout = dlambda lambda (1 - lambda) (written (T', N, C)
  for the dA GEMM), dH = A^T dout in registers (T' terms), the GroupNorm + ReLU backward
  from the saved (mean, rstd), dZ.
"""
from __future__ import annotations

from typing import Iterator

import torch
import triton
import triton.language as tl

from ..._triton_jit import scalar as _scalar
from ..._triton_specs import check_grid


@triton.jit
def _load_tile(ptr, base, j, c, J, Cg, C, IS_FP64: tl.constexpr):
    """[BLOCK_J, BLOCK_C] tile of a contiguous (N, J, C) tensor in the accumulation dtype."""
    mask = (j[:, None] < J) & (c[None, :] < Cg)
    x = tl.load(ptr + base + j[:, None].to(tl.int64) * C + c[None, :], mask=mask, other=0.0)
    return x.to(tl.float64) if IS_FP64 else x.to(tl.float32), mask


@triton.jit
def _channel_params(gamma_ptr, beta_ptr, c0, c, Cg, HAS_GAMMA: tl.constexpr, HAS_BETA: tl.constexpr,
                    IS_FP64: tl.constexpr):
    """gamma, beta [BLOCK_C] of channels c0 + c (1 and 0 when absent)."""
    dtype = tl.float64 if IS_FP64 else tl.float32
    gamma = tl.load(gamma_ptr + c0 + c, mask=c < Cg, other=1.0).to(dtype) if HAS_GAMMA else tl.full(c.shape, 1.0, dtype)
    beta = tl.load(beta_ptr + c0 + c, mask=c < Cg, other=0.0).to(dtype) if HAS_BETA else tl.zeros(c.shape, dtype)
    return gamma, beta


@triton.jit
def _conv_bias(cb_ptr, c0, c, Cg, HAS_CB: tl.constexpr, IS_FP64: tl.constexpr):
    dtype = tl.float64 if IS_FP64 else tl.float32
    return tl.load(cb_ptr + c0 + c, mask=c < Cg, other=0.0).to(dtype) if HAS_CB else tl.zeros(c.shape, dtype)


@triton.jit
def _head_norm_forward(
    z_ptr,                     # Z (N, J, C) contiguous: the distinct conv columns (no bias), channels-last
    w_ptr,                     # (J,) column-class counts
    cb_ptr, gamma_ptr, beta_ptr,  # (C,) conv bias, GroupNorm affine (unused unless HAS_*)
    h_ptr,                     # H (J + 1, N, C) output; row J = 1
    stats_ptr,                 # (N, G, 2) output: mean, rstd (accumulation dtype)
    N, J, C, G,                # sizes
    M: tl.float64, eps: tl.float64,  # elements per group of the upsampled tensor (Cg L), GroupNorm eps
    HAS_CB: tl.constexpr, HAS_GAMMA: tl.constexpr, HAS_BETA: tl.constexpr, BLOCK_J: tl.constexpr,
    BLOCK_C: tl.constexpr, IS_FP64: tl.constexpr,
):
    pid = tl.program_id(0)
    Cg = C // G
    c0 = (pid % G) * Cg
    n = (pid // G).to(tl.int64)
    base = n * J * C + c0
    dtype = tl.float64 if IS_FP64 else tl.float32
    M, eps = _scalar(M, IS_FP64), _scalar(eps, IS_FP64)
    c = tl.arange(0, BLOCK_C)
    total = tl.zeros((BLOCK_J, BLOCK_C), dtype)
    for j0 in range(0, J, BLOCK_J):
        j = j0 + tl.arange(0, BLOCK_J)
        wj = tl.load(w_ptr + j, mask=j < J, other=0.0).to(dtype)
        for k0 in range(0, Cg, BLOCK_C):
            z, mask = _load_tile(z_ptr, base + k0, j, c, J, Cg - k0, C, IS_FP64)
            z = tl.where(mask, z + _conv_bias(cb_ptr, c0 + k0, c, Cg - k0, HAS_CB, IS_FP64)[None, :], 0.0)
            total += z * wj[:, None]
    mean = tl.sum(tl.sum(total, axis=1), axis=0) / M
    total = tl.zeros((BLOCK_J, BLOCK_C), dtype)
    for j0 in range(0, J, BLOCK_J):
        j = j0 + tl.arange(0, BLOCK_J)
        wj = tl.load(w_ptr + j, mask=j < J, other=0.0).to(dtype)
        for k0 in range(0, Cg, BLOCK_C):
            z, mask = _load_tile(z_ptr, base + k0, j, c, J, Cg - k0, C, IS_FP64)
            d = tl.where(mask, z + _conv_bias(cb_ptr, c0 + k0, c, Cg - k0, HAS_CB, IS_FP64)[None, :] - mean, 0.0)
            total += d * d * wj[:, None]
    rstd = 1.0 / tl.sqrt(tl.sum(tl.sum(total, axis=1), axis=0) / M + eps)
    for k0 in range(0, Cg, BLOCK_C):
        gamma, beta = _channel_params(gamma_ptr, beta_ptr, c0 + k0, c, Cg - k0, HAS_GAMMA, HAS_BETA, IS_FP64)
        cb = _conv_bias(cb_ptr, c0 + k0, c, Cg - k0, HAS_CB, IS_FP64)
        for j0 in range(0, J, BLOCK_J):
            j = j0 + tl.arange(0, BLOCK_J)
            z, mask = _load_tile(z_ptr, base + k0, j, c, J, Cg - k0, C, IS_FP64)
            h = tl.maximum((z + cb[None, :] - mean) * rstd * gamma[None, :] + beta[None, :], 0.0)
            tl.store(h_ptr + (j[:, None].to(tl.int64) * N + n) * C + c0 + k0 + c[None, :],
                     h.to(h_ptr.dtype.element_ty), mask=mask)
        tl.store(h_ptr + (J * N + n) * C + c0 + k0 + c, tl.full((BLOCK_C,), 1.0, h_ptr.dtype.element_ty),
                 mask=c < Cg - k0)
    tl.store(stats_ptr + 2 * pid.to(tl.int64), mean)
    tl.store(stats_ptr + 2 * pid.to(tl.int64) + 1, rstd)


@triton.jit
def _head_output(
    out_ptr,                   # (T', N C): A H
    b_ptr,                     # (T',) Linear bias (unused unless HAS_B)
    lam_ptr,                   # (N, C, T') output
    NC, TP,
    HAS_B: tl.constexpr, BLOCK: tl.constexpr, BLOCK_T: tl.constexpr, IS_FP64: tl.constexpr,
):
    i = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    for t0 in range(0, TP, BLOCK_T):
        t = t0 + tl.arange(0, BLOCK_T)
        mask = (i[:, None] < NC) & (t[None, :] < TP)
        v = tl.load(out_ptr + t[None, :].to(tl.int64) * NC + i[:, None], mask=mask, other=0.0)
        v = v.to(tl.float64) if IS_FP64 else v.to(tl.float32)
        if HAS_B:
            v += tl.load(b_ptr + t, mask=t < TP, other=0.0).to(v.dtype)[None, :]
        tl.store(lam_ptr + i[:, None] * TP + t[None, :], (1.0 / (1.0 + tl.exp(-v))).to(lam_ptr.dtype.element_ty),
                 mask=mask)


@triton.jit
def _dout(lam_ptr, dlam_ptr, n, c, cmask, t, C, TP, d_sn, d_sc, d_st, IS_FP64: tl.constexpr):
    """dL/d(A H)[n, t, c] = dlambda lambda (1 - lambda) at channels c [BLOCK_C]."""
    lam = tl.load(lam_ptr + (n * C + c) * TP + t, mask=cmask, other=0.0)
    dlam = tl.load(dlam_ptr + n * d_sn + c * d_sc + t * d_st, mask=cmask, other=0.0)
    lam = lam.to(tl.float64) if IS_FP64 else lam.to(tl.float32)
    return dlam.to(lam.dtype) * lam * (1.0 - lam)


@triton.jit
def _dh_tile(lam_ptr, dlam_ptr, a_ptr, n, c, cmask, j, jmask, C, J, TP, d_sn, d_sc, d_st, IS_FP64: tl.constexpr):
    """dL/dH [BLOCK_J, BLOCK_C] = sum_t A[t, j] dout[n, t, c] (T' outer products)."""
    dtype = tl.float64 if IS_FP64 else tl.float32
    acc = tl.zeros((j.shape[0], c.shape[0]), dtype)
    for t in range(0, TP):
        a = tl.load(a_ptr + t * J + j, mask=jmask, other=0.0).to(dtype)
        acc += a[:, None] * _dout(lam_ptr, dlam_ptr, n, c, cmask, t, C, TP, d_sn, d_sc, d_st, IS_FP64)[None, :]
    return acc


@triton.jit
def _head_norm_backward(
    z_ptr, w_ptr, cb_ptr, gamma_ptr, beta_ptr,  # as in _head_norm_forward
    stats_ptr,                 # (N, G, 2) mean, rstd from the forward
    lam_ptr,                   # lambda (N, C, T') contiguous, from the forward
    dlam_ptr,                  # dL/dlambda (N, C, T') strided
    a_ptr,                     # A (T', J) contiguous: the Linear's weights summed per column class
    dout_ptr,                  # (T', N, C) output: dL/d(A H)
    dz_ptr,                    # dL/dZ (N, J, C) output
    dgamma_ptr, dbeta_ptr, dcb_ptr,  # (C,) outputs (unused unless HAS_*)
    N, J, C, G, TP, inv_M: tl.float64,  # 1 / (elements per group)
    d_sn, d_sc, d_st,
    HAS_CB: tl.constexpr, HAS_GAMMA: tl.constexpr, HAS_BETA: tl.constexpr, BLOCK_J: tl.constexpr,
    BLOCK_C: tl.constexpr, IS_FP64: tl.constexpr,
):
    g = tl.program_id(0)
    Cg = C // G
    c0 = g * Cg
    dtype = tl.float64 if IS_FP64 else tl.float32
    # 1 / M from the host: a division is a slow-path subroutine on the GPU, and the
    # registers saved around its call spilled 4-32 B (ptxas -v, sm_90)
    inv_M = _scalar(inv_M, IS_FP64)
    c = tl.arange(0, BLOCK_C)
    for n32 in range(0, N):
        n = n32 + tl.zeros((), tl.int64)  # int64 offsets (a loop index is int32)
        base = n * J * C + c0
        mean = tl.load(stats_ptr + 2 * (n * G + g))
        rstd = tl.load(stats_ptr + 2 * (n * G + g) + 1)
        s1 = tl.zeros((BLOCK_C,), dtype)
        s2 = tl.zeros((BLOCK_C,), dtype)
        for k0 in range(0, Cg, BLOCK_C):
            cmask = c < Cg - k0
            gamma, beta = _channel_params(gamma_ptr, beta_ptr, c0 + k0, c, Cg - k0, HAS_GAMMA, HAS_BETA, IS_FP64)
            cb = _conv_bias(cb_ptr, c0 + k0, c, Cg - k0, HAS_CB, IS_FP64)
            for t in range(0, TP):
                tl.store(dout_ptr + (t * N + n) * C + c0 + k0 + c,
                         _dout(lam_ptr, dlam_ptr, n, c0 + k0 + c, cmask, t, C, TP, d_sn, d_sc, d_st,
                               IS_FP64).to(dout_ptr.dtype.element_ty), mask=cmask)
            for j0 in range(0, J, BLOCK_J):
                j = j0 + tl.arange(0, BLOCK_J)
                z, mask = _load_tile(z_ptr, base + k0, j, c, J, Cg - k0, C, IS_FP64)
                xhat = (z + cb[None, :] - mean) * rstd
                dh = _dh_tile(lam_ptr, dlam_ptr, a_ptr, n, c0 + k0 + c, cmask, j, j < J, C, J, TP, d_sn, d_sc,
                              d_st, IS_FP64)
                dh = tl.where(mask & (xhat * gamma[None, :] + beta[None, :] > 0), dh, 0.0)
                s1 += tl.sum(dh * gamma[None, :], axis=0)
                s2 += tl.sum(dh * gamma[None, :] * xhat, axis=0)
        sum_dxhat = tl.sum(s1, axis=0)
        sum_dxhat_xhat = tl.sum(s2, axis=0)
        after_first = (tl.zeros((BLOCK_C,), tl.int64) + n) > 0  # the first sample writes, the others add
        for k0 in range(0, Cg, BLOCK_C):
            cmask = c < Cg - k0
            gamma, beta = _channel_params(gamma_ptr, beta_ptr, c0 + k0, c, Cg - k0, HAS_GAMMA, HAS_BETA, IS_FP64)
            cb = _conv_bias(cb_ptr, c0 + k0, c, Cg - k0, HAS_CB, IS_FP64)
            dg = tl.zeros((BLOCK_C,), dtype)
            db = tl.zeros((BLOCK_C,), dtype)
            dc = tl.zeros((BLOCK_C,), dtype)
            for j0 in range(0, J, BLOCK_J):
                j = j0 + tl.arange(0, BLOCK_J)
                wm = tl.load(w_ptr + j, mask=j < J, other=0.0).to(dtype) * inv_M
                z, mask = _load_tile(z_ptr, base + k0, j, c, J, Cg - k0, C, IS_FP64)
                xhat = (z + cb[None, :] - mean) * rstd
                dh = _dh_tile(lam_ptr, dlam_ptr, a_ptr, n, c0 + k0 + c, cmask, j, j < J, C, J, TP, d_sn, d_sc,
                              d_st, IS_FP64)
                dh = tl.where(mask & (xhat * gamma[None, :] + beta[None, :] > 0), dh, 0.0)
                dz = tl.where(mask, rstd * (dh * gamma[None, :] - wm[:, None] * (sum_dxhat + xhat * sum_dxhat_xhat)),
                              0.0)
                tl.store(dz_ptr + base + k0 + j[:, None].to(tl.int64) * C + c[None, :],
                         dz.to(dz_ptr.dtype.element_ty), mask=mask)
                dg += tl.sum(dh * xhat, axis=0)
                db += tl.sum(dh, axis=0)
                dc += tl.sum(dz, axis=0)
            # the per-channel sums over the samples: this program owns the group's channels,
            # so it adds in place, sample by sample (in order; the barrier below orders it)
            if HAS_GAMMA:
                prev = tl.load(dgamma_ptr + c0 + k0 + c, mask=cmask & after_first, other=0.0).to(dtype)
                tl.store(dgamma_ptr + c0 + k0 + c, (prev + dg).to(dgamma_ptr.dtype.element_ty), mask=cmask)
            if HAS_BETA:
                prev = tl.load(dbeta_ptr + c0 + k0 + c, mask=cmask & after_first, other=0.0).to(dtype)
                tl.store(dbeta_ptr + c0 + k0 + c, (prev + db).to(dbeta_ptr.dtype.element_ty), mask=cmask)
            if HAS_CB:
                prev = tl.load(dcb_ptr + c0 + k0 + c, mask=cmask & after_first, other=0.0).to(dtype)
                tl.store(dcb_ptr + c0 + k0 + c, (prev + dc).to(dcb_ptr.dtype.element_ty), mask=cmask)
        tl.debug_barrier()


KERNELS = (_head_norm_forward, _head_output, _head_norm_backward)
OUTPUT_BLOCK = 128   # (n, c) rows per program of _head_output
OUTPUT_BLOCK_T = 8   # output steps per iteration (T' = 8 in the paper's head)


def head_constexprs(dtype: torch.dtype) -> dict:
    """The constexprs of the head's GroupNorm kernels (besides HAS_CB / HAS_GAMMA / HAS_BETA)."""
    return dict(BLOCK_J=16, BLOCK_C=32, IS_FP64=dtype == torch.float64)


def _flags(cb, gamma, beta) -> dict:
    return dict(HAS_CB=cb is not None, HAS_GAMMA=gamma is not None, HAS_BETA=beta is not None)


def forward(Z, w, cb, gamma, beta, groups: int, M: float, eps: float, H, stats) -> None:
    """+ conv bias, weighted GroupNorm + ReLU: writes H (J + 1, N, C) (row J = 1) and stats (N, G, 2)."""
    N, J, C = Z.shape
    params = [Z if t is None else t for t in (cb, gamma, beta)]
    _head_norm_forward[check_grid((N * groups,))](Z, w, *params, H, stats, N, J, C, groups, M, eps,
                                                  **_flags(cb, gamma, beta), **head_constexprs(Z.dtype), num_warps=4)


def output(out, bias, lam) -> None:
    """lam (N, C, T') = sigmoid(out (T', N C) + bias)."""
    TP, NC = out.shape
    grid = check_grid((triton.cdiv(NC, OUTPUT_BLOCK),))
    _head_output[grid](out, out if bias is None else bias, lam, NC, TP, HAS_B=bias is not None, BLOCK=OUTPUT_BLOCK,
                       BLOCK_T=OUTPUT_BLOCK_T, IS_FP64=out.dtype == torch.float64, num_warps=4)


def backward(Z, w, cb, gamma, beta, stats, lam, dlam, A, groups: int, M: float, dout, dZ, dgamma, dbeta,
             dcb) -> None:
    """Writes dout (T', N, C), dZ (N, J, C) and dgamma, dbeta, dcb (C,) where given."""
    N, J, C = Z.shape
    params = [Z if t is None else t for t in (cb, gamma, beta)]
    grads = [Z if t is None else t for t in (dgamma, dbeta, dcb)]
    _head_norm_backward[check_grid((groups,))](Z, w, *params, stats, lam, dlam, A, dout, dZ, *grads, N, J, C, groups,
                                               A.shape[0], 1.0 / M, *dlam.stride(), **_flags(cb, gamma, beta),
                                               **head_constexprs(Z.dtype), num_warps=4)


def launch_configs() -> Iterator[tuple]:
    """(kernel, constexprs, launch options) of every config the launchers can produce
    (each dtype the head computes in, bias / gamma / beta presence)."""
    options = dict(num_warps=4)
    for dtype in (torch.float32, torch.float64):  # float16/bfloat16 arguments are computed in float32
        for cb in (False, True):
            for gamma in (False, True):
                for beta in (False, True):
                    c = dict(head_constexprs(dtype), HAS_CB=cb, HAS_GAMMA=gamma, HAS_BETA=beta)
                    yield _head_norm_forward, c, options
                    yield _head_norm_backward, c, options
        for bias in (False, True):
            yield _head_output, dict(HAS_B=bias, BLOCK=OUTPUT_BLOCK, BLOCK_T=OUTPUT_BLOCK_T,
                                     IS_FP64=dtype == torch.float64), options
