"""Triton kernels of attention transfer (docs/ops.md 3a; the math of csrc/common/attention.h).

Feature-sized work, x read as (N, C, P) strided:

- ``_map_forward``: grid (N * cdiv(P, BLOCK_P), K). Program (n, p-block, k) sums |x|^q
  over its slice of C / K channels in [BLOCK_C, BLOCK_P] tiles and writes the partial
  map parts[n, k, p] (N, K, P) (divided by C: the raw map is their sum). Splitting C
  over K programs keeps >= 2 programs per SM where N P is small (a 7 x 7 teacher map)
  and leaves the sum deterministic: the K partials are added in a fixed order by the
  finishing kernel, no atomics.
- ``_map_backward``: same grid, writes dx = q |x|^(q-1) sign(x) dL/da / C.

Map-sized work, one program per sample (the maps are C times smaller than x):

- ``_transfer_forward``: adds the K partials into parts[:, 0] (the raw map a), then per
  normalisation group (the sample, or each of its frames) the pooled maps' norms and the
  distance: writes the per-sample loss term (or, for mse with reduction "none", d^2).
- ``_transfer_backward``: dL/da of the student (and teacher) from the raw maps and the
  incoming gradient: distance, normalisation and pooling backward in three passes.

POWER selects the exponent case: 0 q = 2, 1 q = 1, 2 any q > 0 (via exp2/log2). No
tl.dot, so any power-of-two block compiles; ``launch_constexprs`` and ``splits`` are
the one place configs are chosen and ``launch_configs`` enumerates all of them.
"""
from __future__ import annotations

from typing import Iterator

import torch
import triton
import triton.language as tl

from .._triton_jit import reciprocal as _reciprocal
from .._triton_jit import scalar as _scalar
from .._triton_jit import sqrt as _sqrt
from .._triton_specs import TRITON_TYPES, check_grid
from .layout import NORM_EPS as _NORM_EPS

POWERS = {2.0: 0, 1.0: 1}  # exponent -> POWER; anything else -> 2
# Programs a map launch aims for: 4 per SM of a 132-SM H100, so that >= 2 stay resident
# per SM with enough loads in flight to stream x; K (the split of C) grows until then.
TARGET_PROGRAMS = 528
MIN_SPLIT_CHANNELS = 64    # a split reads at least 64 channels (4 tiles): short loops do not pipeline
NORM_EPS = tl.constexpr(_NORM_EPS)  # a global a @jit function may read
# (map elements per step, warps) of the per-sample finishing kernels, per direction and
# float64-ness, each the one of (512, 4), (256, 4), (512, 8), (1024, 8) that ptxas -v
# (sm_90) compiles without a spill in every pooling / distance case (test_triton_spills.py;
# the float32 forward spilled 4-8 B at (512, 4), the float64 backward 4-24 B)
_FINISH = {("forward", False): (1024, 8), ("forward", True): (512, 4),
           ("backward", False): (512, 4), ("backward", True): (256, 4)}


@triton.jit
def _map_block(P, BLOCK_P: tl.constexpr):
    """(sample n, positions p [BLOCK_P]) of this program: grid axis 0 holds N * cdiv(P,
    BLOCK_P) programs (N on grid axis y would stop at 65535 samples), axis 1 the split."""
    pid = tl.program_id(0).to(tl.int64)
    blocks = tl.cdiv(P, BLOCK_P)
    return pid // blocks, pid % blocks * BLOCK_P + tl.arange(0, BLOCK_P)


@triton.jit
def _split_channels(C, BLOCK_C: tl.constexpr):
    """Channels [start, end) of split k = program_id(1) of K: the C / BLOCK_C tiles dealt
    out evenly (tiles [k T / K, (k + 1) T / K)), so no split is empty when K <= T."""
    k, K = tl.program_id(1), tl.num_programs(1)
    tiles = tl.cdiv(C, BLOCK_C)
    return k * tiles // K * BLOCK_C, tl.minimum(C, (k + 1) * tiles // K * BLOCK_C)


