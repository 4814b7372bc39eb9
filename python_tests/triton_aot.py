"""Ahead-of-time compilation, for real GPUs and without one, of the Triton launches the
ops really make.

The interpreter (TRITON_INTERPRET=1) accepts code no GPU compiles (tl.dot with a dim
< 16, non-power-of-two blocks, dtype mismatches...) and runs kernels with arguments a
GPU launch would type and specialise differently (Python floats stay doubles, no
stride-1 constants). So the launches are captured from the public ops in a spawned
process without the interpreter (triton_launches.py: the JIT's own binder and
specialisation for the CUDA backend), deduplicated, and each distinct one is compiled
for every target architecture, in parallel worker processes. Reusable by every op: add
its calls to triton_launches.SCENARIOS.
"""
from __future__ import annotations

import importlib
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor

from triton_launches import Launch

ARCHS = (80, 90)


def _worker_init() -> None:
    # before any import of the kernels: they must be JITFunctions, not interpreted ones
    os.environ.pop("TRITON_INTERPRET", None)


def _pool(workers: int) -> ProcessPoolExecutor:
    return ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_worker_init)


def _capture(names):
    import triton_launches
    return triton_launches.capture(names)


def capture_calls(names=None) -> list:
    """The triton_launches.Call list of the scenarios (all, or ``names``), captured in a
    fresh process."""
    with _pool(1) as pool:
        return pool.submit(_capture, names).result()


def with_int64(launch: Launch) -> Launch:
    """``launch`` with its 32-bit integer arguments 64-bit: what the JIT types a size or
    stride of 2**31 or more (the int type changes nothing else)."""
    return Launch(launch.module, launch.kernel, tuple((n, "i64" if t == "i32" else t) for n, t in launch.signature),
                  launch.constexprs, launch.attrs, launch.options)


def _compile_one(job) -> str | None:
    """Compile ``launch`` for sm_``arch``: the error text, or None."""
    launch, arch = job
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    kernel = getattr(importlib.import_module(launch.module), launch.kernel)
    attrs = {(kernel.arg_names.index(name),): [list(a) for a in value] for name, value in launch.attrs}
    try:
        triton.compile(ASTSource(kernel, dict(launch.signature), dict(launch.constexprs), attrs),
                       target=GPUTarget("cuda", arch, 32), options=dict(launch.options))
    except Exception as error:  # noqa: BLE001 - reported with the launch below
        return f"{launch.kernel} sm_{arch} {launch}: {type(error).__name__}: {error}"[:3000]
    return None


def compile_launches(launches, workers: int | None = None) -> list[str]:
    """Compile every launch for every arch in ARCHS; the list of failures."""
    jobs = [(launch, arch) for launch in sorted(set(launches), key=repr) for arch in ARCHS]
    if not jobs:
        return []
    with _pool(min(workers or os.cpu_count() or 1, len(jobs))) as pool:
        return [error for error in pool.map(_compile_one, jobs) if error]
