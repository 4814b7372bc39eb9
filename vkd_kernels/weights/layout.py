"""Options, bases, the launch plan and the device tables of the fused weight-spectrum op.

A *group* is a list of conv weights (O, I, *k) with one kernel size k; its W is every
kernel flattened to a row: (#kernels, P), P = prod(k). Every group of a call (student
and teacher sides) is handled by the same few launches, driven by int64 tables
(csrc/common/weights.h reads the same layouts):

    gram items      (n, 8): weight pointer, first row, end row, P, partial offset,
                            basis offset, first column i0, first column j0
    backward items  (n, 7): weight pointer, gradient offset, first row, end row, P,
                            M offset, first column j0
    groups          (ng, 7): P, #kernels, partials offset, #partials, basis offset,
                            M offset (-1: no gradient), needs a gradient
    pairs           (np, 4): student p row, teacher p row (-1: none), teacher
                            distribution index (-1: a weight group), its gradient offset (-1)
    dists           (nd,):   data pointers of the teacher distributions

A gram item is a chunk of rows of one tensor and a TILE x TILE block (i0, j0), i0 <= j0,
of its Gram matrix G = W^T W (CPU: the whole P x P). It writes the block's share of the
energy, e_part[b] = sum over (i, j) in the block (and its mirror) of B[b, i] G[i, j]
B[b, j], to partials[offset : offset + P]; ``finish`` sums a group's partials in a fixed
order (deterministic, no float atomics), so no P x P matrix ever leaves a program.
A backward item writes columns [j0, j0 + TILE) of dW = W M for a chunk of rows.

The tables depend on the shapes (the Plan, cached by its Spec) and on the data
pointers of the weights and distributions: they are built once and cached on the
device, keyed by the Spec, the device, the dtype and every pointer, so the same
parameters cost no host-to-device copy and no sync after the first call (and the op
can be captured in a CUDA graph), while a reallocated weight (another data_ptr, shape,
dtype or device) gets new tables. Values (``_version``) do not enter the tables.
"""
from __future__ import annotations

import collections
import functools
import math
from dataclasses import dataclass
from typing import Sequence

import torch

from .._math import accumulation_dtype  # noqa: F401  (the ops import it from here)

TRANSFORMS = ("dct", "fft")
DISTANCES = ("kl", "l2", "js")
REDUCTIONS = ("mean", "sum")
DISTANCE_CODES = {"none": 0, "kl": 1, "l2": 2, "js": 3}  # "none": spectra only (weight_spectrum)
MAX_P = 512            # largest kernel (prod(k)) of the fused kernels: 8x8x8; csrc kMaxP
GRAM_FIELDS, BACKWARD_FIELDS, GROUP_FIELDS, PAIR_FIELDS = 8, 7, 7, 4

# Rows per program. GPU: ~TARGET_PROGRAMS programs per heavy launch (8 per SM on a
# 132-SM H100/H200: two or more per SM with room to balance uneven tensors), never
# fewer than MIN_CHUNK_ROWS rows (a program's table reads and epilogue, ~P x TILE^2,
# must stay small against its rows x TILE^2 main loop; the same reason for >= 4 P rows).
# CPU: CPU_CHUNK_ROWS rows per OpenMP task.
TARGET_PROGRAMS = 1024
MIN_CHUNK_ROWS = 256
CPU_CHUNK_ROWS = 4096
FINISH_BLOCK = 32      # bins per block of the finishing kernels (tl.dot needs >= 16)


def tile_of(backend: str, P: int) -> int:
    """Gram / backward block width for a group of kernel size P. Triton: 16 for P <= 16
    (a 3x3 kernel: 9 of 16), else 32 (a 3x3x3 kernel: 27 of 32; larger kernels are tiled
    by 32, never padded to one wide tile: a (3,7,7) stem no longer makes every 3x3x3
    group run 64-wide); 32 is the widest tile whose tf32x3 dot and epilogue fit the
    registers (64 spilled on sm_90). CUDA C++: 32 (its kernels' fixed block). CPU: the
    whole P (one block, the C++ tile loop walks the upper triangle)."""
    if backend == "cpu":
        return MAX_P
    if backend == "triton" and P <= 16:
        return 16
    return 32


@dataclass(frozen=True)
class Spec:
    """What the tables depend on besides pointers (hashable: the Plan cache key).

    kernels: per group, its kernel size; tensors: per weight, (group, rows);
    teachers: per pair i (student group i), the teacher group (>= 0) or -1 - the index
    of its distribution; empty for spectra only (one "pair" per group, no teacher);
    num_dists; parts: 1 (dct) or 2 (fft); needed: indices of the weights that get a
    gradient (empty: forward only); dists_needed: indices of the distributions that do.
    """

    kernels: tuple
    tensors: tuple
    teachers: tuple
    num_dists: int
    parts: int
    drop_dc: bool
    backend: str
    needed: tuple = ()
    dists_needed: tuple = ()


