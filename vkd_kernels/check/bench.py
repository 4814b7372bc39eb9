"""The headline benchmark of ``python -m vkd_kernels.check --bench`` (CUDA only).

The shapes of README / benchmarks/cases_*.py, float32, the student (and every tensor
the op trains) requiring grad. Timing: ``triton.testing.do_bench`` (the L2 cache is
flushed by zeroing a 256 MB buffer before every repetition, CUDA events around each
call, so host launch overhead is included; median with 20/80 quantiles). Modes:
``forward`` (the op with grad-requiring inputs) and ``full`` (forward + backward with
a fixed grad_output; gradients reset to None before each repetition).

GB/s = minimal bytes / median time, the minimal bytes of benchmarks/README.md: each
pass reads its tensors once and writes its outputs once (forward reads every input
and writes the output; backward reads the inputs and grad_output and writes the
gradients); ``% copy`` compares that with a device-to-device copy (``dst.copy_(src)``
of 512 MiB, read + write) measured the same way in the same run.
"""
from __future__ import annotations

import functools
import logging
import math
from dataclasses import asdict, dataclass
from typing import Callable, Dict, List, Optional, Tuple

import torch

import vkd_kernels

log = logging.getLogger("vkd_kernels.check")
COPY_BYTES = 512 * 2 ** 20


@dataclass
class BenchRow:
    op: str
    shape: str
    provider: str
    mode: str
    median_ms: Optional[float]
    p20_ms: Optional[float]
    p80_ms: Optional[float]
    min_bytes: int
    gbps: Optional[float]
    pct_copy: Optional[float]
    error: Optional[str] = None

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class Headline:
    op: str
    shape: str
    make: Callable[[torch.device], List[torch.Tensor]]     # inputs, grad-requiring ones marked
    call: Callable[[str, List[torch.Tensor]], torch.Tensor]
    min_bytes: Dict[str, int]                              # per mode


def _nbytes(shapes) -> int:
    return sum(math.prod(s) for s in shapes) * 4  # float32


def _randn(device, shape, grad, scale=1.0):
    return (scale * torch.randn(shape, device=device)).requires_grad_(grad)


def _spectrum() -> Headline:
    shape = (8, 256, 8, 14, 14)
    n = _nbytes([shape])
    return Headline("temporal_spectrum_loss", "x".join(map(str, shape)),
                    lambda d: [_randn(d, shape, True), _randn(d, shape, False)],
                    lambda b, t: vkd_kernels.temporal_spectrum_loss(t[0], t[1], backend=b),
                    {"forward": 2 * n, "full": 5 * n})


def _transfer() -> Headline:
    s, t = (8, 256, 8, 14, 14), (8, 1024, 8, 14, 14)
    bs, bt = _nbytes([s]), _nbytes([t])
    return Headline("attention_transfer_loss", "x".join(map(str, s)) + " vs " + "x".join(map(str, t)),
                    lambda d: [_randn(d, s, True), _randn(d, t, False)],
                    lambda b, x: vkd_kernels.attention_transfer_loss(x[0], x[1], backend=b),
                    {"forward": bs + bt, "full": 3 * bs + bt})


def _apply(spatial: str = "keep") -> Headline:
    """attention_apply at the GKD shape; spatial="mean": what GKD's classifier reads."""
    shape = (6, 1024, 8, 7, 7)
    n, lam = _nbytes([shape]), _nbytes([shape[:3]])
    # keep: forward reads F (and lam), writes out; backward reads F and g, writes dF (and dlam).
    # mean: forward reads F (and lam); backward writes dF (and reads / writes the (N, C, T) rows)
    min_bytes = ({"forward": 2 * n + lam, "full": 5 * n + 3 * lam} if spatial == "keep"
                 else {"forward": n + lam, "full": 2 * n + 5 * lam})
    label = "F " + "x".join(map(str, shape)) + ("" if spatial == "keep" else " spatial mean")
    return Headline("attention_apply", label,
                    lambda d: [torch.rand(shape, device=d).requires_grad_(),
                               torch.rand(shape[:3], device=d).requires_grad_()],
                    lambda b, t: vkd_kernels.attention_apply(t[0], t[1], spatial=spatial, backend=b),
                    min_bytes)


def _head() -> Headline:
    N, C1, C, T, L, G = 6, 512, 1024, 8, 1024, 32
    shapes = [(N, C1, T), (C, C1, 3), (C,), (C,), (C,), (T, L), (T,)]
    inputs, out = _nbytes(shapes), _nbytes([(N, C, T)])

    def make(d):
        return [_randn(d, shapes[0], True), _randn(d, shapes[1], True, (3 * C1) ** -0.5), _randn(d, shapes[2], True),
                (1 + 0.3 * torch.randn(C, device=d)).requires_grad_(), _randn(d, shapes[4], True),
                _randn(d, shapes[5], True, L ** -0.5), _randn(d, shapes[6], True)]
    return Headline("attention_head_tail", f"N{N} C1={C1} C={C} T={T} L={L}", make,
                    lambda b, t: vkd_kernels.attention_head_tail(*t[:5], G, *t[5:], upsample_length=L, backend=b),
                    # forward reads the 7 inputs, writes lambda; backward reads them and dlambda, writes 7 gradients
                    {"forward": inputs + out, "full": 3 * inputs + 2 * out})


