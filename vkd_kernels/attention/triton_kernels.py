"""Triton kernels of the attention-transfer raw map (docs/ops.md 3a).

x is read as (N, C, P) strided. Each program takes BLOCK_P positions of one sample
and loops over the channels in [BLOCK_C, BLOCK_P] tiles: the forward sums |x|^q over
C (one read of x), the backward writes dx = q |x|^(q-1) sign(x) dL/da / C (one read,
one write). POWER selects the exponent case: 0 q = 2, 1 q = 1, 2 any q > 0 (via
exp2/log2). No tl.dot, so any power-of-two block compiles; ``launch_constexprs`` is
the one place configs are chosen and ``launch_configs`` enumerates all of them.
"""
from __future__ import annotations

from typing import Iterator

import torch
import triton
import triton.language as tl

from .._triton_specs import TRITON_TYPES, check_grid

POWERS = {2.0: 0, 1.0: 1}  # exponent -> POWER; anything else -> 2


@triton.jit
def _scalar(value, IS_FP64: tl.constexpr):
    """A float argument in the accumulation dtype. Float arguments are annotated fp64: the
    JIT would type a Python float fp32, rounding a float64 launch's q, M and eps at ~1e-8,
    so they arrive as doubles and are cast once here (exact for a float64 launch; for a
    float32 one the same rounding as an fp32 argument). tl.full also takes the Python
    float the interpreter passes, without a float32 detour."""
    return tl.full((), value, tl.float64 if IS_FP64 else tl.float32)


@triton.jit
def _map_block(P, BLOCK_P: tl.constexpr):
    """(sample n, positions p [BLOCK_P]) of this program: the grid is one axis of
    N * cdiv(P, BLOCK_P) programs (N on grid axis y would stop at 65535 samples)."""
    pid = tl.program_id(0).to(tl.int64)
    blocks = tl.cdiv(P, BLOCK_P)
    return pid // blocks, pid % blocks * BLOCK_P + tl.arange(0, BLOCK_P)


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
    a_ptr,                     # map (N, P) strided, accumulation dtype
    N, C, P,                   # sizes
    q: tl.float64,             # exponent (POWER == 2 only)
    x_sn, x_sc, x_sp,          # feature strides
    a_sn, a_sp,                # map strides
    POWER: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr, IS_FP64: tl.constexpr,
):
    n, p = _map_block(P, BLOCK_P)
    q = _scalar(q, IS_FP64)
    acc = tl.zeros((BLOCK_P,), tl.float64 if IS_FP64 else tl.float32)
    for c0 in range(0, C, BLOCK_C):
        c = c0 + tl.arange(0, BLOCK_C)
        mask = (c[:, None] < C) & (p[None, :] < P)
        x = tl.load(x_ptr + n * x_sn + c[:, None].to(tl.int64) * x_sc + p[None, :] * x_sp, mask=mask, other=0.0)
        x = x.to(tl.float64) if IS_FP64 else x.to(tl.float32)
        acc += tl.sum(_power(x, q, POWER), axis=0)
    tl.store(a_ptr + n * a_sn + p * a_sp, acc / C, mask=p < P)


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
    q = _scalar(q, IS_FP64)
    g = tl.load(g_ptr + n * g_sn + p * g_sp, mask=p < P, other=0.0) / C
    for c0 in range(0, C, BLOCK_C):
        c = c0 + tl.arange(0, BLOCK_C)
        mask = (c[:, None] < C) & (p[None, :] < P)
        x = tl.load(x_ptr + n * x_sn + c[:, None].to(tl.int64) * x_sc + p[None, :] * x_sp, mask=mask, other=0.0)
        x = x.to(tl.float64) if IS_FP64 else x.to(tl.float32)
        dx = _power_grad(x, q, POWER) * g[None, :]
        tl.store(dx_ptr + n * dx_sn + c[:, None].to(tl.int64) * dx_sc + p[None, :] * dx_sp,
                 dx.to(dx_ptr.dtype.element_ty), mask=mask)


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


KERNELS = (_map_forward, _map_backward, _head_norm_forward, _head_norm_backward, _apply_reduce, _apply_affine)


def launch_constexprs(q: float, dtype: torch.dtype) -> dict:
    """The constexprs of a call: the one place configs are chosen."""
    return dict(POWER=POWERS.get(float(q), 2), BLOCK_C=16, BLOCK_P=64 if dtype == torch.float64 else 128,
                IS_FP64=dtype == torch.float64)


def _grid(x: torch.Tensor, c: dict) -> tuple:
    N, _, P = x.shape
    return check_grid((N * triton.cdiv(P, c["BLOCK_P"]),))


