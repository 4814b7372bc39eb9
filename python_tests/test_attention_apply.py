"""attention_apply (docs/ops.md 3b): every fused backend against the float64 formula (values
and both gradients), odd row lengths, both sum scopes, strided layouts, s2 == 0 groups,
gradcheck, opcheck, torch.compile, bad input."""
import itertools

import pytest
import torch
from harness import ALL, FUSED, assert_close, call, compare, device_for, expect_device, saved_for_backward
from tolerances import tolerance

from vkd_kernels import AttentionApply, attention_apply

numeric = pytest.mark.numeric
DTYPES = (torch.float64, torch.float32, torch.float16, torch.bfloat16)
# spatial shapes: S = 1 (no spatial axis), 7, 49, 197
SPATIAL = ((), (7,), (7, 7), (197,))


def inputs(device, N, C, T, spatial, dtype=torch.float64):
    """F >= 0 (post-ReLU features, so sum(F lam) is well away from 0) and lam in (0, 1)."""
    F = torch.rand(N, C, T, *spatial, dtype=torch.float64, device=device).to(dtype).requires_grad_()
    lam = torch.rand(N, C, T, dtype=torch.float64, device=device).to(dtype).requires_grad_()
    return F, lam


def check_against_formula(backend, device, F, lam, per_sample, grad=None, spatial="keep", what=""):
    """Output and the gradients of the inputs requiring grad of ``backend`` vs the float64
    formula on the same inputs (harness.compare); spatial="mean": vs its mean over the
    spatial axes (k lam q / S from the row sums)."""
    compare(lambda b, xs: attention_apply(*xs, per_sample=per_sample, spatial=spatial, backend=b), (F, lam), backend,
            device, bound=tolerance(F.dtype, "attention_apply"), grad=grad, what=what,
            names=(("F_fg" if spatial == "keep" else "mean F_fg"),)
            + tuple(n for n, x in (("dF", F), ("dlam", lam)) if x.requires_grad))


@numeric
@pytest.mark.parametrize("backend", FUSED)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SPATIAL)
@pytest.mark.parametrize("per_sample", (True, False))
@pytest.mark.parametrize("spatial", ("keep", "mean"))
def test_matches_formula(backend, device, dtype, shape, per_sample, spatial):
    check_against_formula(backend, device, *inputs(device, 2, 3, 2, shape, dtype), per_sample, spatial=spatial)


@pytest.mark.parametrize("backend", FUSED)
def test_spatial_mean_keeps_nothing_feature_sized(backend, device):
    F, lam = inputs(device, 2, 8, 3, (4, 5), torch.float32)
    out, saved = saved_for_backward(call, attention_apply, device, F, lam, spatial="mean", backend=backend)
    assert out.shape == (2, 8, 3) and saved
    assert max(t.untyped_storage().nbytes() for t in saved) < F.untyped_storage().nbytes() // 4


@pytest.mark.parametrize("backend", FUSED)
def test_spatial_mean_of_a_zero_denominator_is_zero(backend, device):
    F, lam = inputs(device, 2, 3, 4, (2, 2))
    lam = lam.detach().index_fill(0, torch.tensor([0], device=device), 0).requires_grad_()
    out = call(attention_apply, device, F, lam, spatial="mean", backend=backend)
    dF, dlam = torch.autograd.grad(out, (F, lam), torch.randn_like(out))
    assert out[0].abs().max() == 0 and dF[0].abs().max() == 0
    assert torch.isfinite(out).all() and torch.isfinite(dF).all() and torch.isfinite(dlam).all()


@numeric
@pytest.mark.parametrize("backend", FUSED)
@pytest.mark.parametrize("per_sample", (True, False))
def test_channels_last_3d_and_strided_layouts(backend, device, per_sample):
    f64 = dict(dtype=torch.float64, device=device)
    base = torch.rand(2, 3, 4, 5, 6, **f64)
    lam = torch.rand(2, 3, 4, **f64, requires_grad=True)
    channels_last = base.to(memory_format=torch.channels_last_3d)
    assert not channels_last.is_contiguous()
    layouts = {
        "channels_last_3d": channels_last,
        "spatial stride 2": torch.rand(2, 3, 4, 5, 12, **f64)[..., ::2],
        "C and T swapped": torch.rand(2, 4, 3, 5, 6, **f64).transpose(1, 2),
        "H and W swapped (copied)": torch.rand(2, 3, 4, 6, 5, **f64).transpose(3, 4),
    }
    grad = torch.randn(2, 3, 4, 5, 6, **f64).to(memory_format=torch.channels_last_3d)
    for name, F in layouts.items():
        assert F.shape == base.shape and not F.is_contiguous(), name
        check_against_formula(backend, device, F.requires_grad_(), lam, per_sample, grad=grad)
        check_against_formula(backend, device, F, lam, per_sample, spatial="mean", what=name)


