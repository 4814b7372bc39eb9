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
import re
import subprocess
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

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


def compile_launch(launch: Launch, arch: int):
    """The CompiledKernel of ``launch`` for sm_``arch`` (its .asm holds ttir, ttgir, ptx, cubin)."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    kernel = getattr(importlib.import_module(launch.module), launch.kernel)
    attrs = {(kernel.arg_names.index(name),): [list(a) for a in value] for name, value in launch.attrs}
    return triton.compile(ASTSource(kernel, dict(launch.signature), dict(launch.constexprs), attrs),
                          target=GPUTarget("cuda", arch, 32), options=dict(launch.options))


def _compile_one(job) -> str | None:
    """Compile ``launch`` for sm_``arch``: the error text, or None."""
    launch, arch = job
    try:
        compile_launch(launch, arch)
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


_PTXAS_FIELDS = {"registers": r"Used (\d+) registers", "stack": r"(\d+) bytes stack frame",
                 "spill_stores": r"(\d+) bytes spill stores", "spill_loads": r"(\d+) bytes spill loads"}


def ptxas_report(ptx: str, arch: int) -> dict:
    """What ``ptxas -v`` says of ``ptx`` for sm_``arch``, run as Triton's own make_cubin
    runs it (the ptxas Triton picks for the arch, its register-allocation flag): registers,
    stack frame and spill bytes of the kernel."""
    from triton.backends.nvidia.compiler import get_ptxas, sm_arch_from_capability
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "kernel.ptx"
        source.write_text(ptx)
        text = subprocess.run([get_ptxas(arch).path, "-lineinfo", "-v", "--regAllocOptLevel=2",
                               f"--gpu-name={sm_arch_from_capability(arch)}", str(source), "-o",
                               str(Path(tmp) / "kernel.o")], capture_output=True, text=True, check=True).stderr
    return {name: int(m.group(1)) if (m := re.search(pattern, text)) else 0 for name, pattern in _PTXAS_FIELDS.items()}


def _report_one(job) -> dict:
    launch, arch = job
    report = ptxas_report(compile_launch(launch, arch).asm["ptx"], arch)
    return dict(report, launch=launch, arch=arch)


def resource_reports(launches, arch: int = 90, workers: int | None = None) -> list[dict]:
    """``ptxas_report`` of every distinct launch for sm_``arch``, each with its ``launch``."""
    jobs = [(launch, arch) for launch in sorted(set(launches), key=repr)]
    if not jobs:
        return []
    with _pool(min(workers or os.cpu_count() or 1, len(jobs))) as pool:
        return list(pool.map(_report_one, jobs))


def _asm_one(job) -> dict:
    launch, arch = job
    asm = compile_launch(launch, arch).asm
    return {name: asm[name] for name in ("ttgir", "ptx")}


def compiled_asm(launches, arch: int = 90, workers: int | None = None) -> list[dict]:
    """The TTGIR and PTX ({"ttgir": ..., "ptx": ...}) of each launch for sm_``arch``, in
    order, compiled in worker processes (a test session runs the interpreter)."""
    jobs = [(launch, arch) for launch in launches]
    if not jobs:
        return []
    with _pool(min(workers or os.cpu_count() or 1, len(jobs))) as pool:
        return list(pool.map(_asm_one, jobs))
