"""Triton kernels of the weight-spectrum distance (docs/ops.md section 2).

One launch per pass for every group of the model, read through the offset tables of
layout.py (data pointers are cast from the int64 table, so the weights are never
copied into one buffer). Grid: (group g, split u, output block): the group count, the
only one without a small bound (splits <= 64, blocks <= 64), on axis x (y and z stop at 65535).

- ``_gram_kernel``: program (g, u, bi * NB + bj) computes the BLOCK_P x BLOCK_P block
  (bi, bj) of the partial Gram W^T W over split u's rows of group g, as tl.dot of
  [BLOCK_R, BLOCK_P] row tiles, and writes it to partials[u, offset_g + ...].
- ``_gram_backward_kernel``: program (g, u, bj) writes columns bj of dW = W M_g for
  split u's rows: a loop over the row tiles, each the sum over bi of tl.dot(W_bi, M_bi,bj).

Programs whose block lies beyond their group's P return at once. Dot precision as in
the spectrum kernels: tf32x3 for float32, ieee for float64, tf32 for float16/bfloat16.
"""
from __future__ import annotations

from typing import Iterator, Sequence

import torch
import triton
import triton.language as tl

from .._checks import new_output
from .._triton_specs import DOT_PRECISION, TRITON_TYPES, check_grid
from .layout import GROUP_FIELDS, MAX_P, TENSOR_FIELDS, Layout, tables


@triton.jit
def _split_rows(groups_ptr, g, u, splits):
    """(P, first tensor, end tensor, lo, hi, offset) of split u of group g."""
    row = groups_ptr + g * 5  # GROUP_FIELDS
    P = tl.load(row + 0)
    rows = tl.load(row + 3)
    return P, tl.load(row + 1), tl.load(row + 2), rows * u // splits, rows * (u + 1) // splits, tl.load(row + 4)


@triton.jit
def _segment(tensors_ptr, t, lo, hi):
    """Local row range [begin, end) of tensor t inside the group rows [lo, hi)."""
    row = tensors_ptr + t * 4  # TENSOR_FIELDS
    n = tl.load(row + 2)
    start = tl.load(row + 3)
    return tl.maximum(lo, start) - start, tl.minimum(hi, start + n) - start


@triton.jit
def _gram_kernel(
    tensors_ptr,               # (nt, 4) int64: data pointer, gradient pointer, rows, first row in group
    groups_ptr,                # (ng, 5) int64: P, first tensor, end tensor, rows, offset
    carrier_ptr,               # any weight: gives the element type of the table's pointers
    partials_ptr,              # (splits, F) accumulation dtype
    F, splits, NB,             # flat size, splits per group, output blocks per side
    BLOCK_R: tl.constexpr, BLOCK_P: tl.constexpr, PRECISION: tl.constexpr, IS_FP64: tl.constexpr,
):
    g = tl.program_id(0).to(tl.int64)
    u = tl.program_id(1).to(tl.int64)
    bi = tl.program_id(2) // NB
    bj = tl.program_id(2) % NB
    P, first, end, lo, hi, offset = _split_rows(groups_ptr, g, u, splits)
    if (bi * BLOCK_P >= P) | (bj * BLOCK_P >= P):
        return
    ci = bi * BLOCK_P + tl.arange(0, BLOCK_P)
    cj = bj * BLOCK_P + tl.arange(0, BLOCK_P)
    acc = tl.zeros((BLOCK_P, BLOCK_P), tl.float64 if IS_FP64 else tl.float32)
    for t in range(first, end):
        begin, stop = _segment(tensors_ptr, t, lo, hi)
        w_ptr = tl.load(tensors_ptr + t * 4).to(tl.pointer_type(carrier_ptr.dtype.element_ty))
        for r0 in range(begin, stop, BLOCK_R):
            r = r0 + tl.arange(0, BLOCK_R)
            rows = (r < stop)[:, None]
            xi = tl.load(w_ptr + r[:, None] * P + ci[None, :], mask=rows & (ci < P)[None, :], other=0.0)
            xj = tl.load(w_ptr + r[:, None] * P + cj[None, :], mask=rows & (cj < P)[None, :], other=0.0)
            xi = xi.to(acc.dtype)
            xj = xj.to(acc.dtype)
            acc += tl.dot(tl.trans(xi), xj, input_precision=PRECISION)
    out = partials_ptr + u * F + offset + ci[:, None] * P + cj[None, :]
    tl.store(out, acc, mask=(ci < P)[:, None] & (cj < P)[None, :])


