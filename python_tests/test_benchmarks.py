"""benchmarks/ (run.py, harness.py): the CPU path of one case end to end on a tiny shape
(timings, launch counts, the roofline columns and the markdown), the roofline
arithmetic, the backward-mode step, and that the CUDA-only parts import and refuse CPU
inputs. No speed is asserted; this checks what the columns mean.
"""
from __future__ import annotations

import contextlib
import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"


@contextlib.contextmanager
def _benchmarks_on_path():
    """benchmarks/harness.py as ``harness`` (the name python_tests/harness.py holds in
    this session) and benchmarks/ on sys.path, for imports made inside."""
    saved_path, saved = list(sys.path), sys.modules.get("harness")
    sys.path.insert(0, str(BENCH))
    sys.modules["harness"] = _load("harness")
    try:
        yield
    finally:
        sys.path[:] = saved_path
        sys.modules["harness"] = saved


_LOADED = {}


def _load(name):
    if name not in _LOADED:
        spec = importlib.util.spec_from_file_location(f"benchmarks_{name}", BENCH / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        _LOADED[name] = sys.modules[spec.name] = module  # dataclasses look their module up
        spec.loader.exec_module(module)
    return _LOADED[name]


@pytest.fixture(scope="module")
def bench():
    with _benchmarks_on_path():
        return _load("harness"), _load("run"), _load("cases_spectrum")


def test_roofline_arithmetic(bench):
    harness, _, _ = bench
    # 2 GB at 1000 GB/s is 2 ms; 10 launches at 5 us are 0.05 ms
    assert harness.roofline_ms(2 * 10 ** 9, 1000.0, 10, 5.0) == pytest.approx(2.05)
    assert harness.roofline_ms(None, 1000.0, 10, 5.0) is None and harness.roofline_ms(1, 1.0, None, 1.0) is None


def test_device_events_split_into_kernels_memcpys_and_memsets(bench):
    harness, _, _ = bench
    names = ["triton_poi_fused_0", "Memcpy DtoD (Device -> Device)", "Memset (Device)", "void at::native::fill<>",
             "Memcpy HtoD (Pageable -> Device)", "ampere_sgemm_128x64_nn"]
    assert harness.split_device_events(names) == (3, 2, 1)


def test_backward_mode_reruns_one_backward_without_accumulating(bench):
    harness, _, _ = bench
    x = torch.randn(5, requires_grad=True)
    calls = []

    def fn(x):
        calls.append(1)
        return (x * x).sum()

    setup, timed = harness.step(fn, [x], "backward")
    for _ in range(3):
        setup()
        timed()
        torch.testing.assert_close(x.grad, 2 * x.detach())
    assert len(calls) == 1  # one forward, its backward repeated


def test_cpu_run_of_a_tiny_case(bench):
    harness, run, cases = bench
    limits = run.machine_limits("cpu", copy_bytes=8 * 2 ** 20)
    assert limits["copy_gbps"] > 0 and limits["launch_us"] > 0
    case = cases.make_case((2, 3, 8, 4, 4), "cpu")
    rows = run.bench_case(case, "cpu", warmup=1, reps=3, limits=limits, providers=["vkd", "eager"], budget_s=0.01)
    assert [(r["provider"], r["mode"]) for r in rows] == [(p, m) for p in ("vkd", "eager") for m in harness.MODES]
    for r in rows:
        assert set(run.COLUMNS) - {"device", "torch", "date"} <= set(r)
        assert r["kernels_full"] is None and r["memcpys"] is None and r["launches"] > 0
        assert r["min_bytes"] == case.min_bytes[r["mode"]]
        expected = r["min_bytes"] / (limits["copy_gbps"] * 1e9) * 1e3 + r["launches"] * limits["launch_us"] * 1e-3
        assert r["roofline_ms"] == pytest.approx(expected)
        assert r["of_roofline"] == pytest.approx(r["roofline_ms"] / r["median_ms"])
        assert r["gbps"] == pytest.approx(r["min_bytes"] / (r["median_ms"] * 1e-3) / 1e9)
        assert r["p20_ms"] <= r["median_ms"] <= r["p80_ms"] and math.isfinite(r["peak_mb"])
    by = {(r["provider"], r["mode"]): r for r in rows}
    assert by["vkd", "full"]["launches"] < by["eager", "full"]["launches"]  # one fused op against the torch.fft code
    table = run.markdown([{"device": "cpu (test)", **r} for r in rows], "## spectrum")
    assert "copy bandwidth" in table and "launch cost" in table
    assert f"| 2x3x8x4x4 | full | {run._cell(by['vkd', 'full'])} |" in table
    assert f"{100 * by['vkd', 'full']['of_roofline']:.0f}%]" in table


def test_cuda_only_parts_refuse_the_cpu(bench):
    harness, run, _ = bench
    with pytest.raises(ValueError, match="CUDA inputs"):
        harness.graphed(lambda x: x.sum(), [torch.randn(3, requires_grad=True)])
    with _benchmarks_on_path(), pytest.raises(SystemExit):
        run.main(["--device", "cpu", "--cuda-graph", "--op", "spectrum"])
    from vkd_kernels.check.bench import copy_bandwidth, do_bench_ms  # noqa: F401  (the CUDA timing harness uses)


_FAULTS = """
import resource, sys, torch
sys.path.insert(0, {bench!r})
import harness
kept = harness.keep_freed_memory(pool_mb=256) if {keep} else True
small = torch.ones(1 << 16)                       # a small block in the heap first
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
big = torch.ones(1 << 25)                         # 128 MB, written at once
print(kept, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc and ru_minflt: Linux only")
def test_kept_memory_serves_a_large_buffer_without_page_faults():
    """With keep_freed_memory a fresh 128 MB tensor comes from the pre-written pool: almost no
    page faults, against one per page with the C library's defaults (32 768 of 4 KB; 64 if
    transparent huge pages are always on)."""
    import subprocess
    faults = {}
    for keep in (True, False):
        out = subprocess.run([sys.executable, "-c", _FAULTS.format(bench=str(BENCH), keep=keep)],
                             capture_output=True, text=True, check=True).stdout.split()
        if out[0] != "True":
            pytest.skip("not glibc: mallopt is unavailable")
        faults[keep] = int(out[1])
    assert faults[True] < 32 <= faults[False], faults


def test_weight_gram_microbenchmark(capsys):
    """benchmarks/weight_gram.py: the figures of one weight on a tiny shape, and its refusals."""
    gram = _load("weight_gram")
    gram.main(["--shape", "6", "5", "3", "3", "--repeats", "2", "--warmup", "0"])
    out = json.loads(capsys.readouterr().out)
    assert (out["rows"], out["P"], out["threads"], out["dtype"]) == (30, 9, 1, "float32")
    assert out["ns_per_row"] == pytest.approx(out["median_ms"] * 1e6 / 30)
    for bad in (["--shape", "4", "4"], ["--shape", "4", "0", "3"], ["--repeats", "0"]):
        with pytest.raises(SystemExit):
            gram.main(bad)


def test_a_failing_provider_is_reported_and_the_others_still_run(bench, monkeypatch):
    """A provider that raises (a compile or CUDA error on a first GPU run) costs its own rows
    only: the other providers are measured and the failure is listed for the report."""
    harness, run, cases = bench
    limits = run.machine_limits("cpu", copy_bytes=8 * 2 ** 20)
    case = cases.make_case((2, 3, 8, 4, 4), "cpu")

    def broken():
        raise RuntimeError("CompilationError: ...")
    case.providers["vkd"] = broken
    monkeypatch.setattr(run, "FAILURES", [])
    rows = run.bench_case(case, "cpu", warmup=1, reps=3, limits=limits, providers=["vkd", "eager"], budget_s=0.01)
    assert {r["provider"] for r in rows} == {"eager"}
    assert len(run.FAILURES) == 1 and "vkd: RuntimeError: CompilationError" in run.FAILURES[0]
