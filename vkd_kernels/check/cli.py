"""The command line of ``python -m vkd_kernels.check`` (see the package docstring)."""
from __future__ import annotations

import argparse
import datetime
import logging
import os
import platform
import re
import signal
import sys
import threading
import time
import zlib
from typing import Dict, List, Optional

import torch

import vkd_kernels

from . import cases as cases_module
from . import runner
from .runner import Check, dtype_name

log = logging.getLogger("vkd_kernels.check")

FUSED = ("triton", "cuda", "cpu")
DTYPES = {"float32": torch.float32, "float64": torch.float64, "float16": torch.float16, "bfloat16": torch.bfloat16}
TOLERANCE_RULE = (
    "A check passes when every output and every gradient is finite, has the reference's shape and dtype, the "
    "float64 expectation is not all zero, and max |got - expected| / max |expected| <= the dtype's fixed "
    "tolerance (vkd_kernels.check.runner.TOLERANCE, which the test suite uses too; never derived from a run's own "
    "errors). Inputs: seeded float64 values rounded to the dtype; expected: backend='reference' on those values in "
    "float64. log_magnitude runs at eps 1e-2 (README).")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m vkd_kernels.check",
        description="Check every op x fused backend x dtype against a float64 reference (outputs NaN-poisoned; "
                    "forward and every gradient; odd shapes, channels_last_3d, TSM), and on CUDA also on a side "
                    "stream, under torch.cuda.set_sync_debug_mode('error'), in a captured CUDA graph and on a second "
                    "device; then optionally compute-sanitizer and the headline benchmark. Writes check.md and "
                    "check.json; exits 1 if anything failed (every failure is listed), 0 if all passed.")
    p.add_argument("--bench", action="store_true",
                   help="also time the headline shapes (CUDA only; triton.testing.do_bench, L2 flushed) and report "
                        "ms, GB/s of the minimal bytes and %% of the device copy bandwidth measured in the same run")
    p.add_argument("--sanitize", action="store_true",
                   help="also run the cuda backend's quick cases under compute-sanitizer memcheck, racecheck and "
                        "initcheck (child processes, in parallel; CUDA and compute-sanitizer needed)")
    p.add_argument("--sanitize-timeout", type=float, default=None, metavar="S",
                   help="seconds the compute-sanitizer runs may take from their start (default 240)")
    p.add_argument("--backends", nargs="+", choices=FUSED, metavar="BACKEND",
                   help="fused backends to check: triton, cuda, cpu (default: triton cuda on a GPU; cpu triton without "
                        "one, where triton runs under TRITON_INTERPRET=1 on CPU tensors and cuda is reported skipped)")
    p.add_argument("--ops", nargs="+", choices=cases_module.OPS, metavar="OP",
                   help="ops to check (default: all): " + ", ".join(cases_module.OPS))
    p.add_argument("--dtypes", nargs="+", choices=tuple(DTYPES), metavar="DTYPE",
                   help="input dtypes (default: float32 float64 float16 bfloat16)")
    p.add_argument("--quick", action=argparse.BooleanOptionalAction, default=None,
                   help="only the first (smallest) case of each op; the default without a GPU, --no-quick runs all")
    p.add_argument("--out", metavar="DIR",
                   help="where check.md and check.json go (default: benchmarks/results/<device>/ under the current "
                        "directory, <device> the slugified GPU name or cpu-<N>cores)")
    p.add_argument("--only-correctness", action="store_true",
                   help="the default-stream comparison only: no side-stream, sync, graph, second-device checks "
                        "(what --sanitize's child runs use)")
    p.add_argument("--no-poison", action="store_true",
                   help="leave output buffers uninitialised instead of NaN (VKD_POISON_OUTPUTS=0; --sanitize's "
                        "initcheck run uses it so that a read of an unwritten buffer is reported)")
    return p


