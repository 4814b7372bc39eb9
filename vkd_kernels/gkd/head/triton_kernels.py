"""Triton kernels of the GKD head's weighted GroupNorm + ReLU (docs/ops.md 3b; the math
of csrc/common/head.h). One program per (sample, group) over its J x Cg block of the
channels-last columns Z (N, J, C), in [BLOCK_J, BLOCK_C] tiles: statistics weighted by
the class counts w, then normalise + affine + ReLU; the backward recomputes xhat from
the saved (mean, rstd).
"""
from __future__ import annotations

from typing import Iterator

import torch
import triton
import triton.language as tl

from ..._triton_jit import scalar as _scalar
from ..._triton_specs import TRITON_TYPES, check_grid


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
def _head_norm_forward(
    z_ptr,                     # Z (N, J, C) contiguous: the distinct conv columns, channels-last
    w_ptr,                     # (J,) column-class counts
    gamma_ptr, beta_ptr,       # (C,) GroupNorm affine (unused unless HAS_GAMMA / HAS_BETA)
    h_ptr,                     # H (N, J, C) output
    stats_ptr,                 # (N, G, 2) output: mean, rstd (accumulation dtype)
    N, J, C, G,                # sizes
    M: tl.float64, eps: tl.float64,  # elements per group of the upsampled tensor (Cg L), GroupNorm eps
    HAS_GAMMA: tl.constexpr, HAS_BETA: tl.constexpr, BLOCK_J: tl.constexpr, BLOCK_C: tl.constexpr,
    IS_FP64: tl.constexpr,
):
    pid = tl.program_id(0)
    Cg = C // G
    c0 = (pid % G) * Cg
    base = (pid // G).to(tl.int64) * J * C + c0
    dtype = tl.float64 if IS_FP64 else tl.float32
    M, eps = _scalar(M, IS_FP64), _scalar(eps, IS_FP64)
    total = tl.zeros((BLOCK_J, BLOCK_C), dtype)
    for j0 in range(0, J, BLOCK_J):
        j = j0 + tl.arange(0, BLOCK_J)
        wj = tl.load(w_ptr + j, mask=j < J, other=0.0).to(dtype)
        for k0 in range(0, Cg, BLOCK_C):
            z, _ = _load_tile(z_ptr, base + k0, j, tl.arange(0, BLOCK_C), J, Cg - k0, C, IS_FP64)
            total += z * wj[:, None]
    mean = tl.sum(tl.sum(total, axis=1), axis=0) / M
    total = tl.zeros((BLOCK_J, BLOCK_C), dtype)
    for j0 in range(0, J, BLOCK_J):
        j = j0 + tl.arange(0, BLOCK_J)
        wj = tl.load(w_ptr + j, mask=j < J, other=0.0).to(dtype)
        for k0 in range(0, Cg, BLOCK_C):
            z, mask = _load_tile(z_ptr, base + k0, j, tl.arange(0, BLOCK_C), J, Cg - k0, C, IS_FP64)
            d = tl.where(mask, z - mean, 0.0)
            total += d * d * wj[:, None]
    rstd = 1.0 / tl.sqrt(tl.sum(tl.sum(total, axis=1), axis=0) / M + eps)
    for j0 in range(0, J, BLOCK_J):
        j = j0 + tl.arange(0, BLOCK_J)
        for k0 in range(0, Cg, BLOCK_C):
            c = tl.arange(0, BLOCK_C)
            z, mask = _load_tile(z_ptr, base + k0, j, c, J, Cg - k0, C, IS_FP64)
            gamma, beta = _channel_params(gamma_ptr, beta_ptr, c0 + k0, c, Cg - k0, HAS_GAMMA, HAS_BETA, IS_FP64)
            h = tl.maximum((z - mean) * rstd * gamma[None, :] + beta[None, :], 0.0)
            tl.store(h_ptr + base + k0 + j[:, None].to(tl.int64) * C + c[None, :], h.to(h_ptr.dtype.element_ty),
                     mask=mask)
    tl.store(stats_ptr + 2 * pid.to(tl.int64), mean)
    tl.store(stats_ptr + 2 * pid.to(tl.int64) + 1, rstd)


@triton.jit
def _head_norm_backward(
    z_ptr, w_ptr, gamma_ptr, beta_ptr,  # as in _head_norm_forward
    stats_ptr,                 # (N, G, 2) mean, rstd from the forward
    dh_ptr,                    # dL/dH (N, J, C) contiguous
    dz_ptr,                    # dL/dZ (N, J, C) output
    dgamma_ptr, dbeta_ptr,     # (N, C) outputs: per-sample partial sums (unused unless HAS_GAMMA / HAS_BETA)
    N, J, C, G, M: tl.float64,
    HAS_GAMMA: tl.constexpr, HAS_BETA: tl.constexpr, BLOCK_J: tl.constexpr, BLOCK_C: tl.constexpr,
    IS_FP64: tl.constexpr,
):
    pid = tl.program_id(0)
    Cg = C // G
    c0 = (pid % G) * Cg
    n = (pid // G).to(tl.int64)
    base = n * J * C + c0
    dtype = tl.float64 if IS_FP64 else tl.float32
    M = _scalar(M, IS_FP64)
    mean = tl.load(stats_ptr + 2 * pid.to(tl.int64))
    rstd = tl.load(stats_ptr + 2 * pid.to(tl.int64) + 1)
    s1 = tl.zeros((BLOCK_C,), dtype)
    s2 = tl.zeros((BLOCK_C,), dtype)
    for k0 in range(0, Cg, BLOCK_C):
        c = tl.arange(0, BLOCK_C)
        gamma, beta = _channel_params(gamma_ptr, beta_ptr, c0 + k0, c, Cg - k0, HAS_GAMMA, HAS_BETA, IS_FP64)
        dg = tl.zeros((BLOCK_C,), dtype)
        db = tl.zeros((BLOCK_C,), dtype)
        for j0 in range(0, J, BLOCK_J):
            j = j0 + tl.arange(0, BLOCK_J)
            z, mask = _load_tile(z_ptr, base + k0, j, c, J, Cg - k0, C, IS_FP64)
            dh, _ = _load_tile(dh_ptr, base + k0, j, c, J, Cg - k0, C, IS_FP64)
            xhat = (z - mean) * rstd
            dh = tl.where(mask & (xhat * gamma[None, :] + beta[None, :] > 0), dh, 0.0)
            dg += tl.sum(dh * xhat, axis=0)
            db += tl.sum(dh, axis=0)
            s1 += tl.sum(dh * gamma[None, :], axis=0)
            s2 += tl.sum(dh * gamma[None, :] * xhat, axis=0)
        if HAS_GAMMA:
            tl.store(dgamma_ptr + n * C + c0 + k0 + c, dg.to(dgamma_ptr.dtype.element_ty), mask=c < Cg - k0)
        if HAS_BETA:
            tl.store(dbeta_ptr + n * C + c0 + k0 + c, db.to(dbeta_ptr.dtype.element_ty), mask=c < Cg - k0)
    sum_dxhat = tl.sum(s1, axis=0)
    sum_dxhat_xhat = tl.sum(s2, axis=0)
    for j0 in range(0, J, BLOCK_J):
        j = j0 + tl.arange(0, BLOCK_J)
        wm = tl.load(w_ptr + j, mask=j < J, other=0.0).to(dtype) / M
        for k0 in range(0, Cg, BLOCK_C):
            c = tl.arange(0, BLOCK_C)
            gamma, beta = _channel_params(gamma_ptr, beta_ptr, c0 + k0, c, Cg - k0, HAS_GAMMA, HAS_BETA, IS_FP64)
            z, mask = _load_tile(z_ptr, base + k0, j, c, J, Cg - k0, C, IS_FP64)
            dh, _ = _load_tile(dh_ptr, base + k0, j, c, J, Cg - k0, C, IS_FP64)
            xhat = (z - mean) * rstd
            dxhat = tl.where(xhat * gamma[None, :] + beta[None, :] > 0, dh * gamma[None, :], 0.0)
            dz = rstd * (dxhat - wm[:, None] * (sum_dxhat + xhat * sum_dxhat_xhat))
            tl.store(dz_ptr + base + k0 + j[:, None].to(tl.int64) * C + c[None, :], dz.to(dz_ptr.dtype.element_ty),
                     mask=mask)


KERNELS = (_head_norm_forward, _head_norm_backward)


def head_constexprs(dtype: torch.dtype) -> dict:
    """The constexprs of the head's GroupNorm kernels (besides HAS_GAMMA / HAS_BETA)."""
    return dict(BLOCK_J=16, BLOCK_C=32, IS_FP64=dtype == torch.float64)


def forward(Z, w, gamma, beta, groups: int, M: float, eps: float, H, stats) -> None:
    """Weighted GroupNorm + ReLU of the head's compact tail: writes H (N, J, C) and stats (N, G, 2)."""
    N, J, C = Z.shape
    grid = check_grid((N * groups,))
    _head_norm_forward[grid](Z, w, Z if gamma is None else gamma, Z if beta is None else beta, H, stats,
                             N, J, C, groups, M, eps, HAS_GAMMA=gamma is not None,
                             HAS_BETA=beta is not None, **head_constexprs(Z.dtype), num_warps=4)


def backward(Z, w, gamma, beta, stats, dH, groups: int, M: float, dZ, dgamma, dbeta) -> None:
    """Writes dZ (N, J, C) and the per-sample partial sums dgamma, dbeta (N, C) where given."""
    N, J, C = Z.shape
    grid = check_grid((N * groups,))
    _head_norm_backward[grid](Z, w, Z if gamma is None else gamma, Z if beta is None else beta, stats, dH,
                              dZ, Z if dgamma is None else dgamma, Z if dbeta is None else dbeta,
                              N, J, C, groups, M, HAS_GAMMA=gamma is not None, HAS_BETA=beta is not None,
                              **head_constexprs(Z.dtype), num_warps=4)


def launch_configs() -> Iterator[tuple]:
    """(kernel, constexprs, launch options) of every config the launchers can produce
    (each dtype, gamma / beta presence)."""
    options = dict(num_warps=4)
    for dtype in TRITON_TYPES:
        for gamma in (False, True):
            for beta in (False, True):
                c = dict(head_constexprs(dtype), HAS_GAMMA=gamma, HAS_BETA=beta)
                yield _head_norm_forward, c, options
                yield _head_norm_backward, c, options
