"""The Triton launches the ops really make, captured without running them (as a GPU
launch would bind and specialise them: triton_launches.py), checked and compiled for
sm_80 and sm_90: by default every kernel, element type and tile for sm_90 and every
kernel and element type for sm_80 (the heaviest launch of each), with --run-slow every
distinct launch for both."""
import importlib
import inspect

import pytest

pytest.importorskip("triton")
from triton_aot import capture_calls, compile_reports, kernel_key, plus_int64, representatives, tile_key  # noqa: E402

from vkd_kernels._triton_specs import GRID_LIMITS  # noqa: E402

# Each op's Triton module: its launched kernels in KERNELS, every config its launchers
# can produce from launch_configs().
TRITON_MODULES = ["vkd_kernels.spectrum.triton_kernels", "vkd_kernels.attention.triton_kernels",
                  "vkd_kernels.gkd.head.triton_kernels", "vkd_kernels.gkd.apply.triton_kernels",
                  "vkd_kernels.weights.triton_kernels"]


@pytest.fixture(scope="module")
def calls():
    return capture_calls()


def _module_launches(calls, module_name):
    return {call.launch for call in calls if call.launch.module == module_name}


def _name(kernel) -> str:
    return getattr(kernel, "fn", kernel).__name__  # a JITFunction or, interpreted, its function


@pytest.mark.parametrize("module_name", TRITON_MODULES)
def test_every_kernel_is_launched(calls, module_name):
    module = importlib.import_module(module_name)
    assert {launch.kernel for launch in _module_launches(calls, module_name)} == {_name(k) for k in module.KERNELS}


@pytest.mark.parametrize("module_name", TRITON_MODULES)
def test_captured_launches_cover_every_config(calls, module_name):
    """Every (kernel, constexprs, num_warps) the launchers can produce was captured."""
    module = importlib.import_module(module_name)
    captured = set()
    for launch in _module_launches(calls, module_name):
        fn = getattr(module, launch.kernel)
        declared = {n for n, p in inspect.signature(getattr(fn, "fn", fn)).parameters.items()
                    if "constexpr" in str(p.annotation)}
        constexprs = tuple(sorted((n, v) for n, v in launch.constexprs if n in declared))
        captured.add((launch.kernel, constexprs, dict(launch.options)["num_warps"]))
    missing = {(_name(kernel), tuple(sorted(c.items())), options["num_warps"])
               for kernel, c, options in module.launch_configs()} - captured
    assert not missing, f"{len(missing)} configs never launched by triton_launches.SCENARIOS, e.g. " + \
        "\n".join(map(str, sorted(missing)[:5]))


def test_float64_launches_get_float64_scalars(calls):
    """A float64 launch whose float argument the JIT types fp32 computes with it rounded
    at ~1e-8 on a GPU (the interpreter keeps the Python double: its tests cannot see it)."""
    bad = {(call.launch.kernel, name, ty) for call in calls if dict(call.launch.constexprs).get("IS_FP64")
           for name, ty in call.launch.signature if ty in ("fp32", "fp16", "bf16")}
    assert not bad, f"float64 launches with narrower scalar arguments: {sorted(bad)}"


def test_grids_fit_cuda_limits(calls):
    bad = [(call.scenario, call.launch.kernel, call.grid) for call in calls
           if len(call.grid) > 3 or any(g > limit for g, limit in zip(call.grid, GRID_LIMITS))]
    assert not bad, f"grids beyond CUDA's limits {GRID_LIMITS}: {bad}"


def _failures(reports) -> str:
    return "\n".join(report["error"] for report in reports.values() if "error" in report)


def sm90_launches(calls, module_name) -> list:
    """What the default sm_90 tests compile: one launch per kernel, element type and tile
    (triton_aot.tile_key), the heaviest (the most flags set, the widest vectors), which
    test_triton_spills reads for spills too."""
    return representatives(_module_launches(calls, module_name), key=tile_key)


@pytest.mark.parametrize("module_name", TRITON_MODULES)
def test_every_tile_compiles_for_sm90(calls, module_name):
    """sm90_launches, and each kernel once with 64-bit integer arguments (sizes or strides
    of 2**31 or more), compile for sm_90."""
    reports = compile_reports(plus_int64(sm90_launches(calls, module_name)), archs=(90,))
    assert not (failures := _failures(reports)), failures


@pytest.mark.parametrize("module_name", TRITON_MODULES)
def test_every_kernel_compiles_for_sm80(calls, module_name):
    """Each kernel per element type (triton_aot.kernel_key), its heaviest launch, compiles
    for sm_80 (mma.sync where sm_90 has wgmma)."""
    launches = representatives(_module_launches(calls, module_name), key=kernel_key)
    assert not (failures := _failures(compile_reports(launches, archs=(80,)))), failures


@pytest.mark.slow
@pytest.mark.parametrize("module_name", TRITON_MODULES)
def test_every_launch_compiles_for_sm80_and_sm90(calls, module_name):
    """Every distinct captured launch, with every flag and every specialisation of its
    sizes and strides, and each kernel once with 64-bit integer arguments, for both
    architectures (~20 min on 2 cores: --run-slow)."""
    reports = compile_reports(plus_int64(_module_launches(calls, module_name)))
    assert not (failures := _failures(reports)), failures
