"""Triton kernels of the weight-spectrum distance (docs/ops.md section 2).

Four kernels per forward + backward, read through the tables of layout.py (weight
pointers are cast from the int64 tables, so the weights are never copied into one
buffer); every grid counts items on axis x:

- ``_gram_kernel`` (one launch per tile width): item = (row chunk of one tensor, TILE x
  TILE block (i0, j0) of its group's Gram matrix). acc = W[:, i0:]^T W[:, j0:] over the
  chunk (tl.dot of [BLOCK_R, TILE] row tiles), then its share of the energy,
  e_part[b] = sum_ij B[b, i0+i] acc[i, j] B[b, j0+j] (twice off the diagonal), for every
  bin b, written to partials[offset : offset + P].
- ``_finish_kernel`` (one program per pair): sums each side's partials in a fixed order,
  e / #kernels, p = e / (sum e + eps), the pair's distance; writes p, S = sum e + eps and
  the distance d (the op sums d).
- ``_finish_backward_kernel`` (per pair x M block): gp = dL/dp (from the distance, scaled
  by the incoming gradient, or given), ge = (gp - <gp, p>) / S, and its block of
  M = 2 / #kernels * sum_parts B^T diag(ge) B; the gradient of a distribution teacher is gp.
- ``_gram_backward_kernel`` (one launch per tile width): item = (row chunk, TILE columns
  j0): dW[:, j0:] = sum over k blocks of W[:, k] M[k, j0:].

Dot precision: tf32x3 for float32 (~1e-6 relative on tensor cores), tf32 for float16 /
bfloat16 (their mantissas fit tf32), ieee for float64; the epilogue and finishing dots
are ieee (small, and they carry the whole spectrum). Option scalars (parts, distance,
drop_dc, Pmax) are runtime arguments the JIT does not specialise: one compile per tile
and dtype, not per option.
"""
from __future__ import annotations

from typing import Iterator, Sequence

import torch
import triton
import triton.language as tl

from .._checks import new_output
from .._triton_specs import DOT_PRECISION, TRITON_TYPES, check_grid
from .layout import BACKWARD_FIELDS, FINISH_BLOCK, GRAM_FIELDS, GROUP_FIELDS, PAIR_FIELDS, Plan, Tables


@triton.jit
def _scalar(value, IS_FP64: tl.constexpr):
    """A float argument in the accumulation dtype (annotated fp64: the JIT would type a
    Python float fp32 and round a float64 launch's eps)."""
    return tl.full((), value, tl.float64 if IS_FP64 else tl.float32)