@triton.jit
def _gram_backward_kernel(
    tensors_ptr,               # (nt, 4) int64 as in _gram_kernel; the gradient pointer is written
    groups_ptr,                # (ng, 5) int64
    carrier_ptr,               # any weight: the element type of weights and gradients
    m_ptr,                     # (F,) accumulation dtype: M_g at offset_g, P x P row-major
    splits, NB,
    BLOCK_R: tl.constexpr, BLOCK_P: tl.constexpr, PRECISION: tl.constexpr, IS_FP64: tl.constexpr,
):
    g = tl.program_id(0).to(tl.int64)
    u = tl.program_id(1).to(tl.int64)
    bj = tl.program_id(2)
    P, first, end, lo, hi, offset = _split_rows(groups_ptr, g, u, splits)
    if bj * BLOCK_P >= P:
        return
    cj = bj * BLOCK_P + tl.arange(0, BLOCK_P)
    k = tl.arange(0, BLOCK_P)
    element = carrier_ptr.dtype.element_ty
    for t in range(first, end):
        begin, stop = _segment(tensors_ptr, t, lo, hi)
        w_ptr = tl.load(tensors_ptr + t * 4).to(tl.pointer_type(element))
        dw_ptr = tl.load(tensors_ptr + t * 4 + 1).to(tl.pointer_type(element))
        for r0 in range(begin, stop, BLOCK_R):
            r = r0 + tl.arange(0, BLOCK_R)
            rows = (r < stop)[:, None]
            acc = tl.zeros((BLOCK_R, BLOCK_P), tl.float64 if IS_FP64 else tl.float32)
            for b in range(0, tl.cdiv(P, BLOCK_P)):
                ci = b * BLOCK_P + k
                x = tl.load(w_ptr + r[:, None] * P + ci[None, :], mask=rows & (ci < P)[None, :], other=0.0)
                m = tl.load(m_ptr + offset + ci[:, None] * P + cj[None, :],
                            mask=(ci < P)[:, None] & (cj < P)[None, :], other=0.0)
                acc += tl.dot(x.to(acc.dtype), m, input_precision=PRECISION)
            tl.store(dw_ptr + r[:, None] * P + cj[None, :], acc.to(element), mask=rows & (cj < P)[None, :])


KERNELS = (_gram_kernel, _gram_backward_kernel)


def launch_constexprs(Pmax: int, dtype: torch.dtype) -> dict:
    """The constexprs of a launch: the one place configs are chosen."""
    return dict(BLOCK_R=32 if dtype == torch.float64 else 64, BLOCK_P=min(64, max(16, triton.next_power_of_2(Pmax))),
                PRECISION=DOT_PRECISION[dtype], IS_FP64=dtype == torch.float64)


def gram(layout: Layout, weights: Sequence[torch.Tensor], acc: torch.dtype) -> torch.Tensor:
    """partials (splits, flat_size): per split of each group, W^T W of its rows."""
    tensors, groups = tables(layout, weights)
    partials = new_output((layout.splits, layout.flat_size), acc, weights[0].device)
    c = launch_constexprs(layout.Pmax, weights[0].dtype)
    nb = triton.cdiv(layout.Pmax, c["BLOCK_P"])
    _gram_kernel[check_grid((layout.num_groups, layout.splits, nb * nb))](
        tensors, groups, weights[0], partials, layout.flat_size, layout.splits, nb, **c, num_warps=4)
    return partials


def gram_backward(layout: Layout, weights: Sequence[torch.Tensor], grads: Sequence[torch.Tensor],
                  M: torch.Tensor) -> None:
    """Writes grads[t] = W_t M_g (M: (flat_size,) in the accumulation dtype)."""
    tensors, groups = tables(layout, weights, grads)
    c = launch_constexprs(layout.Pmax, weights[0].dtype)
    nb = triton.cdiv(layout.Pmax, c["BLOCK_P"])
    _gram_backward_kernel[check_grid((layout.num_groups, layout.splits, nb))](
        tensors, groups, weights[0], M.contiguous(), layout.splits, nb, **c, num_warps=4)


def launch_configs() -> Iterator[tuple]:
    """(kernel, constexprs, launch options) of every config the launchers can produce
    (each largest kernel size Pmax of 2..MAX_P, each dtype); the launch-capture test
    checks its captured launches cover them."""
    for Pmax in range(2, MAX_P + 1):
        for dtype in TRITON_TYPES:
            c = launch_constexprs(Pmax, dtype)
            yield _gram_kernel, c, dict(num_warps=4)
            yield _gram_backward_kernel, c, dict(num_warps=4)


assert (TENSOR_FIELDS, GROUP_FIELDS) == (4, 5), "the kernels index the tables with these row lengths"
