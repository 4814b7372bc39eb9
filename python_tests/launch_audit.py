"""What one call of an op would cost on a GPU in launches, host syncs and host-to-device
copies, counted without a GPU.

``audit(fn)`` runs ``fn()`` (an op with ``backend="triton"`` on CPU tensors under the
Triton interpreter, or on CUDA tensors) ``warmup`` times, then once under
``torch.profiler`` (CPU activity), and reads the event tree of that last call:

- Triton launches: ``InterpretedFunction.run`` / ``JITFunction.run`` (what
  ``kernel[grid](...)`` calls) are wrapped in a ``record_function`` scope, so each launch
  is one event, named ``triton::<kernel>``; what the interpreter does inside it (copies
  of the arguments to and from its host buffers) is not looked at.
- ATen launches: the tree is walked from its roots. Why not "count the leaves": a CPU
  kernel calls other ops as its own implementation (CPU ``sum`` fills its output
  first, ``div`` converts a CPU scalar), not what CUDA runs. So an op with a backend
  kernel (a CPU kernel registered for one of its overloads, the CPU build's stand-in
  for the CUDA kernel it has too) is one launch and its subtree is not read. A
  CompositeImplicitAutograd op (``to``, ``reshape``, ``contiguous``, ``linear``) is a
  decomposition: only its children count (none when it was a no-op). Any other op
  (CompositeExplicitAutograd such as ``_to_copy``, ``clone``, ``zeros``; custom ops
  such as ``vkd::*``; a name with both a kernel and a decomposition overload, such as
  ``where``) counts its children, or once if none of them launches (``copy_``, a C++
  extension kernel). Views and aliases (every Tensor its schema returns is a read-only
  alias), allocations (``empty*``, ``resize_``, ``set_``), metadata (no Tensor
  returned) and ATen's wrapped CPU scalars (``scalar_tensor``) launch nothing.
  Autograd-engine and unnamed (Python) scopes are transparent. ``fill_``/``zero_``
  are counted as memsets and ``copy_`` as memcpys, beside (not in) the launches.
- Host syncs: the outermost of ``_local_scalar_dense``, ``item``, ``is_nonzero``,
  ``nonzero``, ``equal``, ``unique``..., anywhere in the tree; and ``Tensor.tolist``,
  ``.numpy``, ``__array__``, which read CPU memory without dispatching (patched while
  the call is audited).
- Host-to-device copies: tensors built from host data, ``aten::lift_fresh`` (what
  ``torch.tensor``, ``torch.as_tensor`` of Python data and ``torch.from_numpy`` dispatch);
  under the interpreter every tensor is on the CPU, so building one is the signal.

The audited call runs as on CUDA: ``VKD_CHECK_FINITE=0`` (the finite check is off on
CUDA) and ``VKD_POISON_OUTPUTS`` unset. ``run_kernels=False`` records Triton launches
without running them (interpreter only), for shapes the interpreter is too slow for;
the counts do not depend on values, and outputs are then garbage.

Use, in an op's test (the interpreter is on in the test session without a GPU)::

    result = audit(lambda: op(x, y, backend="triton").backward(g), grad_to_none=[x])
    assert result.total <= 4 and not result.syncs and not result.h2d, result

Approximations: CUDA may split one ATen op into several kernels (cuBLAS split-K,
cuFFT, two-pass reductions) and torch.compile's generated code is not seen.
"""
from __future__ import annotations

import contextlib
import functools
import os
import sys
import traceback
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Iterator, List, Optional, Sequence

if __name__ == "__main__":  # standalone: the interpreter before any Triton kernel is defined
    os.environ.setdefault("TRITON_INTERPRET", "1")

import torch
from torch.profiler import ProfilerActivity, profile, record_function

TRITON_SCOPE = "triton::"
MEMSET_OPS = frozenset({"aten::fill_", "aten::zero_"})
MEMCPY_OPS = frozenset({"aten::copy_", "aten::_copy_from", "aten::_copy_from_and_resize"})
SYNC_OPS = frozenset({"aten::_local_scalar_dense", "aten::item", "aten::is_nonzero", "aten::nonzero",
                      "aten::equal", "aten::allclose", "aten::_unique", "aten::_unique2", "aten::unique_dim",
                      "aten::unique_consecutive", "aten::masked_select", "aten::tolist"})
H2D_OPS = frozenset({"aten::lift_fresh", "aten::lift_fresh_copy", "aten::lift"})
# allocations, views whose schema does not say so, and ATen's wrapped scalars (CPU
# tensors that CUDA kernels take by value; a user's torch.scalar_tensor(.., device=cuda)
# is a fill this misses)
NO_LAUNCH_OPS = frozenset({"aten::resize_", "aten::set_", "aten::record_stream", "aten::_unsafe_view",
                           "aten::scalar_tensor"})
