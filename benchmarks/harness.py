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
from torch.profiler import ProfilerActivity, profile

MODES = ("forward", "backward", "full")
MB = 2.0 ** 20


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

    ``setup`` runs untimed before each ``timed`` call: it clears gradients and, in
    ``backward`` mode, computes a fresh forward whose ``backward()`` is then timed.
    Inputs keep ``requires_grad`` in every mode, as in training.
    """
    state = {}

    def setup():
        _clear_grads(inputs)
        if mode == "backward":
            state["loss"] = fn(*inputs)

    if mode == "forward":
        timed = lambda: fn(*inputs)  # noqa: E731
    elif mode == "backward":
        timed = lambda: state.pop("loss").backward()  # noqa: E731
    elif mode == "full":
        timed = lambda: fn(*inputs).backward()  # noqa: E731
    else:
        raise ValueError(f"unknown mode {mode!r}; expected one of {MODES}")
    return setup, timed


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_mode(fn: Callable, inputs: Sequence[torch.Tensor], mode: str, *, warmup: int, reps: int,
              budget_s: float = 1.5) -> Tuple[float, float, float]:
    """(median, p20, p80) in ms of ``mode``; the rep count adapts to ``budget_s`` within [3, reps].

    CPU uses ``time.perf_counter``; CUDA uses CUDA events around each repetition
    (synchronised before and after), so the untimed set-up never leaks in.
    """
    device = inputs[0].device
    setup, timed = step(fn, inputs, mode)
    for _ in range(warmup):
        setup()
        timed()
    _sync(device)

    def once() -> float:
        setup()
        _sync(device)
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            timed()
            end.record()
            end.synchronize()
            return start.elapsed_time(end)
        t0 = time.perf_counter()
        timed()
        return (time.perf_counter() - t0) * 1e3

    times = [once()]
    n = max(3, min(reps, int(budget_s * 1e3 / max(times[0], 1e-3))))
    times += [once() for _ in range(n - 1)]
    q = statistics.quantiles(times, n=10, method="inclusive")
    return statistics.median(times), q[1], q[7]


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


def count_ops(fn: Callable, inputs: Sequence[torch.Tensor]) -> Tuple[int, Optional[int]]:
    """(ops, kernels) dispatched by one forward+backward.

    ``ops``: top-level dispatcher ops seen by the profiler (``aten::*`` and custom
    ``<ns>::*`` ops such as ``vkd::...``, each counted once, not their internals);
    code generated by ``torch.compile`` counts only through the ATen ops it calls.
    ``kernels``: CUDA kernels launched (``None`` on CPU).
    """
    device = inputs[0].device
    setup, timed = step(fn, inputs, "full")
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

    ops = sum(1 for e in events if e.device_type.name == "CPU" and is_op(e) and top_level(e))
    kernels = None
    if device.type == "cuda":
        kernels = sum(1 for e in events if e.device_type.name == "CUDA")
    return ops, kernels
