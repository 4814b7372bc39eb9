"""Cases for ``vkd_kernels.temporal_spectrum_loss`` (op name ``spectrum``).

Providers: ``vkd`` (backend="auto": the C++ kernel on CPU, Triton on CUDA), ``eager``
(the torch.fft reference, written the way a user would) and ``compile``
(``torch.compile`` of that reference).
"""
from __future__ import annotations

import math
from typing import List

import torch
from harness import Case

import vkd_kernels
from vkd_kernels.spectrum.layout import make_problem
from vkd_kernels.spectrum.reference import temporal_spectrum_loss_reference

OP = "spectrum"
SHAPES = [(8, 256, 8, 14, 14), (8, 512, 16, 7, 7), (4, 64, 32, 28, 28), (16, 2048, 8, 7, 7)]
OPTIONS = dict(spectrum="magnitude", norm="backward", spatial="pixel", reduction="mean")


def make_case(shape, device: str, dtype: torch.dtype = torch.float32) -> Case:
    """One (N, C, T, H, W) case: student requires grad, teacher does not."""

    def make_inputs():
        gen = torch.Generator().manual_seed(0)
        student = torch.randn(shape, generator=gen, dtype=dtype).to(device).requires_grad_()
        teacher = torch.randn(shape, generator=gen, dtype=dtype).to(device)
        return student, teacher

    meta = torch.empty(shape, dtype=dtype, device="meta")
    problem = make_problem(meta, meta, time_dim=2, num_segments=None, eps=1e-12, **OPTIONS)

    def eager(student, teacher):
        return temporal_spectrum_loss_reference(student, teacher, problem, None, **OPTIONS)

    def vkd(student, teacher):
        return vkd_kernels.temporal_spectrum_loss(student, teacher, time_dim=2, backend="auto", **OPTIONS)

    nbytes = math.prod(shape) * torch.finfo(dtype).bits // 8
    return Case(
        op=OP,
        label="x".join(map(str, shape)),
        make_inputs=make_inputs,
        providers={
            "vkd": lambda: vkd,
            "eager": lambda: eager,
            "compile": lambda: torch.compile(eager, dynamic=False),
        },
        # forward reads both inputs; backward reads both and writes one gradient.
        min_bytes={"forward": 2 * nbytes, "backward": 3 * nbytes, "full": 5 * nbytes},
    )


def cases(device: str, quick: bool = False) -> List[Case]:
    """The spectrum case list (only the first shape with ``quick``)."""
    return [make_case(shape, device) for shape in (SHAPES[:1] if quick else SHAPES)]