@triton.jit
def _power(v, q, POWER: tl.constexpr):
    """|v|^q (v in the accumulation dtype)."""
    m = tl.abs(v)
    if POWER == 0:
        out = v * v
    elif POWER == 1:
        out = m
    else:
        out = tl.where(m > 0, tl.exp2(q * tl.log2(tl.where(m > 0, m, 1.0))), 0.0).to(v.dtype)
    return out


@triton.jit
def _power_grad(v, q, POWER: tl.constexpr):
    """q |v|^(q-1) sign(v), 0 at v = 0 (no inf/NaN for q <= 1)."""
    sign = tl.where(v > 0, 1.0, tl.where(v < 0, -1.0, 0.0)).to(v.dtype)
    m = tl.abs(v)
    if POWER == 0:
        out = 2.0 * v
    elif POWER == 1:
        out = sign
    else:
        out = (tl.where(m > 0, q * tl.exp2((q - 1.0) * tl.log2(tl.where(m > 0, m, 1.0))), 0.0) * sign).to(v.dtype)
    return out


@triton.jit
def _map_forward(
    x_ptr,                     # feature (N, C, P) strided
    parts_ptr,                 # partial maps (N, K, P) contiguous, accumulation dtype
    N, C, P,                   # sizes
    q: tl.float64,             # exponent (POWER == 2 only)
    x_sn, x_sc, x_sp,          # feature strides
    POWER: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr, IS_FP64: tl.constexpr,
):
    n, p = _map_block(P, BLOCK_P)
    c_start, c_end = _split_channels(C, BLOCK_C)
    q = _scalar(q, IS_FP64)
    acc = tl.zeros((BLOCK_C, BLOCK_P), tl.float64 if IS_FP64 else tl.float32)
    for c0 in range(c_start, c_end, BLOCK_C):
        c = c0 + tl.arange(0, BLOCK_C)
        mask = (c[:, None] < c_end) & (p[None, :] < P)
        x = tl.load(x_ptr + n * x_sn + c[:, None].to(tl.int64) * x_sc + p[None, :] * x_sp, mask=mask, other=0.0)
        acc += _power(x.to(acc.dtype), q, POWER)
    a = tl.sum(acc, axis=0) * _reciprocal(tl.zeros((), acc.dtype) + C)
    tl.store(parts_ptr + (n * tl.num_programs(1) + tl.program_id(1)) * P + p, a, mask=p < P)


@triton.jit
def _map_backward(
    x_ptr,                     # feature (N, C, P) strided
    g_ptr,                     # dL/da (N, P) strided, accumulation dtype
    dx_ptr,                    # gradient (N, C, P) strided
    N, C, P, q: tl.float64,
    x_sn, x_sc, x_sp,
    g_sn, g_sp,
    dx_sn, dx_sc, dx_sp,
    POWER: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr, IS_FP64: tl.constexpr,
):
    n, p = _map_block(P, BLOCK_P)
    c_start, c_end = _split_channels(C, BLOCK_C)
    q = _scalar(q, IS_FP64)
    g = tl.load(g_ptr + n * g_sn + p * g_sp, mask=p < P, other=0.0)
    g *= _reciprocal(tl.zeros((), g.dtype) + C)
    for c0 in range(c_start, c_end, BLOCK_C):
        c = c0 + tl.arange(0, BLOCK_C)
        mask = (c[:, None] < c_end) & (p[None, :] < P)
        x = tl.load(x_ptr + n * x_sn + c[:, None].to(tl.int64) * x_sc + p[None, :] * x_sp, mask=mask, other=0.0)
        x = x.to(tl.float64) if IS_FP64 else x.to(tl.float32)
        dx = _power_grad(x, q, POWER) * g[None, :]
        tl.store(dx_ptr + n * dx_sn + c[:, None].to(tl.int64) * dx_sc + p[None, :] * dx_sp,
                 dx.to(dx_ptr.dtype.element_ty), mask=mask)


# ---- the map-sized finish: pooling, normalisation, distance ------------------------------