def forward(x: torch.Tensor, p: float, a: torch.Tensor) -> None:
    """Writes a (N, P) = mean_c |x|^p for x (N, C, P) strided."""
    c = launch_constexprs(p, x.dtype)
    _map_forward[_grid(x, c)](x, a, *x.shape, p, *x.stride(), *a.stride(), **c, num_warps=4)


def backward(x: torch.Tensor, grad: torch.Tensor, p: float, dx: torch.Tensor) -> None:
    """Writes dx (N, C, P) = p |x|^(p-1) sign(x) grad[n, p] / C."""
    c = launch_constexprs(p, x.dtype)
    _map_backward[_grid(x, c)](x, grad, dx, *x.shape, p, *x.stride(), *grad.stride(), *dx.stride(), **c,
                               num_warps=4)


def head_constexprs(dtype: torch.dtype) -> dict:
    """The constexprs of the head's GroupNorm kernels (besides HAS_GAMMA / HAS_BETA)."""
    return dict(BLOCK_J=16, BLOCK_C=32, IS_FP64=dtype == torch.float64)


def head_norm_forward(Z, w, gamma, beta, groups: int, M: float, eps: float, H, stats) -> None:
    """Weighted GroupNorm + ReLU of the head's compact tail: writes H (N, J, C) and stats (N, G, 2)."""
    N, J, C = Z.shape
    grid = check_grid((N * groups,))
    _head_norm_forward[grid](Z, w, Z if gamma is None else gamma, Z if beta is None else beta, H, stats,
                             N, J, C, groups, M, eps, HAS_GAMMA=gamma is not None,
                             HAS_BETA=beta is not None, **head_constexprs(Z.dtype), num_warps=4)


def head_norm_backward(Z, w, gamma, beta, stats, dH, groups: int, M: float, dZ, dgamma, dbeta) -> None:
    """Writes dZ (N, J, C) and the per-sample partial sums dgamma, dbeta (N, C) where given."""
    N, J, C = Z.shape
    grid = check_grid((N * groups,))
    _head_norm_backward[grid](Z, w, Z if gamma is None else gamma, Z if beta is None else beta, stats, dH,
                              dZ, Z if dgamma is None else dgamma, Z if dbeta is None else dbeta,
                              N, J, C, groups, M, HAS_GAMMA=gamma is not None, HAS_BETA=beta is not None,
                              **head_constexprs(Z.dtype), num_warps=4)


def apply_constexprs(dtype: torch.dtype) -> dict:
    """The constexprs of the attention_apply row kernels (besides HAS_Y / HAS_B)."""
    return dict(BLOCK_R=16 if dtype == torch.float64 else 32, BLOCK_S=64, IS_FP64=dtype == torch.float64)


def apply_reduce(x: torch.Tensor, y, rows: torch.Tensor) -> None:
    """Writes rows (N C T,) = sum_s x (y None) or sum_s x y for x, y (N, C, T, S) strided."""
    N, C, T, S = x.shape
    c = apply_constexprs(x.dtype)
    has_y = y is not None
    y = y if has_y else x
    grid = check_grid((triton.cdiv(N * C * T, c["BLOCK_R"]),))
    _apply_reduce[grid](x, y, rows, C, T, S, N * C * T, *x.stride(), *y.stride(), HAS_Y=has_y, **c, num_warps=4)


def apply_affine(x: torch.Tensor, a: torch.Tensor, b, out: torch.Tensor) -> None:
    """Writes out = x a[row] + b[row] (b None: 0) for x, out (N, C, T, S) strided."""
    N, C, T, S = x.shape
    c = apply_constexprs(x.dtype)
    grid = check_grid((triton.cdiv(N * C * T, c["BLOCK_R"]) * triton.cdiv(S, c["BLOCK_S"]),))
    _apply_affine[grid](x, a, a if b is None else b, out, C, T, S, N * C * T, *x.stride(), *out.stride(),
                        HAS_B=b is not None, **c, num_warps=4)


def launch_configs() -> Iterator[tuple]:
    """(kernel, constexprs, launch options) of every config the launchers can produce
    (each dtype, POWER case, gamma / beta presence, HAS_Y / HAS_B); the launch-capture
    test checks its captured launches cover them."""
    options = dict(num_warps=4)
    for dtype in TRITON_TYPES:
        for q in (2.0, 1.0, 1.5):
            yield _map_forward, launch_constexprs(q, dtype), options
            yield _map_backward, launch_constexprs(q, dtype), options
        for gamma in (False, True):
            for beta in (False, True):
                c = dict(head_constexprs(dtype), HAS_GAMMA=gamma, HAS_BETA=beta)
                yield _head_norm_forward, c, options
                yield _head_norm_backward, c, options
        for present in (False, True):
            yield _apply_reduce, dict(apply_constexprs(dtype), HAS_Y=present), options
            yield _apply_affine, dict(apply_constexprs(dtype), HAS_B=present), options