@numeric
@pytest.mark.parametrize("backend", FUSED)
@pytest.mark.parametrize("needs", ((True, False), (False, True)))
def test_only_the_needed_gradient(backend, device, needs):
    F, lam = inputs(device, 2, 3, 2, (3, 3))
    F.requires_grad_(needs[0])
    lam.requires_grad_(needs[1])
    check_against_formula(backend, device, F, lam, True)


@pytest.mark.parametrize("backend", FUSED)
def test_zero_denominator_gives_zero_not_nan(backend, device):
    F, lam = inputs(device, 2, 3, 4, (2, 2))
    lam = lam.detach()
    lam[0] = 0
    lam.requires_grad_()
    out = call(attention_apply, device, F, lam, backend=backend)
    grad = torch.randn_like(out)
    dF, dlam = torch.autograd.grad(out, (F, lam), grad)
    assert out[0].abs().max() == 0 and dF[0].abs().max() == 0 and torch.isfinite(dlam).all()
    # the other sample is untouched by sample 0's s2 == 0
    check_against_formula(backend, device, F[1:].detach().requires_grad_(), lam[1:].detach().requires_grad_(), True,
                          grad=grad[1:])
    F0 = torch.zeros(2, 3, 4, 2, 2, dtype=torch.float64, device=device, requires_grad=True)
    out = attention_apply(F0, lam, per_sample=False, backend=backend)
    out.sum().backward()
    assert out.abs().max() == 0 and torch.isfinite(F0.grad).all() and torch.isfinite(lam.grad).all()


def test_per_sample_differs_from_batch_global():
    F, lam = torch.rand(2, 3, 4, 5, 5, device=device_for("auto")), torch.rand(2, 3, 4, device=device_for("auto"))
    assert not torch.allclose(attention_apply(F, lam), attention_apply(F, lam, per_sample=False))


@pytest.mark.parametrize("backend", ALL)
@pytest.mark.parametrize("per_sample", (True, False))
@pytest.mark.parametrize("spatial", ("keep", "mean"))
def test_gradcheck_float64(backend, device, per_sample, spatial):
    F, lam = inputs(device, 2, 2, 2, (3,))
    # fast_mode (a random projection) for Triton keeps the interpreter run short
    assert call(torch.autograd.gradcheck, device,
                lambda a, b: attention_apply(a, b, per_sample=per_sample, spatial=spatial, backend=backend), (F, lam),
                fast_mode=backend == "triton")


@pytest.mark.parametrize("backend", FUSED)
def test_opcheck(backend, device):
    F, lam = inputs(device, 2, 3, 2, (2, 3))
    q = torch.rand(2, 6, dtype=torch.float64, device=device)
    expect_device(device, F, lam, q)
    for per_sample, spatial in itertools.product((True, False), ("keep", "mean")):
        torch.library.opcheck(torch.ops.vkd.attention_apply.default, (F, lam, per_sample, spatial, backend))
        sums = torch.rand(2 if per_sample else 1, 2, dtype=torch.float64, device=device)
        grad = torch.randn(F.shape if spatial == "keep" else F.shape[:3], dtype=F.dtype, device=device)
        for need_F in (True, False):
            torch.library.opcheck(torch.ops.vkd.attention_apply_backward.default,
                                  (grad, F.detach(), lam.detach(), q, sums, per_sample, spatial, backend, need_F))


@pytest.mark.parametrize("spatial", ("keep", "mean"))
def test_torch_compile_fullgraph(spatial):
    F, lam = inputs(device_for("auto"), 2, 3, 4, (3, 3), torch.float32)
    compiled = torch.compile(lambda a, b: attention_apply(a * 2, b, spatial=spatial).square().sum(), fullgraph=True)
    out = compiled(F, lam)
    got = torch.autograd.grad(out, (F, lam))
    expected = attention_apply(F * 2, lam, spatial=spatial).square().sum()
    assert_close(out.detach(), expected.detach(), torch.float32, "compiled")
    for name, g, e in zip(("dF", "dlam"), got, torch.autograd.grad(expected, (F, lam))):
        assert_close(g, e, torch.float32, f"compiled {name}")


