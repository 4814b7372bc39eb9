"""Cases for the GKD attention-head tail ``vkd_kernels.attention_head_tail`` (op name ``head``).

y (N, C1, T) -> lambda (N, C, T) through upsample to L, Conv1d(k=3), GroupNorm, ReLU,
Linear(L -> T), sigmoid. Providers: ``vkd`` (the exact compact form), ``plain`` (the
torch layers, building the (N, C, L) tensors) and ``compile`` (``torch.compile`` of the
plain layers). ``notes`` adds the FLOP counts (torch.utils.flop_counter) to the report.
"""
from __future__ import annotations

import math
from typing import List

import torch
from harness import Case

from vkd_kernels.attention.head import attention_head_tail

OP = "head"
# (N, C1, C, T, L, groups): the paper's shape, and L not a multiple of T
SHAPES = [(6, 512, 1024, 8, 1024, 32), (6, 256, 512, 7, 500, 32)]


def _parameters(N, C1, C, T, L, device, dtype):
    gen = torch.Generator().manual_seed(0)
    y = torch.randn(N, C1, T, generator=gen, dtype=dtype)
    params = (torch.randn(C, C1, 3, generator=gen, dtype=dtype) / (3 * C1) ** 0.5, torch.zeros(C, dtype=dtype),
              torch.ones(C, dtype=dtype), torch.zeros(C, dtype=dtype),
              torch.randn(T, L, generator=gen, dtype=dtype) / L ** 0.5, torch.zeros(T, dtype=dtype))
    return [t.to(device).requires_grad_() for t in (y, *params)]


def _provider(backend, G, L):
    def run(y, cw, cb, gw, gb, lw, lb):
        return attention_head_tail(y, cw, cb, gw, gb, G, lw, lb, upsample_length=L, backend=backend).sum()
    return run


def make_case(shape, device: str, dtype: torch.dtype = torch.float32) -> Case:
    N, C1, C, T, L, G = shape
    plain = _provider("reference", G, L)
    size = torch.finfo(dtype).bits // 8
    inputs = size * sum(math.prod(s) for s in [(N, C1, T), (C, C1, 3), (C,), (C,), (C,), (T, L), (T,)])
    out = size * N * C * T
    return Case(
        op=OP,
        label=f"N{N} C1={C1} C={C} T={T} L={L}",
        make_inputs=lambda: _parameters(N, C1, C, T, L, device, dtype),
        providers={"vkd": lambda: _provider("auto", G, L), "plain": lambda: plain,
                   "compile": lambda: torch.compile(plain, dynamic=False)},
        # forward reads the 7 inputs and writes lambda; backward reads them and dlambda and writes 7 gradients
        # (a lower bound: the head is GEMM-bound, and the roofline counts no FLOPs)
        min_bytes={"forward": inputs + out, "backward": 2 * inputs + out, "full": 3 * inputs + 2 * out},
    )


def flops(shape, device: str = "cpu") -> dict:
    """FLOPs of forward and forward+backward per provider, counted by FlopCounterMode
    (matmuls and convolutions; elementwise work is not counted)."""
    from torch.utils.flop_counter import FlopCounterMode
    N, C1, C, T, L, G = shape
    counts = {}
    for name, backend in (("vkd", "auto"), ("plain", "reference")):
        inputs = _parameters(N, C1, C, T, L, device, torch.float32)
        with FlopCounterMode(display=False) as forward:
            loss = _provider(backend, G, L)(*inputs)
        with FlopCounterMode(display=False) as backward:
            loss.backward()
        counts[name] = (forward.get_total_flops(), forward.get_total_flops() + backward.get_total_flops())
    return counts


def notes(device: str, quick: bool = False) -> str:
    lines = ["", "FLOPs (torch.utils.flop_counter.FlopCounterMode: matmuls and convolutions).", "",
             "| shape | vkd forward | plain forward | vkd full | plain full | fewer FLOPs (full) |",
             "|---|---|---|---|---|---|"]
    for shape in SHAPES[:1] if quick else SHAPES:
        c = flops(shape, device)
        lines.append(f"| {make_case(shape, 'meta').label} | {c['vkd'][0]:.4g} | {c['plain'][0]:.4g} | "
                     f"{c['vkd'][1]:.4g} | {c['plain'][1]:.4g} | {c['plain'][1] / c['vkd'][1]:.1f}x |")
    return "\n".join(lines) + "\n"


def cases(device: str, quick: bool = False) -> List[Case]:
    return [make_case(shape, device) for shape in (SHAPES[:1] if quick else SHAPES)]
