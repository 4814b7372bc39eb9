"""Every Triton kernel, in every config its launcher can use, compiles for sm_80 and sm_90."""
import importlib

import pytest

pytest.importorskip("triton")
from triton_aot import compile_module  # noqa: E402

# Each op's Triton module: it lists its launched kernels in KERNELS and yields every
# launchable config from aot_specs().
TRITON_MODULES = ["vkd_kernels.spectrum.triton_kernels", "vkd_kernels.attention.triton_kernels",
                  "vkd_kernels.weights.triton_kernels"]


@pytest.mark.parametrize("module_name", TRITON_MODULES)
def test_specs_cover_every_kernel(module_name):
    module = importlib.import_module(module_name)
    assert {spec[0] for spec in module.aot_specs()} == set(module.KERNELS)


@pytest.mark.parametrize("module_name", TRITON_MODULES)
def test_every_config_compiles_for_sm80_and_sm90(module_name):
    failures = compile_module(module_name)
    assert not failures, "\n".join(failures)