@triton.jit
def _window(o, size_in, size_out):
    """Adaptive-pooling bin [start, end) of output index o along one axis."""
    return o * size_in // size_out, ((o + 1) * size_in + size_out - 1) // size_out


@triton.jit
def _pooled(a_ptr, base, o, mask, Ti, Hi, Wi, To, Ho, Wo, KT, KH, KW, IS_FP64: tl.constexpr):
    """Adaptive average pool of the raw map a[base + (t Hi + h) Wi + w] at pooled flat
    indices o [BLOCK] (KT, KH, KW: the longest bin per axis; 1 where sizes are equal)."""
    dtype = tl.float64 if IS_FP64 else tl.float32
    # one return (an early return inside the runtime branch fails to compile on Triton 3.6:
    # "failed to legalize unresolved materialization")
    if KT * KH * KW == 1:  # bins of 1 on every axis: this side is not pooled (folded when the K are 1)
        out = tl.load(a_ptr + base + o, mask=mask, other=0.0).to(dtype)
    else:
        out = _pooled_bins(a_ptr, base, o, mask, Ti, Hi, Wi, To, Ho, Wo, KT, KH, KW, IS_FP64)
    return out


@triton.jit
def _pooled_bins(a_ptr, base, o, mask, Ti, Hi, Wi, To, Ho, Wo, KT, KH, KW, IS_FP64: tl.constexpr):
    """_pooled where some bin is longer than 1."""
    dtype = tl.float64 if IS_FP64 else tl.float32
    ot, oh, ow = o // (Ho * Wo), o // Wo % Ho, o % Wo
    t0, t1 = _window(ot, Ti, To)
    h0, h1 = _window(oh, Hi, Ho)
    w0, w1 = _window(ow, Wi, Wo)
    acc = tl.zeros(o.shape, dtype)
    for dt in range(0, KT):
        for dh in range(0, KH):
            for dw in range(0, KW):
                t, h, w = t0 + dt, h0 + dh, w0 + dw
                m = mask & (t < t1) & (h < h1) & (w < w1)
                acc += tl.load(a_ptr + base + (t * Hi + h) * Wi + w, mask=m, other=0.0)
    count = tl.where(mask, (t1 - t0) * (h1 - h0) * (w1 - w0), 1)
    return acc * _reciprocal(count.to(dtype))


@triton.jit
def _unpooled(s_ptr, base, i, mask, Ti, Hi, Wi, To, Ho, Wo, IS_FP64: tl.constexpr):
    """Adaptive-average-pool backward at raw flat indices i: sum over the (at most 2 per
    axis) bins o holding i of s[base + o] / |bin o|."""
    dtype = tl.float64 if IS_FP64 else tl.float32
    it, ih, iw = i // (Hi * Wi), i // Wi % Hi, i % Wi
    t0, h0, w0 = it * To // Ti, ih * Ho // Hi, iw * Wo // Wi
    acc = tl.zeros(i.shape, dtype)
    for dt in range(0, 2):
        for dh in range(0, 2):
            for dw in range(0, 2):
                ot, oh, ow = t0 + dt, h0 + dh, w0 + dw
                # bin o holds i iff o < (i + 1) O / I (o >= i O / I - 1 holds for o >= floor(i O / I))
                m = mask & (ot * Ti < (it + 1) * To) & (oh * Hi < (ih + 1) * Ho) & (ow * Wi < (iw + 1) * Wo)
                ts, te = _window(ot, Ti, To)
                hs, he = _window(oh, Hi, Ho)
                ws, we = _window(ow, Wi, Wo)
                count = tl.where(m, (te - ts) * (he - hs) * (we - ws), 1).to(dtype)
                acc += tl.load(s_ptr + base + (ot * Ho + oh) * Wo + ow, mask=m, other=0.0) * _reciprocal(count)
    return acc


