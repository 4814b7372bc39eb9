"""Weight-spectrum distance: every backend against the reference, the reference against
an independent float64 transform, gradients, teacher caching, groups, registration,
errors (docs/engineering.md recipe)."""
import math
import os
import subprocess
import sys

import pytest
import torch
from harness import (
    ALL,
    FUSED,
    as_double,
    assert_close,
    backend_params,
    call,
    compare,
    expect_device,
    interpreted,
    unavailable,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tolerances import tolerance
from torch import nn

from vkd_kernels import WeightSpectrumLoss, conv_weight_groups, weight_spectrum, weight_spectrum_distance
from vkd_kernels.weights import layout as weights_layout
from vkd_kernels.weights.op import _spectra_backward_op, _spectra_op
from vkd_kernels.weights.reference import energy_reference

numeric = pytest.mark.numeric
DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)

# (student item shapes, teacher item shapes): a tensor is a shape, a group a list of shapes.
# 2-d and 3-d, non-square, grouped/depthwise (I = 1 or 2), pooled groups, odd counts.
PAIRS = [
    ((5, 3, 3, 3), (7, 2, 3, 3)),
    ([(4, 3, 3, 3, 3), (6, 4, 3, 3, 3)], (9, 1, 3, 3, 3)),
    ((3, 2, 1, 3, 3), [(5, 5, 1, 3, 3)]),
    ((6, 1, 3, 1, 1), (4, 3, 3, 1, 1)),
    ((3, 4, 2, 3), (2, 3, 2, 3)),
    ((2, 3, 3, 7, 7), (3, 1, 3, 7, 7)),
]


def make(device, shapes, dtype=torch.float32, requires_grad=True, shaped=False):
    """Items of random weights (a list of shapes makes a group). ``shaped``: every kernel
    of a tensor adds twice one random kernel of its own to its noise, so the spectrum is a
    noise floor plus that kernel's energy: p is O(1)-far from the near-uniform p of
    white-noise kernels, with no bin near 0 (a KL, JS or L2 between two near-uniform p is
    a small difference of O(1) terms, ill-conditioned in float32: tolerances.py)."""
    def one(shape):
        w = torch.randn(shape, device=device)
        if shaped:
            w = w + 2 * torch.randn(shape[2:], device=device)
        return (0.1 * w).to(dtype).requires_grad_(requires_grad)
    return [[one(s) for s in item] if isinstance(item, list) else one(item) for item in shapes]


def leaves(items):
    flat = []
    for item in items:
        flat += item if isinstance(item, list) else [item]
    return [x for x in flat if isinstance(x, torch.Tensor) and x.requires_grad]


def run(backend, device, student, teacher, grad=1.7, **options):
    expect_device(device, student, teacher)
    loss = weight_spectrum_distance(student, teacher, backend=backend, **options)
    wrt = leaves(student) + leaves(teacher)
    return loss, torch.autograd.grad(loss * grad, wrt)


def check_backend(backend, device, student, teacher, dtype, **options):
    """Loss and the gradients of every weight (student and teacher) against the float64
    reference on the same values (harness.compare); the loss is float32 (float64 for
    float64 weights)."""
    compare(lambda b, xs: weight_spectrum_distance(*xs, backend=b, **options), (student, teacher), backend, device,
            bound=tolerance(dtype, "weight_spectrum_distance", **options),
            out_dtype=torch.float64 if dtype == torch.float64 else torch.float32)


# ---- the reference against an independent float64 transform ---------------------------

def direct_energy(weights, transform):
    """e by the definitions, one kernel axis at a time (no Kronecker product, no FFT)."""
    total, count = 0, 0
    for w in weights:
        x = w.double().reshape(-1, *w.shape[2:]).to(torch.complex128)
        for axis, n in enumerate(w.shape[2:], start=1):
            f = torch.arange(n, dtype=torch.float64)[:, None]
            t = torch.arange(n, dtype=torch.float64)[None, :]
            if transform == "dct":
                m = torch.cos(math.pi * (2 * t + 1) * f / (2 * n)) * torch.sqrt((2 - (f == 0).double()) / n)
                m = m.to(torch.complex128)
            else:
                m = torch.exp(-2j * math.pi * f * t / n) / n ** 0.5
            x = torch.movedim(torch.tensordot(x, m, dims=([axis], [1])), -1, axis)
        total = total + x.abs().square().reshape(len(x), -1).sum(0)
        count += len(x)
    return total / count