def _r3d_stages(depth: int) -> List[List[tuple]]:
    """k > 1 conv weights per stage (stem + 4 stages): R3D-18 (basic blocks [2, 2, 2, 2])
    or R3D-50 (bottlenecks [3, 4, 6, 3], only their 3x3x3 convs), as benchmarks/cases_weights.py."""
    widths, stages, previous = (64, 128, 256, 512), [[(64, 3, 3, 7, 7)]], 64
    for width, blocks in zip(widths, (2, 2, 2, 2) if depth == 18 else (3, 4, 6, 3)):
        if depth == 18:
            stages.append([(width, previous, 3, 3, 3)] + [(width, width, 3, 3, 3)] * 3)
            previous = width
        else:
            stages.append([(width, width, 3, 3, 3)] * blocks)
    return stages


def _weights() -> Headline:
    student, teacher = _r3d_stages(18), _r3d_stages(50)
    s_flat = [s for g in student for s in g]
    bs, bt = _nbytes(s_flat), _nbytes([s for g in teacher for s in g])

    def make(d):
        return [_randn(d, s, True, 0.05) for s in s_flat] + [_randn(d, s, False, 0.05) for g in teacher for s in g]

    def call(b, t):
        groups, i = [], 0
        for stage in student + teacher:
            groups.append(t[i:i + len(stage)])
            i += len(stage)
        return vkd_kernels.weight_spectrum_distance(groups[:len(student)], groups[len(student):], backend=b)
    return Headline("weight_spectrum_distance", "r3d18 vs r3d50 stages (5 pairs)", make, call,
                    {"forward": bs + bt, "full": 3 * bs + bt})


HEADLINES = (_spectrum, _transfer, _apply, functools.partial(_apply, "mean"), _head, _weights)


def do_bench_ms(fn, grads=None, warmup_ms: float = 25, rep_ms: float = 100) -> Tuple[float, float, float]:
    """(median, p20, p80) ms of ``fn()`` on CUDA by ``triton.testing.do_bench``: the L2
    flushed (a 256 MB buffer zeroed) before every repetition, CUDA events around each,
    as many repetitions as fit in ``rep_ms``; ``grads``' .grad reset to None before each.
    benchmarks/harness.py times with it too."""
    from triton.testing import do_bench
    median, p20, p80 = do_bench(fn, warmup=warmup_ms, rep=rep_ms, grad_to_none=grads, quantiles=[0.5, 0.2, 0.8])
    return median, p20, p80


def copy_bandwidth(device, nbytes: int = COPY_BYTES) -> float:
    """GB/s of dst.copy_(src), ``nbytes`` each (read + write counted)."""
    src = torch.empty(nbytes // 4, device=device).uniform_()
    dst = torch.empty_like(src)
    median, _, _ = do_bench_ms(lambda: dst.copy_(src))
    return 2 * nbytes / (median * 1e-3) / 1e9


def run(device, providers: List[str], ops: Optional[List[str]] = None) -> Tuple[float, List[BenchRow]]:
    """(copy GB/s, rows) for every headline op in ``ops`` x provider x mode."""
    with torch.cuda.device(device):
        copy = copy_bandwidth(device)
        log.info("device copy bandwidth: %.0f GB/s", copy)
        rows = []
        for factory in HEADLINES:
            case = factory()
            if ops is not None and case.op not in ops:
                continue
            inputs = case.make(device)
            wrt = [x for x in inputs if x.requires_grad]
            for provider in providers:
                for mode in ("forward", "full"):
                    row = BenchRow(case.op, case.shape, provider, mode, None, None, None, case.min_bytes[mode], None,
                                   None)
                    try:
                        out = case.call(provider, inputs)
                        grad = torch.full_like(out, 1.7) if out.dim() == 0 else torch.randn_like(out)
                        if mode == "forward":
                            timing = do_bench_ms(lambda: case.call(provider, inputs))
                        else:
                            timing = do_bench_ms(lambda: case.call(provider, inputs).backward(grad), grads=wrt)
                        row.median_ms, row.p20_ms, row.p80_ms = timing
                        row.gbps = row.min_bytes / (row.median_ms * 1e-3) / 1e9
                        row.pct_copy = 100 * row.gbps / copy
                        log.info("bench %s %s %s: %.4f ms, %.0f GB/s (%.0f%% of copy)", case.op, provider, mode,
                                 row.median_ms, row.gbps, row.pct_copy)
                    except Exception as error:  # noqa: BLE001 - reported as a failure, the run goes on
                        row.error = f"{type(error).__name__}: {error}".replace("\n", " ")[:500]
                        log.error("bench %s %s %s failed: %s", case.op, provider, mode, row.error)
                    finally:
                        for x in wrt:
                            x.grad = None
                    rows.append(row)
            inputs = wrt = None                 # free the case's tensors before the next one
    return copy, rows
