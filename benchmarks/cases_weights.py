"""Cases for ``vkd_kernels.weight_spectrum_distance`` (op name ``weights``).

The k > 1 conv weights of a 3-D ResNet-50-like teacher (Hara et al.: (3,7,7) stem,
3x3x3 bottleneck convs, [3, 4, 6, 3] blocks; 1x1x1 convs carry no spatial frequency
and are left out) against a 3-D ResNet-18-like student ((3,7,7) stem, two 3x3x3 convs
per block, [2, 2, 2, 2] blocks): 34M + 33M parameters. Only the weight tensors are
built, with the real shapes. Two pairings: ``stages`` (stem + 4 pooled stages = 5
pairs) and ``layers`` (17 student layers against 17 teacher layers).

Providers: ``vkd`` (backend="auto": the C++ kernel on CPU, Triton on CUDA), ``eager``
(the per-layer reference, written the way a user would) and ``compile``
(``torch.compile`` of that reference). The student requires grad; the teacher does
not but its spectrum is recomputed by every provider on every call.
"""
from __future__ import annotations

from typing import List

import torch
from harness import Case

import vkd_kernels
from vkd_kernels.weights.reference import weight_spectrum_distance_reference

OP = "weights"
WIDTHS = (64, 128, 256, 512)
OPTIONS = dict(transform="dct", distance="kl", drop_dc=False, reduction="mean", eps=1e-12)


def resnet3d50_convs() -> List[List[tuple]]:
    """Shapes of the k > 1 convs per stage: [stem], layer1..layer4."""
    stages = [[(64, 3, 3, 7, 7)]]
    for width, blocks in zip(WIDTHS, (3, 4, 6, 3)):
        stages.append([(width, width, 3, 3, 3)] * blocks)
    return stages


def resnet3d18_convs() -> List[List[tuple]]:
    stages, previous = [[(64, 3, 3, 7, 7)]], 64
    for width in WIDTHS:
        stages.append([(width, previous, 3, 3, 3)] + [(width, width, 3, 3, 3)] * 3)
        previous = width
    return stages


def make_case(pairing: str, device: str, dtype: torch.dtype = torch.float32) -> Case:
    student_stages, teacher_stages = resnet3d18_convs(), resnet3d50_convs()
    if pairing == "stages":
        s_sizes, t_sizes = [len(s) for s in student_stages], [len(s) for s in teacher_stages]
    else:
        s_sizes, t_sizes = [1] * sum(map(len, student_stages)), [1] * sum(map(len, teacher_stages))
    s_shapes = [shape for stage in student_stages for shape in stage]
    t_shapes = [shape for stage in teacher_stages for shape in stage]

    def make_inputs():
        gen = torch.Generator().manual_seed(0)
        student = [(torch.randn(s, generator=gen, dtype=dtype) * 0.05).to(device).requires_grad_() for s in s_shapes]
        teacher = [(torch.randn(s, generator=gen, dtype=dtype) * 0.05).to(device) for s in t_shapes]
        return (*student, *teacher)

    def split(flat, sizes):
        groups, start = [], 0
        for size in sizes:
            groups.append(list(flat[start:start + size]))
            start += size
        return groups

    def sides(inputs):
        return split(inputs[:len(s_shapes)], s_sizes), split(inputs[len(s_shapes):], t_sizes)

    def eager(*inputs):
        return weight_spectrum_distance_reference(*sides(inputs), **OPTIONS)

    def vkd(*inputs):
        return vkd_kernels.weight_spectrum_distance(*sides(inputs), backend="auto", **OPTIONS)

    bytes_s = sum(torch.Size(s).numel() for s in s_shapes) * torch.finfo(dtype).bits // 8
    bytes_t = sum(torch.Size(s).numel() for s in t_shapes) * torch.finfo(dtype).bits // 8
    return Case(
        op=OP,
        label=f"r3d50-vs-r3d18-{pairing}",
        make_inputs=make_inputs,
        providers={
            "vkd": lambda: vkd,
            "eager": lambda: eager,
            "compile": lambda: torch.compile(eager, dynamic=False),
        },
        # forward reads every weight; backward reads the student and writes its gradient.
        min_bytes={"forward": bytes_s + bytes_t, "backward": 2 * bytes_s, "full": 3 * bytes_s + bytes_t},
    )


def cases(device: str, quick: bool = False) -> List[Case]:
    """Stage-pooled and per-layer pairings (only the first with ``quick``)."""
    return [make_case(p, device) for p in (("stages",) if quick else ("stages", "layers"))]