def cpu_model() -> str:
    """This CPU's model name (/proc/cpuinfo on Linux, else platform.processor())."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown model"


def device_slug(device: str = "") -> tuple:
    """(device name, results folder) of ``device`` ("cuda" / "cpu"; default: cuda when present).
    A GPU is its name, slugified; a CPU 'cpu (<model>, <N> cores, <ISA>)', the ISA that torch's
    CPU kernels use (AVX512, AVX2, ...), in folder cpu-<N>cores: two machines of the same core
    count share the folder, and the name in every report says which one measured it."""
    if device == "cuda" or (not device and torch.cuda.is_available()):
        name = torch.cuda.get_device_name(0)
        return name, re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    cores = os.cpu_count()
    return (f"cpu ({cpu_model()}, {cores} cores, {torch.backends.cpu.get_cpu_capability()})", f"cpu-{cores}cores")


def environment(device_name: str) -> dict:
    try:
        import triton
        triton_version = triton.__version__
    except ImportError:
        triton_version = "absent"
    return {"device": device_name, "device_count": torch.cuda.device_count() if torch.cuda.is_available() else 0,
            "torch": torch.__version__, "triton": triton_version, "cuda": torch.version.cuda or "none",
            "python": platform.python_version(), "extension": vkd_kernels.EXT_ERROR or "vkd_kernels._C loaded",
            "triton_interpret": os.environ.get("TRITON_INTERPRET", "0"),
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}


def backend_device(backend: str, cuda: bool) -> Optional[torch.device]:
    if backend == "cpu":
        return torch.device("cpu")
    if cuda:
        return torch.device("cuda", 0)
    return torch.device("cpu") if backend == "triton" else None


def unusable(backend: str, device: Optional[torch.device]) -> Optional[str]:
    """Why ``backend`` cannot run here (from the op's own refusal), or None."""
    if device is None:
        return "the cuda backend needs CUDA tensors and no GPU is visible"
    if backend == "triton" and device.type == "cpu" and os.environ.get("TRITON_INTERPRET") != "1":
        return "no GPU and TRITON_INTERPRET is not 1 (python -m vkd_kernels.check sets it before Triton loads)"
    try:
        vkd_kernels.attention_map(torch.ones(1, 2, 3, device=device), backend=backend)
    except ValueError as error:
        if "cannot run" in str(error):
            return str(error)
    except Exception:  # noqa: BLE001 - a broken kernel is the checks' business, not a skip
        pass
    return None


class Run:
    """Collects checks, skips and phase times; logs failures as they happen."""

    def __init__(self):
        self.checks: List[Check] = []
        self.skipped: List[dict] = []
        self.phases: Dict[str, float] = {}
        self.broken: Optional[str] = None     # the CUDA context stopped working
        self.no_graphs: Optional[str] = None  # why no further capture can be attempted
        self.stopped: Optional[str] = None    # SIGTERM or Ctrl-C: what was done so far is reported

    def add(self, check: Check) -> None:
        self.checks.append(check)
        if not check.passed:
            log.error("FAIL %s [%s] %s %s %s: %s", check.op, check.case, check.backend, check.dtype, check.mode,
                      check.error)

    def skip(self, what: str, why: str) -> None:
        self.skipped.append({"what": what, "why": why})
        log.info("skipped %s: %s", what, why)


def check_all(run: Run, selected, backends: Dict[str, torch.device], dtypes, gpu_modes: List[str],
              plain: bool = True) -> None:
    """Every case x dtype x backend x mode; a failure is recorded and the run goes on.
    ``gpu_modes`` run on CUDA backends for each op's first case in every dtype and for
    every case in float32; ``plain`` (every case, dtype and backend) unless False."""
    for case in selected:
        quick_case = case is cases_module.ALL[case.op][0]
        seed = zlib.crc32(case.label.encode())
        for dtype in dtypes:
            refs: Dict[tuple, runner.Reference] = {}

            def ref(device, new=False):
                key = (str(device), new)
                if key not in refs:
                    refs[key] = runner.reference(case, dtype, device, seed + new)
                return refs[key]
            for backend, device in backends.items():
                modes, synced = ["plain"] if plain else [], ""
                if device.type == "cuda" and (quick_case or dtype == torch.float32):
                    modes += gpu_modes
                for mode in modes:
                    if run.broken:
                        return
                    start = time.perf_counter()
                    try:
                        r = ref(device)
                    except Exception as error:  # noqa: BLE001
                        run.add(runner.failed(case, "reference", dtype, mode, error))
                        break
                    if mode == "graph" and (run.no_graphs or synced):
                        if run.no_graphs:
                            run.skip(f"graph {case.label} {backend} {dtype_name(dtype)}", run.no_graphs)
                        else:
                            run.add(Check(case.op, case.name, backend, dtype_name(dtype), "graph", False,
                                          "not captured: the sync check found a host synchronisation, which is "
                                          "illegal in a CUDA graph capture (" + synced + ")"))
                        continue
                    try:
                        if mode == "graph":
                            check = runner.run_graph(case, backend, dtype, device, r, ref(device, True))
                        else:
                            check = getattr(runner, f"run_{mode}")(case, backend, dtype, device, r)
                    except Exception as error:  # noqa: BLE001 - listed as a failure, the run goes on
                        check = runner.failed(case, backend, dtype, mode, error)
                        if device.type == "cuda":
                            why = runner.context_healthy(device)
                            if why:
                                run.broken = f"after {case.label} {backend} {dtype_name(dtype)} {mode}: {why}"
                            elif mode == "graph":
                                stuck = runner.allocator_usable(device)
                                if stuck:
                                    run.no_graphs = (f"the failed capture of {case.label} {backend} "
                                                     f"{dtype_name(dtype)} left the caching allocator unusable for "
                                                     f"captures: {stuck}")
                    if mode == "sync" and not check.passed and "synchroniz" in (check.error or ""):
                        synced = check.error[:300]
                    check.seconds = round(time.perf_counter() - start, 3)
                    run.add(check)
        log.info("checked %s (%s)", case.label, ", ".join((["plain"] if plain else []) + gpu_modes))


def _interrupt(signum, frame):
    raise KeyboardInterrupt(signal.Signals(signum).name)


def main(argv: Optional[List[str]] = None) -> int:
    args = parser().parse_args(argv)
    started = time.perf_counter()
    cuda = torch.cuda.is_available()
    quick = (not cuda) if args.quick is None else args.quick
    ops = args.ops or list(cases_module.OPS)
    dtypes = [DTYPES[d] for d in (args.dtypes or DTYPES)]
    # without a GPU the cuda backend is listed too, so that the report says why it did not run
    wanted = args.backends or (["triton", "cuda"] if cuda else ["cpu", "triton", "cuda"])
    saved_poison = os.environ.get("VKD_POISON_OUTPUTS")
    # a run stopped at a time limit (timeout's SIGTERM) still writes the report of what it checked
    saved_term = (signal.signal(signal.SIGTERM, _interrupt)
                  if threading.current_thread() is threading.main_thread() else None)
    os.environ["VKD_POISON_OUTPUTS"] = "0" if args.no_poison else "1"
    run = Run()
    try:
        backends = {}
        for name in dict.fromkeys(wanted):
            device = backend_device(name, cuda)
            why = unusable(name, device)
            if why:
                run.skip(f"backend {name}", why)
            else:
                backends[name] = device
        gpu_modes = []
        if args.only_correctness:
            pass
        elif not cuda:
            run.skip("side-stream, sync-debug, CUDA-graph, autocast and second-device checks", "no GPU is visible")
        else:
            gpu_modes = ["stream", "sync", "graph", "autocast"]
            if torch.cuda.device_count() <= 1:
                run.skip("second-device check (cuda:1 while cuda:0 is current)", "only one GPU is visible")

        pending = None
        if args.sanitize:
            from . import sanitize
            tool = sanitize.find() if cuda else None
            if not cuda:
                run.skip("compute-sanitizer", "no GPU is visible")
            elif "cuda" not in backends:
                run.skip("compute-sanitizer", "the cuda backend is not checked or cannot run here")
            elif tool is None:
                run.skip("compute-sanitizer", "not found (PATH, CUDA_HOME, CUDA_PATH, /usr/local/cuda, nvidia wheel)")
            else:
                log.info("compute-sanitizer %s: memcheck, racecheck, initcheck started", tool)
                pending = sanitize.Pending(tool, ops, [dtype_name(d) for d in dtypes],
                                           timeout_s=args.sanitize_timeout or sanitize.TIMEOUT_S,
                                           workdir=os.path.join(args.out, "sanitizer") if args.out else None)

        phase = time.perf_counter()
        try:
            check_all(run, cases_module.select(ops, quick), backends, dtypes, gpu_modes)
        except KeyboardInterrupt as stop:
            run.stopped = f"stopped by {stop or 'Ctrl-C'} after {time.perf_counter() - started:.0f} s"
        run.phases["correctness"] = time.perf_counter() - phase
        if run.broken or run.stopped:
            why = run.stopped or f"the CUDA context stopped working {run.broken}"
            run.add(Check("(all)", "(remaining)", "-", "-", "-", False,
                          f"{why}; the remaining checks and the benchmark did not run"))

        sanitizer = []
        if pending is not None and run.stopped:
            pending.kill()
            run.skip("compute-sanitizer", run.stopped)
        elif pending is not None:
            phase = time.perf_counter()
            try:
                sanitizer = [s.as_dict() for s in pending.results()]
            except KeyboardInterrupt as stop:  # still write the report, and say so
                pending.kill()
                run.stopped = f"stopped by {stop or 'Ctrl-C'} waiting for compute-sanitizer"
                run.skip("compute-sanitizer", run.stopped)
                run.add(Check("(all)", "(remaining)", "-", "-", "-", False,
                              f"{run.stopped}; the sanitizer results and the benchmark are missing"))
            for s in sanitizer:
                (log.info if s["passed"] else log.error)("compute-sanitizer %s: %s", s["tool"],
                                                         "pass" if s["passed"] else s["error"])
            run.phases["sanitizer (wait)"] = time.perf_counter() - phase

        bench = None
        if args.bench:
            bench_backends = [b for b, d in backends.items() if d.type == "cuda"]
            if not cuda:
                run.skip("benchmark", "it times CUDA kernels and no GPU is visible (benchmarks/run.py measures the "
                                      "CPU path)")
            elif run.broken or run.stopped:
                run.skip("benchmark", run.stopped or "the CUDA context stopped working")
            else:
                from . import bench as bench_module
                phase = time.perf_counter()
                try:
                    copy, rows = bench_module.run(torch.device("cuda", 0), bench_backends + ["reference"], ops)
                    bench = {"copy_gbps": copy, "rows": [r.as_dict() for r in rows]}
                except Exception as error:  # noqa: BLE001
                    bench = {"copy_gbps": None, "rows": [], "error": f"{type(error).__name__}: {error}"}
                    log.error("benchmark failed: %s", bench["error"])
                except KeyboardInterrupt as stop:
                    run.stopped = f"stopped by {stop or 'Ctrl-C'} during the benchmark"
                    bench = {"copy_gbps": None, "rows": [], "error": run.stopped}
                run.phases["benchmark"] = time.perf_counter() - phase

        # last: a kernel that ignores the inputs' device can leave a sticky illegal-address
        # error that ends every later CUDA call in this process
        if cuda and not args.only_correctness and torch.cuda.device_count() > 1 and not (run.broken or run.stopped):
            phase = time.perf_counter()
            cuda_backends = {b: d for b, d in backends.items() if d.type == "cuda"}
            check_all(run, cases_module.select(ops, quick), cuda_backends, dtypes, ["device1"], plain=False)
            run.phases["second device"] = time.perf_counter() - phase
            if run.broken:
                run.add(Check("(all)", "(remaining)", "-", "-", "device1", False,
                              f"the CUDA context stopped working {run.broken}; the remaining checks did not run"))
            gpu_modes = gpu_modes + ["device1"]

        device_name, slug = device_slug()
        failed = [c for c in run.checks if not c.passed]
        bench_failed = 0 if bench is None else sum(1 for r in bench["rows"] if r["error"]) + ("error" in bench)
        sanitizer_failed = sum(1 for s in sanitizer if not s["passed"])
        exit_code = 1 if failed or bench_failed or sanitizer_failed else 0
        data = {
            "command": "python -m vkd_kernels.check " + " ".join(sys.argv[1:] if argv is None else argv),
            "exit_code": exit_code,
            "seconds": time.perf_counter() - started,
            "environment": environment(device_name),
            "settings": {"backends": {b: str(d) for b, d in backends.items()}, "ops": ops,
                         "dtypes": [dtype_name(d) for d in dtypes], "quick": quick, "modes": ["plain"] + gpu_modes,
                         "poison": not args.no_poison},
            "summary": {"checks": len(run.checks), "passed": len(run.checks) - len(failed), "failed": len(failed),
                        "sanitizer_failed": sanitizer_failed, "bench_failed": bench_failed},
            "tolerance_rule": TOLERANCE_RULE,
            "tolerances": [{"dtype": dtype_name(d), "tolerance": t, "why": runner.TOLERANCE_WHY[d]}
                           for d, t in runner.TOLERANCE.items()],
            "skipped": run.skipped,
            "checks": [vars(c) for c in run.checks],
            "sanitizer": sanitizer,
            "bench": bench,
            "phases": {k: round(v, 2) for k, v in run.phases.items()},
        }
        from . import report
        out_dir = args.out or os.path.join("benchmarks", "results", slug)
        paths = report.write(out_dir, data)
        log.info("%d checks, %d failed%s; report: %s", len(run.checks), len(failed),
                 "".join(f", {n} {what} failed" for n, what in ((sanitizer_failed, "sanitizer runs"),
                                                                   (bench_failed, "benchmark rows")) if n),
                 " and ".join(paths))
        if data["seconds"] > 300:
            log.warning("the run took %.0f s, more than the 5-minute budget of a lent GPU: --quick checks only the "
                        "first case of each op", data["seconds"])
        return exit_code
    finally:
        if saved_term is not None:
            signal.signal(signal.SIGTERM, saved_term)
        if saved_poison is None:
            os.environ.pop("VKD_POISON_OUTPUTS", None)
        else:
            os.environ["VKD_POISON_OUTPUTS"] = saved_poison
