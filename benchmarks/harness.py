"""Measurement primitives shared by ``run.py`` and ``test_bench.py``.

A :class:`Case` is one problem (one op, one shape) with its providers; everything
here is op-agnostic: it only needs ``case.make_inputs()`` and
``case.providers[name](*inputs) -> scalar loss``.
"""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch._functorch.config
from torch.profiler import ProfilerActivity, profile

MODES = ("forward", "backward", "full")
MB = 2.0 ** 20

# The backward mode reruns one graph's backward (retain_graph=True, see ``step``), which a
# compiled graph with donated buffers (saved activations whose memory its backward
# reuses) refuses; a graph that saves only its inputs has none, so this changes nothing
# for those, and lets the benchmark time compiled graphs that save activations too.
torch._functorch.config.donated_buffer = False


@dataclass
class Case:
    """One benchmark problem.

    ``make_inputs`` returns fresh input tensors (those that need a gradient have
    ``requires_grad=True``); ``providers`` maps a provider name to a zero-argument
    factory that returns the callable under test (factories let expensive set-up
    such as ``torch.compile`` happen only when the provider is benchmarked);
    ``min_bytes`` maps a mode to the minimal bytes it must move (for GB/s).
    """

    op: str
    label: str
    make_inputs: Callable[[], Tuple[torch.Tensor, ...]]
    providers: Dict[str, Callable[[], Callable[..., torch.Tensor]]]
    min_bytes: Dict[str, int] = field(default_factory=dict)


def _grad_inputs(inputs: Sequence[torch.Tensor]) -> List[torch.Tensor]:
    return [x for x in inputs if x.requires_grad]


def _clear_grads(inputs: Sequence[torch.Tensor]) -> None:
    for x in _grad_inputs(inputs):
        x.grad = None


def step(fn: Callable, inputs: Sequence[torch.Tensor], mode: str) -> Tuple[Callable[[], None], Callable[[], object]]:
    """Return ``(setup, timed)`` for one repetition of ``mode``.

    ``setup`` runs untimed before each ``timed`` call: it resets the gradients to None
    (so none accumulates) and, in ``backward`` mode, computes the forward once; the timed
    ``backward(retain_graph=True)`` then reruns the same backward every repetition.
    Inputs keep ``requires_grad`` in every mode, as in training.
    """
    state = {}

    def setup():
        _clear_grads(inputs)
        if mode == "backward" and "loss" not in state:
            state["loss"] = fn(*inputs)

    if mode == "forward":
        timed = lambda: fn(*inputs)  # noqa: E731
    elif mode == "backward":
        timed = lambda: state["loss"].backward(retain_graph=True)  # noqa: E731
    elif mode == "full":
        timed = lambda: fn(*inputs).backward()  # noqa: E731
    else:
        raise ValueError(f"unknown mode {mode!r}; expected one of {MODES}")
    return setup, timed


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_ms(timed: Callable[[], object], setup: Callable[[], None], device: torch.device, *, warmup: int, reps: int,
            budget_s: float = 1.5, grads: Sequence[torch.Tensor] = ()) -> Tuple[float, float, float]:
    """(median, p20, p80) in ms of ``timed()``, ``setup()`` untimed before each call.

    CUDA: ``vkd_kernels.check.bench.do_bench_ms`` (triton.testing.do_bench: the L2
    flushed before every repetition, CUDA events, warm-up and repetitions filling
    ``budget_s / 15`` and ``budget_s`` at the rate measured first, so short steps get
    hundreds of repetitions); ``setup`` runs once and ``grads`` are reset to None before
    every repetition, which is all ``setup`` does after its first call. CPU:
    ``time.perf_counter`` around each call, the rep count adapting to ``budget_s``
    within [3, ``reps``].
    """
    if device.type == "cuda":
        from vkd_kernels.check.bench import do_bench_ms
        setup()
        return do_bench_ms(timed, list(grads), warmup_ms=budget_s * 1e3 / 15, rep_ms=budget_s * 1e3)
    for _ in range(warmup):
        setup()
        timed()

    def once() -> float:
        setup()
        t0 = time.perf_counter()
        timed()
        return (time.perf_counter() - t0) * 1e3

    times = [once()]
    n = max(3, min(reps, int(budget_s * 1e3 / max(times[0], 1e-3))))
    times += [once() for _ in range(n - 1)]
    q = statistics.quantiles(times, n=10, method="inclusive")
    return statistics.median(times), q[1], q[7]


