"""No shipped Triton config spills registers on sm_90 (issue 13): the launches the ops
make (captured as the JIT would bind them, triton_launches.py), the heaviest of each
kernel, element type and tile (every distinct launch with --run-slow), compiled for
sm_90 and read back with ptxas -v.
A spill is local-memory traffic inside the hot loop, so a config is fixed by its tile,
warps or dot precision, never by this test."""
import pytest

pytest.importorskip("triton")
from test_triton_aot import TRITON_MODULES, sm90_launches  # noqa: E402
from triton_aot import capture_calls, compile_reports  # noqa: E402


def _assert_no_spills(launches, module_name):
    reports = compile_reports(launches, archs=(90,))
    assert reports, f"no launch of {module_name} was captured"
    failed = [launch.kernel for (launch, _), report in reports.items() if "error" in report]
    assert not failed, f"{len(failed)} launches did not compile (test_triton_aot says why): {failed}"
    mine = [dict(report, launch=launch) for (launch, _), report in reports.items()]
    spills = [r for r in mine if r["spill_stores"] or r["spill_loads"]]
    assert not spills, f"{len(spills)} of {len(mine)} launches spill on sm_90:\n" + "\n".join(
        f"  {r['launch'].kernel} {dict(r['launch'].constexprs)} warps={dict(r['launch'].options)['num_warps']}: "
        f"{r['registers']} regs, {r['spill_stores']} B spill stores, {r['spill_loads']} B spill loads"
        for r in sorted(spills, key=lambda r: -r["spill_stores"])[:20])


@pytest.mark.parametrize("module_name", TRITON_MODULES)
def test_no_config_spills_on_sm90(module_name):
    """The launches test_triton_aot compiles for sm_90 (the same compiles, once)."""
    _assert_no_spills(sm90_launches(capture_calls(), module_name), module_name)


@pytest.mark.slow
@pytest.mark.parametrize("module_name", TRITON_MODULES)
def test_no_launch_spills_on_sm90(module_name):
    """Every distinct captured launch, with every specialisation of sizes and strides."""
    _assert_no_spills({call.launch for call in capture_calls() if call.launch.module == module_name}, module_name)