@pytest.mark.parametrize("transform", weights_layout.TRANSFORMS)
@pytest.mark.parametrize("kernel", [(3, 3), (2, 3), (5, 4), (1, 3, 3), (3, 1, 1), (3, 3, 3), (2, 3, 4), (3, 7, 7)])
def test_reference_matches_direct_transform(transform, kernel):
    group = [torch.randn((4, 3) + kernel, dtype=torch.float64), torch.randn((2, 5) + kernel, dtype=torch.float64)]
    assert_close(energy_reference(group, transform), direct_energy(group, transform), torch.float64)


def test_dct_energy_sums_to_the_squared_norm():
    """Parseval: the orthonormal transforms keep each kernel's energy."""
    w = torch.randn(6, 4, 3, 3, 3, dtype=torch.float64)
    for transform in weights_layout.TRANSFORMS:
        e = energy_reference([w], transform)
        assert torch.allclose(e.sum(), w.square().sum() / (6 * 4), rtol=1e-12)


# ---- every backend against the reference ---------------------------------------------

@numeric
@pytest.mark.parametrize("backend", FUSED)
@pytest.mark.parametrize("transform", weights_layout.TRANSFORMS)
@pytest.mark.parametrize("distance", weights_layout.DISTANCES)
@pytest.mark.parametrize("drop_dc", (False, True))
def test_options(backend, device, transform, distance, drop_dc):
    shapes = PAIRS[:3] if backend == "triton" else PAIRS
    if drop_dc:
        # length-3 kernels without DC: fft gives p = (1/2, 1/2) always (gradient 0); dct a
        # 2-bin p whose gradient is ill-conditioned in float32 (eager float32 is off by 2.5e-5
        # at seed 5: tolerances.py), so the pair is checked in float64 below
        shapes = [pair for pair in shapes if pair is not PAIRS[3]]
    options = dict(transform=transform, distance=distance, drop_dc=drop_dc, reduction="sum" if drop_dc else "mean")
    student, teacher = make(device, [s for s, _ in shapes]), make(device, [t for _, t in shapes], shaped=True)
    check_backend(backend, device, student, teacher, torch.float32, **options)
    if drop_dc and transform == "dct":
        student, teacher = make(device, [PAIRS[3][0]], torch.float64), make(device, [PAIRS[3][1]], torch.float64)
        check_backend(backend, device, student, teacher, torch.float64, **options)


@numeric
@pytest.mark.parametrize("backend", FUSED)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("pair", PAIRS, ids=lambda p: str(p[0]))
def test_dtypes_and_kernels(backend, device, dtype, pair):
    student, teacher = make(device, [pair[0]], dtype), make(device, [pair[1]], dtype, shaped=True)
    check_backend(backend, device, student, teacher, dtype, distance="js")


@numeric
@pytest.mark.parametrize("backend", FUSED)
@pytest.mark.parametrize("dtype", (torch.float32, torch.float64))
def test_kernels_across_vector_widths(backend, device, dtype):
    """Kernel sizes P on both sides of the CPU Gram's vector and block edges (4-16 lanes,
    8-row blocks): 8, 15, 16, 17, 24, 25, 31, 32, 33, 48, 49, 64, 65, rows past a 64-row step."""
    kernels = [(2, 4), (3, 5), (4, 4), (1, 17), (2, 3, 4), (5, 5), (1, 31), (2, 4, 4), (3, 11), (3, 4, 4),
               (7, 7), (4, 4, 4), (5, 13)]
    student = make(device, [(9, 11) + k for k in kernels], dtype)
    teacher = make(device, [(4, 3) + k for k in kernels], dtype, shaped=True)
    check_backend(backend, device, student, teacher, dtype, distance="js")