def time_mode(fn: Callable, inputs: Sequence[torch.Tensor], mode: str, *, warmup: int, reps: int,
              budget_s: float = 1.5) -> Tuple[float, float, float]:
    """(median, p20, p80) in ms of ``mode`` (``step``, timed by ``time_ms``)."""
    setup, timed = step(fn, inputs, mode)
    return time_ms(timed, setup, inputs[0].device, warmup=warmup, reps=reps, budget_s=budget_s,
                   grads=_grad_inputs(inputs))


def graphed(fn: Callable, inputs: Sequence[torch.Tensor]) -> Callable:
    """``fn`` replayed from CUDA graphs (``torch.cuda.make_graphed_callables``: one graph
    for the forward, one for the backward, captured on ``inputs``, which every later call
    must pass again), so that a mode times the replay of its captured kernels."""
    if inputs[0].device.type != "cuda":
        raise ValueError(f"CUDA-graph replay needs CUDA inputs, got {inputs[0].device.type}")
    return torch.cuda.make_graphed_callables(fn, tuple(inputs))


# ---- the machine's limits, measured in the run ----------------------------------------

CPU_COPY_BYTES = 256 * 2 ** 20  # each side; beyond any last-level cache
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4  # glibc malloc.h


def keep_freed_memory(pool_mb: int = 1536) -> bool:
    """Make glibc malloc keep freed memory in the process: no block of its own mmap
    (``mallopt(M_MMAP_MAX, 0)``) and no return of the heap's top to the system
    (``M_TRIM_THRESHOLD`` 2 GiB), as ``MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=...`` would.
    With the defaults every buffer above 32 MB (and smaller ones, whenever the heap
    shrinks) is fresh mapped memory that the first write page-faults, which costs a
    pass over the buffer or more here and comes and goes with the allocation history: a
    benchmark of the kernels measures them without it, as a process with a caching
    allocator (jemalloc, tcmalloc) runs. Then ``pool_mb`` of heap are written once and
    freed, so they stay mapped at the heap's top: with the heap alone, a hole a small
    block has split no longer fits the next large one, the heap grows and the growth is
    fresh memory again (the attention_apply backward at F (8, 2048, 8, 14, 14) took
    25 000 page faults, 100 MB, in some repetitions and 0 in others; with the pool, 0 in
    30). False where the C library is not glibc."""
    import ctypes
    import ctypes.util
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"))
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    if not (mallopt(_M_MMAP_MAX, 0) and mallopt(_M_TRIM_THRESHOLD, 2 ** 31 - 1)):
        return False
    libc.malloc.argtypes, libc.malloc.restype = [ctypes.c_size_t], ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]
    pool = libc.malloc(pool_mb << 20)   # below the trim threshold: kept after the free
    if pool:
        ctypes.memset(pool, 1, pool_mb << 20)
        libc.free(pool)
    return True


