"""Shared test set-up: the Triton interpreter on CPU-only machines, the backends to
test, per-dtype tolerances, and the comparison helper every op's tests use."""
import os

import pytest
import torch

# Triton reads TRITON_INTERPRET when a kernel is defined: set it before any import of
# a vkd_kernels Triton module (they are imported lazily, on first use).
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")

import vkd_kernels  # noqa: E402
from vkd_kernels import _backend, _ext  # noqa: E402

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")

# The fused backends that can run here (on DEVICE).
FUSED_BACKENDS = [name for name in ("cpu", "cuda", "triton") if _backend.device_unsupported(name, DEVICE) is None]

# max |got - expected| / max |expected| allowed, per input dtype (engineering.md).
TOLERANCE = {torch.float64: 1e-10, torch.float32: 1e-5, torch.float16: 1e-2, torch.bfloat16: 1e-2}


def relative_error(got: torch.Tensor, expected: torch.Tensor) -> float:
    """max |got - expected| / max |expected|."""
    got, expected = got.double(), expected.double()
    return (got - expected).abs().max().item() / expected.abs().max().item()


def assert_close(got: torch.Tensor, expected: torch.Tensor, dtype: torch.dtype, what: str = "",
                 floor: float = 0.0) -> None:
    """Fails on a shape mismatch, NaN (an unwritten output), an all-zero expectation (a
    test that cannot fail) and a relative error above max(TOLERANCE[dtype], floor)."""
    assert got.shape == expected.shape, f"{what}: shape {tuple(got.shape)} != {tuple(expected.shape)}"
    assert torch.isfinite(got).all(), f"{what}: non-finite values (unwritten output?)"
    assert expected.abs().max().item() > 0, f"{what}: the expected value is all zeros; the test cannot fail"
    error, tolerance = relative_error(got, expected), max(TOLERANCE[dtype], floor)
    assert error <= tolerance, f"{what}: relative error {error:.3g} > {tolerance:.3g} ({dtype})"


@pytest.fixture(autouse=True)
def poisoned_outputs(monkeypatch):
    """Every buffer a kernel writes starts as NaN, so an unwritten element fails."""
    monkeypatch.setenv("VKD_POISON_OUTPUTS", "1")


@pytest.fixture(autouse=True)
def seeded():
    torch.manual_seed(0)
