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

The ``-> mean HW`` cases are the GKD classifier's consumer, F_fg averaged over (H, W):
``vkd`` is ``attention_apply(..., spatial="mean")``, ``vkd-keep`` the full op then the mean.
"""
from __future__ import annotations

from typing import List

import torch
from harness import Case

from vkd_kernels import attention_apply

OP = "apply"
# F (N, C, T, H, W): the GKD shape, and a larger one
SHAPES = [(6, 1024, 8, 7, 7), (8, 2048, 8, 14, 14)]


def _provider(backend, spatial="keep"):
    def run(F, lam):
        return attention_apply(F, lam, spatial=spatial, backend=backend).square().sum()
    return run


def _compiled_op():
    op = torch.compile(lambda F, lam: attention_apply(F, lam, backend="reference"), dynamic=False)

    def run(F, lam):
        return op(F, lam).square().sum()
    return run


def _gkd_consumer(backend, spatial):
    """What GKD's classifier reads: F_fg averaged over (H, W), (N, C, T), then a square-sum."""
    def run(F, lam):
        out = attention_apply(F, lam, spatial=spatial, backend=backend)
        return (out if spatial == "mean" else out.mean((3, 4))).square().sum()
    return run


def _inputs(shape, device, dtype):
    def make_inputs():
        gen = torch.Generator().manual_seed(0)
        F = torch.rand(shape, generator=gen, dtype=dtype).to(device).requires_grad_()
        lam = torch.rand(shape[:3], generator=gen, dtype=dtype).to(device).requires_grad_()
        return F, lam
    return make_inputs


def make_case(shape, device: str, dtype: torch.dtype = torch.float32) -> Case:
    eager = _provider("reference")
    size = torch.tensor([], dtype=dtype).element_size() * torch.Size(shape).numel()
    return Case(
        op=OP,
        label="F " + "x".join(map(str, shape)),
        make_inputs=_inputs(shape, device, dtype),
        providers={"vkd": lambda: _provider("auto"), "eager": lambda: eager,
                   "compile": lambda: torch.compile(eager, dynamic=False), "compile-op": _compiled_op,
                   "vkd-in-compile": lambda: torch.compile(_provider("auto"), dynamic=False)},
        # forward reads F and writes out; backward reads F and g, writes dF
        min_bytes={"forward": 2 * size, "backward": 3 * size, "full": 5 * size},
    )


def make_mean_case(shape, device: str, dtype: torch.dtype = torch.float32) -> Case:
    """The GKD classifier's use: vkd = ``spatial="mean"`` (one read of F), against the
    formula then ``.mean((3, 4))`` eager and compiled, and the full vkd op then the mean
    (``vkd-keep``)."""
    eager = _gkd_consumer("reference", "keep")
    size = torch.tensor([], dtype=dtype).element_size() * torch.Size(shape).numel()
    return Case(
        op=OP,
        label="F " + "x".join(map(str, shape)) + " -> mean HW",
        make_inputs=_inputs(shape, device, dtype),
        providers={"vkd": lambda: _gkd_consumer("auto", "mean"), "eager": lambda: eager,
                   "compile": lambda: torch.compile(eager, dynamic=False),
                   "vkd-keep": lambda: _gkd_consumer("auto", "keep")},
        # forward reads F; backward writes dF
        min_bytes={"forward": size, "backward": size, "full": 2 * size},
    )


def cases(device: str, quick: bool = False) -> List[Case]:
    shapes = SHAPES[:1] if quick else SHAPES
    return [make_case(shape, device) for shape in shapes] + [make_mean_case(shape, device) for shape in shapes]
