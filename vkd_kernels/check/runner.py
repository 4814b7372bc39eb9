"""Runs one case on one backend and dtype in every mode and compares it with a float64 reference.

Per (case, dtype) the references are computed once: ``expected``, the op with
``backend="reference"`` on the inputs rounded to the dtype and upcast to float64,
and ``eager``, the reference in the dtype itself (it sets the output dtypes); the
bounds are the fixed :data:`TOLERANCE`. Each mode then computes the output(s)
and the gradient of every differentiated input (student and teacher alike) for a
fixed random grad_output and compares all of them.

Modes: ``plain`` (the current stream), ``stream`` (a side stream that first sleeps,
then writes the inputs: a kernel launched on another stream reads NaN), ``sync``
(under ``torch.cuda.set_sync_debug_mode("error")`` after one warm-up call: any host
sync raises), ``graph`` (forward + backward captured in a CUDA graph, replayed on
new input values), ``autocast`` (under ``torch.autocast``: an op computes as without it)
and ``device1`` (inputs on cuda:1 while cuda:0 is current).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import torch

from .cases import Case

MODES = ("plain", "stream", "sync", "graph", "autocast", "device1")
GPU_MODES = MODES[1:]

# max |got - expected| / max |expected| allowed, per input dtype (expected: float64).
TOLERANCE = {torch.float64: 1e-10, torch.float32: 1e-5, torch.float16: 1e-2, torch.bfloat16: 1e-2}
TOLERANCE_WHY = {
    torch.float64: "unit roundoff 1.1e-16; leaves 6 orders for summation order and conditioning",
    torch.float32: "unit roundoff 6e-8 times sums of up to ~1e3 terms (float32 accumulation; Triton tf32x3 dots)",
    torch.float16: "the result itself is rounded to float16 (4.9e-4 relative) after float32 accumulation",
    torch.bfloat16: "the result itself is rounded to bfloat16 (3.9e-3 relative) after float32 accumulation",
}
SLEEP_CYCLES = 50_000_000  # ~25 ms of GPU spin before the side stream writes the inputs


@dataclass
class Check:
    """One (op, case, backend, dtype, mode) result; ``errors`` maps each compared
    quantity to its relative error; ``error`` is the failure message (None = pass)."""

    op: str
    case: str
    backend: str
    dtype: str
    mode: str
    passed: bool
    error: Optional[str] = None
    errors: Dict[str, float] = field(default_factory=dict)
    tolerance: Dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


def as_tuple(out) -> Tuple[torch.Tensor, ...]:
    return (out,) if isinstance(out, torch.Tensor) else tuple(out)


def relative_error(got: torch.Tensor, expected: torch.Tensor) -> float:
    """max |got - expected| / max |expected| (on the CPU, in float64)."""
    got, expected = got.detach().double().cpu(), expected.detach().double().cpu()
    return (got - expected).abs().max().item() / expected.abs().max().item()


def compare(name: str, got: torch.Tensor, expected: torch.Tensor, eager: Optional[torch.Tensor],
            dtype: torch.dtype) -> Tuple[Optional[str], float, float]:
    """(failure message or None, relative error, tolerance) of one output or gradient."""
    tolerance = TOLERANCE[dtype]  # fixed: never derived from this run's errors
    if tuple(got.shape) != tuple(expected.shape):
        return f"{name}: shape {tuple(got.shape)} != expected {tuple(expected.shape)}", math.inf, tolerance
    if eager is not None and got.dtype != eager.dtype:
        return f"{name}: dtype {got.dtype} != the reference's {eager.dtype}", math.inf, tolerance
    if got.numel() == 0:
        return f"{name}: empty", math.inf, tolerance
    finite = torch.isfinite(got.detach()).all().item()
    if not finite:
        bad = int((~torch.isfinite(got.detach())).sum().item())
        return f"{name}: {bad} of {got.numel()} values NaN/inf (unwritten output?)", math.inf, tolerance
    if expected.abs().max().item() == 0:
        return f"{name}: the expected value is all zeros, the check cannot fail", math.inf, tolerance
    error = relative_error(got, expected)
    if not error <= tolerance:
        return f"{name}: relative error {error:.3g} > {tolerance:.3g}", error, tolerance
    return None, error, tolerance


def materialize(tensors: Sequence[torch.Tensor], case: Case, device, dtype) -> List[torch.Tensor]:
    """The float64 CPU tensors on ``device`` in ``dtype`` (memory format kept), the
    differentiated ones requiring grad."""
    return [t.to(device=device, dtype=dtype).requires_grad_(g) for t, g in zip(tensors, case.grad)]


def evaluate(case: Case, backend: str, inputs: Sequence[torch.Tensor],
             grad_outputs: Sequence[torch.Tensor]) -> Tuple[torch.Tensor, ...]:
    """(outputs..., gradients of the differentiated inputs...)."""
    outs = as_tuple(case.call(backend, list(inputs)))
    wrt = [x for x, g in zip(inputs, case.grad) if g]
    grads = torch.autograd.grad(outs, wrt, [g.to(o.dtype) for o, g in zip(outs, grad_outputs)])
    return outs + tuple(grads)


def quantity_names(case: Case, n_outputs: int) -> List[str]:
    outs = ["out"] if n_outputs == 1 else [f"out{i}" for i in range(n_outputs)]
    return outs + [f"d{name}" for name, g in zip(case.names, case.grad) if g]


@dataclass
class Reference:
    """The float64 expectation and the same-dtype eager reference of one (case, dtype, values)."""

    values: List[torch.Tensor]          # float64 CPU inputs, already rounded to the dtype
    grad64: List[torch.Tensor]          # float64 CPU grad_outputs, rounded to the output dtypes
    expected: Tuple[torch.Tensor, ...]  # float64, on the CPU
    eager: Tuple[torch.Tensor, ...]     # the reference in the dtype itself, on the CPU
    out_dtypes: Tuple[torch.dtype, ...]


def reference(case: Case, dtype: torch.dtype, device, seed: int) -> Reference:
    """Inputs from ``seed`` rounded to ``dtype``; the float64 and the eager references
    on ``device`` (a scalar output gets grad_output 1.7, a tensor a random one)."""
    gen = torch.Generator().manual_seed(seed)
    values = [t.to(dtype).to(torch.float64) for t in case.make(gen)]
    with torch.no_grad():
        probe = as_tuple(case.call("reference", materialize(values, case, device, dtype)))
    out_dtypes = tuple(o.dtype for o in probe)
    grad64 = []
    for out, out_dtype in zip(probe, out_dtypes):
        g = torch.full(out.shape, 1.7, dtype=torch.float64) if out.dim() == 0 else \
            torch.randn(out.shape, generator=gen, dtype=torch.float64)
        grad64.append(g.to(out_dtype).to(torch.float64))

    def run(run_dtype):
        inputs = materialize(values, case, device, run_dtype)
        grads = [g.to(device=device, dtype=d if run_dtype != torch.float64 else run_dtype)
                 for g, d in zip(grad64, out_dtypes)]
        return tuple(t.detach().cpu() for t in evaluate(case, "reference", inputs, grads))
    return Reference(values, grad64, run(torch.float64), run(dtype), out_dtypes)


def judge(case: Case, backend: str, dtype: torch.dtype, mode: str, got: Sequence[torch.Tensor],
          ref: Reference, device_expected=None) -> Check:
    """Compare every output and gradient; the failure lists each quantity that failed."""
    names = quantity_names(case, len(ref.out_dtypes))
    check = Check(case.op, case.name, backend, dtype_name(dtype), mode, True)
    failures = []
    if len(got) != len(ref.expected):
        failures.append(f"{len(got)} results, expected {len(ref.expected)}")
    for i, (name, g, e) in enumerate(zip(names, got, ref.expected)):
        if device_expected is not None and g.device != device_expected:
            failures.append(f"{name}: on {g.device}, expected {device_expected}")
        message, error, tolerance = compare(name, g, e, ref.eager[i], dtype)
        check.errors[name], check.tolerance[name] = error, tolerance
        if message:
            failures.append(message)
    if failures:
        check.passed, check.error = False, "; ".join(failures)
    return check


def failed(case: Case, backend: str, dtype: torch.dtype, mode: str, error: BaseException) -> Check:
    """A check whose run raised: the message names the exception (and the one it interrupted)."""
    message = f"{type(error).__name__}: {error}".strip()
    cause = error.__cause__ or error.__context__
    if cause is not None:
        message += f" (while handling {type(cause).__name__}: {cause})"
    return Check(case.op, case.name, backend, dtype_name(dtype), mode, False, message.replace("\n", " ")[:2000])


# ---- the modes -------------------------------------------------------------------------

def _device_grads(ref: Reference, device) -> List[torch.Tensor]:
    return [g.to(device=device, dtype=d) for g, d in zip(ref.grad64, ref.out_dtypes)]


def run_plain(case, backend, dtype, device, ref) -> Check:
    inputs = materialize(ref.values, case, device, dtype)
    return judge(case, backend, dtype, "plain", evaluate(case, backend, inputs, _device_grads(ref, device)), ref)


def run_stream(case, backend, dtype, device, ref) -> Check:
    """Inputs and grad_outputs start as NaN and get their values on a side stream after
    a ~25 ms spin, then the op runs there: a kernel on any other stream reads NaN."""
    sources = materialize(ref.values, case, device, dtype)
    grad_sources = _device_grads(ref, device)
    inputs = [torch.full_like(s, math.nan).requires_grad_(s.requires_grad) for s in sources]
    grads = [torch.full_like(g, math.nan) for g in grad_sources]
    torch.cuda.synchronize(device)
    side = torch.cuda.Stream(device)
    with torch.cuda.stream(side):
        torch.cuda._sleep(SLEEP_CYCLES)
        with torch.no_grad():
            for x, s in zip(inputs + grads, sources + grad_sources):
                x.copy_(s)
        got = evaluate(case, backend, inputs, grads)
    torch.cuda.current_stream(device).wait_stream(side)
    torch.cuda.synchronize(device)
    return judge(case, backend, dtype, "stream", got, ref)


def run_sync(case, backend, dtype, device, ref) -> Check:
    """One warm-up call (compilation, cached tables), then forward + backward with every
    host sync an error."""
    inputs = materialize(ref.values, case, device, dtype)
    grads = _device_grads(ref, device)
    evaluate(case, backend, inputs, grads)
    torch.cuda.synchronize(device)
    torch.cuda.set_sync_debug_mode("error")
    try:
        got = evaluate(case, backend, inputs, grads)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    torch.cuda.synchronize(device)
    return judge(case, backend, dtype, "sync", got, ref)


def run_graph(case, backend, dtype, device, ref, ref_new: Reference) -> Check:
    """Warm-up on a side stream (torch.cuda.graphs' rule), capture forward + backward in
    one CUDA graph, copy new values into the static inputs, replay, compare with the
    reference of the new values (a graph that replays stale results fails).

    A failed capture leaves torch's caching allocator recording to the graph's pool
    (CUDAGraph::capture_end throws before endAllocateToPool), after which every
    empty_cache(), including the next capture's, fails an internal assert; the pool is
    therefore explicit and released here (torch._C._cuda_endAllocateToPool, the call
    torch.cuda.use_mem_pool makes) when the capture fails."""
    inputs = materialize(ref.values, case, device, dtype)
    grads = _device_grads(ref, device)
    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):
        for _ in range(2):
            evaluate(case, backend, inputs, grads)
    torch.cuda.current_stream(device).wait_stream(side)
    torch.cuda.synchronize(device)
    graph = torch.cuda.CUDAGraph()
    pool = torch.cuda.graph_pool_handle()
    before = torch.cuda.current_stream(device)
    try:
        with torch.cuda.graph(graph, pool=pool):
            static = evaluate(case, backend, inputs, grads)
    except BaseException:
        torch.cuda.set_stream(before)  # a failed capture_end leaves the capture stream current
        try:
            torch._C._cuda_endAllocateToPool(device.index, pool)
        except Exception:  # noqa: BLE001 - the capture got as far as ending its allocation
            pass
        raise
    with torch.no_grad():
        for x, v in zip(inputs, materialize(ref_new.values, case, device, dtype)):
            x.copy_(v)
        for g, v in zip(grads, _device_grads(ref_new, device)):
            g.copy_(v)
    graph.replay()
    torch.cuda.synchronize(device)
    got = tuple(t.detach().clone() for t in static)
    del graph
    return judge(case, backend, dtype, "graph", got, ref_new)


def allocator_usable(device) -> Optional[str]:
    """None if torch.cuda.empty_cache() works (the next capture needs it); else why not."""
    try:
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        return None
    except Exception as error:  # noqa: BLE001
        return f"{type(error).__name__}: {error}"


def run_autocast(case, backend, dtype, device, ref) -> Check:
    """Forward and backward under ``torch.autocast`` (float16 on CUDA, bfloat16 on the CPU):
    the ops run their bodies with autocast off, so the plain bounds hold (a GEMM inside
    an op turned half precision, or read as the wrong dtype, fails)."""
    inputs = materialize(ref.values, case, device, dtype)
    with torch.autocast(device.type):
        got = evaluate(case, backend, inputs, _device_grads(ref, device))
    return judge(case, backend, dtype, "autocast", got, ref)


def run_device1(case, backend, dtype, device, ref) -> Check:
    """Inputs on cuda:1 while cuda:0 is the current device."""
    other = torch.device("cuda", 1)
    with torch.cuda.device(0):
        inputs = materialize(ref.values, case, other, dtype)
        got = evaluate(case, backend, inputs, _device_grads(ref, other))
        torch.cuda.synchronize(other)
    return judge(case, backend, dtype, "device1", got, ref, device_expected=other)


def context_healthy(device) -> Optional[str]:
    """None if the CUDA context still runs a kernel and syncs; else why not."""
    try:
        value = torch.ones(4, device=device).add_(1).sum().item()
        torch.cuda.synchronize(device)
        return None if value == 8 else f"a probe kernel returned {value}, expected 8"
    except Exception as error:  # noqa: BLE001
        return f"{type(error).__name__}: {error}"