@numeric
@pytest.mark.parametrize("backend", FUSED)
def test_many_splits_and_pooled_groups(backend, device):
    """Tensors longer than a chunk are split across programs (their energy partials
    summed by finish); one group pools three tensors of several chunks each."""
    student = make(device, [[(64, 70, 3, 3), (33, 40, 3, 3), (5, 3, 3, 3)], (40, 20, 3, 3, 3)])
    teacher = make(device, [(50, 50, 3, 3), (10, 7, 3, 3, 3)], shaped=True)
    plan = weights_layout.make_plan(weights_layout.Spec(
        kernels=((3, 3), (3, 3, 3)), tensors=((0, 64 * 70), (0, 33 * 40), (0, 15), (1, 800)), teachers=(),
        num_dists=0, parts=2, drop_dc=False, backend=backend))
    assert plan.groups[0][3] > 3  # more partials (items) than tensors in group 0
    check_backend(backend, device, student, teacher, torch.float32, transform="fft", distance="kl")


@numeric
@pytest.mark.parametrize("backend", FUSED)
def test_mixed_dtypes_and_noncontiguous(backend, device):
    """A float16 teacher with a float32 student (one launch per dtype) and weights in
    channels_last_3d / transposed memory (copied contiguous)."""
    student = [torch.randn(6, 4, 3, 3, 3, device=device).to(memory_format=torch.channels_last_3d).requires_grad_(),
               torch.randn(5, 4, 3, 2, device=device).transpose(2, 3).requires_grad_()]
    teacher = [torch.randn(4, 6, 3, 3, 3, dtype=torch.float16, device=device).requires_grad_(),
               torch.randn(3, 2, 2, 3, device=device).requires_grad_()]
    assert not student[0].is_contiguous() and not student[1].is_contiguous()
    loss, grads = run(backend, device, student, teacher)
    expected, expected_grads = run("reference", device, as_double(student), as_double(teacher))
    assert_close(loss, expected, torch.float16)
    for got, exp in zip(grads, expected_grads):
        assert_close(got, exp, got.dtype)


@numeric
@pytest.mark.parametrize("backend", ALL)
def test_precomputed_teacher(backend, device):
    """weight_spectrum matches the reference; distributions as the teacher give the same
    loss and student gradients as the teacher weights."""
    student = make(device, [s for s, _ in PAIRS[:4]])
    teacher = make(device, [t for _, t in PAIRS[:4]], requires_grad=False)
    for drop_dc in (False, True):
        spectra = call(weight_spectrum, device, teacher, drop_dc=drop_dc, backend=backend)
        expected = weight_spectrum(as_double(teacher), drop_dc=drop_dc, backend="reference")
        assert isinstance(spectra, list) and len(spectra) == len(teacher)
        for got, exp, item in zip(spectra, expected, teacher):
            group = item if isinstance(item, list) else [item]
            assert got.shape == (math.prod(group[0].shape[2:]) - drop_dc,)
            assert_close(got, exp, torch.float32)
        mixed = [spectra[0], teacher[1], spectra[2], teacher[3]]
        loss, grads = run(backend, device, student, mixed, drop_dc=drop_dc)
        loss_w, grads_w = run(backend, device, student, teacher, drop_dc=drop_dc)
        assert_close(loss, loss_w, torch.float32)
        for got, exp in zip(grads, grads_w):
            assert_close(got, exp, torch.float32)


def test_weight_spectrum_shapes():
    w = torch.randn(4, 3, 3, 3)
    assert weight_spectrum(w).shape == (9,)
    assert weight_spectrum([w, torch.randn(2, 2, 3, 3)], drop_dc=True).shape == (8,)
    out = weight_spectrum([[w], w])
    assert isinstance(out, list) and len(out) == 2 and torch.allclose(out[0].sum(), torch.tensor(1.0))


