"""Triton kernels of attention_apply's two row passes (docs/ops.md 3b; the math of
csrc/common/apply.h): ``reduce`` sums each (n, c, t) row of S positions (of x, or of
x y), ``affine`` writes out = x a[row] + b[row]; rows of (N, C, T, S) strided tensors,
BLOCK_R rows x BLOCK_S positions per program.
"""
from __future__ import annotations

from typing import Iterator

import torch
import triton
import triton.language as tl

from ..._triton_specs import TRITON_TYPES, check_grid


@triton.jit
def _row_offsets(r, C, T, sn, sc, st):
    """Offsets of element (row r, 0) of a (N, C, T, S) tensor, rows r = (n, c, t) flattened
    (r int64; no C * T product, an int32 one past 2**31)."""
    nc = r // T
    return nc // C * sn + nc % C * sc + r % T * st


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
    x_row = _row_offsets(r, C, T, x_sn, x_sc, x_st)
    y_row = _row_offsets(r, C, T, y_sn, y_sc, y_st)
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
def _apply_affine(
    x_ptr,                     # (N, C, T, S) strided
    a_ptr, b_ptr,              # (N C T,) row factors, accumulation dtype; b unused unless HAS_B
    out_ptr,                   # (N, C, T, S) strided output: x a + b
    C, T, S, R,
    x_sn, x_sc, x_st, x_ss,
    o_sn, o_sc, o_st, o_ss,
    HAS_B: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_S: tl.constexpr, IS_FP64: tl.constexpr,
):
    # one grid axis of cdiv(R, BLOCK_R) * cdiv(S, BLOCK_S) programs, S blocks fastest (S
    # blocks on grid axis y would stop at 65535 * BLOCK_S elements per row)
    pid = tl.program_id(0).to(tl.int64)
    s_blocks = tl.cdiv(S, BLOCK_S)
    r = pid // s_blocks * BLOCK_R + tl.arange(0, BLOCK_R)
    s = pid % s_blocks * BLOCK_S + tl.arange(0, BLOCK_S)
    mask = (r[:, None] < R) & (s[None, :] < S)
    a = tl.load(a_ptr + r, mask=r < R, other=0.0)
    x = tl.load(x_ptr + _row_offsets(r, C, T, x_sn, x_sc, x_st)[:, None] + s[None, :] * x_ss, mask=mask, other=0.0)
    out = x.to(tl.float64 if IS_FP64 else tl.float32) * a[:, None]
    if HAS_B:
        out += tl.load(b_ptr + r, mask=r < R, other=0.0)[:, None]
    tl.store(out_ptr + _row_offsets(r, C, T, o_sn, o_sc, o_st)[:, None] + s[None, :] * o_ss,
             out.to(out_ptr.dtype.element_ty), mask=mask)


KERNELS = (_apply_reduce, _apply_affine)


def apply_constexprs(dtype: torch.dtype) -> dict:
    """The constexprs of the attention_apply row kernels (besides HAS_Y / HAS_B)."""
    return dict(BLOCK_R=16 if dtype == torch.float64 else 32, BLOCK_S=64, IS_FP64=dtype == torch.float64)


def reduce(x: torch.Tensor, y, rows: torch.Tensor) -> None:
    """Writes rows (N C T,) = sum_s x (y None) or sum_s x y for x, y (N, C, T, S) strided."""
    N, C, T, S = x.shape
    c = apply_constexprs(x.dtype)
    has_y = y is not None
    y = y if has_y else x
    grid = check_grid((triton.cdiv(N * C * T, c["BLOCK_R"]),))
    _apply_reduce[grid](x, y, rows, C, T, S, N * C * T, *x.stride(), *y.stride(), HAS_Y=has_y, **c, num_warps=4)


def affine(x: torch.Tensor, a: torch.Tensor, b, out: torch.Tensor) -> None:
    """Writes out = x a[row] + b[row] (b None: 0) for x, out (N, C, T, S) strided."""
    N, C, T, S = x.shape
    c = apply_constexprs(x.dtype)
    grid = check_grid((triton.cdiv(N * C * T, c["BLOCK_R"]) * triton.cdiv(S, c["BLOCK_S"]),))
    _apply_affine[grid](x, a, a if b is None else b, out, C, T, S, N * C * T, *x.stride(), *out.stride(),
                        HAS_B=b is not None, **c, num_warps=4)


def launch_configs() -> Iterator[tuple]:
    """(kernel, constexprs, launch options) of every config the launchers can produce
    (each dtype, HAS_Y / HAS_B)."""
    options = dict(num_warps=4)
    for dtype in TRITON_TYPES:
        for present in (False, True):
            yield _apply_reduce, dict(apply_constexprs(dtype), HAS_Y=present), options
            yield _apply_affine, dict(apply_constexprs(dtype), HAS_B=present), options
