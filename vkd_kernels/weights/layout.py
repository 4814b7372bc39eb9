"""Options, validation, bases and the offset tables of the fused weight-spectrum op.

A *group* is a list of conv weights (O, I, *k) with one kernel size k = (kh, kw) or
(kt, kh, kw); its W is every kernel flattened to a row: (#kernels, P), P = prod(k).
Every group of a call (student and teacher sides) goes into one fused launch,
described by two int64 tables (csrc/common/weights.h reads the same layout):

    tensors (nt, 4): data pointer, gradient pointer (backward), rows, first row in its group
    groups  (ng, 5): P, first tensor, end tensor, rows, offset of its P x P block in G_flat

Tensors are ordered by group. Group g's rows are split into ``splits`` contiguous
ranges, split u taking rows [rows*u // splits, rows*(u+1) // splits): one program (a
CUDA block, a Triton program, an OpenMP task) per (split, group) writes the partial
Gram W^T W of its rows to partials[u, offset : offset + P*P]; the sum over u (a fixed
order, so deterministic) is G_flat.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Sequence

import torch

from .._math import accumulation_dtype  # noqa: F401  (the ops import it from here)

TRANSFORMS = ("dct", "fft")
DISTANCES = ("kl", "l2", "js")
REDUCTIONS = ("mean", "sum")
MAX_P = 512           # largest kernel (prod(k)) of the fused kernels: 8x8x8; csrc kMaxP
ROWS_PER_SPLIT = 4096  # rows one program accumulates, at most MAX_SPLITS programs per group
MAX_SPLITS = 64
TENSOR_FIELDS = 4
GROUP_FIELDS = 5


@dataclass(frozen=True)
class Layout:
    """The offset tables of one launch (every field a tuple, so layouts are cached)."""

    order: tuple       # tensor indices in table order (stable sort by group)
    rows: tuple        # per tensor in table order: #kernels
    row_start: tuple   # per tensor in table order: first row within its group
    P: tuple           # per group: kernel size (0 for a group without tensors)
    first: tuple       # per group: first tensor (table order)
    end: tuple         # per group: one past its last tensor
    group_rows: tuple  # per group: #kernels
    offset: tuple      # per group: offset of its P x P block in G_flat
    splits: int
    flat_size: int     # sum of P^2

    @property
    def num_groups(self) -> int:
        return len(self.P)

    @property
    def Pmax(self) -> int:
        return max(self.P)

    def group_table(self) -> list:
        return [list(row) for row in zip(self.P, self.first, self.end, self.group_rows, self.offset)]

    def tensor_table(self, weights: Sequence[torch.Tensor], grads: Sequence[torch.Tensor] = ()) -> list:
        """The per-call part: data pointers of ``weights`` (and ``grads``) in table order."""
        return [[weights[i].data_ptr(), grads[i].data_ptr() if grads else 0, r, s]
                for i, r, s in zip(self.order, self.rows, self.row_start)]


@functools.lru_cache(maxsize=256)
def make_layout(kernel_shapes: tuple, numels: tuple, group_ids: tuple, num_groups: int) -> Layout:
    """Layout of tensors with kernel sizes ``kernel_shapes``, ``numels`` elements and
    group ``group_ids`` (each in [0, num_groups))."""
    order = tuple(sorted(range(len(group_ids)), key=lambda i: group_ids[i]))
    P = [0] * num_groups
    first, end, group_rows = [0] * num_groups, [0] * num_groups, [0] * num_groups
    rows, row_start = [], []
    position = 0
    for g in range(num_groups):
        first[g] = position
        for i in order[position:]:
            if group_ids[i] != g:
                break
            P[g] = math.prod(kernel_shapes[i])
            rows.append(numels[i] // P[g])
            row_start.append(group_rows[g])
            group_rows[g] += rows[-1]
            position += 1
        end[g] = position
    offset = [0] * num_groups
    for g in range(1, num_groups):
        offset[g] = offset[g - 1] + P[g - 1] ** 2
    splits = max(1, min(MAX_SPLITS, -(-max(group_rows) // ROWS_PER_SPLIT)))
    return Layout(order=order, rows=tuple(rows), row_start=tuple(row_start), P=tuple(P), first=tuple(first),
                  end=tuple(end), group_rows=tuple(group_rows), offset=tuple(offset), splits=splits,
                  flat_size=offset[-1] + P[-1] ** 2)


def layout_of(weights: Sequence[torch.Tensor], group_ids: Sequence[int], num_groups: int) -> Layout:
    return make_layout(tuple(tuple(w.shape[2:]) for w in weights), tuple(w.numel() for w in weights),
                       tuple(group_ids), num_groups)


@functools.lru_cache(maxsize=64)
def pad_positions(layout: Layout, Pmax: int, device: torch.device) -> torch.Tensor:
    """(flat_size,) positions of G_flat's entries in a (groups, Pmax, Pmax) array."""
    index = [g * Pmax * Pmax + i * Pmax + j for g, P in enumerate(layout.P) for i in range(P) for j in range(P)]
    return torch.tensor(index, dtype=torch.int64, device=device)


