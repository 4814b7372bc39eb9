"""Ahead-of-time compilation of Triton kernels for real GPUs, without a GPU.

The interpreter (TRITON_INTERPRET=1) accepts code that no GPU compiles (tl.dot with a
dim < 16, non-power-of-two blocks, dtype mismatches...), so every op's Triton module
exposes ``aot_specs()`` yielding (kernel, signature, constexprs, launch options) for
every config its launcher can produce, and this harness compiles each one for every
target architecture. Reusable by every op: see test_triton_aot.py.
"""
from __future__ import annotations

import importlib
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor

ARCHS = (80, 90)


def _compile_one(job) -> str | None:
    """Compile spec number ``index`` of ``module`` for ``arch``; the error text or None."""
    module_name, index, arch, int_type = job
    os.environ.pop("TRITON_INTERPRET", None)
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    kernel, signature, constexprs, options = list(importlib.import_module(module_name).aot_specs(int_type))[index]
    try:
        triton.compile(ASTSource(kernel, signature, constexprs), target=GPUTarget("cuda", arch, 32),
                       options={key: value for key, value in options.items() if key == "num_warps"})
    except Exception as error:  # noqa: BLE001 - reported with the spec below
        return f"{kernel.__name__} sm_{arch} {int_type} {constexprs}: {type(error).__name__}: {error}"[:2000]
    return None


def compile_module(module_name: str, workers: int | None = None) -> list[str]:
    """Compile every spec of ``module_name`` for every arch with 32-bit integer
    arguments, and the first spec of each kernel with 64-bit ones (what a launch on a
    tensor past 2**31 elements compiles; the int type changes nothing else); the list
    of failures."""
    specs = list(importlib.import_module(module_name).aot_specs())
    first_of_kernel = {spec[0]: index for index, spec in reversed(list(enumerate(specs)))}
    jobs = [(module_name, index, arch, "i32") for index in range(len(specs)) for arch in ARCHS]
    jobs += [(module_name, index, arch, "i64") for index in first_of_kernel.values() for arch in ARCHS]
    # spawn: fresh workers import the kernels as real JIT functions, not interpreted ones
    with ProcessPoolExecutor(max_workers=workers or os.cpu_count(), mp_context=multiprocessing.get_context("spawn")) as pool:
        return [error for error in pool.map(_compile_one, jobs, chunksize=8) if error]