def copy_bandwidth(device: torch.device, nbytes: Optional[int] = None, budget_s: float = 0.5) -> float:
    """GB/s of ``dst.copy_(src)`` (read + write counted), ``nbytes`` each: on CUDA
    ``vkd_kernels.check.bench.copy_bandwidth`` (512 MiB, device to device); on the CPU
    256 MiB with torch at the run's thread count (a STREAM copy)."""
    if device.type == "cuda":
        from vkd_kernels.check.bench import COPY_BYTES
        from vkd_kernels.check.bench import copy_bandwidth as device_copy
        return device_copy(device, nbytes or COPY_BYTES)
    nbytes = nbytes or CPU_COPY_BYTES
    src = torch.empty(nbytes // 4, device=device).uniform_()
    dst = torch.empty_like(src)
    median, _, _ = time_ms(lambda: dst.copy_(src), lambda: None, device, warmup=1, reps=20, budget_s=budget_s)
    return 2 * nbytes / (median * 1e-3) / 1e9


def launch_cost_us(device: torch.device, cuda_graph: bool = False, n: int = 1000) -> float:
    """µs per launch of a tiny op (``x.add_(1)`` on one element), ``n`` back to back,
    median of 5 trials: on CUDA the host cost of an eager kernel launch (or, with
    ``cuda_graph``, the per-kernel cost of replaying a captured graph of them); on the
    CPU the dispatch overhead of one op."""
    x = torch.zeros(1, device=device)
    if cuda_graph:
        stream = torch.cuda.Stream(device)
        stream.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(stream):
            for _ in range(3):
                x.add_(1)
        torch.cuda.current_stream(device).wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            for _ in range(n):
                x.add_(1)
        run = graph.replay
    else:
        def run():
            for _ in range(n):
                x.add_(1)
    trials = []
    for _ in range(6):
        _sync(device)
        t0 = time.perf_counter()
        run()
        _sync(device)
        trials.append((time.perf_counter() - t0) * 1e6 / n)
    return statistics.median(trials[1:])  # the first is a warm-up


def roofline_ms(min_bytes: Optional[int], gbps: float, launches: Optional[int], launch_us: float) -> Optional[float]:
    """The time a roofline model allows: ``min_bytes`` at the copy bandwidth ``gbps``
    plus ``launches`` at ``launch_us`` each (None when either count is unknown)."""
    if min_bytes is None or launches is None:
        return None
    return min_bytes / (gbps * 1e9) * 1e3 + launches * launch_us * 1e-3


def peak_mb(fn: Callable, inputs: Sequence[torch.Tensor], mode: str) -> Optional[float]:
    """Peak memory (MB) allocated by one repetition of ``mode`` beyond what existed before it.

    CUDA: ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats``.
    CPU: running sum of the profiler's per-op net allocations (op granularity, so a
    buffer allocated and freed inside one op is not seen); ``None`` if unavailable.
    """
    device = inputs[0].device
    setup, timed = step(fn, inputs, mode)
    setup()
    if device.type == "cuda":
        _sync(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        timed()
        _sync(device)
        return (torch.cuda.max_memory_allocated(device) - base) / MB
    try:
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            timed()
        events = sorted((e for e in prof.events() if e.self_cpu_memory_usage),
                        key=lambda e: e.time_range.start)
    except Exception:  # profiler unavailable or its event API changed
        return None
    running = peak = 0
    for e in events:
        running += e.self_cpu_memory_usage
        peak = max(peak, running)
    return peak / MB


def kept_for_backward(fn: Callable, inputs: Sequence[torch.Tensor]) -> Tuple[float, float]:
    """(all, beyond-inputs) MB of tensor storage autograd saves for backward in one forward.

    Every saved tensor passes through ``saved_tensors_hooks``' pack hook; storages are
    deduplicated by data pointer, and "beyond inputs" excludes the inputs' storages.
    """
    saved: Dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        saved[storage.data_ptr()] = storage.nbytes()
        return t

    _clear_grads(inputs)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = fn(*inputs)
    del loss
    input_ptrs = {x.untyped_storage().data_ptr() for x in inputs}
    total = sum(saved.values())
    beyond = sum(n for ptr, n in saved.items() if ptr not in input_ptrs)
    return total / MB, beyond / MB


MEMCPY, MEMSET = "Memcpy", "Memset"  # how Kineto names the device copies and fills


def split_device_events(names: Sequence[str]) -> Tuple[int, int, int]:
    """(kernels, memcpys, memsets) among the names of the profiler's CUDA events."""
    memcpys = sum(1 for n in names if n.startswith(MEMCPY))
    memsets = sum(1 for n in names if n.startswith(MEMSET))
    return len(names) - memcpys - memsets, memcpys, memsets


def count_ops(fn: Callable, inputs: Sequence[torch.Tensor], mode: str = "full") -> Dict[str, Optional[int]]:
    """What one repetition of ``mode`` dispatches: ``ops``, ``kernels``, ``memcpys``,
    ``memsets``.

    ``ops``: top-level dispatcher ops seen by the profiler (``aten::*`` and custom
    ``<ns>::*`` ops such as ``vkd::...``, each counted once, not their internals);
    code generated by ``torch.compile`` counts only through the ATen ops it calls.
    ``kernels``: CUDA kernels launched, memcpys and memsets not included; those are
    ``memcpys`` and ``memsets`` (all three ``None`` on CPU).
    """
    device = inputs[0].device
    setup, timed = step(fn, inputs, mode)
    setup()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        timed()
        _sync(device)
    events = prof.events()

    def is_op(e) -> bool:
        return "::" in e.name and not e.name.startswith(("autograd::", "torch::autograd", "cudaLaunch", "cuda"))

    def top_level(e) -> bool:
        parent = e.cpu_parent
        while parent is not None:
            if is_op(parent):
                return False
            parent = parent.cpu_parent
        return True

    counts = dict(ops=sum(1 for e in events if e.device_type.name == "CPU" and is_op(e) and top_level(e)),
                  kernels=None, memcpys=None, memsets=None)
    if device.type == "cuda":
        names = [e.name for e in events if e.device_type.name == "CUDA"]
        counts["kernels"], counts["memcpys"], counts["memsets"] = split_device_events(names)
    return counts