def _chunks(rows: int, chunk: int):
    """[begin, end) ranges of about ``chunk`` rows covering ``rows`` (equal sizes)."""
    n = max(1, -(-rows // chunk))
    return [(rows * c // n, rows * (c + 1) // n) for c in range(n)]


def _chunk_rows(backend: str, total_rows: int, P: int) -> int:
    if backend == "cpu":
        return CPU_CHUNK_ROWS
    return max(MIN_CHUNK_ROWS, 4 * P, -(-total_rows // TARGET_PROGRAMS))


@dataclass(frozen=True)
class Plan:
    """Host-side plan of one call (see the module docstring); item rows hold the tensor
    index in the pointer field until ``forward_tables``/``backward_tables`` fill it in."""

    spec: Spec
    P: tuple                  # per group
    rows: tuple               # per group: #kernels
    Pmax: int
    p_rows: int               # rows of p and S: the groups, then one per distribution
    groups: tuple             # group table rows
    pairs: tuple              # pair table rows
    gram: tuple               # ((tile, items), ...) one launch per tile
    partials_size: int
    basis_kernels: tuple      # distinct kernels in basis order
    backward: tuple = ()      # ((tile, items), ...) with gradient offsets
    grad_offsets: tuple = ()  # per needed weight (in ``spec.needed`` order)
    grad_size: int = 0
    dist_grad_offsets: tuple = ()
    dist_grad_size: int = 0
    m_size: int = 0
    finish_blocks: int = 1    # programs per pair of finish_backward (M blocks of the largest group)

    @property
    def num_groups(self) -> int:
        return len(self.P)

    @property
    def num_pairs(self) -> int:
        return len(self.pairs)


@functools.lru_cache(maxsize=256)
def make_plan(spec: Spec) -> Plan:
    ng = len(spec.kernels)
    P = tuple(math.prod(k) for k in spec.kernels)
    rows = [0] * ng
    for g, r in spec.tensors:
        rows[g] += r
    basis_kernels = tuple(dict.fromkeys(spec.kernels))
    basis_offset, position = {}, 0
    for k in basis_kernels:
        basis_offset[k] = position
        position += spec.parts * math.prod(k) ** 2

    # gram items, one launch per tile, each group's items contiguous in its launch
    by_tile: dict = collections.defaultdict(list)
    partial_offset, count, offset = [0] * ng, [0] * ng, 0
    tensors_of: dict = collections.defaultdict(list)  # group -> its tensors, in order
    for t, (g, _) in enumerate(spec.tensors):
        tensors_of[g].append(t)
    tile_rows: dict = collections.Counter()
    for g, r in spec.tensors:
        tile_rows[tile_of(spec.backend, P[g])] += r
    for g in range(ng):
        tile = tile_of(spec.backend, P[g])
        blocks = [(i0, j0) for i0 in range(0, P[g], tile) for j0 in range(i0, P[g], tile)]
        chunk = _chunk_rows(spec.backend, tile_rows[tile], P[g])
        partial_offset[g] = offset
        for t in tensors_of[g]:
            for begin, end in _chunks(spec.tensors[t][1], chunk):
                for i0, j0 in blocks:
                    by_tile[tile].append((t, begin, end, P[g], offset, basis_offset[spec.kernels[g]], i0, j0))
                    offset += P[g]
                    count[g] += 1
    gram = tuple((tile, tuple(items)) for tile, items in sorted(by_tile.items()))

    # backward: gradient offsets of the needed weights, M of the groups that need one
    need = [False] * ng
    grad_offsets, grad_size = [], 0
    for t in spec.needed:
        need[spec.tensors[t][0]] = True
        grad_offsets.append(grad_size)
        grad_size += spec.tensors[t][1] * P[spec.tensors[t][0]]
    m_offset, m_size = [-1] * ng, 0
    for g in range(ng):
        if need[g]:
            m_offset[g] = m_size
            m_size += P[g] ** 2
    back_tile: dict = collections.defaultdict(list)
    back_rows: dict = collections.Counter()
    for t in spec.needed:
        back_rows[tile_of(spec.backend, P[spec.tensors[t][0]])] += spec.tensors[t][1]
    for t, grad_offset in zip(spec.needed, grad_offsets):
        g, r = spec.tensors[t]
        tile = tile_of(spec.backend, P[g])
        for begin, end in _chunks(r, _chunk_rows(spec.backend, back_rows[tile], P[g])):
            for j0 in range(0, P[g], tile):
                back_tile[tile].append((t, grad_offset, begin, end, P[g], m_offset[g], j0))
    backward = tuple((tile, tuple(items)) for tile, items in sorted(back_tile.items()))

    groups = tuple((P[g], rows[g], partial_offset[g], count[g], basis_offset[spec.kernels[g]], m_offset[g],
                    int(need[g])) for g in range(ng))
    dist_offsets, dist_size = [-1] * spec.num_dists, 0
    front = int(spec.drop_dc)
    if spec.teachers:
        pairs = []
        for i, t in enumerate(spec.teachers):
            if t >= 0:
                pairs.append((i, t, -1, -1))
            else:
                k = -1 - t
                if k in spec.dists_needed:
                    dist_offsets[k] = dist_size
                    dist_size += P[i] - front
                pairs.append((i, ng + k, k, dist_offsets[k]))
    else:
        pairs = [(g, -1, -1, -1) for g in range(ng)]
    finish_blocks = max([(-(-P[g] // FINISH_BLOCK)) ** 2 for g in range(ng) if need[g]] or [1])
    return Plan(spec=spec, P=P, rows=tuple(rows), Pmax=max(P), p_rows=ng + spec.num_dists, groups=groups,
                pairs=tuple(pairs), gram=gram, partials_size=offset, basis_kernels=basis_kernels,
                backward=backward, grad_offsets=tuple(grad_offsets), grad_size=grad_size,
                dist_grad_offsets=tuple(dist_offsets), dist_grad_size=dist_size, m_size=m_size,
                finish_blocks=finish_blocks)


# ---- device tables, cached by pointers -----------------------------------------------

@dataclass(frozen=True)
class Tables:
    """Device int64 tables of one call (views of one buffer)."""

    groups: torch.Tensor
    pairs: torch.Tensor
    dists: torch.Tensor                 # (max(nd, 1),) distribution pointers (forward)
    items: tuple                        # ((tile, items tensor), ...) gram or backward launches


class _LRU:
    """A small least-recently-used map (device tables are a few KB; a training loop
    needs one entry per direction)."""

    def __init__(self, size: int):
        self.size, self.data = size, collections.OrderedDict()

    def get(self, key, build):
        if key in self.data:
            self.data.move_to_end(key)
            return self.data[key]
        value = self.data[key] = build()
        if len(self.data) > self.size:
            self.data.popitem(last=False)
        return value


_TABLES = _LRU(64)


def _build(plan: Plan, device: torch.device, launches: tuple, pointers: Sequence[int], dists: Sequence[int]) -> Tables:
    """One host list, one copy to ``device`` (the only host-to-device copy of a Plan
    and pointer set), sliced into the tables."""
    flat = [v for row in plan.groups for v in row] + [v for row in plan.pairs for v in row]
    flat += list(dists) or [0]
    sizes = [GROUP_FIELDS * plan.num_groups, PAIR_FIELDS * plan.num_pairs, max(1, len(dists))]
    for _, items in launches:
        flat += [v for item in items for v in (pointers[item[0]],) + item[1:]]
        sizes.append(len(items) * len(items[0]))
    buffer = torch.tensor(flat, dtype=torch.int64).to(device)
    parts = buffer.split(sizes)
    items = tuple((tile, part.view(len(rows), -1)) for (tile, rows), part in zip(launches, parts[3:]))
    return Tables(parts[0].view(plan.num_groups, GROUP_FIELDS), parts[1].view(plan.num_pairs, PAIR_FIELDS),
                  parts[2], items)


def forward_tables(plan: Plan, weights: Sequence[torch.Tensor], dists: Sequence[torch.Tensor]) -> Tables:
    """Tables of the forward launches (gram items with every weight's pointer)."""
    device = weights[0].device
    pointers = tuple(w.data_ptr() for w in weights)
    dist_pointers = tuple(d.data_ptr() for d in dists)
    key = ("forward", plan.spec, device, weights[0].dtype, pointers, dist_pointers)
    return _TABLES.get(key, lambda: _build(plan, device, plan.gram, pointers, dist_pointers))


def backward_tables(plan: Plan, weights: Sequence[torch.Tensor], device: torch.device) -> Tables:
    """Tables of the backward launches; ``weights``: the needed ones (``spec.needed`` order)."""
    pointers = dict(zip(plan.spec.needed, (w.data_ptr() for w in weights)))
    key = ("backward", plan.spec, device, weights[0].dtype if weights else None, tuple(pointers.values()))
    return _TABLES.get(key, lambda: _build(plan, device, plan.backward, pointers, ()))


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
def basis(kernels: tuple, transform: str, drop_dc: bool, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """The flat basis of ``Plan.basis_kernels``: per kernel its R (parts, P, P), with
    the DC row zeroed for drop_dc (so e[0] = 0 and p[0] = 0), at the offsets of the
    group table. Cached on the device (one copy per kernel set and option)."""
    mats = []
    for kernel in kernels:
        R = transform_rows(kernel, transform).clone()
        if drop_dc:
            R[:, 0, :] = 0
        mats.append(R.reshape(-1))
    return torch.cat(mats).to(dtype=dtype, device=device)


def kernel_triples(kernels: Sequence[tuple]) -> list:
    """Kernel sizes as 3 ints each ((kh, kw) -> (1, kh, kw): the same basis), for the
    int lists of the custom ops."""
    return [v for k in kernels for v in (1,) * (3 - len(k)) + tuple(k)]


def kernels_of(triples: Sequence[int]) -> tuple:
    return tuple(tuple(triples[i:i + 3]) for i in range(0, len(triples), 3))


# ---- p and the distances (the reference's; the kernels compute the same) -------------

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