@triton.jit
def _reduce_parts(parts_ptr, n, K, P, BLOCK: tl.constexpr, IS_FP64: tl.constexpr):
    """parts[n, 0, :] = sum_k parts[n, k, :], k in order (the deterministic second stage)."""
    base = n * K * P
    dtype = tl.float64 if IS_FP64 else tl.float32
    for p0 in range(0, P, BLOCK):
        p = p0 + tl.arange(0, BLOCK)
        acc = tl.zeros((BLOCK,), dtype)
        for k in range(0, K):
            acc += tl.load(parts_ptr + base + k * P + p, mask=p < P, other=0.0)
        tl.store(parts_ptr + base + p, acc, mask=p < P)


@triton.jit
def _group_norms(as_ptr, at_ptr, bs, bt, o0, o1, Tis, His, Wis, Tit, Hit, Wit, To, Ho, Wo, KTs, KHs, KWs,
                 KTt, KHt, KWt, BLOCK: tl.constexpr, IS_FP64: tl.constexpr):
    """(||pool(a_s)||, ||pool(a_t)||) over the pooled flat indices [o0, o1)."""
    dtype = tl.float64 if IS_FP64 else tl.float32
    ns = tl.zeros((BLOCK,), dtype)
    nt = tl.zeros((BLOCK,), dtype)
    for b0 in range(o0, o1, BLOCK):
        o = b0 + tl.arange(0, BLOCK)
        m = o < o1
        ps = _pooled(as_ptr, bs, o, m, Tis, His, Wis, To, Ho, Wo, KTs, KHs, KWs, IS_FP64)
        pt = _pooled(at_ptr, bt, o, m, Tit, Hit, Wit, To, Ho, Wo, KTt, KHt, KWt, IS_FP64)
        ns += ps * ps
        nt += pt * pt
    return _sqrt(tl.sum(ns, axis=0)), _sqrt(tl.sum(nt, axis=0))


@triton.jit
def _transfer_forward(
    ps_ptr, pt_ptr,            # partial maps (N, Ks, Ps), (N, Kt, Pt); parts[:, 0] becomes the raw map
    out_ptr,                   # (N,) per-sample loss terms, or (N, Q) d^2 when NONE (accumulation dtype)
    Ks, Kt, Ps, Pt,
    Tis, His, Wis, Tit, Hit, Wit, To, Ho, Wo,  # raw (student, teacher) and pooled map sizes, 3 axes
    KTs, KHs, KWs, KTt, KHt, KWt,              # longest pooling bin per axis
    GT,                        # normalisation groups per sample (1, or To frames)
    scale: tl.float64,         # factor of the per-sample term (1 / (N Q) for mse mean, 1 / N for l2 mean)
    L2: tl.constexpr, NONE: tl.constexpr, BLOCK: tl.constexpr, IS_FP64: tl.constexpr,
):
    n = tl.program_id(0).to(tl.int64)
    dtype = tl.float64 if IS_FP64 else tl.float32
    _reduce_parts(ps_ptr, n, Ks, Ps, BLOCK, IS_FP64)
    _reduce_parts(pt_ptr, n, Kt, Pt, BLOCK, IS_FP64)
    tl.debug_barrier()  # the raw maps are read below at other positions than written
    bs, bt = n * Ks * Ps, n * Kt * Pt
    Q = To * Ho * Wo
    QF = Q // GT
    total = tl.zeros((BLOCK,), dtype)
    for f in range(0, GT):
        ns, nt = _group_norms(ps_ptr, pt_ptr, bs, bt, f * QF, f * QF + QF, Tis, His, Wis, Tit, Hit, Wit, To, Ho, Wo,
                                 KTs, KHs, KWs, KTt, KHt, KWt, BLOCK, IS_FP64)
        # 1 / max(||b||, eps) of the student's and the teacher's pooled maps
        inv_s, inv_t = _reciprocal(tl.maximum(ns, NORM_EPS)), _reciprocal(tl.maximum(nt, NORM_EPS))
        for b0 in range(f * QF, f * QF + QF, BLOCK):
            o = b0 + tl.arange(0, BLOCK)
            m = o < f * QF + QF
            d = (_pooled(ps_ptr, bs, o, m, Tis, His, Wis, To, Ho, Wo, KTs, KHs, KWs, IS_FP64) * inv_s
                 - _pooled(pt_ptr, bt, o, m, Tit, Hit, Wit, To, Ho, Wo, KTt, KHt, KWt, IS_FP64) * inv_t)
            d = tl.where(m, d, 0.0)
            if NONE:
                tl.store(out_ptr + n * Q + o, d * d, mask=m)
            total += d * d
    if not NONE:
        s = tl.sum(total, axis=0)
        if L2:
            s = _sqrt(s)
        tl.store(out_ptr + n, s * _scalar(scale, IS_FP64))


