"""Cases for ``vkd_kernels.attention_transfer_loss`` (op name ``attention``).

Providers: ``vkd`` (backend="auto": the fused C++ raw-map kernel on CPU, Triton on
CUDA), ``eager`` (the reference, written the way a user would: x.pow(2).mean(1),
pooling, F.normalize, mse) and ``compile`` (``torch.compile`` of that reference).
"""
from __future__ import annotations

import math
from typing import List

import torch
from harness import Case

import vkd_kernels
from vkd_kernels.attention.reference import raw_map_reference, transfer_distance

OP = "attention"
# (student, teacher): the shape, and a teacher at a coarser (T, H, W) (pooled)
SHAPES = [((8, 256, 8, 14, 14), (8, 1024, 8, 14, 14)), ((8, 256, 8, 14, 14), (8, 2048, 4, 7, 7))]


def make_case(shapes, device: str, dtype: torch.dtype = torch.float32) -> Case:
    """Student requires grad, teacher does not."""
    shape_s, shape_t = shapes

    def make_inputs():
        gen = torch.Generator().manual_seed(0)
        fs = torch.randn(shape_s, generator=gen, dtype=dtype).to(device).requires_grad_()
        ft = torch.randn(shape_t, generator=gen, dtype=dtype).to(device)
        return fs, ft

    def eager(fs, ft):
        return transfer_distance(raw_map_reference(fs, 2, 1), raw_map_reference(ft, 2, 1), "spatiotemporal", "mse",
                                 "mean")

    def vkd(fs, ft):
        return vkd_kernels.attention_transfer_loss(fs, ft, backend="auto")

    size = torch.finfo(dtype).bits // 8
    bs, bt = math.prod(shape_s) * size, math.prod(shape_t) * size
    return Case(
        op=OP,
        label="x".join(map(str, shape_s)) + " vs " + "x".join(map(str, shape_t)),
        make_inputs=make_inputs,
        providers={"vkd": lambda: vkd, "eager": lambda: eager, "compile": lambda: torch.compile(eager, dynamic=False)},
        # forward reads both features; backward reads the student and writes its gradient.
        min_bytes={"forward": bs + bt, "backward": 2 * bs, "full": 3 * bs + bt},
    )


def cases(device: str, quick: bool = False) -> List[Case]:
    return [make_case(shapes, device) for shapes in (SHAPES[:1] if quick else SHAPES)]