@triton.jit(do_not_specialize=["parts"])
def _gram_kernel(
    items_ptr,                 # (n, 8) int64: pointer, row begin, row end, P, out offset, basis offset, i0, j0
    basis_ptr,                 # flat basis (accumulation dtype), per kernel (parts, P, P)
    carrier_ptr,               # any weight: the element type of the table's pointers
    partials_ptr,              # flat energy partials (accumulation dtype)
    parts,                     # 1 (dct) or 2 (fft)
    BLOCK_R: tl.constexpr, TILE: tl.constexpr, PRECISION: tl.constexpr, IS_FP64: tl.constexpr,
):
    item = items_ptr + tl.program_id(0).to(tl.int64) * 8  # GRAM_FIELDS
    w_ptr = tl.load(item).to(tl.pointer_type(carrier_ptr.dtype.element_ty))
    begin = tl.load(item + 1)
    end = tl.load(item + 2)
    P = tl.load(item + 3)
    out = partials_ptr + tl.load(item + 4)
    basis = basis_ptr + tl.load(item + 5)
    i0 = tl.load(item + 6)
    j0 = tl.load(item + 7)
    acc_t = tl.float64 if IS_FP64 else tl.float32
    k = tl.arange(0, TILE)
    ci = i0 + k
    cj = j0 + k
    acc = tl.zeros((TILE, TILE), acc_t)
    if i0 == j0:  # a diagonal block: one tile load per step
        for r0 in range(begin, end, BLOCK_R):
            r = r0 + tl.arange(0, BLOCK_R)
            x = tl.load(w_ptr + r[:, None] * P + ci[None, :], mask=(r < end)[:, None] & (ci < P)[None, :],
                        other=0.0).to(acc_t)
            acc += tl.dot(tl.trans(x), x, input_precision=PRECISION)
    else:
        for r0 in range(begin, end, BLOCK_R):
            r = r0 + tl.arange(0, BLOCK_R)
            rows = (r < end)[:, None]
            xi = tl.load(w_ptr + r[:, None] * P + ci[None, :], mask=rows & (ci < P)[None, :], other=0.0).to(acc_t)
            xj = tl.load(w_ptr + r[:, None] * P + cj[None, :], mask=rows & (cj < P)[None, :], other=0.0).to(acc_t)
            acc += tl.dot(tl.trans(xi), xj, input_precision=PRECISION)
    twice = tl.where(i0 == j0, 1.0, 2.0)  # the mirrored block (j0, i0) = acc^T adds the same
    for b0 in range(0, P, TILE):
        b = b0 + k
        e = tl.zeros((TILE,), acc_t)
        for part in range(parts):
            row = basis + part * P * P + b[:, None] * P
            Ri = tl.load(row + ci[None, :], mask=(b < P)[:, None] & (ci < P)[None, :], other=0.0)
            Rj = tl.load(row + cj[None, :], mask=(b < P)[:, None] & (cj < P)[None, :], other=0.0)
            e += tl.sum(tl.dot(Ri, acc, input_precision="ieee") * Rj, axis=1)
        tl.store(out + b, e * twice, mask=b < P)


@triton.jit
def _gram_backward_kernel(
    items_ptr,                 # (n, 7) int64: pointer, gradient offset, row begin, row end, P, M offset, j0
    carrier_ptr,               # any weight: the element type of weights and gradients
    m_ptr,                     # flat M (accumulation dtype), P x P row-major per group
    grad_ptr,                  # flat gradients of the needed weights
    BLOCK_R: tl.constexpr, TILE: tl.constexpr, PRECISION: tl.constexpr, IS_FP64: tl.constexpr,
):
    item = items_ptr + tl.program_id(0).to(tl.int64) * 7  # BACKWARD_FIELDS
    element = carrier_ptr.dtype.element_ty
    w_ptr = tl.load(item).to(tl.pointer_type(element))
    dw_ptr = grad_ptr + tl.load(item + 1)
    begin = tl.load(item + 2)
    end = tl.load(item + 3)
    P = tl.load(item + 4)
    m = m_ptr + tl.load(item + 5)
    cj = tl.load(item + 6) + tl.arange(0, TILE)
    k = tl.arange(0, TILE)
    for r0 in range(begin, end, BLOCK_R):
        r = r0 + tl.arange(0, BLOCK_R)
        rows = (r < end)[:, None]
        acc = tl.zeros((BLOCK_R, TILE), tl.float64 if IS_FP64 else tl.float32)
        for c0 in range(0, P, TILE):
            ci = c0 + k
            x = tl.load(w_ptr + r[:, None] * P + ci[None, :], mask=rows & (ci < P)[None, :], other=0.0)
            mb = tl.load(m + ci[:, None] * P + cj[None, :], mask=(ci < P)[:, None] & (cj < P)[None, :], other=0.0)
            acc += tl.dot(x.to(acc.dtype), mb, input_precision=PRECISION)
        tl.store(dw_ptr + r[:, None] * P + cj[None, :], acc.to(element), mask=rows & (cj < P)[None, :])


# ---- the finish: p, S and the distance per pair; its backward ---------------------------

@triton.jit
def _terms(ps, pt, eps, distance):
    """Per-bin terms of the distance (1 kl, 2 l2, 3 js; docs/ops.md section 2)."""
    if distance == 1:
        out = pt * (tl.log(pt + eps) - tl.log(ps + eps))
    elif distance == 2:
        out = (ps - pt) * (ps - pt)
    else:
        log_m = tl.log((ps + pt) * 0.5 + eps)
        out = 0.5 * (ps * (tl.log(ps + eps) - log_m) + pt * (tl.log(pt + eps) - log_m))
    return out


