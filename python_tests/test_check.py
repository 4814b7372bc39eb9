"""python -m vkd_kernels.check: the CPU run of the command passes and says why the GPU
parts are skipped; a broken backend (wrong value, unwritten output, wrong teacher
gradient) makes it exit non-zero and names the op, backend, dtype, case and error."""
import json
import math
import os
import subprocess
import sys

import pytest
import torch

from vkd_kernels.check import cases, cli, runner

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _no_nan_constants(name):
    raise AssertionError(f"the JSON report holds {name}")


def load(out):
    with open(os.path.join(out, "check.json")) as f:
        return json.load(f, parse_constant=_no_nan_constants)


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU run of the command (on a GPU it runs the GPU checks)")
def test_the_command_passes_on_cpu_and_says_what_it_skipped(tmp_path):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("TRITON_INTERPRET", None)     # the command sets it itself
    env.pop("VKD_POISON_OUTPUTS", None)   # and this one
    done = subprocess.run([sys.executable, "-m", "vkd_kernels.check", "--bench", "--sanitize", "--out", str(tmp_path)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    data = load(tmp_path)
    assert data["exit_code"] == 0 and data["settings"]["poison"] and data["environment"]["triton_interpret"] == "1"
    assert set(data["settings"]["backends"]) == {"cpu", "triton"}
    # every op x {cpu, triton} x 4 dtypes, quick cases, plain mode
    combos = {(c["op"], c["backend"], c["dtype"]) for c in data["checks"]}
    assert combos == {(op, b, d) for op in cases.OPS for b in ("cpu", "triton") for d in cli.DTYPES}
    assert data["summary"]["failed"] == 0 and data["summary"]["checks"] == len(data["checks"]) == len(combos)
    assert all(c["passed"] and c["errors"] for c in data["checks"])
    skipped = {s["what"]: s["why"] for s in data["skipped"]}
    assert "CUDA tensors" in skipped["backend cuda"]
    gpu_modes = "side-stream, sync-debug, CUDA-graph, autocast and second-device checks"
    for what in (gpu_modes, "compute-sanitizer", "benchmark"):
        assert "no GPU" in skipped[what]
    md = (tmp_path / "check.md").read_text()
    assert md.startswith("# vkd_kernels.check on cpu") and ": PASS" in md.splitlines()[0]
    assert "## Failures" not in md and all(op in md for op in cases.OPS)
    assert "skipped" in done.stderr and "0 failed" in done.stderr


def run_in_process(tmp_path, *args):
    code = cli.main(["--out", str(tmp_path), "--dtypes", "float32", "bfloat16", *args])
    return code, load(tmp_path)


def failures(data):
    return [c for c in data["checks"] if not c["passed"]]


def test_a_wrong_value_fails_only_that_backend(tmp_path, monkeypatch):
    from vkd_kernels.gkd.apply import native
    original = native.affine

    def wrong(x, lam, sums, out, backward=None, scale=1.0):  # every output and dF 5% too large
        original(x, lam, sums, out, backward, scale)
        if out is not None:
            out.mul_(1.05)
    monkeypatch.setattr(native, "affine", wrong)
    code, data = run_in_process(tmp_path, "--ops", "attention_apply", "--backends", "cpu", "triton")
    assert code == 1 and data["exit_code"] == 1
    bad = failures(data)
    assert {(c["op"], c["backend"], c["dtype"]) for c in bad} == {("attention_apply", "cpu", "float32"),
                                                                 ("attention_apply", "cpu", "bfloat16")}
    for c in bad:
        assert c["case"] == cases.APPLY[0].name and c["mode"] == "plain"
        assert "out: relative error" in c["error"] and "dF: relative error" in c["error"]
    md = (tmp_path / "check.md").read_text()
    assert ": FAIL" in md.splitlines()[0] and "| attention_apply | cpu | float32 | odd (2,5,7,5,3) | plain |" in md


def test_an_unwritten_gradient_is_caught_by_the_poison(tmp_path, monkeypatch):
    monkeypatch.delenv("VKD_POISON_OUTPUTS", raising=False)  # the command poisons by itself
    from vkd_kernels.spectrum import native
    monkeypatch.setattr(native, "backward", lambda *args: None)
    code, data = run_in_process(tmp_path, "--ops", "temporal_spectrum_loss", "--backends", "cpu")
    assert code == 1
    bad = failures(data)
    assert len(bad) == 2 and all("dstudent:" in c["error"] and "unwritten" in c["error"] for c in bad)
    assert "VKD_POISON_OUTPUTS" not in os.environ  # restored


def test_a_wrong_teacher_gradient_is_caught(tmp_path, monkeypatch):
    from vkd_kernels.weights import native
    original = native.gram_backward

    def wrong(plan, tables, weights, M):  # the last weight is the teacher's: the end of the last grad
        grads = original(plan, tables, weights, M)
        grads[-1].view(-1)[-weights[-1].numel():].neg_()
        return grads
    monkeypatch.setattr(native, "gram_backward", wrong)
    code, data = run_in_process(tmp_path, "--ops", "weight_spectrum_distance", "--backends", "cpu")
    assert code == 1
    bad = failures(data)
    assert bad and all("dteacher2: relative error" in c["error"] and "dstudent" not in c["error"] for c in bad)


def test_a_wrong_triton_kernel_fails(tmp_path, monkeypatch):
    from vkd_kernels.attention import triton_kernels
    original = triton_kernels.forward

    def wrong(x, p, a):
        original(x, p, a)
        a[0].add_(1.0)  # the first sample's map
    monkeypatch.setattr(triton_kernels, "forward", wrong)
    code, data = run_in_process(tmp_path, "--ops", "attention_map", "--backends", "triton")
    assert code == 1 and len(failures(data)) == 2
    assert all(c["backend"] == "triton" and "out: relative error" in c["error"] for c in failures(data))


def test_compare_rejects_what_cannot_be_right():
    e = torch.tensor([1.0, -2.0], dtype=torch.float64)
    assert runner.compare("x", e.float(), e, e.float(), torch.float32)[0] is None
    assert "NaN/inf" in runner.compare("x", torch.tensor([1.0, math.nan]), e, None, torch.float32)[0]
    assert "shape" in runner.compare("x", torch.ones(3), e, None, torch.float32)[0]
    assert "dtype" in runner.compare("x", e.half(), e, e.float(), torch.float16)[0]
    assert "cannot fail" in runner.compare("x", torch.zeros(2), torch.zeros(2, dtype=torch.float64), None,
                                           torch.float32)[0]
    assert "relative error" in runner.compare("x", e.float() * 1.001, e, None, torch.float32)[0]
    # fixed bounds: a float32 result off by 3e-4 fails even where eager float32 is off as much
    eager = e * (1 + 1e-4)
    assert "relative error" in runner.compare("x", e.float() * (1 + 3e-4), e, eager.float(), torch.float32)[0]
    assert runner.compare("x", e * (1 + 1e-9), e, eager, torch.float64)[0] is not None


def test_help_documents_every_option():
    text = cli.parser().format_help()
    for option in ("--bench", "--sanitize", "--backends", "--ops", "--dtypes", "--quick", "--out"):
        assert option in text


class FakeCuda:
    """Stands in for the torch.cuda calls of the GPU modes so that their Python runs on
    the CPU (what CUDA itself does there is checked only on a GPU). ``replay`` does
    nothing: a graph check that compared stale results would pass with it."""

    class Stream:
        def __init__(self, *args, **kwargs):
            pass

        def wait_stream(self, other):
            pass

    class CUDAGraph:
        def replay(self):
            pass

    class _Context:
        def __init__(self, *args, **kwargs):
            pass

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    def __init__(self, monkeypatch):
        self.debug_modes = []
        for name, value in (("synchronize", lambda *a: None), ("Stream", self.Stream), ("stream", self._Context),
                            ("_sleep", lambda cycles: None), ("current_stream", lambda *a: self.Stream()),
                            ("set_stream", lambda s: None), ("set_sync_debug_mode", self.debug_modes.append),
                            ("CUDAGraph", self.CUDAGraph), ("graph", self._Context),
                            ("graph_pool_handle", lambda: (0, 1))):
            monkeypatch.setattr(torch.cuda, name, value)


def test_the_gpu_modes_run_and_the_graph_check_rejects_a_stale_replay(monkeypatch):
    fake = FakeCuda(monkeypatch)
    case, cpu = cases.APPLY[0], torch.device("cpu")
    ref = runner.reference(case, torch.float32, cpu, 1)
    assert runner.run_stream(case, "cpu", torch.float32, cpu, ref).passed
    assert runner.run_sync(case, "cpu", torch.float32, cpu, ref).passed
    assert fake.debug_modes == ["error", "default"]
    stale = runner.run_graph(case, "cpu", torch.float32, cpu, ref, runner.reference(case, torch.float32, cpu, 2))
    assert not stale.passed and "out: relative error" in stale.error


@pytest.mark.parametrize("case", [cases.HEAD[0], cases.WEIGHT_SPECTRUM[0]], ids=lambda c: c.op)
def test_the_autocast_mode_holds_the_plain_bounds(case):
    """Under CPU autocast (bfloat16) the head tail and the weight-spectrum backward, whose
    bodies run GEMMs, meet the float32 bounds; a GEMM that autocast does round fails."""
    cpu = torch.device("cpu")
    assert runner.run_autocast(case, "cpu", torch.float32, cpu, runner.reference(case, torch.float32, cpu, 1)).passed

    def call(backend, tensors):  # times 1.001 from a GEMM outside the op: bfloat16 makes it 1.0
        like = dict(dtype=tensors[0].dtype, device=tensors[0].device)
        factor = torch.mm(torch.full((1, 1), 1.001, **like), torch.ones(1, 1, **like))[0, 0]
        return tuple(out * factor for out in runner.as_tuple(case.call(backend, tensors)))
    scaled = cases.Case(case.op, case.name, case.names, case.grad, case.make, call)
    ref = runner.reference(scaled, torch.float32, cpu, 1)
    assert runner.run_plain(scaled, "cpu", torch.float32, cpu, ref).passed
    rounded = runner.run_autocast(scaled, "cpu", torch.float32, cpu, ref)
    assert not rounded.passed and "relative error" in rounded.error


def test_the_sync_mode_is_reset_when_the_op_raises(monkeypatch):
    fake = FakeCuda(monkeypatch)
    case, cpu = cases.APPLY[0], torch.device("cpu")
    ref = runner.reference(case, torch.float32, cpu, 1)
    calls = []

    def call(backend, tensors):
        calls.append(backend)
        if len(calls) > 1:  # the warm-up passes, the call under the debug mode "syncs"
            raise RuntimeError("called a synchronizing CUDA operation")
        return case.call(backend, tensors)
    broken = cases.Case(case.op, case.name, case.names, case.grad, case.make, call)
    with pytest.raises(RuntimeError, match="synchronizing"):
        runner.run_sync(broken, "cpu", torch.float32, cpu, ref)
    assert fake.debug_modes == ["error", "default"]


def test_a_host_sync_fails_the_graph_check_without_a_capture(monkeypatch):
    """check_all's order on a CUDA backend: plain, stream, sync, graph; after a sync
    failure the capture (which that sync would invalidate) is not attempted but listed."""
    calls = []

    def mode(name, passed=True, error=None):
        def run(case, backend, dtype, device, *refs):
            calls.append(name)
            return runner.Check(case.op, case.name, backend, runner.dtype_name(dtype), name, passed, error)
        return run
    monkeypatch.setattr(runner, "reference", lambda *args: None)
    for name in ("plain", "stream", "graph"):
        monkeypatch.setattr(runner, f"run_{name}", mode(name))
    monkeypatch.setattr(runner, "run_sync", mode("sync", False, "RuntimeError: called a synchronizing CUDA operation"))
    run = cli.Run()
    cli.check_all(run, cases.WEIGHTS[:1], {"cuda": torch.device("cuda", 0)}, [torch.float32],
                  ["stream", "sync", "graph"])
    assert calls == ["plain", "stream", "sync"]
    graph = [c for c in run.checks if c.mode == "graph"]
    assert len(graph) == 1 and not graph[0].passed and "not captured" in graph[0].error
    assert "synchronizing" in graph[0].error


def _fake_gpu_run(monkeypatch):
    """cli.main as on a GPU machine, the correctness phase done at once (no GPU needed)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(cli, "backend_device", lambda name, cuda: torch.device("cpu"))
    monkeypatch.setattr(cli, "unusable", lambda name, device: None)
    monkeypatch.setattr(cli, "check_all", lambda *a, **k: None)
    monkeypatch.setattr(cli, "device_slug", lambda device="": ("FAKE GPU", "fake-gpu"))


@pytest.mark.parametrize("failure", [RuntimeError("CUDA error: an illegal memory access"),
                                     KeyboardInterrupt("SIGTERM")])
def test_a_failed_benchmark_is_reported_not_fatal(failure, tmp_path, monkeypatch):
    from vkd_kernels.check import bench

    def fail(*args, **kwargs):
        raise failure
    _fake_gpu_run(monkeypatch)
    monkeypatch.setattr(bench, "run", fail)
    assert cli.main(["--quick", "--bench", "--ops", "attention_map", "--out", str(tmp_path)]) == 1
    md = (tmp_path / "check.md").read_text()
    assert "not measured" in md or "SIGTERM" in md


def test_sigterm_while_waiting_for_compute_sanitizer_still_writes_the_report(tmp_path, monkeypatch):
    """timeout's SIGTERM (here: a KeyboardInterrupt from the wait) kills the sanitizer runs,
    and the report says where the check stopped; the tools' logs are under --out."""
    from vkd_kernels.check import sanitize
    _fake_gpu_run(monkeypatch)
    tool = tmp_path / "compute-sanitizer"
    tool.write_text('#!/bin/sh\n[ "$1" = "--help" ] && exit 0\nsleep 60\n')  # a slow child
    tool.chmod(0o755)
    monkeypatch.setattr(sanitize, "find", lambda: str(tool))

    def interrupted(self):
        raise KeyboardInterrupt("SIGTERM")
    monkeypatch.setattr(sanitize.Pending, "results", interrupted)
    out = tmp_path / "out"
    assert cli.main(["--quick", "--sanitize", "--ops", "attention_map", "--out", str(out)]) == 1
    report = json.loads((out / "check.json").read_text())
    assert any("waiting for compute-sanitizer" in (c["error"] or "") for c in report["checks"])
    assert (out / "sanitizer" / "memcheck.log").exists()
