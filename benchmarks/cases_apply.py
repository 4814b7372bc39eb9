"""Cases for ``vkd_kernels.attention_apply`` (op name ``apply``): F * lam * sum(F) / sum(F * lam).

The scalar loss is ``out.square().sum()`` for every provider (a consumer of the output, so
the backward reads a dense gradient as in training); F and lam both require grad.
Providers:

- ``vkd``: backend="auto" (the fused C++ row kernels on CPU, Triton on CUDA), the
  consumer in eager torch;
- ``eager``: the formula in torch (backend="reference"), the consumer eager;
- ``compile``: ``torch.compile`` of formula and consumer together (it fuses the square-sum
  into the formula and never writes ``out``);
- ``compile-op``: ``torch.compile`` of the formula alone, the consumer eager as for
  ``vkd``: the op against the op;
- ``vkd-in-compile``: ``torch.compile`` of ``vkd`` (the custom op stays one opaque call,
  the consumer is compiled around it): what a compiled model that calls the op gets.
"""
from __future__ import annotations

from typing import List

import torch
from harness import Case

from vkd_kernels import attention_apply

OP = "apply"
# F (N, C, T, H, W): the GKD shape, and a larger one
SHAPES = [(6, 1024, 8, 7, 7), (8, 2048, 8, 14, 14)]


def _provider(backend):
    def run(F, lam):
        return attention_apply(F, lam, backend=backend).square().sum()
    return run


def _compiled_op():
    op = torch.compile(lambda F, lam: attention_apply(F, lam, backend="reference"), dynamic=False)

    def run(F, lam):
        return op(F, lam).square().sum()
    return run


def make_case(shape, device: str, dtype: torch.dtype = torch.float32) -> Case:
    def make_inputs():
        gen = torch.Generator().manual_seed(0)
        F = torch.rand(shape, generator=gen, dtype=dtype).to(device).requires_grad_()
        lam = torch.rand(shape[:3], generator=gen, dtype=dtype).to(device).requires_grad_()
        return F, lam

    eager = _provider("reference")
    size = torch.tensor([], dtype=dtype).element_size() * torch.Size(shape).numel()
    return Case(
        op=OP,
        label="F " + "x".join(map(str, shape)),
        make_inputs=make_inputs,
        providers={"vkd": lambda: _provider("auto"), "eager": lambda: eager,
                   "compile": lambda: torch.compile(eager, dynamic=False), "compile-op": _compiled_op,
                   "vkd-in-compile": lambda: torch.compile(_provider("auto"), dynamic=False)},
        # forward reads F and writes out; backward reads F and g, writes dF
        min_bytes={"forward": 2 * size, "backward": 3 * size, "full": 5 * size},
    )


def cases(device: str, quick: bool = False) -> List[Case]:
    return [make_case(shape, device) for shape in (SHAPES[:1] if quick else SHAPES)]
