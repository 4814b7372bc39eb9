"""The comparison harness every op's tests share (in the spirit of PyTorch's OpInfo).

An op's test describes its inputs (built on ``device``), its options and how to call
it for a backend; ``compare`` runs it on the backend under test and on the eager
reference in float64 on the same values, and checks the output and the gradient of
every input that requires grad against the one tolerance table (``tolerances.py``),
with NaN-poisoned outputs (conftest). The test files parametrise backends x dtypes x
layouts x options.

Backends and devices: ``device_for(backend)`` is the one mapping from a backend to
the device its inputs are built on (cpu -> CPU; triton -> CUDA, or CPU under the
Triton interpreter when there is no GPU; cuda -> CUDA; reference and auto -> CUDA
when present, else CPU). ``FUSED`` / ``ALL`` are the pytest parameters; a backend
that cannot run here is a visible skip with the reason from
``vkd_kernels._backend.device_unsupported``. conftest's ``device`` fixture gives the
device of the test's ``backend``.

The device audit (``VKD_TEST_DEVICE_AUDIT=1``, run by test_harness.py) proves without
a GPU that every backend-parametrised test builds its inputs on its backend's device:
``device_for`` then answers ``meta`` for every backend (so an input built on the CPU
by mistake stands out), no backend is skipped, and ``expect_device`` (called by every
harness entry point before a backend runs) fails on a tensor elsewhere and otherwise
ends the test as a skip before any kernel would run on meta.
"""
from __future__ import annotations

import os
from typing import Any, Callable, Sequence

import pytest
import torch
from tolerances import relative_error, tolerance
from torch.utils._pytree import tree_flatten, tree_map

from vkd_kernels import _backend

AUDIT = os.environ.get("VKD_TEST_DEVICE_AUDIT", "0") == "1"
AUDIT_SKIP = "device audit: every input is on the backend's device"
CUDA = torch.cuda.is_available()


def device_for(backend: str) -> torch.device:
    """The device the inputs of a test of ``backend`` are built on."""
    if AUDIT:
        return torch.device("meta")
    if backend == "cpu":
        return torch.device("cpu")
    if backend == "cuda":
        return torch.device("cuda")
    if backend in ("triton", "reference", "auto"):
        return torch.device("cuda" if CUDA else "cpu")
    raise ValueError(f"no device for backend {backend!r}")


def interpreted(backend: str) -> bool:
    """Whether ``backend`` runs under the Triton interpreter here (a kernel call is then
    ~1000x slower: gradcheck takes fast_mode, a random projection of the Jacobian)."""
    return backend == "triton" and not CUDA


def unavailable(backend: str) -> str | None:
    """Why ``backend`` cannot run on its device here, or None."""
    device = torch.device("cuda") if backend == "cuda" else (
        torch.device("cuda" if CUDA else "cpu") if backend in ("triton", "reference") else torch.device("cpu"))
    why = _backend.device_unsupported(backend, device)
    if why is None and device.type == "cuda" and not CUDA:
        why = "no CUDA device (torch.cuda.is_available() is False)"
    return why


def backend_params(*names: str) -> list:
    """pytest parameters for ``names``; one that cannot run is a skip saying why (none
    under the device audit, which runs no kernel)."""
    params = []
    for name in names:
        why = None if AUDIT else unavailable(name)
        marks = [pytest.mark.skip(reason=f"backend {name!r} cannot run here: {why}")] if why else []
        params.append(pytest.param(name, id=name, marks=marks))
    return params


FUSED = backend_params("cpu", "triton", "cuda")
ALL = backend_params("reference", "cpu", "triton", "cuda")
#: the fused backends whose host-side checks run on CPU tensors (NaN/inf input checks)
RUNNABLE = [name for name in ("cpu", "triton", "cuda") if unavailable(name) is None]


def tensors_of(tree: Any) -> list[torch.Tensor]:
    return [x for x in tree_flatten(tree)[0] if isinstance(x, torch.Tensor)]