@pytest.mark.parametrize("backend", ALL)
@pytest.mark.parametrize("distance", weights_layout.DISTANCES)
def test_zero_kernels_give_finite_gradients(backend, device, distance):
    """All-zero kernels (e = 0) and DC-only kernels with drop_dc: p has zero bins."""
    zero = torch.zeros(3, 2, 3, 3, device=device, requires_grad=True)
    constant = torch.ones(4, 2, 3, 3, device=device, requires_grad=True)
    teacher = [torch.randn(5, 2, 3, 3, device=device), torch.zeros(2, 2, 3, 3, device=device)]
    for drop_dc in (False, True):
        loss, grads = run(backend, device, [zero, constant], teacher, distance=distance, drop_dc=drop_dc)
        assert torch.isfinite(loss) and all(torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("backend", ALL)
def test_conjugate_bins_without_dc_are_constant(backend, device):
    """fft of a real length-3 kernel: bins 1 and 2 are conjugate, so with drop_dc every
    such group has p = (1/2, 1/2): the distance and its gradient vanish."""
    student = [torch.randn(6, 1, 3, 1, 1, device=device, requires_grad=True)]
    teacher = [torch.randn(4, 3, 3, 1, 1, device=device)]
    loss, grads = run(backend, device, student, teacher, transform="fft", drop_dc=True)
    assert abs(loss.item()) < 1e-6 and grads[0].abs().max() < 1e-4
    assert torch.allclose(weight_spectrum(student[0], transform="fft", drop_dc=True, backend=backend),
                          torch.tensor([0.5, 0.5], device=device))


@pytest.mark.parametrize("backend", FUSED)
def test_deterministic(backend, device):
    student, teacher = make(device, [(40, 30, 3, 3, 3)]), make(device, [(20, 30, 3, 3, 3)])
    first, second = run(backend, device, student, teacher), run(backend, device, student, teacher)
    assert torch.equal(first[0], second[0]) and all(torch.equal(a, b) for a, b in zip(first[1], second[1]))


@pytest.mark.parametrize("backend", FUSED)
@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(kernel=st.lists(st.integers(1, 5), min_size=2, max_size=3).filter(lambda k: math.prod(k) > 1),
       counts=st.lists(st.tuples(st.integers(1, 9), st.integers(1, 6)), min_size=1, max_size=3),
       transform=st.sampled_from(weights_layout.TRANSFORMS))
def test_fuzz_shapes(backend, device, kernel, counts, transform):
    student = [[torch.randn((o, i) + tuple(kernel), dtype=torch.float64, device=device).requires_grad_()
                for o, i in counts]]
    teacher = [torch.randn((3, 2) + tuple(kernel), dtype=torch.float64, device=device)]
    check_backend(backend, device, student, teacher, torch.float64, transform=transform)


# ---- gradcheck in float64 --------------------------------------------------------------

@pytest.mark.parametrize("backend", ALL)
@pytest.mark.parametrize("transform,distance", [("dct", "kl"), ("fft", "js"), ("dct", "l2")])
def test_gradcheck_float64(backend, device, transform, distance):
    def w(*shape):
        return torch.randn(shape, dtype=torch.float64, device=device, requires_grad=True)
    s, t = [w(3, 2, 3, 2), w(2, 2, 1, 3, 3)], [w(2, 2, 3, 2), w(4, 1, 1, 3, 3)]

    def f(a, b, c, d):
        return weight_spectrum_distance([a, b], [c, d], transform=transform, distance=distance, drop_dc=True,
                                        backend=backend)
    assert call(torch.autograd.gradcheck, device, f, (*s, *t), fast_mode=interpreted(backend))


# ---- registration, compile, module ------------------------------------------------------

@pytest.mark.parametrize("backend", FUSED)
def test_opcheck(backend, device):
    weights = [torch.randn(shape, device=device, requires_grad=True)  # group 0: P = 6, group 1: P = 9
               for shape in ((4, 3, 3, 3), (3, 2, 2, 3), (2, 2, 3, 3))]
    dist = torch.rand(6, device=device, requires_grad=True)
    expect_device(device, weights, dist)
    kernels = [1, 2, 3, 1, 3, 3]
    # pairs: group 0 against the distribution, group 1 alone (spectra only: teachers empty)
    torch.library.opcheck(_spectra_op.op, (weights[1:2], [dist], kernels[:3], [0], [-1], "dct", False, "js", "sum",
                                        1e-12, backend))
    torch.library.opcheck(_spectra_op.op, (weights, [], kernels, [1, 0, 1], [], "fft", True, "none", "mean", 1e-12,
                                        backend))
    _, p, S = _spectra_op(weights, [], kernels, [1, 0, 1], [], "fft", True, "none", "mean", 1e-12, backend)
    grad = torch.randn_like(p)
    torch.library.opcheck(_spectra_backward_op.op, (grad, p, S, [w.detach() for w in weights[::2]], kernels, [1, 0, 1],
                                                 [4 * 3, 3 * 2, 2 * 2], [0, 2], [], 0, [], "fft", True, "none",
                                                 "mean", 1e-12, backend),
                          test_utils=("test_schema", "test_faketensor"))


@pytest.mark.parametrize("backend", backend_params("cpu"))
def test_compile_fullgraph(backend, device):
    student = make(device, [(4, 3, 3, 3, 3), (5, 2, 3, 3)])
    teacher = make(device, [(6, 3, 3, 3, 3), (2, 2, 3, 3)], requires_grad=False)
    expect_device(device, student, teacher)

    def f(a, b):
        return weight_spectrum_distance([a, b], teacher, distance="js", backend=backend)
    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    expected, got = f(*student), compiled(*student)
    assert_close(got, expected, torch.float32)
    got.backward()


class TinyNet(nn.Module):
    """Stem, two stages with a 1x1 conv, a depthwise conv and mixed sizes in stage2."""

    def __init__(self, width=4):
        super().__init__()
        self.stem = nn.Conv3d(3, width, (3, 7, 7))
        self.layer1 = nn.Sequential(nn.Conv3d(width, width, 3), nn.Conv3d(width, width, 1),
                                    nn.Conv3d(width, width, 3, groups=width))
        self.layer2 = nn.Sequential(nn.Conv3d(width, 2 * width, (3, 1, 1)), nn.Conv3d(2 * width, 2 * width, (1, 3, 3)))


def test_conv_weight_groups():
    net = TinyNet()
    layers = conv_weight_groups(net)
    assert [g[0] is w for g, w in zip(layers, [net.stem.weight, net.layer1[0].weight, net.layer1[2].weight,
                                                 net.layer2[0].weight, net.layer2[1].weight])] == [True] * 5
    stages = conv_weight_groups(net, ["stem", "layer1", "layer2.1"])
    assert [len(g) for g in stages] == [1, 2, 1]
    with pytest.raises(ValueError, match="mix kernel sizes"):
        conv_weight_groups(net, ["layer2"])
    with pytest.raises(ValueError, match="'head'"):
        conv_weight_groups(net, ["head"])
    with pytest.raises(ValueError, match="by must be"):
        conv_weight_groups(net, "stage")
    with pytest.raises(TypeError, match="by must be"):
        conv_weight_groups(net, [1])


@pytest.mark.parametrize("backend", ALL)
def test_module_caches_a_frozen_teacher(backend, device):
    student, teacher = TinyNet(4).to(device), TinyNet(6).to(device).requires_grad_(False)
    expect_device(device, list(student.parameters()), list(teacher.parameters()))
    loss_fn = WeightSpectrumLoss(student, teacher, student_groups="layer", teacher_groups="layer",
                                 distance="js", backend=backend)
    first = loss_fn.teacher_spectra()
    assert loss_fn.teacher_spectra() is first  # cached
    loss = loss_fn()
    loss.backward()
    assert student.stem.weight.grad is not None and teacher.stem.weight.grad is None
    direct = weight_spectrum_distance(conv_weight_groups(student), conv_weight_groups(teacher), distance="js",
                                      backend=backend)
    assert_close(loss.detach(), direct.detach(), torch.float32)
    with torch.no_grad():
        teacher.stem.weight.mul_(2.0).add_(0.1)  # an in-place update invalidates the cache
    second = loss_fn.teacher_spectra()
    assert second is not first and not torch.equal(second[0], first[0])


@pytest.mark.parametrize("backend", ALL)
def test_module_trains_the_teacher(backend, device):
    student, teacher = TinyNet(4).to(device), TinyNet(6).to(device)
    expect_device(device, list(student.parameters()), list(teacher.parameters()))
    loss_fn = WeightSpectrumLoss(student, teacher, student_groups=["stem", "layer1"],
                                 teacher_groups=["stem", "layer1"], backend=backend)
    loss_fn().backward()
    assert teacher.stem.weight.grad is not None and teacher.layer1[2].weight.grad.abs().sum() > 0
    assert student.layer1[0].weight.grad.abs().sum() > 0 and "stem" in repr(loss_fn)


# ---- bad input ---------------------------------------------------------------------------

@pytest.mark.parametrize("student,teacher,options,error,match", [
    ([torch.randn(2, 2, 1, 1)], [torch.randn(2, 2, 1, 1)], {}, ValueError, r"student\[0\] has 1x1"),
    ([[torch.randn(2, 2, 3, 3), torch.randn(2, 2, 1, 3, 3)]], [torch.randn(2, 2, 3, 3)], {}, ValueError,
     r"student\[0\]\[1\] has kernel size"),
    ([torch.randn(2, 2, 3, 3)], [torch.randn(2, 2, 3, 2)], {}, ValueError, r"teacher\[0\] has kernel size"),
    ([torch.randn(2, 2, 3, 3)], [torch.rand(8)], {}, ValueError, r"teacher\[0\] is a distribution of 8"),
    ([torch.randn(2, 2, 3, 3)], [torch.rand(9)], {"drop_dc": True}, ValueError, "drop_dc"),
    ([torch.randn(2, 2, 3, 3)], [], {}, TypeError, "teacher"),
    ([torch.randn(2, 2, 3, 3)] * 2, [torch.randn(2, 2, 3, 3)], {}, ValueError, "pair by position"),
    ([torch.randn(2, 3, 3)], [torch.randn(2, 2, 3, 3)], {}, ValueError, r"student\[0\] must be a conv weight"),
    ([torch.ones(2, 2, 3, 3, dtype=torch.int64)], [torch.randn(2, 2, 3, 3)], {}, TypeError, r"student\[0\]"),
    ([torch.randn(0, 2, 3, 3)], [torch.randn(2, 2, 3, 3)], {}, ValueError, r"student\[0\] is empty"),
    ([[]], [torch.randn(2, 2, 3, 3)], {}, ValueError, "empty group"),
    ([[torch.randn(2, 2, 3, 3), torch.randn(2, 2, 3, 3, device="meta")]], [torch.randn(2, 2, 3, 3)], {}, ValueError,
     r"student\[0\]\[1\] is on meta"),
    ([torch.randn(2, 2, 3, 3)], [torch.randn(2, 2, 3, 3, device="meta")], {}, ValueError,
     r"teacher\[0\] is on meta but student\[0\] is on cpu"),
    ([torch.randn(2, 2, 3, 3), torch.randn(2, 2, 3, 3, device="meta")], [torch.rand(9)] * 2, {}, ValueError,
     r"teacher\[1\] is on cpu but student\[1\] is on meta"),
    ([torch.randn(2, 2, 3, 3), torch.randn(2, 2, 3, 3, device="meta")], [torch.rand(9), torch.rand(9, device="meta")],
     {}, ValueError,
     r"student\[1\] is on meta but student\[0\] is on cpu"),
    (["w"], [torch.randn(2, 2, 3, 3)], {}, TypeError, r"student\[0\]"),
    ([torch.randn(2, 2, 3, 3)], [torch.randn(2, 2, 3, 3)], {"distance": "cos"}, ValueError, "distance"),
    ([torch.randn(2, 2, 3, 3)], [torch.randn(2, 2, 3, 3)], {"transform": "dft"}, ValueError, "transform"),
    ([torch.randn(2, 2, 3, 3)], [torch.randn(2, 2, 3, 3)], {"reduction": "none"}, ValueError, "reduction"),
    ([torch.randn(2, 2, 3, 3)], [torch.randn(2, 2, 3, 3)], {"eps": 0.0}, ValueError, "eps"),
    ([torch.randn(2, 2, 3, 3)], [torch.randn(2, 2, 3, 3)], {"drop_dc": 1}, TypeError, "drop_dc"),
    ([torch.randn(2, 2, 3, 3)], [torch.randn(2, 2, 3, 3)], {"backend": "gpu"}, ValueError, "backend"),
])
def test_bad_input(student, teacher, options, error, match):
    with pytest.raises(error, match=match):
        weight_spectrum_distance(student, teacher, **options)


@pytest.mark.parametrize("backend", ALL)
def test_nan_weights_are_named(backend, device, monkeypatch):
    monkeypatch.setenv("VKD_CHECK_FINITE", "1")  # on by default on the CPU only
    w = torch.randn(3, 2, 3, 3, device=device)
    w[1, 1, 2, 2] = float("nan")
    teacher = [torch.randn(2, 2, 3, 3, device=device)] * 2
    with pytest.raises(ValueError, match=r"student\[1\] contains NaN"):
        call(weight_spectrum_distance, device, [torch.randn(2, 2, 3, 3, device=device), w], teacher, backend=backend)


@pytest.mark.skipif(unavailable("cpu") is not None, reason=f"the cpu backend cannot run: {unavailable('cpu')}")
@pytest.mark.parametrize("isa", ["x86-64-v4", "x86-64-v3", "base"])
def test_cpu_gram_variants(isa):
    """Each instruction-set variant of the CPU Gram kernel (csrc/cpu/weights.cpp picks the
    CPU's best; VKD_WEIGHT_GRAM_ISA forces one) passes this file's comparisons of every
    dtype, kernel size, chunking and gradient, in a pytest subprocess."""
    tests = "cpu and (dtypes_and_kernels or vector_widths or many_splits or fuzz_shapes or gradcheck)"
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__, "-k", tests],
                          env={**os.environ, "VKD_WEIGHT_GRAM_ISA": isa}, capture_output=True, text=True)
    if "this CPU lacks it" in done.stdout + done.stderr:
        pytest.skip(f"this CPU lacks {isa}")
    assert done.returncode == 0 and " passed" in done.stdout, done.stdout[-3000:] + done.stderr[-2000:]
    assert " skipped" not in done.stdout.splitlines()[-1], done.stdout[-2000:]


