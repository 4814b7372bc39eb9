"""Shared test set-up: the Triton interpreter on CPU-only machines, NaN-poisoned
outputs, the seed, the slow marker and the ``device`` fixture. The backends, the device
mapping and the comparison helpers are in harness.py, the tolerances in tolerances.py.

Seeds: every test starts from ``torch.manual_seed(seed)``; the seed is
``VKD_TEST_SEED`` (default 1, so the default run is not seed 0, to which bounds were
once fitted). Tests marked ``numeric`` (backend-vs-reference comparisons on random
inputs) are also parametrised over seeds 0..7 as ``slow`` cases, which run only with
``--run-slow`` or ``VKD_SLOW=1``.
"""
import atexit
import os
import shutil
import tempfile

import pytest
import torch

# Triton reads TRITON_INTERPRET when a kernel is defined: set it before any import of
# a vkd_kernels Triton module (they are imported lazily, on first use).
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
# torch.compile keeps compiled graphs in /tmp/torchinductor_<user> across runs, and its
# AOTAutograd cache key does not hash a custom op's registered backward: a graph cached
# by an older checkout replays that checkout's op calls (CI once failed on a backward
# op whose schema had since changed). Each test session compiles into its own folder.
if "TORCHINDUCTOR_CACHE_DIR" not in os.environ:
    _inductor_cache = tempfile.mkdtemp(prefix="vkd-tests-inductor-")
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = _inductor_cache
    atexit.register(shutil.rmtree, _inductor_cache, ignore_errors=True)

import harness  # noqa: E402
from harness import assert_close  # noqa: E402,F401  (kept importable from conftest)
from tolerances import TOLERANCE, relative_error  # noqa: E402,F401

import vkd_kernels  # noqa: E402,F401

SEED = int(os.environ.get("VKD_TEST_SEED", "1"))
SLOW_SEEDS = range(8)

# Older names, for tests written against them: the device of the default backend and the
# fused backends that can run here.
DEVICE = harness.device_for("auto")
FUSED_BACKENDS = harness.RUNNABLE


def pytest_addoption(parser):
    parser.addoption("--run-slow", action="store_true", default=False,
                     help="also run the tests marked slow (the numeric tests for seeds 0..7)")


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: not run by default; --run-slow or VKD_SLOW=1 runs them")
    config.addinivalue_line("markers", "numeric: a comparison on random inputs; repeated for seeds 0..7 when slow "
                                       "tests run")


def _run_slow(config) -> bool:
    return config.getoption("--run-slow") or os.environ.get("VKD_SLOW", "0") == "1"


def pytest_generate_tests(metafunc):
    if metafunc.definition.get_closest_marker("numeric") and "seed" in metafunc.fixturenames:
        seeds = [pytest.param(SEED, id=f"seed{SEED}")]
        seeds += [pytest.param(s, id=f"seed{s}", marks=pytest.mark.slow) for s in SLOW_SEEDS if s != SEED]
        metafunc.parametrize("seed", seeds)


def pytest_collection_modifyitems(config, items):
    keep, drop = [], []
    for item in items:
        slow = item.get_closest_marker("slow") and not _run_slow(config)
        # the device audit runs only the backend-parametrised tests (see harness.py)
        audit_out = harness.AUDIT and "backend" not in getattr(getattr(item, "callspec", None), "params", {})
        (drop if slow or audit_out else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


@pytest.fixture
def seed():
    return SEED


@pytest.fixture(autouse=True)
def seeded(seed):
    torch.manual_seed(seed)
    return seed


@pytest.fixture
def device(backend):
    """The device the inputs of the test's ``backend`` are built on (harness.device_for)."""
    return harness.device_for(backend)


@pytest.fixture(autouse=True)
def poisoned_outputs(monkeypatch):
    """Every buffer a kernel writes starts as NaN, so an unwritten element fails."""
    monkeypatch.setenv("VKD_POISON_OUTPUTS", "1")
