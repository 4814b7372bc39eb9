"""What a GPU would run for the temporal spectrum loss at the benchmark shapes, read
without one (issue 13): the Triton launches the op makes there (captured as the JIT
binds them, triton_launches.spectrum_bench_shapes), their grids, and the loads of the
pixel kernels compiled for sm_90 (TTGIR layout and PTX), at S = 196 (14 x 14: rows
aligned to 4 elements) and S = 49 (7 x 7: rows only element-aligned).
"""
from __future__ import annotations

import ast
import math
import re
from pathlib import Path

import pytest

pytest.importorskip("triton")
from triton_aot import capture_calls, compiled_asm  # noqa: E402
from triton_launches import SPECTRUM_BENCH_SHAPES  # noqa: E402

H100_SMS = 132
MIN_PROGRAMS = 2 * H100_SMS  # two programs per SM of a 132-SM H100


def _benchmark_shapes() -> list:
    """SHAPES of benchmarks/cases_spectrum.py, read from its source (importing it would
    import the benchmarks' own harness module, not this directory's)."""
    tree = ast.parse((Path(__file__).parents[1] / "benchmarks" / "cases_spectrum.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and [t.id for t in node.targets if isinstance(t, ast.Name)] == ["SHAPES"]:
            return ast.literal_eval(node.value)
    raise AssertionError("benchmarks/cases_spectrum.py has no SHAPES")


@pytest.fixture(scope="module")
def calls():
    """The captured calls, in order: per shape, spatial "pixel" then "mean", forward then backward."""
    return capture_calls(["spectrum_bench_shapes"])


def _per_case(calls) -> dict:
    """{(shape, spatial): [forward call, backward call]}."""
    cases = [(shape, spatial) for shape in SPECTRUM_BENCH_SHAPES for spatial in ("pixel", "mean")]
    assert len(calls) == 2 * len(cases), [c.launch.kernel for c in calls]
    return {case: calls[2 * i:2 * i + 2] for i, case in enumerate(cases)}


def test_scenario_shapes_are_the_benchmarks():
    assert [tuple(s) for s in _benchmark_shapes()] == list(SPECTRUM_BENCH_SHAPES)


def test_two_fused_launches_per_forward_and_backward(calls):
    for (shape, spatial), (forward, backward) in _per_case(calls).items():
        kind = "pixel" if spatial == "pixel" else "group"
        assert (forward.launch.kernel, backward.launch.kernel) == (f"_{kind}_forward", f"_{kind}_backward"), shape


def test_heavy_launches_give_every_sm_two_programs(calls):
    """spatial="pixel" (the benchmark's): >= 264 programs on every launch. spatial="mean"
    runs one program per group (N*C of them: its P lines are reduced to one mean spectrum
    before the loss, and the backward needs that mean before any gradient); at
    (4, 64, 32, 28, 28) that is 256 programs of 784 lines each, so that shape alone
    falls short of 264, by 3%."""
    report = []
    for (shape, spatial), pair in _per_case(calls).items():
        for call in pair:
            programs = math.prod(call.grid)
            report.append(f"{shape} {spatial} {call.launch.kernel}: {programs} programs")
            if spatial == "pixel":
                assert programs >= MIN_PROGRAMS, report[-1]
            else:
                groups = shape[0] * shape[1]
                assert programs == groups, report[-1]
                assert programs >= MIN_PROGRAMS or shape == (4, 64, 32, 28, 28), report[-1]
    print("\n".join(report))


# a load of x in _load_lines (the TTGIR names a value after its Python variable)
_LINE_LOAD = re.compile(r"%x_?\d* = tt\.load [^:]*: tensor<(\d+)x(\d+)x!tt\.ptr<f32>, #(blocked\d*)>")


def _layout(ttgir: str, name: str) -> dict:
    line = re.search(rf"^#{name} = #ttg\.blocked<\{{(.*)\}}>", ttgir, re.M).group(1)
    return {key: [int(v) for v in value.split(",")] for key, value in re.findall(r"(\w+) = \[([\d, ]+)\]", line)}


LAYOUT_CASES = {"S=196": ((8, 256, 8, 14, 14), 4), "S=49": ((16, 2048, 8, 7, 7), 1)}


@pytest.fixture(scope="module")
def pixel_asm(calls):
    """{(case, direction): sm_90 TTGIR and PTX} of the pixel kernels at the LAYOUT_CASES."""
    keys = [(case, direction) for case in LAYOUT_CASES for direction in (0, 1)]
    launches = [_per_case(calls)[LAYOUT_CASES[case][0], "pixel"][direction].launch for case, direction in keys]
    return dict(zip(keys, compiled_asm(launches, 90)))


@pytest.mark.parametrize("case", LAYOUT_CASES)
@pytest.mark.parametrize("direction", [0, 1], ids=["forward", "backward"])
def test_pixel_loads_are_coalesced_and_vectorised(pixel_asm, case, direction):
    """The [BLOCK_L, T_PAD] line tiles load with consecutive s in consecutive lanes
    (layout order [0, 1]: the s axis fastest, a warp's lanes along it), and at S = 196,
    whose rows are 16-byte aligned, 4 consecutive s per thread in one ld.global.v4.b32;
    at S = 49 a row starts at 49 t elements, only 4-byte aligned, so the loads stay
    coalesced but scalar (no vector width fits every row)."""
    vector = LAYOUT_CASES[case][1]
    ttgir, ptx = pixel_asm[case, direction]["ttgir"], pixel_asm[case, direction]["ptx"]
    tiles = list(_LINE_LOAD.finditer(ttgir))  # the [BLOCK_L, T_PAD] line tiles
    assert len(tiles) == 2, f"expected the student's and teacher's line tiles, got {[m.group(0) for m in tiles]}"
    for tile in tiles:
        layout = _layout(ttgir, tile.group(3))
        assert layout["order"] == [0, 1], layout  # s (axis 0) fastest
        assert layout["sizePerThread"][0] == vector, layout
        assert layout["threadsPerWarp"][0] * layout["sizePerThread"][0] >= 16, layout  # a warp spans >= 16 s
    wide = len(re.findall(r"ld\.global(?:\.nc)?\.v4\.b32", ptx))
    if vector == 4:
        assert wide >= 2, f"{wide} ld.global.v4.b32 in the PTX"
        if direction == 1:
            assert re.search(r"st\.global\.v4\.b32", ptx), "the gradient rows are stored 4-wide too"
    else:
        assert wide == 0 and not re.search(r"ld\.global(?:\.nc)?\.v2", ptx), "S = 49 rows cannot be vector-loaded"
