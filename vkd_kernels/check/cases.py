"""The correctness cases of ``python -m vkd_kernels.check``: every public op on small,
odd shapes and the layouts that break kernels (channels_last_3d, TSM, pooling, groups).

A :class:`Case` makes its inputs in float64 on the CPU from a seeded generator (so every
dtype, backend and mode sees the same values, rounded to the dtype under test) and
calls the op through the public API with ``backend=``. The first case of each op is
its quick case (``--quick``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, List, Sequence, Tuple, Union

import torch

import vkd_kernels

Outputs = Union[torch.Tensor, Sequence[torch.Tensor]]
CL3D = torch.channels_last_3d


@dataclass(frozen=True)
class Case:
    """One op call: ``make(gen)`` -> float64 CPU tensors (in their memory format),
    ``call(backend, tensors)`` -> the op's output(s). ``names`` name the tensors and
    ``grad`` says which of them the check differentiates (students and teachers alike).
    """

    op: str
    name: str
    names: Tuple[str, ...]
    grad: Tuple[bool, ...]
    make: Callable[[torch.Generator], List[torch.Tensor]]
    call: Callable[[str, List[torch.Tensor]], Outputs]

    @property
    def label(self) -> str:
        return f"{self.op}/{self.name}"


def _randn(gen, *shape, scale=1.0, memory_format=torch.contiguous_format):
    return (scale * torch.randn(shape, generator=gen, dtype=torch.float64)).contiguous(memory_format=memory_format)


def _rand(gen, *shape, low=0.1, memory_format=torch.contiguous_format):
    """Uniform in [low, 1): positive features and attention weights (attention_apply
    divides by sum(F * lam); positive values keep that well conditioned)."""
    x = low + (1 - low) * torch.rand(shape, generator=gen, dtype=torch.float64)
    return x.contiguous(memory_format=memory_format)


# ---- temporal_spectrum_loss ----------------------------------------------------------

def _spectrum(name, make, **options):
    def call(backend, t):
        extra = {"bin_weights": t[2]} if len(t) > 2 else {}
        return vkd_kernels.temporal_spectrum_loss(t[0], t[1], backend=backend, **extra, **options)
    names = ("student", "teacher", "bin_weights")
    n = len(make(torch.Generator().manual_seed(0)))
    return Case("temporal_spectrum_loss", name, names[:n], (True, True, False)[:n], make, call)


SPECTRUM = [
    # odd T and a spatial size (15) that is no multiple of any tile
    _spectrum("odd T7 S15", lambda g: [_randn(g, 2, 3, 7, 5, 3), _randn(g, 2, 3, 7, 5, 3)]),
    _spectrum("T16 ortho bin_weights sum", lambda g: [_randn(g, 3, 2, 16, 4, 5), _randn(g, 3, 2, 16, 4, 5),
                                                      _rand(g, 9)], norm="ortho", reduction="sum"),
    # log_magnitude at eps 1e-2 (README: ill-conditioned near |X| = 0 at smaller eps)
    _spectrum("channels_last_3d log_magnitude none",
              lambda g: [_randn(g, 2, 4, 8, 5, 6, memory_format=CL3D), _randn(g, 2, 4, 8, 5, 6, memory_format=CL3D)],
              spectrum="log_magnitude", eps=1e-2, norm="forward", reduction="none"),
    _spectrum("TSM (N*T, C, H, W) power drop_dc spatial mean",
              lambda g: [_randn(g, 2 * 8, 3, 5, 7), _randn(g, 2 * 8, 3, 5, 7)],
              num_segments=8, spectrum="power", drop_dc=True, spatial="mean"),
]


# ---- attention_map / attention_transfer_loss -----------------------------------------

def _map(name, make, **options):
    return Case("attention_map", name, ("x",), (True,), make,
                lambda backend, t: vkd_kernels.attention_map(t[0], backend=backend, **options))


ATTENTION_MAP = [
    _map("odd (2,5,7,5,3) p2", lambda g: [_randn(g, 2, 5, 7, 5, 3)]),
    _map("channels_last_3d p1.5 per_frame", lambda g: [_randn(g, 2, 6, 4, 5, 3, memory_format=CL3D)],
         p=1.5, mode="per_frame"),
]


def _transfer(name, make, **options):
    return Case("attention_transfer_loss", name, ("fs", "ft"), (True, True), make,
                lambda backend, t: vkd_kernels.attention_transfer_loss(t[0], t[1], backend=backend, **options))


ATTENTION_TRANSFER = [
    _transfer("odd Cs5 vs Ct9", lambda g: [_randn(g, 2, 5, 7, 5, 3), _randn(g, 2, 9, 7, 5, 3)]),
    _transfer("pooled teacher p3 l2 sum", lambda g: [_randn(g, 2, 3, 8, 6, 6), _randn(g, 2, 7, 4, 3, 5)],
              p=3, distance="l2", reduction="sum"),
    _transfer("channels_last_3d per_frame none",
              lambda g: [_randn(g, 2, 4, 5, 6, 7, memory_format=CL3D), _randn(g, 2, 6, 5, 6, 7, memory_format=CL3D)],
              mode="per_frame", reduction="none"),
]


# ---- attention_head_tail / attention_apply -------------------------------------------

def _tail(name, N, C1, C, T, L, G):
    T_out = max(1, T - 1)

    def make(g):
        return [_randn(g, N, C1, T), _randn(g, C, C1, 3, scale=C1 ** -0.5), _randn(g, C),
                1 + _randn(g, C, scale=0.3), _randn(g, C), _randn(g, T_out, L, scale=L ** -0.5), _randn(g, T_out)]

    def call(backend, t):
        y, cw, cb, gw, gb, lw, lb = t
        return vkd_kernels.attention_head_tail(y, cw, cb, gw, gb, G, lw, lb, upsample_length=L, backend=backend)
    names = ("y", "conv_weight", "conv_bias", "gn_weight", "gn_bias", "linear_weight", "linear_bias")
    return Case("attention_head_tail", name, names, (True,) * 7, make, call)


HEAD = [
    _tail("N2 C1=6 C=8 T8 L64 G4", 2, 6, 8, 8, 64, 4),
    _tail("L7 not a multiple of T5", 1, 5, 6, 5, 7, 3),
]


def _apply(name, make, **options):
    return Case("attention_apply", name, ("F", "lam"), (True, True), make,
                lambda backend, t: vkd_kernels.attention_apply(t[0], t[1], backend=backend, **options))


APPLY = [
    _apply("odd (2,5,7,5,3)", lambda g: [_rand(g, 2, 5, 7, 5, 3), _rand(g, 2, 5, 7)]),
    _apply("channels_last_3d batch-global", lambda g: [_rand(g, 3, 4, 6, 5, 6, memory_format=CL3D), _rand(g, 3, 4, 6)],
           per_sample=False),
    _apply("one spatial axis (2,3,5,11)", lambda g: [_rand(g, 2, 3, 5, 11), _rand(g, 2, 3, 5)]),
    _apply("spatial mean (2,5,7,5,3)", lambda g: [_rand(g, 2, 5, 7, 5, 3), _rand(g, 2, 5, 7)], spatial="mean"),
    _apply("spatial mean channels_last_3d batch-global",
           lambda g: [_rand(g, 3, 4, 6, 5, 6, memory_format=CL3D), _rand(g, 3, 4, 6)], spatial="mean",
           per_sample=False),
]


# ---- weight_spectrum_distance / weight_spectrum --------------------------------------

def _weights(name, student: Sequence[Sequence[tuple]], teacher: Sequence[Sequence[tuple]], **options):
    """Groups of conv weights by shape; every weight (student and teacher) is differentiated."""
    s_flat = [shape for group in student for shape in group]
    t_flat = [shape for group in teacher for shape in group]

    def make(g):
        return [_randn(g, *shape, scale=0.05) for shape in s_flat + t_flat]

    def split(tensors, groups):
        out, i = [], 0
        for group in groups:
            out.append(list(tensors[i:i + len(group)]))
            i += len(group)
        return out

    def call(backend, t):
        return vkd_kernels.weight_spectrum_distance(split(t[:len(s_flat)], student), split(t[len(s_flat):], teacher),
                                                    backend=backend, **options)
    names = tuple(f"student{i}" for i in range(len(s_flat))) + tuple(f"teacher{i}" for i in range(len(t_flat)))
    return Case("weight_spectrum_distance", name, names, (True,) * len(names), make, call)


WEIGHTS = [
    _weights("3x3x3 and 3x3 groups dct kl", [[(4, 3, 3, 3, 3), (5, 4, 3, 3, 3)], [(6, 2, 3, 3)]],
             [[(7, 3, 3, 3, 3)], [(3, 2, 3, 3), (2, 5, 3, 3)]]),
    _weights("3x7x7 stem and 2x3 fft js drop_dc sum", [[(3, 2, 3, 7, 7)], [(4, 4, 2, 3)]],
             [[(5, 2, 3, 7, 7)], [(2, 3, 2, 3)]], transform="fft", distance="js", drop_dc=True, reduction="sum"),
    _weights("depthwise 3x3x3 l2", [[(8, 1, 3, 3, 3)]], [[(8, 1, 3, 3, 3)]], distance="l2"),
]


def _spectrum_of(name, groups: Sequence[Sequence[tuple]], **options):
    flat = [shape for group in groups for shape in group]

    def make(g):
        return [_randn(g, *shape, scale=0.05) for shape in flat]

    def call(backend, t):
        items, i = [], 0
        for group in groups:
            items.append(list(t[i:i + len(group)]))
            i += len(group)
        return tuple(vkd_kernels.weight_spectrum(items, backend=backend, **options))
    return Case("weight_spectrum", name, tuple(f"w{i}" for i in range(len(flat))), (True,) * len(flat), make, call)


WEIGHT_SPECTRUM = [
    _spectrum_of("two groups dct", [[(4, 3, 3, 3, 3), (5, 4, 3, 3, 3)], [(6, 2, 3, 3)]]),
    _spectrum_of("fft drop_dc", [[(3, 2, 2, 3, 3)]], transform="fft", drop_dc=True),
]


ALL: Dict[str, List[Case]] = {
    "temporal_spectrum_loss": SPECTRUM,
    "attention_map": ATTENTION_MAP,
    "attention_transfer_loss": ATTENTION_TRANSFER,
    "attention_head_tail": HEAD,
    "attention_apply": APPLY,
    "weight_spectrum_distance": WEIGHTS,
    "weight_spectrum": WEIGHT_SPECTRUM,
}
OPS = tuple(ALL)


def select(ops: Sequence[str], quick: bool) -> List[Case]:
    """The cases of ``ops`` (only the first of each with ``quick``)."""
    return [case for op in ops for case in (ALL[op][:1] if quick else ALL[op])]
