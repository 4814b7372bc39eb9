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

from .._triton_jit import scalar as _scalar
from .._triton_specs import TRITON_TYPES, check_grid

POWERS = {2.0: 0, 1.0: 1}  # exponent -> POWER; anything else -> 2


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


KERNELS = (_map_forward, _map_backward)


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


def launch_configs() -> Iterator[tuple]:
    """(kernel, constexprs, launch options) of every config the launchers can produce
    (each dtype and POWER case); the launch-capture test checks its captured launches cover them."""
    options = dict(num_warps=4)
    for dtype in TRITON_TYPES:
        for q in (2.0, 1.0, 1.5):
            yield _map_forward, launch_constexprs(q, dtype), options
            yield _map_backward, launch_constexprs(q, dtype), options
