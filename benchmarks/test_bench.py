"""pytest-benchmark view of the spectrum cases (first, small shape only).

Run with ``pytest benchmarks/test_bench.py --benchmark-only``; not collected by the
default ``pytest`` run (``testpaths = ["python_tests"]``).
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cases_spectrum import SHAPES, make_case  # noqa: E402
from harness import MODES, step  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
CASE = make_case(SHAPES[0], DEVICE)


@pytest.fixture(scope="module")
def inputs():
    return CASE.make_inputs()


@pytest.fixture(scope="module", params=list(CASE.providers))
def provider(request):
    return request.param, CASE.providers[request.param]()


@pytest.mark.parametrize("mode", MODES)
def test_spectrum(benchmark, provider, mode, inputs):
    name, fn = provider
    setup, timed = step(fn, inputs, mode)
    sync = torch.cuda.synchronize if DEVICE == "cuda" else (lambda: None)

    def run():
        timed()
        sync()

    for _ in range(2):  # warm-up (compiles torch.compile graphs)
        setup()
        run()
    benchmark.group = f"{CASE.op} {CASE.label} {mode}"
    benchmark.extra_info.update(op=CASE.op, shape=CASE.label, provider=name, mode=mode)
    benchmark.pedantic(run, setup=setup, rounds=10, warmup_rounds=1)
