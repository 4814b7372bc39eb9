"""attention_apply (ops.md 3b): every fused backend against the float64 formula (values
and both gradients), odd row lengths, both sum scopes, strided layouts, s2 == 0 groups,
gradcheck, opcheck, torch.compile, bad input."""
import pytest
import torch
from conftest import FUSED_BACKENDS, assert_close

from vkd_kernels import attention_apply

DTYPES = (torch.float64, torch.float32, torch.float16, torch.bfloat16)
# spatial shapes: S = 1 (no spatial axis), 7, 49, 197
SPATIAL = ((), (7,), (7, 7), (197,))


def inputs(N, C, T, spatial, dtype=torch.float64):
    """F >= 0 (post-ReLU features, so sum(F lam) is well away from 0) and lam in (0, 1)."""
    F = torch.rand(N, C, T, *spatial, dtype=torch.float64).to(dtype).requires_grad_()
    lam = torch.rand(N, C, T, dtype=torch.float64).to(dtype).requires_grad_()
    return F, lam


def check_against_formula(backend, F, lam, per_sample, grad=None, needs=(True, True)):
    """Output and the requested gradients of ``backend`` vs the float64 formula on the same inputs."""
    got = attention_apply(F, lam, per_sample=per_sample, backend=backend)
    F64, lam64 = (x.detach().double().requires_grad_(need) for x, need in zip((F, lam), needs))
    expected = attention_apply(F64, lam64, per_sample=per_sample, backend="reference")
    grad = torch.randn_like(expected) if grad is None else grad
    assert got.dtype == F.dtype and got.shape == F.shape
    assert_close(got, expected, F.dtype, "F_fg")
    wanted = [(name, x, x64) for name, x, x64, need in zip(("dF", "dlam"), (F, lam), (F64, lam64), needs) if need]
    got_grads = torch.autograd.grad(got, [w[1] for w in wanted], grad.to(F.dtype))
    expected_grads = torch.autograd.grad(expected, [w[2] for w in wanted], grad.double())
    for (name, x, _), g, e in zip(wanted, got_grads, expected_grads):
        assert g.dtype == x.dtype
        assert_close(g, e, F.dtype, name)


@pytest.mark.parametrize("backend", FUSED_BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("spatial", SPATIAL)
@pytest.mark.parametrize("per_sample", (True, False))
def test_matches_formula(backend, dtype, spatial, per_sample):
    check_against_formula(backend, *inputs(2, 3, 2, spatial, dtype), per_sample)


@pytest.mark.parametrize("backend", FUSED_BACKENDS)
@pytest.mark.parametrize("per_sample", (True, False))
def test_channels_last_3d_and_strided_layouts(backend, per_sample):
    base = torch.rand(2, 3, 4, 5, 6, dtype=torch.float64)
    lam = torch.rand(2, 3, 4, dtype=torch.float64, requires_grad=True)
    channels_last = base.to(memory_format=torch.channels_last_3d)
    assert not channels_last.is_contiguous()
    layouts = {
        "channels_last_3d": channels_last,
        "spatial stride 2": torch.rand(2, 3, 4, 5, 12, dtype=torch.float64)[..., ::2],
        "C and T swapped": torch.rand(2, 4, 3, 5, 6, dtype=torch.float64).transpose(1, 2),
        "H and W swapped (copied)": torch.rand(2, 3, 4, 6, 5, dtype=torch.float64).transpose(3, 4),
    }
    grad = torch.randn(2, 3, 4, 5, 6, dtype=torch.float64).to(memory_format=torch.channels_last_3d)
    for name, F in layouts.items():
        assert F.shape == base.shape and not F.is_contiguous(), name
        check_against_formula(backend, F.requires_grad_(), lam, per_sample, grad=grad)


@pytest.mark.parametrize("backend", FUSED_BACKENDS)
@pytest.mark.parametrize("needs", ((True, False), (False, True)))
def test_only_the_needed_gradient(backend, needs):
    F, lam = inputs(2, 3, 2, (3, 3))
    F.requires_grad_(needs[0])
    lam.requires_grad_(needs[1])
    check_against_formula(backend, F, lam, True, needs=needs)


@pytest.mark.parametrize("backend", FUSED_BACKENDS)
def test_zero_denominator_gives_zero_not_nan(backend):
    F, lam = inputs(2, 3, 4, (2, 2))
    lam = lam.detach()
    lam[0] = 0
    lam.requires_grad_()
    out = attention_apply(F, lam, backend=backend)
    grad = torch.randn_like(out)
    dF, dlam = torch.autograd.grad(out, (F, lam), grad)
    assert out[0].abs().max() == 0 and dF[0].abs().max() == 0 and torch.isfinite(dlam).all()
    # the other sample is untouched by sample 0's s2 == 0
    check_against_formula(backend, F[1:].detach().requires_grad_(), lam[1:].detach().requires_grad_(), True,
                          grad=grad[1:])
    F0 = torch.zeros(2, 3, 4, 2, 2, dtype=torch.float64, requires_grad=True)
    out = attention_apply(F0, lam, per_sample=False, backend=backend)
    out.sum().backward()
    assert out.abs().max() == 0 and torch.isfinite(F0.grad).all() and torch.isfinite(lam.grad).all()


def test_per_sample_differs_from_batch_global():
    F, lam = torch.rand(2, 3, 4, 5, 5), torch.rand(2, 3, 4)
    assert not torch.allclose(attention_apply(F, lam), attention_apply(F, lam, per_sample=False))


@pytest.mark.parametrize("backend", ["reference"] + FUSED_BACKENDS)
@pytest.mark.parametrize("per_sample", (True, False))
def test_gradcheck_float64(backend, per_sample):
    F, lam = inputs(2, 2, 2, (3,))
    # fast_mode (a random projection) for Triton keeps the interpreter run short
    assert torch.autograd.gradcheck(lambda a, b: attention_apply(a, b, per_sample=per_sample, backend=backend),
                                    (F, lam), fast_mode=backend == "triton")


@pytest.mark.parametrize("backend", FUSED_BACKENDS)
def test_opcheck(backend):
    F, lam = inputs(2, 3, 2, (2, 3))
    q = torch.rand(2, 6, dtype=torch.float64)
    for per_sample in (True, False):
        torch.library.opcheck(torch.ops.vkd.attention_apply.default, (F, lam, per_sample, backend))
        for need_F in (True, False):
            torch.library.opcheck(torch.ops.vkd.attention_apply_backward.default,
                                  (torch.randn_like(F), F.detach(), lam.detach(), q, per_sample, backend, need_F))


def test_torch_compile_fullgraph():
    F, lam = inputs(2, 3, 4, (3, 3), torch.float32)
    compiled = torch.compile(lambda a, b: attention_apply(a * 2, b).square().sum(), fullgraph=True)
    out = compiled(F, lam)
    got = torch.autograd.grad(out, (F, lam))
    expected = attention_apply(F * 2, lam).square().sum()
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
]


@pytest.mark.parametrize("case", range(len(BAD)))
def test_bad_input(case):
    call, error, message = BAD[case]
    with pytest.raises(error, match=message):
        call()