def expect_device(device: torch.device, *trees: Any) -> None:
    """Every tensor in ``trees`` is on ``device`` (the backend's); under the device
    audit the test ends here, as a skip, before anything runs on meta."""
    for x in tensors_of(trees):
        assert x.device.type == torch.device(device).type, (
            f"an input of shape {tuple(x.shape)} is on {x.device}, but the backend under test runs on "
            f"{device}: build it with device=device")
    if AUDIT:
        pytest.skip(AUDIT_SKIP)


def call(fn: Callable, device: torch.device, *args, **kwargs):
    """``fn(*args, **kwargs)`` after ``expect_device`` on every tensor argument."""
    expect_device(device, args, kwargs)
    return fn(*args, **kwargs)


def saved_for_backward(fn: Callable, *args, **kwargs):
    """(fn(*args, **kwargs), the tensors autograd saved for backward while it ran)."""
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        out = fn(*args, **kwargs)
    return out, saved


def assert_close(got: torch.Tensor, expected: torch.Tensor, bound: float | torch.dtype, what: str = "") -> None:
    """Fails on a shape mismatch, a non-finite value (an unwritten, NaN-poisoned output),
    an all-zero expectation (a test that cannot fail) and a relative error above
    ``bound`` (a number, or a dtype: its entry of the tolerance table)."""
    bound = tolerance(bound) if isinstance(bound, torch.dtype) else bound
    assert got.shape == expected.shape, f"{what}: shape {tuple(got.shape)} != {tuple(expected.shape)}"
    assert torch.isfinite(got).all(), f"{what}: non-finite values (unwritten output?)"
    assert expected.abs().max().item() > 0, f"{what}: the expected value is all zeros; the test cannot fail"
    error = relative_error(got, expected)
    assert error <= bound, f"{what}: relative error {error:.3g} > {bound:.3g}"


def as_double(tree: Any) -> Any:
    """Detached float64 copies of every tensor, keeping requires_grad."""
    return tree_map(lambda x: x.detach().double().requires_grad_(x.requires_grad)
                    if isinstance(x, torch.Tensor) else x, tree)


def gradients(out: torch.Tensor, inputs: Any, grad: torch.Tensor) -> tuple:
    """The gradients of ``out`` for grad_output ``grad`` w.r.t. the inputs requiring grad."""
    wrt = [x for x in tensors_of(inputs) if x.requires_grad]
    return torch.autograd.grad(out, wrt, grad.to(out.dtype).expand_as(out)) if wrt else ()


def compare(call_op: Callable[[str, Any], torch.Tensor], inputs: Any, backend: str, device: torch.device, *,
            bound: float, names: Sequence[str] | None = None, out_dtype: torch.dtype | None = None,
            grad: torch.Tensor | None = None, what: str = "") -> None:
    """``call_op(backend, inputs)`` and the gradients of every input tensor that requires
    grad against ``call_op("reference", <float64 copies>)``.

    ``inputs`` is any nest of lists/tuples/dicts of tensors and other values. The
    grad_output is ``grad``, else random for a non-scalar output and 1.7 for a scalar
    (never 1, so a missing grad_output scaling fails). ``out_dtype`` is the expected
    output dtype (default: the dtype of the first input tensor); every gradient has its
    input's dtype and shape."""
    expect_device(device, inputs, grad)
    first = tensors_of(inputs)[0]
    out = call_op(backend, inputs)
    if grad is None:
        grad = torch.randn(out.shape, dtype=out.dtype, device=out.device) if out.dim() else \
            torch.tensor(1.7, dtype=out.dtype, device=out.device)
    grads = gradients(out, inputs, grad)
    exact = as_double(inputs)
    expected = call_op("reference", exact)
    expected_grads = gradients(expected, exact, grad.double())
    assert out.dtype == (out_dtype or first.dtype), f"{what} {backend}: output dtype {out.dtype}"
    wrt = [x for x in tensors_of(inputs) if x.requires_grad]
    names = list(names) if names else ["out"] + [f"grad {i}" for i in range(len(wrt))]
    assert_close(out, expected, bound, f"{what} {backend} {names[0]}")
    for name, got, exp, x in zip(names[1:], grads, expected_grads, wrt):
        assert got.shape == x.shape and got.dtype == x.dtype, f"{what} {backend} {name}: {got.shape} {got.dtype}"
        assert_close(got, exp, bound, f"{what} {backend} {name}")
