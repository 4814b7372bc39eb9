"""Triton kernels of attention_apply (docs/ops.md 3b; the math of csrc/common/apply.h), on
rows of (N, C, T, S) strided tensors:

- ``reduce`` sums each (n, c, t) row of S positions (of x, or of x y); BLOCK_R rows per program;
- ``finish`` sums, per group of Rg rows (a sample, or the batch), v and lam v over the rows'
  sums v (q forward, m backward): one program per group, rows in order (deterministic);
- ``affine`` writes the output from the rows and the group sums: forward
  out = F k lam_r; backward dF = g k lam_r + (G / s2)(1 - k lam_r) and (the programs of
  the first S block) dlam_r = k (m_r - (G / s2) q_r), all times a scale (1, or 1 / S for
  spatial "mean"); BLOCK_R rows x BLOCK_S positions.
"""
from __future__ import annotations

from typing import Iterator

import torch
import triton
import triton.language as tl

from ..._triton_jit import scalar as _scalar
from ..._triton_specs import TRITON_TYPES, check_grid


@triton.jit
def _row_index(r, C, T):
    """(n, c, t) of rows r = (n, c, t) flattened (r int64; no C * T product, an int32 one
    past 2**31): two int64 divisions per row, each a subroutine on the GPU, so a kernel
    makes them once and reuses (n, c, t) for every tensor it addresses."""
    nc = r // T
    n = nc // C
    return n, nc - n * C, r - nc * T


@triton.jit
def _row_offsets(n, c, t, sn, sc, st):
    """Offsets of element (row (n, c, t), 0) of a (N, C, T, S) tensor."""
    return n * sn + c * sc + t * st


@triton.jit
def _apply_reduce(
    x_ptr, y_ptr,              # (N, C, T, S) strided; y unused unless HAS_Y
    rows_ptr,                  # (N C T,) output: sum_s x (or x y), accumulation dtype
    C, T, S, R,                # sizes, R = N C T rows
    x_sn, x_sc, x_st, x_ss,
    y_sn, y_sc, y_st, y_ss,
    HAS_Y: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_S: tl.constexpr, IS_FP64: tl.constexpr,
):
    r = tl.program_id(0).to(tl.int64) * BLOCK_R + tl.arange(0, BLOCK_R)
    n, c, t = _row_index(r, C, T)
    x_row = _row_offsets(n, c, t, x_sn, x_sc, x_st)
    y_row = _row_offsets(n, c, t, y_sn, y_sc, y_st)
    acc = tl.zeros((BLOCK_R, BLOCK_S), tl.float64 if IS_FP64 else tl.float32)
    for s0 in range(0, S, BLOCK_S):
        s = s0 + tl.arange(0, BLOCK_S).to(tl.int64)
        mask = (r[:, None] < R) & (s[None, :] < S)
        x = tl.load(x_ptr + x_row[:, None] + s[None, :] * x_ss, mask=mask, other=0.0).to(acc.dtype)
        if HAS_Y:
            x *= tl.load(y_ptr + y_row[:, None] + s[None, :] * y_ss, mask=mask, other=0.0).to(acc.dtype)
        acc += x
    tl.store(rows_ptr + r, tl.sum(acc, axis=1), mask=r < R)


@triton.jit
def _apply_finish(
    v_ptr,                     # (R,) row sums, accumulation dtype
    lam_ptr,                   # (R,) lam, contiguous
    sums_ptr,                  # (B, 2) output: sum v, sum lam v per group of Rg rows
    Rg,
    BLOCK: tl.constexpr, IS_FP64: tl.constexpr,
):
    b = tl.program_id(0).to(tl.int64)
    dtype = tl.float64 if IS_FP64 else tl.float32
    sv = tl.zeros((BLOCK,), dtype)
    slv = tl.zeros((BLOCK,), dtype)
    for r0 in range(0, Rg, BLOCK):
        r = b * Rg + r0 + tl.arange(0, BLOCK)
        mask = r0 + tl.arange(0, BLOCK) < Rg
        v = tl.load(v_ptr + r, mask=mask, other=0.0)
        sv += v
        slv += tl.load(lam_ptr + r, mask=mask, other=0.0).to(dtype) * v
    tl.store(sums_ptr + 2 * b, tl.sum(sv, axis=0))
    tl.store(sums_ptr + 2 * b + 1, tl.sum(slv, axis=0))


@triton.jit
def _safe_inverse(s):
    return tl.where(s != 0, 1.0 / tl.where(s != 0, s, 1.0), 0.0)