@functools.lru_cache(maxsize=64)
def group_table(layout: Layout, device: torch.device) -> torch.Tensor:
    return torch.tensor(layout.group_table(), dtype=torch.int64, device=device)


# ---- the transform: B as a matrix on row-major flattened kernels --------------------

def dct_matrix(n: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Orthonormal DCT-II (n, n): C[f, x] = sqrt((2 - [f=0]) / n) cos(pi (2x + 1) f / (2n))."""
    f = torch.arange(n, dtype=torch.float64)[:, None]
    x = torch.arange(n, dtype=torch.float64)[None, :]
    scale = torch.full_like(f, math.sqrt(2.0 / n))
    scale[0] = math.sqrt(1.0 / n)
    return (scale * torch.cos(math.pi * (2 * x + 1) * f / (2 * n))).to(dtype)


def _kron(matrices) -> torch.Tensor:
    return functools.reduce(torch.kron, matrices)


@functools.lru_cache(maxsize=64)
def transform_rows(kernel: tuple, transform: str) -> torch.Tensor:
    """Real matrices R (parts, P, P), float64, with e[b] = sum_parts (R w)[b]^2 for a
    row-major flattened kernel w: the Kronecker product of 1-d orthonormal DCT-II
    matrices (1 part), or the real and imaginary parts of the orthonormal n-d DFT (2
    parts, bins in torch.fft.fftn order)."""
    if transform == "dct":
        return _kron([dct_matrix(n) for n in kernel])[None]
    dft = _kron([torch.fft.fft(torch.eye(n, dtype=torch.complex128), norm="ortho") for n in kernel])
    return torch.stack([dft.real, dft.imag])


@functools.lru_cache(maxsize=64)
def padded_basis(kernels: tuple, transform: str, drop_dc: bool, Pmax: int, dtype: torch.dtype,
                 device: torch.device) -> torch.Tensor:
    """(groups, parts * Pmax, Pmax): each group's transform rows zero padded to Pmax,
    with the DC row zeroed for drop_dc (so e[0] = 0 and p[0] = 0)."""
    parts = 1 if transform == "dct" else 2
    basis = torch.zeros(len(kernels), parts, Pmax, Pmax, dtype=torch.float64)
    for g, kernel in enumerate(kernels):
        P = math.prod(kernel)
        basis[g, :, :P, :P] = transform_rows(kernel, transform)
    if drop_dc:
        basis[:, :, 0, :] = 0
    return basis.reshape(len(kernels), parts * Pmax, Pmax).to(dtype=dtype, device=device)


# ---- p and the distances (shared by the reference and the fused finish) -------------

def normalize(e: torch.Tensor, eps: float) -> torch.Tensor:
    """p = e / (sum e + eps) over the last dim (all-zero kernels give p = 0, not NaN)."""
    return e / (e.sum(-1, keepdim=True) + eps)


def spectrum_distance(ps: torch.Tensor, pt: torch.Tensor, distance: str, eps: float) -> torch.Tensor:
    """Distance over the last dim; empty bins (p = 0 on both sides) contribute 0.

    kl: sum p_t (log(p_t + eps) - log(p_s + eps)); l2: sum (p_s - p_t)^2;
    js: (KL(p_s || m) + KL(p_t || m)) / 2 with m = (p_s + p_t) / 2, logs as in kl.
    """
    if distance == "l2":
        return (ps - pt).square().sum(-1)
    if distance == "kl":
        return (pt * (torch.log(pt + eps) - torch.log(ps + eps))).sum(-1)
    log_m = torch.log((ps + pt) / 2 + eps)
    return 0.5 * ((ps * (torch.log(ps + eps) - log_m)).sum(-1) + (pt * (torch.log(pt + eps) - log_m)).sum(-1))


def tables(layout: Layout, weights: Sequence[torch.Tensor], grads: Sequence[torch.Tensor] = ()):
    """(tensors, groups) int64 tables on the weights' device (see the module docstring)."""
    device = weights[0].device
    tensors = torch.tensor(layout.tensor_table(weights, grads), dtype=torch.int64).to(device)
    return tensors, group_table(layout, device)
