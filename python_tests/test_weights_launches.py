"""Weight-spectrum distance, host side (issue 13): the device tables are built once per
set of weights and reused (no host-to-device copy after the first call), a reallocated
or reshaped weight gets new tables, and the per-group tiling (a (3,7,7) stem does not
widen the 3x3x3 groups' tiles)."""
import pytest
import torch
from harness import FUSED, expect_device, unavailable

from vkd_kernels import weight_spectrum_distance
from vkd_kernels.weights import layout


@pytest.fixture
def builds(monkeypatch):
    """Counts the table builds (each one host list and one host-to-device copy)."""
    count = []
    real = layout._build

    def build(*args):
        count.append(args[2])
        return real(*args)
    monkeypatch.setattr(layout, "_build", build)
    monkeypatch.setattr(layout, "_TABLES", layout._LRU(64))
    return count


def step(student, teacher, backend):
    loss = weight_spectrum_distance(student, teacher, backend=backend)
    return loss, torch.autograd.grad(loss, [w for w in student if w.requires_grad])


@pytest.mark.parametrize("backend", FUSED)
def test_tables_are_built_once_per_weights(backend, device, builds):
    student = [torch.randn(6, 3, 3, 3, 3, device=device, requires_grad=True),
               torch.randn(4, 3, 3, 7, 7, device=device, requires_grad=True)]
    teacher = [torch.randn(5, 2, 3, 3, 3, device=device), torch.randn(3, 3, 3, 7, 7, device=device)]
    expect_device(device, student, teacher)
    first = step(student, teacher, backend)
    assert len(builds) == 2  # forward and backward tables
    again = step(student, teacher, backend)
    assert len(builds) == 2, "the same weights rebuilt their tables"
    assert torch.equal(first[0], again[0]) and all(torch.equal(a, b) for a, b in zip(first[1], again[1]))
    with torch.no_grad():
        student[0].mul_(2.0)  # new values, same storage: the same tables
    step(student, teacher, backend)
    assert len(builds) == 2
    moved = [student[0].detach().clone().requires_grad_(), student[1]]  # a new storage
    loss, grads = step(moved, teacher, backend)
    assert len(builds) == 4
    expected = step([w.detach().double().requires_grad_() for w in moved], [w.double() for w in teacher],
                    "reference")
    assert torch.allclose(loss.double(), expected[0], rtol=1e-5)
    reshaped = [torch.randn(7, 3, 3, 3, 3, device=device, requires_grad=True), student[1]]
    step(reshaped, teacher, backend)
    assert len(builds) == 6


def test_tiles_follow_each_group():
    """Triton: 3x3 groups run 16-wide, 3x3x3 groups 32-wide and the (3,7,7) stem is tiled by
    32 (upper-triangle blocks), whatever else the call holds."""
    spec = layout.Spec(kernels=((3, 7, 7), (3, 3, 3), (3, 3)), tensors=((0, 192), (1, 4096), (2, 64)), teachers=(),
                       num_dists=0, parts=1, drop_dc=False, backend="triton")
    plan = layout.make_plan(spec)
    tiles = {tile: {item[3] for item in items} for tile, items in plan.gram}
    assert tiles == {16: {9}, 32: {147, 27}}
    stem = [item for item in dict(plan.gram)[32] if item[3] == 147]
    assert len(stem) == 15 and all(item[6] <= item[7] for item in stem)  # 5 x 5 blocks, upper triangle


@pytest.mark.parametrize("pairing", ["stages", "layers"])
def test_programs_at_the_benchmark_shapes(pairing):
    """>= 264 programs (2 per SM of a 132-SM GPU) in every gram and gram_backward launch of
    the benchmark cases (R3D-18 vs R3D-50, benchmarks/cases_weights.py)."""
    from vkd_kernels.check.bench import _r3d_stages  # the benchmark's shapes
    sides = [_r3d_stages(18), _r3d_stages(50)]
    if pairing == "layers":
        sides = [[[shape] for stage in side for shape in stage] for side in sides]
    groups = sides[0] + sides[1]
    n = len(sides[0])
    tensors = tuple((g, shape[0] * shape[1]) for g, group in enumerate(groups) for shape in group)
    spec = layout.Spec(kernels=tuple(group[0][2:] for group in groups), tensors=tensors,
                       teachers=tuple(range(n, 2 * n)), num_dists=0, parts=1, drop_dc=False, backend="triton",
                       needed=tuple(t for t, (g, _) in enumerate(tensors) if g < n))
    plan = layout.make_plan(spec)
    counts = {f"gram{tile}": len(items) for tile, items in plan.gram}
    counts.update({f"backward{tile}": len(items) for tile, items in plan.backward})
    assert set(counts) == {"gram32", "backward32"} and min(counts.values()) >= 264, counts


@pytest.mark.skipif(unavailable("triton") is not None, reason=f"triton cannot run here: {unavailable('triton')}")
def test_launches_syncs_and_copies_at_the_benchmark_case():
    """Forward + backward at the headline case (R3D-18 vs R3D-50 stages, backend triton),
    after one warm-up call: <= 8 launches (gram, finish, the loss reduction,
    finish_backward, gram_backward), no host sync and no host-to-device copy (the tables
    are cached on the device)."""
    from launch_audit import audit_headlines

    result = audit_headlines(["weight_spectrum_distance"])["weight_spectrum_distance"]
    assert result.total <= 8 and not result.syncs and not result.h2d, result
    assert result.triton == 4, result