@triton.jit
def _apply_affine(
    x_ptr,                     # (N, C, T, S) strided: F forward, g backward
    lam_ptr,                   # (R,) lam, contiguous
    sums_ptr,                  # (B, 2) forward group sums: s1 = sum q, s2 = sum lam q
    bsums_ptr, m_ptr, q_ptr,   # backward only: (B, 2) sums of m, the row sums m and q (R,)
    dlam_ptr,                  # backward only: (R,) output dL/dlam
    out_ptr,                   # (N, C, T, S) strided output (unused unless NEED_OUT)
    C, T, S, R, Rg,
    scale: tl.float64,         # factor of out and dlam: 1, or 1 / S (spatial "mean" on the row sums)
    x_sn, x_sc, x_st, x_ss,
    o_sn, o_sc, o_st, o_ss,
    BACKWARD: tl.constexpr, NEED_OUT: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_S: tl.constexpr,
    IS_FP64: tl.constexpr,
):
    # one grid axis of cdiv(R, BLOCK_R) * cdiv(S, BLOCK_S) programs, S blocks fastest (S
    # blocks on grid axis y would stop at 65535 * BLOCK_S elements per row)
    pid = tl.program_id(0).to(tl.int64)
    s_blocks = tl.cdiv(S, BLOCK_S)
    r = pid // s_blocks * BLOCK_R + tl.arange(0, BLOCK_R)
    s = pid % s_blocks * BLOCK_S + tl.arange(0, BLOCK_S)
    dtype = tl.float64 if IS_FP64 else tl.float32
    rmask = r < R
    group = tl.where(rmask, r // Rg, 0)
    inv_s2 = _safe_inverse(tl.load(sums_ptr + 2 * group + 1, mask=rmask, other=0.0))
    k = tl.load(sums_ptr + 2 * group, mask=rmask, other=0.0) * inv_s2
    scale = _scalar(scale, IS_FP64)
    alpha = k * tl.load(lam_ptr + r, mask=rmask, other=0.0).to(dtype)
    if BACKWARD:
        g_over_s2 = tl.load(bsums_ptr + 2 * group + 1, mask=rmask, other=0.0) * inv_s2
        if pid % s_blocks == 0:
            m = tl.load(m_ptr + r, mask=rmask, other=0.0)
            q = tl.load(q_ptr + r, mask=rmask, other=0.0)
            tl.store(dlam_ptr + r, (k * (m - g_over_s2 * q) * scale).to(dlam_ptr.dtype.element_ty), mask=rmask)
    if NEED_OUT:
        mask = rmask[:, None] & (s[None, :] < S)
        n, c, t = _row_index(r, C, T)
        x = tl.load(x_ptr + _row_offsets(n, c, t, x_sn, x_sc, x_st)[:, None] + s[None, :] * x_ss, mask=mask,
                    other=0.0)
        out = x.to(dtype) * (alpha * scale)[:, None]
        if BACKWARD:
            out += (g_over_s2 * (1.0 - alpha) * scale)[:, None]
        tl.store(out_ptr + _row_offsets(n, c, t, o_sn, o_sc, o_st)[:, None] + s[None, :] * o_ss,
                 out.to(out_ptr.dtype.element_ty), mask=mask)


KERNELS = (_apply_reduce, _apply_finish, _apply_affine)
FINISH_BLOCK = 1024  # rows per step of the per-group finish
# 8 warps for the finish (4 rows per thread a step): on 4 warps (8 rows per thread) one
# float32 specialisation spilled 4 B on sm_90 (ptxas -v; test_triton_spills.py)
FINISH_WARPS = 8


def apply_constexprs(dtype: torch.dtype) -> dict:
    """The constexprs of the attention_apply row kernels (besides HAS_Y / BACKWARD / NEED_OUT)."""
    return dict(BLOCK_R=16 if dtype == torch.float64 else 32, BLOCK_S=64, IS_FP64=dtype == torch.float64)


def reduce(x: torch.Tensor, y, rows: torch.Tensor) -> None:
    """Writes rows (N C T,) = sum_s x (y None) or sum_s x y for x, y (N, C, T, S) strided."""
    N, C, T, S = x.shape
    c = apply_constexprs(x.dtype)
    has_y = y is not None
    y = y if has_y else x
    grid = check_grid((triton.cdiv(N * C * T, c["BLOCK_R"]),))
    _apply_reduce[grid](x, y, rows, C, T, S, N * C * T, *x.stride(), *y.stride(), HAS_Y=has_y, **c, num_warps=4)


def finish(v: torch.Tensor, lam: torch.Tensor, sums: torch.Tensor) -> None:
    """Writes sums (B, 2) = (sum v, sum lam v) per group of R / B rows (v, lam (R,) contiguous)."""
    B = sums.shape[0]
    _apply_finish[check_grid((B,))](v, lam, sums, v.numel() // B, BLOCK=FINISH_BLOCK, IS_FP64=v.dtype == torch.float64,
                                    num_warps=FINISH_WARPS)


def affine(x: torch.Tensor, lam: torch.Tensor, sums: torch.Tensor, out, backward=None, scale: float = 1.0) -> None:
    """Forward (backward None): out = scale x k lam. Backward, backward = (bsums, m, q, dlam):
    out = scale (x k lam + (G / s2)(1 - k lam)) (skipped when out is None) and dlam (times scale)."""
    N, C, T, S = x.shape
    R, B = N * C * T, sums.shape[0]
    c = apply_constexprs(x.dtype)
    s_blocks = triton.cdiv(S, c["BLOCK_S"]) if out is not None else 1
    grid = check_grid((triton.cdiv(R, c["BLOCK_R"]) * s_blocks,))
    bsums, m, q, dlam = backward if backward is not None else (sums, sums, sums, lam)
    target = out if out is not None else x
    _apply_affine[grid](x, lam, sums, bsums, m, q, dlam, target, C, T, S if out is not None else 1, R, R // B, scale,
                        *x.stride(), *target.stride(), BACKWARD=backward is not None, NEED_OUT=out is not None,
                        **c, num_warps=4)


def launch_configs() -> Iterator[tuple]:
    """(kernel, constexprs, launch options) of every config the launchers can produce
    (each dtype, HAS_Y, forward / backward with and without dF)."""
    options = dict(num_warps=4)
    for dtype in TRITON_TYPES:
        for present in (False, True):
            yield _apply_reduce, dict(apply_constexprs(dtype), HAS_Y=present), options
        for backward, need_out in ((False, True), (True, True), (True, False)):
            yield _apply_affine, dict(apply_constexprs(dtype), BACKWARD=backward, NEED_OUT=need_out), options
    for fp64 in (False, True):
        yield _apply_finish, dict(BLOCK=FINISH_BLOCK, IS_FP64=fp64), dict(num_warps=FINISH_WARPS)