@triton.jit
def _transfer_backward(
    as_ptr, at_ptr,            # raw maps parts[:, 0] of the forward: (N, Ks, Ps), (N, Kt, Pt)
    g_ptr, g_sn, g_so,         # incoming gradient: (N,) per-sample terms, or (N, Q) when NONE
    das_ptr, dat_ptr,          # dL/da (N, Ps), (N, Pt) contiguous (dat unused unless NEED_T)
    ss_ptr, st_ptr,            # scratch (N, Q): dL/d pool(a) where POOL_S / POOL_T
    Ks, Kt, Ps, Pt,
    Tis, His, Wis, Tit, Hit, Wit, To, Ho, Wo,
    KTs, KHs, KWs, KTt, KHt, KWt,
    GT, scale: tl.float64,
    L2: tl.constexpr, NONE: tl.constexpr, NEED_T: tl.constexpr, POOL_S: tl.constexpr, POOL_T: tl.constexpr,
    BLOCK: tl.constexpr, IS_FP64: tl.constexpr,
):
    n = tl.program_id(0).to(tl.int64)
    dtype = tl.float64 if IS_FP64 else tl.float32
    bs, bt = n * Ks * Ps, n * Kt * Pt
    Q = To * Ho * Wo
    QF = Q // GT
    # dL/dd = coef d: 2 g (mse; g per element when NONE) or g / ||d|| (l2, 0 where d = 0)
    g = tl.load(g_ptr + n * g_sn).to(dtype) * _scalar(scale, IS_FP64)
    coef = 2.0 * g
    if L2:
        total = tl.zeros((BLOCK,), dtype)
        for f in range(0, GT):
            ns, nt = _group_norms(as_ptr, at_ptr, bs, bt, f * QF, f * QF + QF, Tis, His, Wis, Tit, Hit, Wit, To, Ho, Wo,
                                 KTs, KHs, KWs, KTt, KHt, KWt, BLOCK, IS_FP64)
            inv_s, inv_t = _reciprocal(tl.maximum(ns, NORM_EPS)), _reciprocal(tl.maximum(nt, NORM_EPS))
            for b0 in range(f * QF, f * QF + QF, BLOCK):
                o = b0 + tl.arange(0, BLOCK)
                m = o < f * QF + QF
                d = (_pooled(as_ptr, bs, o, m, Tis, His, Wis, To, Ho, Wo, KTs, KHs, KWs, IS_FP64) * inv_s
                     - _pooled(at_ptr, bt, o, m, Tit, Hit, Wit, To, Ho, Wo, KTt, KHt, KWt, IS_FP64) * inv_t)
                total += tl.where(m, d * d, 0.0)
        norm = _sqrt(tl.sum(total, axis=0))
        coef = tl.where(norm > 0, g * _reciprocal(tl.where(norm > 0, norm, 1.0)), 0.0)
    for f in range(0, GT):
        ns, nt = _group_norms(as_ptr, at_ptr, bs, bt, f * QF, f * QF + QF, Tis, His, Wis, Tit, Hit, Wit, To, Ho, Wo,
                                 KTs, KHs, KWs, KTt, KHt, KWt, BLOCK, IS_FP64)
        # 1 / max(||b||, eps) of the student's and the teacher's pooled maps
        inv_s, inv_t = _reciprocal(tl.maximum(ns, NORM_EPS)), _reciprocal(tl.maximum(nt, NORM_EPS))
        # pass 2: u . dL/dd and v . dL/dd (u, v the normalised pooled maps)
        us = tl.zeros((BLOCK,), dtype)
        vs = tl.zeros((BLOCK,), dtype)
        for b0 in range(f * QF, f * QF + QF, BLOCK):
            o = b0 + tl.arange(0, BLOCK)
            m = o < f * QF + QF
            u = _pooled(as_ptr, bs, o, m, Tis, His, Wis, To, Ho, Wo, KTs, KHs, KWs, IS_FP64) * inv_s
            v = _pooled(at_ptr, bt, o, m, Tit, Hit, Wit, To, Ho, Wo, KTt, KHt, KWt, IS_FP64) * inv_t
            c = coef
            if NONE:
                c = 2.0 * tl.load(g_ptr + n * g_sn + o * g_so, mask=m, other=0.0).to(dtype)
            gd = tl.where(m, c * (u - v), 0.0)
            us += u * gd
            vs += v * gd
        # normalisation backward: (gd - u (u . gd)) / ||b|| where ||b|| >= eps, else gd / eps
        us = tl.where(ns >= NORM_EPS, tl.sum(us, axis=0), 0.0)
        vs = tl.where(nt >= NORM_EPS, tl.sum(vs, axis=0), 0.0)
        for b0 in range(f * QF, f * QF + QF, BLOCK):
            o = b0 + tl.arange(0, BLOCK)
            m = o < f * QF + QF
            u = _pooled(as_ptr, bs, o, m, Tis, His, Wis, To, Ho, Wo, KTs, KHs, KWs, IS_FP64) * inv_s
            v = _pooled(at_ptr, bt, o, m, Tit, Hit, Wit, To, Ho, Wo, KTt, KHt, KWt, IS_FP64) * inv_t
            c = coef
            if NONE:
                c = 2.0 * tl.load(g_ptr + n * g_sn + o * g_so, mask=m, other=0.0).to(dtype)
            gd = c * (u - v)
            if POOL_S:
                tl.store(ss_ptr + n * Q + o, (gd - u * us) * inv_s, mask=m)
            else:
                tl.store(das_ptr + n * Ps + o, (gd - u * us) * inv_s, mask=m)
            if NEED_T:
                if POOL_T:
                    tl.store(st_ptr + n * Q + o, (v * vs - gd) * inv_t, mask=m)
                else:
                    tl.store(dat_ptr + n * Pt + o, (v * vs - gd) * inv_t, mask=m)
    if POOL_S or POOL_T:
        tl.debug_barrier()  # the pooled gradients are read back at other positions than written
    if POOL_S:
        for i0 in range(0, Ps, BLOCK):
            i = i0 + tl.arange(0, BLOCK)
            tl.store(das_ptr + n * Ps + i, _unpooled(ss_ptr, n * Q, i, i < Ps, Tis, His, Wis, To, Ho, Wo, IS_FP64),
                     mask=i < Ps)
    if NEED_T and POOL_T:
        for i0 in range(0, Pt, BLOCK):
            i = i0 + tl.arange(0, BLOCK)
            tl.store(dat_ptr + n * Pt + i, _unpooled(st_ptr, n * Q, i, i < Pt, Tit, Hit, Wit, To, Ho, Wo, IS_FP64),
                     mask=i < Pt)