@pytest.mark.skipif(unavailable("cpu") is not None, reason=f"the cpu backend cannot run: {unavailable('cpu')}")
def test_cpu_gram_variant_must_exist():
    done = subprocess.run([sys.executable, "-c", "import torch, vkd_kernels; vkd_kernels.weight_spectrum("
                           "torch.randn(2, 2, 3, 3), backend='cpu')"],
                          env={**os.environ, "VKD_WEIGHT_GRAM_ISA": "avx9"}, capture_output=True, text=True)
    assert done.returncode != 0 and "VKD_WEIGHT_GRAM_ISA must be x86-64-v4, x86-64-v3 or base" in done.stderr


@pytest.mark.skipif(unavailable("cpu") is not None, reason=f"the cpu backend cannot run: {unavailable('cpu')}")
def test_kernels_beyond_max_p_fall_back():
    big = [torch.randn(2, 1, 9, 9, 9)]  # 729 > MAX_P
    with pytest.raises(ValueError, match="exceeds the fused kernels' limit of 512"):
        weight_spectrum_distance(big, big, backend="cpu")
    with pytest.warns(RuntimeWarning, match="reference"):
        weight_spectrum_distance(big, big, backend="auto")


def test_layout_tables():
    """The plan: per-tile gram items (chunks x upper-triangle blocks) with their partial
    offsets, group and pair rows, backward items for the needed weights only."""
    spec = weights_layout.Spec(kernels=((2, 2), (3, 7, 7), (3, 7, 7)), tensors=((1, 6), (0, 2), (2, 3)),
                               teachers=(-1, 2), num_dists=1, parts=1, drop_dc=True, backend="triton",
                               needed=(0, 2), dists_needed=(0,))
    plan = weights_layout.make_plan(spec)  # pairs: group 0 with distribution 0, group 1 with group 2
    assert plan.P == (4, 147, 147) and plan.rows == (2, 6, 3) and plan.Pmax == 147 and plan.p_rows == 4
    (t16, small), (t32, big) = plan.gram
    assert (t16, t32) == (16, 32) and small == ((1, 0, 2, 4, 0, 0, 0, 0),)
    blocks = [(i0, j0) for i0 in range(0, 147, 32) for j0 in range(i0, 147, 32)]
    assert [(item[0], item[6], item[7]) for item in big] == [(t, *b) for t in (0, 2) for b in blocks]
    assert [item[4] for item in big] == [4 + 147 * n for n in range(len(big))]  # one P-vector partial each
    assert plan.groups == ((4, 2, 0, 1, 0, -1, 0), (147, 6, 4, 15, 16, 0, 1),
                           (147, 3, 4 + 15 * 147, 15, 16, 147 ** 2, 1))
    assert plan.pairs == ((0, 3, 0, 0), (1, 2, -1, -1)) and plan.dist_grad_size == 3
    assert plan.grad_offsets == (0, 6 * 147) and plan.m_size == 2 * 147 ** 2 and plan.finish_blocks == 25
    assert [(item[0], item[1], item[6]) for _, items in plan.backward for item in items] == \
        [(t, o, j0) for t, o in ((0, 0), (2, 6 * 147)) for j0 in range(0, 147, 32)]