TRANSPARENT_NAMESPACES = ("autograd::", "torch::", "profiler::")


@dataclass
class Audit:
    """Counts of one audited call: ``launches`` (kernel name -> count; Triton kernels as
    ``triton::<name>``, ATen ops as ``aten::<op>``, memsets and memcpys excluded),
    ``memsets`` and ``memcpys`` (op -> count), ``syncs`` and ``h2d`` (one entry per event:
    its name and where it came from)."""

    launches: Counter = field(default_factory=Counter)
    memsets: Counter = field(default_factory=Counter)
    memcpys: Counter = field(default_factory=Counter)
    syncs: List[str] = field(default_factory=list)
    h2d: List[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        """Kernel launches (memsets and memcpys not included)."""
        return sum(self.launches.values())

    @property
    def triton(self) -> int:
        return sum(n for name, n in self.launches.items() if name.startswith(TRITON_SCOPE))

    def __str__(self) -> str:
        def named(c: Counter) -> str:
            return ", ".join(f"{k} x{v}" if v > 1 else k for k, v in sorted(c.items()))
        return (f"{self.total} launches ({named(self.launches)}); {sum(self.memsets.values())} memsets; "
                f"{sum(self.memcpys.values())} memcpys; {len(self.syncs)} syncs {self.syncs}; "
                f"{len(self.h2d)} H2D {self.h2d}")


# ---- op classification ----------------------------------------------------------------

def _schemas(name: str):
    ns, _, op = name.partition("::")
    packet = getattr(getattr(torch.ops, ns, None), op, None)
    if packet is None:
        return []
    try:
        return [(f"{name}.{o}" if o != "default" else name, getattr(packet, o)._schema) for o in packet.overloads()]
    except (AttributeError, RuntimeError):
        return []


@functools.lru_cache(maxsize=None)
def kind(name: str) -> str:
    """How the op ``name`` (a profiler event name) is counted: "transparent" (its
    children count), "none" (launches nothing, subtree skipped), "kernel" (one launch,
    subtree skipped) or "composite" (its children, or one launch if none launches)."""
    if "::" not in name or name.startswith(TRANSPARENT_NAMESPACES):
        return "transparent"
    if name in MEMSET_OPS or name in MEMCPY_OPS:
        return "kernel"
    if name in NO_LAUNCH_OPS or (name.startswith("aten::") and "empty" in name):
        return "none"
    if name.endswith("_") and kind(name[:-1]) == "none":
        return "none"  # an in-place view: detach_, squeeze_, t_
    schemas = _schemas(name)
    if not name.startswith("aten::") or not schemas:
        return "composite"
    def has(full: str, key: str) -> bool:
        try:
            return torch._C._dispatch_has_kernel_for_dispatch_key(full, key)
        except RuntimeError:  # a TorchScript-only overload (aten::sum.int): not a dispatcher op
            return False

    implicit = any(has(full, "CompositeImplicitAutograd") for full, _ in schemas)
    backend = any(has(full, key) for full, _ in schemas for key in ("CPU", "CUDA"))
    if implicit and not backend:
        return "transparent"  # its children tell (reshape and contiguous copy or not)
    tensor_returns = [r for _, s in schemas for r in s.returns if "Tensor" in str(r.type)]
    if all(r.alias_info is not None and not r.alias_info.is_write for r in tensor_returns):
        return "none"  # views, aliases and metadata (an empty list: no Tensor returned)
    if backend and not implicit:
        return "kernel"
    return "composite"  # neither, or both (where: the Tensor overload a kernel, the Scalar one a decomposition)


def _is_triton(event) -> bool:
    return event.name.startswith(TRITON_SCOPE)


def _count(event, audit: Audit) -> int:
    """Add the launches of ``event``'s subtree to ``audit``; return how many it added
    (memsets and memcpys included, so that a composite op that only copies is not
    counted once more)."""
    if _is_triton(event):
        audit.launches[event.name] += 1
        return 1
    how = kind(event.name)
    if how == "none":
        return 0
    if how == "kernel":
        target = audit.memsets if event.name in MEMSET_OPS else audit.memcpys if event.name in MEMCPY_OPS \
            else audit.launches
        target[event.name] += 1
        return 1
    below = sum(_count(child, audit) for child in event.cpu_children)
    if how == "composite" and below == 0:
        audit.launches[event.name] += 1
        return 1
    return below


def _where(event) -> str:
    """The op the event ran in (the innermost enclosing namespaced op), if any."""
    parent = event.cpu_parent
    while parent is not None and (kind(parent.name) == "transparent" or parent.name in SYNC_OPS):
        parent = parent.cpu_parent
    return f"in {parent.name}" if parent is not None else ""


def _scan(event, audit: Audit, in_sync: bool = False) -> None:
    """Record syncs (outermost only) and host-data tensors in ``event``'s subtree."""
    if _is_triton(event):
        return
    sync = event.name in SYNC_OPS
    if sync and not in_sync:
        audit.syncs.append(f"{event.name} {_where(event)}".strip())
    if event.name in H2D_OPS:
        audit.h2d.append(f"{event.name} {_where(event)}".strip())
    for child in event.cpu_children:
        _scan(child, audit, in_sync or sync)


# ---- the hooks ------------------------------------------------------------------------

def _caller() -> str:
    for frame in reversed(traceback.extract_stack()[:-2]):
        if frame.filename != __file__ and "/torch/" not in frame.filename:
            return f"{frame.filename}({frame.lineno}): {frame.name}"
    return ""


@contextlib.contextmanager
def _hooks(audit: Audit, run_kernels: bool) -> Iterator[None]:
    """Triton launches as ``triton::<kernel>`` scopes; host reads and host-data
    tensors that do not dispatch recorded in ``audit``; the op's CUDA-like settings."""
    saved, restore = [], []

    def patch(owner, attr, make):
        original = getattr(owner, attr)
        restore.append((owner, attr, original))
        setattr(owner, attr, make(original))

    def launch(skip):
        def make(original):
            def run(self, *args, **kwargs):
                with record_function(TRITON_SCOPE + self.fn.__name__):
                    return None if skip else original(self, *args, **kwargs)
            return run
        return make

    def host_read(label):
        def make(original):
            def read(self, *args, **kwargs):
                audit.syncs.append(f"{label} {_caller()}")
                return original(self, *args, **kwargs)
            return read
        return make

    try:
        from triton.runtime.interpreter import InterpretedFunction
        from triton.runtime.jit import JITFunction
    except ImportError:
        pass
    else:
        patch(InterpretedFunction, "run", launch(skip=not run_kernels))
        patch(JITFunction, "run", launch(skip=False))  # a real launch always runs
    for attr, label in (("tolist", "Tensor.tolist"), ("numpy", "Tensor.numpy"), ("__array__", "Tensor.__array__")):
        patch(torch.Tensor, attr, host_read(label))
    for name, value in (("VKD_CHECK_FINITE", "0"), ("VKD_POISON_OUTPUTS", None)):
        saved.append((name, os.environ.get(name)))
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    try:
        yield
    finally:
        for owner, attr, original in reversed(restore):
            setattr(owner, attr, original)
        for name, value in saved:
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def audit(fn: Callable[[], object], *, warmup: int = 1, grad_to_none: Sequence[torch.Tensor] = (),
          run_kernels: bool = True) -> Audit:
    """Counts of one call of ``fn()`` after ``warmup`` calls (which fill per-call caches);
    ``grad_to_none``: tensors whose ``.grad`` is reset before every call, so that a
    backward does not accumulate. See the module docstring for what is counted."""
    result = Audit()

    def call():
        for x in grad_to_none:
            x.grad = None
        fn()

    with _hooks(result, run_kernels):
        for _ in range(warmup):
            call()
        del result.syncs[:], result.h2d[:]  # what the warm-up calls did is not this call's
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            call()
    roots = [e for e in prof.events() if e.cpu_parent is None]
    for event in roots:
        _count(event, result)
        _scan(event, result)
    return result


# ---- the ops at the benchmark headline shapes -----------------------------------------

def audit_headlines(ops: Optional[Sequence[str]] = None, run_kernels: bool = False) -> dict:
    """``op name -> Audit`` of one forward + backward (``backward(g)`` with a fixed
    ``g``: no consumer op, no ones_like) with backend="triton" at the headline shape of
    each op (vkd_kernels.check.bench.HEADLINES, the first shape of benchmarks/cases_*.py),
    after one warm-up call; a further headline of the same op is ``"op (shape)"``."""
    from vkd_kernels.check.bench import HEADLINES

    audits = {}
    for factory in HEADLINES:
        case = factory()
        if ops is not None and case.op not in ops:
            continue
        inputs, grad = case.make(torch.device("cpu")), []

        def call(case=case, inputs=inputs, grad=grad):
            out = case.call("triton", inputs)
            if not grad:
                grad.append(torch.ones_like(out))
            out.backward(grad[0])
        key = case.op if case.op not in audits else f"{case.op} ({case.shape})"
        audits[key] = audit(call, grad_to_none=[x for x in inputs if x.requires_grad], run_kernels=run_kernels)
    return audits


def main() -> None:
    """Print the counts at the headline shapes (``--run-kernels``: the kernels run too)."""
    for op, result in audit_headlines(run_kernels="--run-kernels" in sys.argv).items():
        print(f"{op}: {result}")


if __name__ == "__main__":
    main()
