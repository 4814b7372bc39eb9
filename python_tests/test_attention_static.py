"""Static checks of the three attention ops (issue 13), without a GPU:

- launches per forward + backward at the benchmark headline shapes (launch_audit, Triton
  backend under the interpreter, kernels recorded but not run): attention transfer and
  attention_apply (both spatial options) <= 6, the GKD head tail <= its GEMMs + 6, counting memsets and
  memcpys as launches; 0 host syncs and 0 host-to-device copies per call after the first;
- programs per heavy launch at every benchmark shape (grids captured as a GPU launch
  would see them, triton_launches): >= 264, 2 per SM of a 132-SM H100.
"""
import ast
import os

import pytest
import torch
import triton_launches
from launch_audit import audit_headlines
from triton_aot import capture_calls

GEMMS = ("aten::mm", "aten::bmm", "aten::addmm", "aten::baddbmm")
MIN_PROGRAMS = 264
# The feature-sized kernels; the others touch map-, row-sum- or (N, J, C)-sized data.
HEAVY = {"vkd_kernels.attention.triton_kernels": ("_map_forward", "_map_backward"),
         "vkd_kernels.gkd.apply.triton_kernels": ("_apply_reduce", "_apply_affine")}

needs_interpreter = pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") != "1",
                                       reason="the launch audit runs the Triton backend on CPU tensors "
                                              "(TRITON_INTERPRET=1)")


@pytest.fixture(scope="module")
def audits():
    return audit_headlines(["attention_transfer_loss", "attention_apply", "attention_head_tail"])


def _launches(audit) -> int:
    return audit.total + sum(audit.memsets.values()) + sum(audit.memcpys.values())


APPLY_MEAN = "attention_apply (F 6x1024x8x7x7 spatial mean)"


@needs_interpreter
@pytest.mark.parametrize("op", ("attention_transfer_loss", "attention_apply"))
def test_transfer_and_apply_launch_at_most_six_times(audits, op):
    assert _launches(audits[op]) <= 6, str(audits[op])


@needs_interpreter
def test_apply_spatial_mean_launches_at_most_six(audits):
    """spatial="mean" is apply and its consumer (the mean over H, W and its broadcast
    backward) in one, within apply's own <= 6: three launches each way (the affine scales by
    1 / S, so the row sums need no division forward; backward the product m = q g replaces
    the reduce pass)."""
    audit = audits[APPLY_MEAN]
    assert _launches(audit) <= 6 and audit.total == 6, str(audit)


@needs_interpreter
def test_head_tail_launches_its_gemms_and_at_most_six_more(audits):
    audit = audits["attention_head_tail"]
    gemms = sum(n for name, n in audit.launches.items() if name in GEMMS)
    assert gemms and _launches(audit) - gemms <= 6, str(audit)


@needs_interpreter
@pytest.mark.parametrize("op", ("attention_transfer_loss", "attention_apply", APPLY_MEAN, "attention_head_tail"))
def test_no_host_sync_or_copy_after_the_first_call(audits, op):
    assert not audits[op].syncs and not audits[op].h2d, str(audits[op])


def _bench_shapes(name: str):
    """SHAPES of benchmarks/<name>.py, read as a literal (its imports need the benchmark harness)."""
    path = os.path.join(os.path.dirname(__file__), "..", "benchmarks", f"{name}.py")
    tree = ast.parse(open(path).read())
    value = next(node.value for node in tree.body if isinstance(node, ast.Assign)
                 and any(getattr(t, "id", None) == "SHAPES" for t in node.targets))
    return ast.literal_eval(value)


def test_the_captured_shapes_are_the_benchmark_shapes():
    assert _bench_shapes("cases_attention") == list(triton_launches.ATTENTION_BENCH_SHAPES)
    assert _bench_shapes("cases_apply") == list(triton_launches.APPLY_BENCH_SHAPES)
    assert _bench_shapes("cases_head") == list(triton_launches.HEAD_BENCH_SHAPES)


def test_every_heavy_launch_at_the_benchmark_shapes_has_enough_programs():
    calls = capture_calls(["attention_benchmarks"])
    heavy = [c for c in calls if c.launch.kernel in HEAVY.get(c.launch.module, ())]
    assert {c.launch.kernel for c in heavy} == {k for ks in HEAVY.values() for k in ks}
    few = [(c.launch.kernel, c.grid) for c in heavy if torch.Size(c.grid).numel() < MIN_PROGRAMS]
    assert not few, f"heavy launches with fewer than {MIN_PROGRAMS} programs: {few}"
