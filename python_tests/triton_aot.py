"""Ahead-of-time compilation, for real GPUs and without one, of the Triton launches the
ops really make.

The interpreter (TRITON_INTERPRET=1) accepts code no GPU compiles (tl.dot with a dim
< 16, non-power-of-two blocks, dtype mismatches...) and runs kernels with arguments a
GPU launch would type and specialise differently (Python floats stay doubles, no
stride-1 constants). So the launches are captured from the public ops in a spawned
process without the interpreter (triton_launches.py: the JIT's own binder and
specialisation for the CUDA backend), deduplicated, and compiled for the target
architectures in parallel worker processes, each (launch, arch) once per session
(compile_reports; the tests pick which launches: representatives). Reusable by every
op: add its calls to triton_launches.SCENARIOS.
"""
from __future__ import annotations

import contextlib
import functools
import importlib
import io
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


@functools.lru_cache(maxsize=None)
def _captured(names) -> tuple:
    with _pool(1) as pool:
        return tuple(pool.submit(_capture, names).result())


def capture_calls(names=None) -> list:
    """The triton_launches.Call list of the scenarios (all, or ``names``), captured in a
    fresh process, once per test session for each ``names``."""
    return list(_captured(None if names is None else tuple(names)))


def with_int64(launch: Launch) -> Launch:
    """``launch`` with its 32-bit integer arguments 64-bit: what the JIT types a size or
    stride of 2**31 or more (the int type changes nothing else)."""
    return Launch(launch.module, launch.kernel, tuple((n, "i64" if t == "i32" else t) for n, t in launch.signature),
                  launch.constexprs, launch.attrs, launch.options)


def plus_int64(launches) -> list:
    """``launches`` and, for each kernel among them, its first launch ``with_int64``."""
    launches = sorted(set(launches), key=repr)
    first = {launch.kernel: launch for launch in reversed(launches)}
    return launches + [with_int64(launch) for launch in first.values()]


def element_type(launch: Launch) -> str:
    """The type of the first floating-point tensor argument ("*fp32", "*bf16"...)."""
    return next((t for _, t in launch.signature if t.startswith(("*fp", "*bf"))), "")


def tile_key(launch: Launch) -> tuple:
    """The kernel, its element type, its tile constexprs (the declared, upper-case ones
    that are not flags: blocks, pads, alignment, dot precision) and launch options. The
    launches of one key differ in boolean flags (which outputs a launch writes) and in the
    JIT's specialisation of sizes and strides (multiples of 16, ones)."""
    tiles = tuple(c for c in launch.constexprs if c[0].isupper() and not isinstance(c[1], bool))
    return launch.module, launch.kernel, element_type(launch), tiles, launch.options


def kernel_key(launch: Launch) -> tuple:
    """The kernel and its element type."""
    return launch.module, launch.kernel, element_type(launch)


def _heaviest_first(launch: Launch) -> tuple:
    # the most flags set (the most outputs written), the widest vectors (alignment, then
    # multiple-of-16 hints): the most registers in flight; then a fixed order
    flags = sum(1 for name, value in launch.constexprs if name.isupper() and value is True)
    widths = sum(value for name, value in launch.constexprs
                 if name.isupper() and isinstance(value, int) and not isinstance(value, bool))
    return -flags, -widths, -len(launch.attrs), repr(launch)


def representatives(launches, key=tile_key) -> list:
    """One launch per ``key``: the heaviest of them (``_heaviest_first``)."""
    chosen: dict = {}
    for launch in sorted(set(launches), key=_heaviest_first):
        chosen.setdefault(key(launch), launch)
    return sorted(chosen.values(), key=repr)


def compile_launch(launch: Launch, arch: int):
    """The CompiledKernel of ``launch`` for sm_``arch`` (its .asm holds ttir, ttgir, ptx,
    cubin) and what ptxas -v printed while Triton built its cubin ("" if Triton's cache
    held it already)."""
    import triton
    from triton import knobs
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    kernel = getattr(importlib.import_module(launch.module), launch.kernel)
    attrs = {(kernel.arg_names.index(name),): [list(a) for a in value] for name, value in launch.attrs}
    source = ASTSource(kernel, dict(launch.signature), dict(launch.constexprs), attrs)
    log = io.StringIO()
    with knobs.nvidia.scope(), contextlib.redirect_stdout(log):
        knobs.nvidia.dump_ptxas_log = True  # Triton runs ptxas -v; this prints its report
        compiled = triton.compile(source, target=GPUTarget("cuda", arch, 32), options=dict(launch.options))
    return compiled, log.getvalue()


_PTXAS_FIELDS = {"registers": r"Used (\d+) registers", "stack": r"(\d+) bytes stack frame",
                 "spill_stores": r"(\d+) bytes spill stores", "spill_loads": r"(\d+) bytes spill loads"}


def _parse_ptxas(text: str) -> dict:
    return {name: int(m.group(1)) if (m := re.search(pattern, text)) else 0 for name, pattern in _PTXAS_FIELDS.items()}


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
    return _parse_ptxas(text)


def _compile_one(job) -> dict:
    launch, arch = job
    try:
        compiled, log = compile_launch(launch, arch)
    except Exception as error:  # noqa: BLE001 - reported with the launch
        return {"error": f"{launch.kernel} sm_{arch} {launch}: {type(error).__name__}: {error}"[:3000]}
    return _parse_ptxas(log) if "registers" in log else ptxas_report(compiled.asm["ptx"], arch)


_REPORTS: dict = {}  # (launch, arch) -> report: each compiled once per test session


def compile_reports(launches, archs=ARCHS, workers: int | None = None) -> dict:
    """{(launch, arch): report} for every launch and arch in ``archs``, compiled in worker
    processes, each (launch, arch) once per session: ptxas -v's registers, stack and
    spill_stores / spill_loads bytes, or {"error": text} where the compile failed."""
    wanted = [(launch, arch) for launch in sorted(set(launches), key=repr) for arch in archs]
    jobs = [job for job in wanted if job not in _REPORTS]
    if jobs:
        with _pool(min(workers or os.cpu_count() or 1, len(jobs))) as pool:
            _REPORTS.update(zip(jobs, pool.map(_compile_one, jobs)))
    return {job: _REPORTS[job] for job in wanted}


def _asm_one(job) -> dict:
    launch, arch = job
    asm = compile_launch(launch, arch)[0].asm
    return {name: asm[name] for name in ("ttgir", "ptx")}


def compiled_asm(launches, arch: int = 90, workers: int | None = None) -> list[dict]:
    """The TTGIR and PTX ({"ttgir": ..., "ptx": ...}) of each launch for sm_``arch``, in
    order, compiled in worker processes (a test session runs the interpreter)."""
    jobs = [(launch, arch) for launch in launches]
    if not jobs:
        return []
    with _pool(min(workers or os.cpu_count() or 1, len(jobs))) as pool:
        return list(pool.map(_asm_one, jobs))