@triton.jit
def _grad(ps, pt, eps, distance, SIDE: tl.constexpr):
    """dL/dp_s (SIDE 0) or dL/dp_t (SIDE 1) of the per-bin terms."""
    x = ps if SIDE == 0 else pt
    if distance == 1:
        if SIDE == 0:
            out = -pt / (ps + eps)
        else:
            out = tl.log(pt + eps) - tl.log(ps + eps) + pt / (pt + eps)
    elif distance == 2:
        out = (2.0 * (ps - pt)) if SIDE == 0 else (2.0 * (pt - ps))
    else:
        m = (ps + pt) * 0.5
        out = 0.5 * (tl.log(x + eps) - tl.log(m + eps) + x / (x + eps) - m / (m + eps))
    return out


@triton.jit
def _energy(groups_ptr, g, partials_ptr, scratch_ptr, Pmax, BLOCK_B: tl.constexpr, BLOCK_K: tl.constexpr,
            IS_FP64: tl.constexpr):
    """e_g = (sum of group g's partials, in item order) / #kernels into scratch row g;
    returns sum_b e_g[b]."""
    row = groups_ptr + g * 7  # GROUP_FIELDS
    P = tl.load(row)
    n = tl.load(row + 1)
    offset = tl.load(row + 2)
    count = tl.load(row + 3)
    acc_t = tl.float64 if IS_FP64 else tl.float32
    kb = tl.arange(0, BLOCK_B)
    kc = tl.arange(0, BLOCK_K)
    total = tl.zeros((BLOCK_B,), acc_t)
    for b0 in range(0, P, BLOCK_B):
        b = b0 + kb
        acc = tl.zeros((BLOCK_K, BLOCK_B), acc_t)
        for c0 in range(0, count, BLOCK_K):
            c = c0 + kc
            acc += tl.load(partials_ptr + offset + c[:, None] * P + b[None, :],
                           mask=(c < count)[:, None] & (b < P)[None, :], other=0.0)
        e = tl.sum(acc, axis=0) / n.to(acc_t)
        tl.store(scratch_ptr + g * Pmax + b, e, mask=b < P)
        total += e
    return tl.sum(total, axis=0)


@triton.jit(do_not_specialize=["Pmax", "distance", "drop_dc"])
def _finish_kernel(
    groups_ptr, pairs_ptr,     # (ng, 7), (np, 4) int64
    dists_ptr,                 # (nd,) int64 pointers of the teacher distributions (accumulation dtype)
    partials_ptr,              # flat energy partials
    scratch_ptr,               # (ng, Pmax) e, written then read back after a barrier
    p_ptr, s_ptr, d_ptr,       # out: p (rows, Pmax), S (rows,), d (np,)
    Pmax, eps: tl.float64, distance, drop_dc,
    BLOCK_B: tl.constexpr, BLOCK_K: tl.constexpr, IS_FP64: tl.constexpr,
):
    i = tl.program_id(0).to(tl.int64)
    pair = pairs_ptr + i * 4  # PAIR_FIELDS
    s = tl.load(pair)
    t = tl.load(pair + 1)
    k = tl.load(pair + 2)
    eps = _scalar(eps, IS_FP64)
    total_s = _energy(groups_ptr, s, partials_ptr, scratch_ptr, Pmax, BLOCK_B, BLOCK_K, IS_FP64) + eps
    total_t = tl.full((), 1.0, total_s.dtype)
    if (t >= 0) & (k < 0):
        total_t = _energy(groups_ptr, t, partials_ptr, scratch_ptr, Pmax, BLOCK_B, BLOCK_K, IS_FP64) + eps
    tl.debug_barrier()  # scratch rows are read below by other threads than wrote them
    P = tl.load(groups_ptr + s * 7)
    d = tl.zeros((BLOCK_B,), total_s.dtype)
    for b0 in range(0, Pmax, BLOCK_B):  # every column of the p rows (zero past P)
        b = b0 + tl.arange(0, BLOCK_B)
        inside = b < P
        ps = tl.load(scratch_ptr + s * Pmax + b, mask=inside, other=0.0) / total_s
        tl.store(p_ptr + s * Pmax + b, ps, mask=b < Pmax)
        if t >= 0:
            if k >= 0:
                dist = tl.load(dists_ptr + k).to(tl.pointer_type(p_ptr.dtype.element_ty))
                pt = tl.load(dist + (b - drop_dc), mask=inside & (b >= drop_dc), other=0.0)
            else:
                pt = tl.load(scratch_ptr + t * Pmax + b, mask=inside, other=0.0) / total_t
            tl.store(p_ptr + t * Pmax + b, pt, mask=b < Pmax)
            if distance != 0:
                d += tl.where(inside, _terms(ps, pt, eps, distance), 0.0)
    tl.store(s_ptr + s, total_s)
    if t >= 0:
        tl.store(s_ptr + t, total_t)
    if distance != 0:
        tl.store(d_ptr + i, tl.sum(d, axis=0))


