"""No shipped Triton config spills registers on sm_90 (issue 13): every distinct launch
the ops make (captured as the JIT would bind it, triton_launches.py) compiled for sm_90
and read back with ptxas -v. A spill is local-memory traffic inside the hot loop, so a
config is fixed by its tile, warps or dot precision, never by this test."""
import pytest

pytest.importorskip("triton")
from test_triton_aot import TRITON_MODULES  # noqa: E402
from triton_aot import capture_calls, resource_reports  # noqa: E402


@pytest.fixture(scope="module")
def reports():
    return resource_reports({call.launch for call in capture_calls()}, arch=90)


# Spill fixes of these modules are in progress (issue 13, branch integration-13): strict, so
# a module that stops spilling fails here until its mark is removed.
SPILLING = {"vkd_kernels.spectrum.triton_kernels", "vkd_kernels.weights.triton_kernels"}


@pytest.mark.parametrize("module_name", [
    pytest.param(m, marks=pytest.mark.xfail(strict=True, reason="issue 13 open: configs still spill on sm_90"))
    if m in SPILLING else m for m in TRITON_MODULES])
def test_no_config_spills_on_sm90(reports, module_name):
    mine = [r for r in reports if r["launch"].module == module_name]
    assert mine, f"no launch of {module_name} was captured"
    spills = [r for r in mine if r["spill_stores"] or r["spill_loads"]]
    assert not spills, f"{len(spills)} of {len(mine)} launches spill on sm_90:\n" + "\n".join(
        f"  {r['launch'].kernel} {dict(r['launch'].constexprs)} warps={dict(r['launch'].options)['num_warps']}: "
        f"{r['registers']} regs, {r['spill_stores']} B spill stores, {r['spill_loads']} B spill loads"
        for r in sorted(spills, key=lambda r: -r["spill_stores"])[:20])
