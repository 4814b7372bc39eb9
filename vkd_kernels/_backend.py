"""Backend choice for every op, in one place.

``backend="auto"`` (or the ``VKD_BACKEND`` environment variable) picks, for CUDA
tensors, Triton, then the CUDA C++ kernel, then the eager reference; for CPU tensors
the CPU C++ kernel, then the reference. A fallback warns once with the reasons. An
explicitly requested backend that cannot serve the call raises a ValueError saying
why. ``TRITON_INTERPRET=1`` lets the Triton backend run on CPU tensors (tests).
"""
from __future__ import annotations

import contextlib
import functools
import importlib
import os
import warnings
from typing import Callable, Optional

import torch

from . import _ext

BACKENDS = ("auto", "triton", "cuda", "cpu", "reference")
_AUTO_ORDER = {"cuda": ("triton", "cuda", "reference"), "cpu": ("cpu", "reference")}


@functools.lru_cache(maxsize=None)
def triton_unavailable() -> Optional[str]:
    """Why Triton cannot be imported, or None."""
    try:
        import triton  # noqa: F401
    except ImportError as error:
        return f"triton is not installed ({error})"
    return None


def triton_interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def kernels(package: str, backend: str):
    """The kernel module of the fused ``backend`` of the op package ``package`` (its
    ``__package__``, e.g. "vkd_kernels.spectrum"): ``triton_kernels`` for "triton",
    imported on first use so Triton loads only when it runs, else ``native`` (the calls
    into vkd_kernels._C for "cpu" and "cuda")."""
    return importlib.import_module(f"{package}.{'triton_kernels' if backend == 'triton' else 'native'}")


def device_unsupported(backend: str, device: torch.device) -> Optional[str]:
    """Why ``backend`` cannot run on ``device`` at all (independent of the op)."""
    if backend == "reference":
        return None
    if backend == "triton":
        if triton_unavailable():
            return triton_unavailable()
        if device.type == "cuda" or (device.type == "cpu" and triton_interpreting()):
            return None
        return f"Triton runs on CUDA tensors (or CPU tensors under TRITON_INTERPRET=1), got {device.type}"
    if _ext.EXT is None:
        return _ext.EXT_ERROR
    if backend == "cpu":
        return None if device.type == "cpu" else f"the cpu backend takes CPU tensors, got {device.type}"
    if backend == "cuda":
        if device.type != "cuda":
            return f"the cuda backend takes CUDA tensors, got {device.type}"
        return _ext.cuda_unavailable()
    return f"unknown backend {backend!r}"


def device_guard(device: torch.device):
    """Context in which a fused op body runs: ``device`` current for CUDA tensors (Triton
    launches on the current device; the extension gets the index too), nothing for CPU."""
    if device.type == "cuda":
        return torch.cuda.device(device)
    return contextlib.nullcontext()


@functools.lru_cache(maxsize=None)
def _warn_once(message: str) -> None:
    warnings.warn(message, RuntimeWarning, stacklevel=4)


INDEX32_LIMIT = 2**31  # the C++ kernels' within-sample (within-group) indices are 32-bit


def native_unsupported(reason: Optional[str]) -> Callable[[str], Optional[str]]:
    """An ``op_unsupported`` for :func:`resolve` that reports ``reason`` (a size past the
    C++ kernels' 32-bit indices, or None) for the cpu and cuda backends only."""
    return lambda backend: reason if backend in ("cpu", "cuda") else None


def resolve(op: str, backend: str, device: torch.device,
            op_unsupported: Callable[[str], Optional[str]] = lambda backend: None) -> str:
    """The concrete backend that runs ``op`` on ``device``.

    ``op_unsupported(backend)`` returns why the op cannot use that backend for this
    call (a shape or dtype limit), or None.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "auto":
        backend = os.environ.get("VKD_BACKEND", "auto") or "auto"
        if backend not in BACKENDS:
            raise ValueError(f"VKD_BACKEND must be one of {BACKENDS}, got {backend!r}")

    def reason(name: str) -> Optional[str]:
        return device_unsupported(name, device) or op_unsupported(name)

    if backend != "auto":
        why = reason(backend)
        if why:
            raise ValueError(f"backend={backend!r} cannot run {op}: {why}")
        return backend
    order = _AUTO_ORDER.get(device.type, ("reference",))
    reasons = []
    for name in order:
        why = reason(name)
        if why is None:
            if reasons:
                _warn_once(f"vkd_kernels.{op}: using the {name!r} backend because " + "; ".join(reasons))
            return name
        reasons.append(f"{name}: {why}")
    raise AssertionError("the reference backend always serves")  # pragma: no cover