@triton.jit
def _side(p_ptr, grad_ptr, s, t, Pmax, b, inside, eps, distance, SIDE: tl.constexpr):
    """(gp, p) of one side at bins b: gp = dL/dp (distance > 0, unscaled) or the given
    gradient of p (distance 0, student rows only)."""
    ps = tl.load(p_ptr + s * Pmax + b, mask=inside, other=0.0)
    if distance == 0:
        gp = tl.load(grad_ptr + s * Pmax + b, mask=inside, other=0.0).to(ps.dtype)
        p = ps
    else:
        pt = tl.load(p_ptr + t * Pmax + b, mask=inside, other=0.0)
        gp = tl.where(inside, _grad(ps, pt, eps, distance, SIDE), 0.0)
        p = ps if SIDE == 0 else pt
    return gp, p


@triton.jit
def _m_block(groups_ptr, basis_ptr, p_ptr, s_ptr, grad_ptr, m_ptr, g, s, t, blk, P, Pmax, eps, distance, scale,
             parts, SIDE: tl.constexpr, BLOCK_B: tl.constexpr):
    """Block ``blk`` of M_g = 2 / #kernels * sum_parts B^T diag(ge) B, ge = (scale gp -
    <scale gp, p>) / S_g, for the group g on side SIDE of the pair (s, t)."""
    row = groups_ptr + g * 7
    n = tl.load(row + 1)
    basis = basis_ptr + tl.load(row + 4)
    m = m_ptr + tl.load(row + 5)
    S = tl.load(s_ptr + g)
    kb = tl.arange(0, BLOCK_B)
    dot = tl.zeros((BLOCK_B,), S.dtype)
    for b0 in range(0, P, BLOCK_B):
        gp, p = _side(p_ptr, grad_ptr, s, t, Pmax, b0 + kb, b0 + kb < P, eps, distance, SIDE)
        dot += gp * p
    dot = tl.sum(dot, axis=0) * scale
    nb = tl.cdiv(P, BLOCK_B)
    if blk < nb * nb:
        ci = (blk // nb) * BLOCK_B + kb
        cj = (blk % nb) * BLOCK_B + kb
        acc = tl.zeros((BLOCK_B, BLOCK_B), S.dtype)
        for b0 in range(0, P, BLOCK_B):
            b = b0 + kb
            inside = b < P
            gp, _ = _side(p_ptr, grad_ptr, s, t, Pmax, b, inside, eps, distance, SIDE)
            ge = tl.where(inside, (gp * scale - dot) / S, 0.0)
            for part in range(parts):
                rows = basis + part * P * P + b[:, None] * P
                Ri = tl.load(rows + ci[None, :], mask=inside[:, None] & (ci < P)[None, :], other=0.0)
                Rj = tl.load(rows + cj[None, :], mask=inside[:, None] & (cj < P)[None, :], other=0.0)
                acc += tl.dot(tl.trans(Ri * ge[:, None]), Rj, input_precision="ieee")
        tl.store(m + ci[:, None] * P + cj[None, :], acc * (2.0 / n.to(S.dtype)),
                 mask=(ci < P)[:, None] & (cj < P)[None, :])


@triton.jit(do_not_specialize=["Pmax", "distance", "drop_dc", "parts"])
def _finish_backward_kernel(
    groups_ptr, pairs_ptr,     # (ng, 7), (np, 4) int64
    basis_ptr,                 # flat basis
    p_ptr, s_ptr,              # p (rows, Pmax), S (rows,) of the forward
    grad_ptr,                  # dL/dloss (a scalar) for a distance, dL/dp (ng, Pmax) for spectra only
    dist_grad_ptr,             # flat gradients of the distributions that need one
    m_ptr,                     # out: flat M of the groups that need a gradient
    Pmax, eps: tl.float64, grad_scale: tl.float64, distance, drop_dc, parts,
    BLOCK_B: tl.constexpr, IS_FP64: tl.constexpr,
):
    i = tl.program_id(0).to(tl.int64)
    blk = tl.program_id(1)
    pair = pairs_ptr + i * 4
    s = tl.load(pair)
    t = tl.load(pair + 1)
    k = tl.load(pair + 2)
    eps = _scalar(eps, IS_FP64)
    scale = _scalar(grad_scale, IS_FP64)
    if distance != 0:
        scale = scale * tl.load(grad_ptr).to(scale.dtype)
    P = tl.load(groups_ptr + s * 7)
    if tl.load(groups_ptr + s * 7 + 6) != 0:
        _m_block(groups_ptr, basis_ptr, p_ptr, s_ptr, grad_ptr, m_ptr, s, s, t, blk, P, Pmax, eps, distance, scale,
                 parts, 0, BLOCK_B)
    if k >= 0:  # a distribution teacher: its gradient is gp
        offset = tl.load(pair + 3)
        if (offset >= 0) & (blk == 0):
            for b0 in range(0, P, BLOCK_B):
                b = b0 + tl.arange(0, BLOCK_B)
                gp, _ = _side(p_ptr, grad_ptr, s, t, Pmax, b, b < P, eps, distance, 1)
                tl.store(dist_grad_ptr + offset + (b - drop_dc), gp * scale, mask=(b < P) & (b >= drop_dc))
    elif t >= 0:
        if tl.load(groups_ptr + t * 7 + 6) != 0:
            _m_block(groups_ptr, basis_ptr, p_ptr, s_ptr, grad_ptr, m_ptr, t, s, t, blk, P, Pmax, eps, distance,
                     scale, parts, 1, BLOCK_B)


KERNELS = (_gram_kernel, _finish_kernel, _finish_backward_kernel, _gram_backward_kernel)


def gram_constexprs(tile: int, dtype: torch.dtype) -> dict:
    """The constexprs of a gram / gram_backward launch: the one place they are chosen.
    BLOCK_R: 64 rows per tf32 step (K of the dot), 32 for float64 (two registers per
    value; 64 rows of float64 spill at TILE 32)."""
    return dict(BLOCK_R=32 if dtype == torch.float64 else 64, TILE=tile, PRECISION=DOT_PRECISION[dtype],
                IS_FP64=dtype == torch.float64)


def gram_options(tile: int) -> dict:
    """num_warps: 8 for a 32-wide tile (a 32 x 32 block: one m16n8 mma tile per warp): with
    4 warps the tf32x3 dot (three dots of split operands) and the pipelined row tiles need
    more than 255 registers a thread and spill on sm_90 (8-136 B); 8 warps halve the
    per-thread share (182-232 registers, no spill). 2 for 16-wide (16 x 16: one m16n8 per
    warp; more warps would idle)."""
    return dict(num_warps=8 if tile == 32 else 2)


def finish_constexprs(acc: torch.dtype, backward: bool = False) -> dict:
    """BLOCK_B: bins per block (FINISH_BLOCK); BLOCK_K: partials summed per step of the
    forward, 8 KB in flight per program (64 x 32 float32, 32 x 32 float64: 64 rows of
    float64 spilled 8 B on sm_90)."""
    c = dict(BLOCK_B=FINISH_BLOCK, IS_FP64=acc == torch.float64)
    return c if backward else dict(c, BLOCK_K=32 if acc == torch.float64 else 64)


FINISH_OPTIONS = dict(num_warps=4)  # small kernels: 4 warps keep a 32 x 32 ieee dot in registers


def gram(plan: Plan, tables: Tables, weights: Sequence[torch.Tensor], basis: torch.Tensor,
         partials: torch.Tensor) -> None:
    """Writes every gram item's energy partial (one launch per tile width)."""
    for tile, items in tables.items:
        _gram_kernel[check_grid((items.shape[0],))](items, basis, weights[0], partials, plan.spec.parts,
                                                     **gram_constexprs(tile, weights[0].dtype), **gram_options(tile))


def finish(plan: Plan, tables: Tables, partials: torch.Tensor, scratch: torch.Tensor, p: torch.Tensor,
           S: torch.Tensor, d: torch.Tensor, eps: float, distance: int) -> None:
    """p, S and (distance > 0) the per-pair distances d."""
    _finish_kernel[check_grid((plan.num_pairs,))](
        tables.groups, tables.pairs, tables.dists, partials, scratch, p, S, d, plan.Pmax, eps, distance,
        int(plan.spec.drop_dc), **finish_constexprs(p.dtype), **FINISH_OPTIONS)


def finish_backward(plan: Plan, tables: Tables, basis: torch.Tensor, p: torch.Tensor, S: torch.Tensor,
                    grad: torch.Tensor, dist_grad: torch.Tensor, M: torch.Tensor, eps: float, distance: int,
                    grad_scale: float) -> None:
    """M of every group that needs a gradient, and the distributions' gradients."""
    _finish_backward_kernel[check_grid((plan.num_pairs, plan.finish_blocks))](
        tables.groups, tables.pairs, basis, p, S, grad, dist_grad, M, plan.Pmax, eps, grad_scale, distance,
        int(plan.spec.drop_dc), plan.spec.parts, **finish_constexprs(p.dtype, backward=True), **FINISH_OPTIONS)


def gram_backward(plan: Plan, tables: Tables, weights: Sequence[torch.Tensor], M: torch.Tensor) -> list:
    """[grad]: dW = W M for every needed weight, flat (one launch per tile width)."""
    grad = new_output((plan.grad_size,), weights[0].dtype, M.device)
    for tile, items in tables.items:
        _gram_backward_kernel[check_grid((items.shape[0],))](items, weights[0], M, grad,
                                                              **gram_constexprs(tile, weights[0].dtype),
                                                              **gram_options(tile))
    return [grad]


def launch_configs() -> Iterator[tuple]:
    """(kernel, constexprs, launch options) of every config the launchers can produce
    (each tile width and dtype); the launch-capture test checks its captures cover them."""
    for dtype in TRITON_TYPES:
        for tile in (16, 32):
            yield _gram_kernel, gram_constexprs(tile, dtype), gram_options(tile)
            yield _gram_backward_kernel, gram_constexprs(tile, dtype), gram_options(tile)
        acc = torch.float64 if dtype == torch.float64 else torch.float32
        yield _finish_kernel, finish_constexprs(acc), FINISH_OPTIONS
        yield _finish_backward_kernel, finish_constexprs(acc, backward=True), FINISH_OPTIONS


assert (GRAM_FIELDS, BACKWARD_FIELDS, GROUP_FIELDS, PAIR_FIELDS) == (8, 7, 7, 4), \
    "the kernels index the tables with these row lengths"