KERNELS = (_map_forward, _map_backward, _transfer_forward, _transfer_backward)


def launch_constexprs(q: float, dtype: torch.dtype) -> dict:
    """The constexprs of a map call: the one place configs are chosen."""
    return dict(POWER=POWERS.get(float(q), 2), BLOCK_C=16, BLOCK_P=64 if dtype == torch.float64 else 128,
                IS_FP64=dtype == torch.float64)


def splits(x: torch.Tensor) -> int:
    """K, the number of channel splits of the map launch of x (N, C, P): grown until the
    launch has TARGET_PROGRAMS programs, each split keeping >= MIN_SPLIT_CHANNELS channels."""
    N, C, P = x.shape
    base = N * triton.cdiv(P, launch_constexprs(2.0, x.dtype)["BLOCK_P"])
    return max(1, min(C // MIN_SPLIT_CHANNELS, triton.cdiv(TARGET_PROGRAMS, base)))


def _grid(x: torch.Tensor, c: dict) -> tuple:
    N, C, P = x.shape
    return check_grid((N * triton.cdiv(P, c["BLOCK_P"]), splits(x)))


def forward(x: torch.Tensor, p: float, parts: torch.Tensor) -> None:
    """Writes parts (N, K, P), K = splits(x), with sum_k parts[:, k] = sum_c |x|^p
    for x (N, C, P) strided."""
    c = launch_constexprs(p, x.dtype)
    _map_forward[_grid(x, c)](x, parts, *x.shape, p, *x.stride(), **c, num_warps=4)


def backward(x: torch.Tensor, grad: torch.Tensor, p: float, dx: torch.Tensor) -> None:
    """Writes dx (N, C, P) = p |x|^(p-1) sign(x) grad[n, p] / C."""
    c = launch_constexprs(p, x.dtype)
    _map_backward[_grid(x, c)](x, grad, dx, *x.shape, p, *x.stride(), *grad.stride(), *dx.stride(), **c,
                               num_warps=4)


def finish_config(direction: str, dtype: torch.dtype) -> tuple:
    """(constexprs, launch options) of the finishing kernel of ``direction`` for maps of ``dtype``."""
    block, warps = _FINISH[direction, dtype == torch.float64]
    return dict(BLOCK=block, IS_FP64=dtype == torch.float64), dict(num_warps=warps)


def finish_forward(geometry, parts_s, parts_t, out) -> None:
    """The per-sample loss terms (or d^2) into out; the raw maps into parts[:, 0] (layout.Geometry)."""
    N = parts_s.shape[0]
    c, options = finish_config("forward", parts_s.dtype)
    _transfer_forward[check_grid((N,))](parts_s, parts_t, out, *geometry.launch_args(parts_s, parts_t),
                                        L2=geometry.l2, NONE=geometry.none, **c, **options)


def finish_backward(geometry, parts_s, parts_t, grad, da_s, da_t) -> None:
    """dL/da_s (and dL/da_t when da_t is given) from the raw maps parts[:, 0] and grad."""
    N = parts_s.shape[0]
    pool_s, pool_t = geometry.pooled_s, geometry.pooled_t and da_t is not None
    scratch = parts_s.new_empty((N, geometry.Q)) if pool_s or pool_t else parts_s
    scratch_t = parts_s.new_empty((N, geometry.Q)) if pool_t else scratch
    g = grad.reshape(N, -1)
    c, options = finish_config("backward", parts_s.dtype)
    _transfer_backward[check_grid((N,))](parts_s, parts_t, g, g.stride(0), g.stride(1), da_s,
                                         da_s if da_t is None else da_t, scratch, scratch_t,
                                         *geometry.launch_args(parts_s, parts_t), L2=geometry.l2,
                                         NONE=geometry.none, NEED_T=da_t is not None, POOL_S=pool_s,
                                         POOL_T=pool_t, **c, **options)


def launch_configs() -> Iterator[tuple]:
    """(kernel, constexprs, launch options) of every config the launchers can produce
    (each dtype and POWER case; each distance / reduction / teacher / pooling case of the
    finish); the launch-capture test checks its captured launches cover them."""
    options = dict(num_warps=4)
    for dtype in TRITON_TYPES:
        for q in (2.0, 1.0, 1.5):
            yield _map_forward, launch_constexprs(q, dtype), options
            yield _map_backward, launch_constexprs(q, dtype), options
    for dtype in (torch.float32, torch.float64):  # the maps are in the accumulation dtype
        (c, forward_options), (cb, backward_options) = finish_config("forward", dtype), finish_config("backward", dtype)
        for l2 in (False, True):
            for none in ((False, True) if not l2 else (False,)):
                yield _transfer_forward, dict(c, L2=l2, NONE=none), forward_options
                for need_t in (False, True):
                    for pool_s in (False, True):
                        for pool_t in ((False, True) if need_t else (False,)):
                            yield _transfer_backward, dict(cb, L2=l2, NONE=none, NEED_T=need_t, POOL_S=pool_s,
                                                           POOL_T=pool_t), backward_options