BAD = [
    (lambda: attention_apply(torch.ones(2, 4, 3, 2), torch.ones(2, 4)), ValueError, "lam must be"),
    (lambda: attention_apply(torch.ones(2, 4), torch.ones(2, 4)), ValueError, "lam must be"),
    (lambda: attention_apply(torch.ones(2, 4, 3, 2), torch.ones(2, 4, 3).double()), TypeError, "lam has dtype"),
    (lambda: attention_apply(torch.ones(2, 4, 3), torch.ones(2, 4, 3), per_sample=1), TypeError, "per_sample"),
    (lambda: attention_apply(torch.ones(2, 4, 3, dtype=torch.int64), torch.ones(2, 4, 3)), TypeError, "F must be"),
    (lambda: attention_apply(torch.ones(2, 4, 3), [1.0]), TypeError, "lam must be"),
    (lambda: attention_apply(torch.ones(2, 4, 3, 0), torch.ones(2, 4, 3)), ValueError, "F is empty"),
    (lambda: attention_apply(torch.ones(2, 4, 3), torch.ones(2, 4, 3), backend="gpu"), ValueError, "backend"),
    (lambda: attention_apply(torch.ones(2, 4, 3).index_fill(0, torch.tensor([1]), float("nan")),
                             torch.ones(2, 4, 3), backend="cpu"), ValueError, "F contains NaN"),
    (lambda: attention_apply(torch.ones(2, 4, 3), torch.ones(2, 4, 3).index_fill(2, torch.tensor([0]), float("inf")),
                             backend="cpu"), ValueError, "lam contains NaN or inf"),
    (lambda: attention_apply(torch.ones(2, 4, 3), torch.ones(2, 4, 3), backend="cuda"), ValueError,
     "backend='cuda' cannot run attention_apply"),
    (lambda: attention_apply(torch.ones(2, 4, 3), torch.ones(2, 4, 3), spatial="max"), ValueError, "spatial must be"),
    (lambda: attention_apply(torch.ones(2, 4, 3, 2).index_fill(0, torch.tensor([1]), float("nan")),
                             torch.ones(2, 4, 3), spatial="mean"), ValueError, "F contains NaN"),
    (lambda: AttentionApply(per_sample=1), TypeError, "per_sample must be a bool"),
    (lambda: AttentionApply(spatial="sum"), ValueError, "spatial must be"),
    (lambda: AttentionApply(backend="gpu"), ValueError, "backend"),
]


@pytest.mark.parametrize("case", range(len(BAD)))
def test_bad_input(case):
    call, error, message = BAD[case]
    with pytest.raises(error, match=message):
        call()


@pytest.mark.parametrize("backend", ALL)
@pytest.mark.parametrize("per_sample", (True, False))
@pytest.mark.parametrize("spatial", ("keep", "mean"))
def test_module_is_the_function(backend, device, per_sample, spatial):
    F, lam = inputs(device, 2, 3, 4, (5,))
    module = AttentionApply(per_sample=per_sample, spatial=spatial, backend=backend)
    assert f"per_sample={per_sample}, spatial={spatial!r}" in repr(module)
    torch.testing.assert_close(call(module, device, F, lam),
                               attention_apply(F, lam, per_sample=per_sample, spatial=spatial, backend=backend),
                               rtol=0, atol=0)


@pytest.mark.parametrize("backend", FUSED)
def test_a_strided_lam_is_read_by_its_strides(backend, device):
    """lam = big[..., 0] (strides (24, 8, 2)): its flat rows are a stride-2 view, which the
    kernels, reading lam[r] at r, must not take as contiguous."""
    F = torch.rand(2, 3, 4, 5, 5, device=device, dtype=torch.float64)
    lam = torch.rand(2, 3, 4, 2, device=device, dtype=torch.float64)[..., 0]
    expect_device(device, [F, lam])
    torch.testing.assert_close(attention_apply(F, lam, backend=backend), attention_apply(F, lam, backend="reference"))
