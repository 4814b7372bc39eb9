"""Attention-transfer maps and loss: every backend against the reference, the reference
against an independent float64 formula, gradients, registration, errors."""

import pytest
import torch
from harness import ALL, FUSED, assert_close, call, compare, device_for, saved_for_backward
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tolerances import tolerance

from vkd_kernels import AttentionTransferLoss, attention_map, attention_transfer_loss
from vkd_kernels.attention.layout import Geometry

numeric = pytest.mark.numeric


def features(device, shape_s, shape_t=None, dtype=torch.float32, teacher_grad=True):
    fs = torch.randn(shape_s, device=device).to(dtype).requires_grad_()
    ft = torch.randn(shape_t or shape_s, device=device).to(dtype).requires_grad_(teacher_grad)
    return fs, ft


def run(backend, fs, ft, grad=None, **options):
    out = attention_transfer_loss(fs, ft, backend=backend, **options)
    grad = torch.full_like(out, 1.7) if grad is None else grad
    wrt = [x for x in (fs, ft) if x.requires_grad]
    return out, torch.autograd.grad(out, wrt, grad)


def check_backend(backend, device, fs, ft, **options):
    """Loss and both gradients against the reference evaluated in float64 (harness.compare)."""
    compare(lambda b, xs: attention_transfer_loss(*xs, backend=b, **options), (fs, ft), backend, device,
            bound=tolerance(fs.dtype, "attention_transfer_loss", **options), names=("loss", "dfs", "dft"))


# ---- the reference against an independent float64 formula -------------------------------

def pool_direct(a, size):
    """Adaptive average pooling by its definition: bins [floor(i n / m), ceil((i + 1) n / m))."""
    out = a
    for axis, m in enumerate(size, start=1):
        n = out.shape[axis]
        bins = [out.narrow(axis, (i * n) // m, -(-(i + 1) * n // m) - (i * n) // m).mean(axis, keepdim=True)
                for i in range(m)]
        out = torch.cat(bins, axis)
    return out


def loss_direct(fs, ft, p, mode, distance):
    maps = []
    for x in (fs.double(), ft.double()):
        maps.append(torch.einsum("nc...->n...", x.abs() ** p) / x.shape[1])
    size = [min(s, t) for s, t in zip(maps[0].shape[1:], maps[1].shape[1:])]
    normed = []
    for a in maps:
        a = pool_direct(a, size)
        dims = tuple(range(1 if mode == "spatiotemporal" else 2, a.dim()))
        normed.append(a / a.square().sum(dims, keepdim=True).sqrt())
    d = normed[0] - normed[1]
    return d.square().mean() if distance == "mse" else d.flatten(1).norm(dim=1).mean()


@pytest.mark.parametrize("p", (2, 1, 3.5, 0.5))
@pytest.mark.parametrize("mode", ("spatiotemporal", "per_frame"))
@pytest.mark.parametrize("distance", ("mse", "l2"))
def test_reference_matches_direct_formula(p, mode, distance):
    fs, ft = features(device_for("reference"), (2, 3, 5, 7, 6), (2, 4, 3, 4, 9), dtype=torch.float64)
    got = attention_transfer_loss(fs, ft, p=p, mode=mode, distance=distance, backend="reference")
    assert_close(got, loss_direct(fs, ft, p, mode, distance), torch.float64, "reference")


@numeric
@pytest.mark.parametrize("backend", ALL)
def test_map_is_unit_norm_and_matches_formula(backend, device):
    x = torch.randn(2, 5, 3, 4, 4, dtype=torch.float64, device=device)
    a = call(attention_map, device, x, mode="per_frame", backend=backend)
    raw = x.square().mean(1)
    assert_close(a, raw / raw.square().sum((2, 3), keepdim=True).sqrt(), torch.float64, backend)


# ---- backends against the reference --------------------------------------------------

@numeric
@pytest.mark.parametrize("backend", FUSED)
@pytest.mark.parametrize("dtype", (torch.float32, torch.float64, torch.float16, torch.bfloat16))
@pytest.mark.parametrize("p", (2, 1, 1.5))
def test_dtypes_and_exponents(backend, device, dtype, p):
    check_backend(backend, device, *features(device, (2, 3, 5, 3, 7), (2, 19, 5, 3, 7), dtype=dtype), p=p)


@numeric
@pytest.mark.parametrize("backend", FUSED)
@pytest.mark.parametrize("mode", ("spatiotemporal", "per_frame"))
@pytest.mark.parametrize("distance", ("mse", "l2"))
@pytest.mark.parametrize("reduction", ("mean", "sum", "none"))
def test_options_and_pooling(backend, device, mode, distance, reduction):
    # teacher map (7, 6, 5) is pooled on T and H to the student's (3, 4), the student's W 9 to 5
    check_backend(backend, device, *features(device, (1, 3, 3, 4, 9), (1, 130, 7, 6, 5)), mode=mode,
                  distance=distance, reduction=reduction)


@numeric
@pytest.mark.parametrize("backend", FUSED)
@pytest.mark.parametrize("pooled", ("teacher", "student"))
@pytest.mark.parametrize("mode", ("spatiotemporal", "per_frame"))
@pytest.mark.parametrize("distance", ("mse", "l2"))
def test_pooling_in_equal_bins(backend, device, pooled, mode, distance):
    """Every axis halves (6, 8, 10) -> (3, 4, 5): the finish's equal-bin path (each raw
    element in one bin), with the gradient of the pooled side too."""
    small, large = (1, 3, 3, 4, 5), (1, 5, 6, 8, 10)
    shapes = (small, large) if pooled == "teacher" else (large, small)
    check_backend(backend, device, *features(device, *shapes), mode=mode, distance=distance)


LAYOUTS = {
    "channels_last_3d": lambda x: x.detach().to(memory_format=torch.channels_last_3d).requires_grad_(x.requires_grad),
    "non_contiguous": lambda x: x.detach().transpose(3, 4).contiguous().transpose(3, 4).requires_grad_(x.requires_grad),
    "strided_slice": lambda x: x.detach()[:, ::2].requires_grad_(x.requires_grad),
}


@numeric
@pytest.mark.parametrize("backend", FUSED)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_layouts(backend, device, layout):
    fs, ft = features(device, (2, 6, 3, 5, 7), (2, 10, 3, 5, 7))
    check_backend(backend, device, LAYOUTS[layout](fs), LAYOUTS[layout](ft))


@numeric
@pytest.mark.parametrize("backend", FUSED)
def test_channel_dim_last_and_4d_images(backend, device):
    fs, ft = features(device, (2, 3, 5, 7, 4), (2, 3, 5, 7, 9))  # (N, T, H, W, C)
    check_backend(backend, device, fs, ft, channel_dim=-1, mode="per_frame")
    check_backend(backend, device, *features(device, (1, 4, 13, 11), (1, 9, 13, 11)))  # (N, C, H, W)


@pytest.mark.parametrize("backend", ALL)
def test_teacher_without_grad_gets_none(backend, device):
    fs, ft = features(device, (2, 3, 4, 5, 6), teacher_grad=False)
    out = call(attention_transfer_loss, device, fs, ft, backend=backend)
    out.backward()
    assert fs.grad is not None and ft.grad is None


# eager |x|^p has an infinite derivative at 0 for p < 1 (NaN gradient); the fused kernels use 0
@pytest.mark.parametrize("backend", ALL)
@pytest.mark.parametrize("p", (2, 1, 0.5))
def test_zero_features_give_finite_values_and_gradients(backend, device, p):
    if backend == "reference" and p < 1:
        pytest.skip("eager |x|^p has an infinite derivative at 0 for p < 1 (a NaN gradient by design)")
    fs, ft = features(device, (2, 3, 4, 5, 6), dtype=torch.float64)
    with torch.no_grad():
        fs[0] = 0   # an all-zero sample: zero map, zero norm
        fs[1, :, :, 0] = 0   # zero positions: |x|^(p-1) is infinite there for p < 1
    out, grads = call(run, device, backend, fs, ft, p=p)
    assert torch.isfinite(out) and all(torch.isfinite(g).all() for g in grads)
    assert grads[0][0].abs().max() == 0 and grads[0][1].abs().max() > 0


@pytest.mark.parametrize("backend", ALL)
@pytest.mark.parametrize("options", ({"p": 2}, {"p": 1.5, "mode": "per_frame", "distance": "l2"}))
def test_gradcheck_float64(backend, device, options):
    fs, ft = features(device, (2, 2, 2, 3, 2), (2, 3, 3, 2, 2), dtype=torch.float64)  # pooled on T and H
    # fast_mode (a random projection) for the fused backends keeps the interpreter run short;
    # their full Jacobians are compared with the reference's above
    assert call(torch.autograd.gradcheck, device,
                lambda a, b: attention_transfer_loss(a, b, backend=backend, **options), (fs, ft),
                fast_mode=backend != "reference")


@pytest.mark.parametrize("backend", FUSED)
def test_only_the_inputs_are_kept_for_backward(backend, device):
    """Nothing of feature size beyond the inputs is saved: the backward re-reads them."""
    fs, ft = features(device, (2, 8, 3, 4, 5))
    _, saved = saved_for_backward(call, attention_transfer_loss, device, fs, ft, backend=backend)
    big = [t for t in saved if t.numel() >= fs.numel() and t.data_ptr() not in (fs.data_ptr(), ft.data_ptr())]
    assert saved and not big


@pytest.mark.parametrize("backend", FUSED)
@pytest.mark.parametrize("side", ("student", "teacher"))
def test_a_feature_without_grad_is_not_kept(backend, device, side):
    """A feature that needs no gradient (the usual no-grad teacher; or a frozen student) is
    freed with the forward; the other one's gradient is unchanged."""
    fs, ft = features(device, (2, 8, 3, 4, 5), (2, 6, 3, 4, 5))
    needed, dropped = (fs, ft.requires_grad_(False)) if side == "student" else (ft, fs.requires_grad_(False))
    (out, (grad,)), saved = saved_for_backward(call, run, device, backend, fs, ft)
    storages = {t.untyped_storage().data_ptr() for t in saved}
    assert needed.untyped_storage().data_ptr() in storages and dropped.untyped_storage().data_ptr() not in storages
    assert max(t.untyped_storage().nbytes() for t in saved if t.shape == dropped.shape) < dropped.element_size() * 2
    expected, (expected_grad,) = run("reference", fs, ft)
    assert_close(out, expected, torch.float32, "loss")
    assert_close(grad, expected_grad, torch.float32, f"gradient of the {side}")


# ---- registration, compile, module ---------------------------------------------------

@pytest.mark.parametrize("backend", FUSED)
def test_opcheck(backend, device):
    fs, _ = features(device, (2, 3, 4, 5, 6))
    for p in (2.0, 1.5):
        call(torch.library.opcheck, device, torch.ops.vkd.attention_raw_map.default, (fs, p, 1, backend, "fs"))
    fs, ft = features(device, (2, 3, 4, 5, 6), (2, 5, 2, 5, 3))  # both pooled
    for mode, distance, reduction in (("spatiotemporal", "mse", "mean"), ("per_frame", "l2", "none"),
                                      ("per_frame", "mse", "none")):
        options = (1.5, 1, 1, mode, distance, reduction, backend)
        call(torch.library.opcheck, device, torch.ops.vkd.attention_transfer.default, (fs, ft, *options))
        per, parts_s, parts_t = torch.ops.vkd.attention_transfer.default(fs.detach(), ft.detach(), *options)
        grad = torch.randn_like(per)
        call(torch.library.opcheck, device, torch.ops.vkd.attention_transfer_backward.default,
             (grad, fs.detach(), ft.detach(), parts_s, parts_t, *options, True, True))


def test_torch_compile_fullgraph():
    loss = AttentionTransferLoss()
    fs, ft = features(device_for("auto"), (2, 4, 3, 5, 6), (2, 8, 3, 5, 6), teacher_grad=False)
    compiled = torch.compile(lambda a, b: loss(a * 2, b), fullgraph=True)
    out = compiled(fs, ft)
    out.backward()
    grad = fs.grad.clone()
    fs.grad = None
    expected = loss(fs * 2, ft)
    expected.backward()
    assert_close(out.detach(), expected.detach(), torch.float32, "compiled loss")
    assert_close(grad, fs.grad, torch.float32, "compiled grad")


def test_module_matches_function():
    fs, ft = features(device_for("auto"), (2, 3, 4, 5, 6), (2, 7, 4, 5, 6))
    module = AttentionTransferLoss(p=1.5, mode="per_frame", distance="l2")
    assert "per_frame" in repr(module)
    assert_close(module(fs, ft), attention_transfer_loss(fs, ft, p=1.5, mode="per_frame", distance="l2"),
                 torch.float32, "module")


def test_loss_trains_student_towards_teacher():
    torch.manual_seed(1)
    fs, ft = features(device_for("auto"), (2, 4, 3, 5, 5), (2, 6, 3, 5, 5), teacher_grad=False)
    fs = fs.detach().requires_grad_()
    opt = torch.optim.SGD([fs], lr=1000.0)  # the mse of unit-norm maps is tiny
    first = None
    for _ in range(30):
        loss = attention_transfer_loss(fs, ft)
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.1 * first


BAD = [
    (lambda s, t: attention_transfer_loss(s, t.double()), TypeError, "ft has dtype"),
    (lambda s, t: attention_transfer_loss(s.int(), t), TypeError, "fs must be float"),
    (lambda s, t: attention_transfer_loss(s.detach().numpy(), t), TypeError, "fs must be a torch.Tensor"),
    (lambda s, t: attention_transfer_loss(s, t[:1]), ValueError, "same rank and batch size"),
    (lambda s, t: attention_transfer_loss(s, t, channel_dim=5), ValueError, "channel_dim=5"),
    (lambda s, t: attention_transfer_loss(s, t, channel_dim=0), ValueError, "channel_dim must not be 0"),
    (lambda s, t: attention_transfer_loss(s[:0], t[:0]), ValueError, "fs is empty"),
    (lambda s, t: attention_transfer_loss(s, t, p=0), ValueError, "p must be > 0"),
    (lambda s, t: attention_transfer_loss(s, t, p=float("inf")), ValueError, "p must be > 0"),
    (lambda s, t: attention_transfer_loss(s, t, mode="global"), ValueError, "mode must be one of"),
    (lambda s, t: attention_transfer_loss(s, t, distance="l1"), ValueError, "distance must be one of"),
    (lambda s, t: attention_transfer_loss(s, t, reduction="avg"), ValueError, "reduction must be one of"),
    (lambda s, t: attention_transfer_loss(s, t, backend="gpu"), ValueError, "backend must be one of"),
    (lambda s, t: attention_transfer_loss(s[:, :, 0, 0], t[:, :, 0, 0], mode="per_frame"), ValueError, "per_frame"),
    (lambda s, t: attention_transfer_loss(s[:, 0, 0, 0], t[:, 0, 0, 0]), ValueError, "at least 3 dims"),
    (lambda s, t: attention_map(s, mode="global"), ValueError, "mode must be one of"),
    (lambda s, t: AttentionTransferLoss(distance="cos"), ValueError, "distance must be one of"),
]


@pytest.mark.parametrize("case", range(len(BAD)))
def test_bad_input(case):
    call, error, message = BAD[case]
    fs, ft = features("cpu", (2, 3, 4, 5, 6))
    with pytest.raises(error, match=message):
        call(fs, ft)


def test_mismatched_devices():
    fs, ft = features("cpu", (2, 3, 4, 5, 6))
    with pytest.raises(ValueError, match="ft is on meta but fs is on cpu"):
        attention_transfer_loss(fs, ft.to("meta"))


def test_maps_past_the_cpp_index_limit_are_refused_before_any_work():
    """The C++ finish indexes within a sample in 32 bits: a larger map is refused by the
    cpu backend with the reason before any kernel runs (a zero-stride view of 2^31
    elements: nothing is allocated), and so is pooling an axis with (in + 1)(out + 1) past 2^31."""
    huge = torch.zeros(()).expand(1, 1, 1, 2**31)
    with pytest.raises(ValueError, match=r"backend='cpu' cannot run .*fs map of 2147483648 elements"):
        attention_transfer_loss(huge, huge, backend="cpu")
    long_s = Geometry(1, (1, 1, 50_000), (1, 1, 49_999), "spatiotemporal", "mse", "mean")
    assert "needs (in + 1) (out + 1) < 2^31" in long_s.index_limit()
    assert Geometry(1, (8, 14, 14), (4, 7, 7), "per_frame", "l2", "none").index_limit() is None


@pytest.mark.parametrize("backend", FUSED)
def test_non_finite_input_is_named(backend, device, monkeypatch):
    monkeypatch.setenv("VKD_CHECK_FINITE", "1")  # on by default on CPU tensors only
    fs, ft = features(device, (2, 3, 4, 5, 6))
    with torch.no_grad():
        ft[0, 0, 0, 0, 0] = float("inf")
    with pytest.raises(ValueError, match="ft contains NaN or inf"):
        call(attention_transfer_loss, device, fs, ft, backend=backend)


# ---- shape fuzzing ---------------------------------------------------------------------

@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(N=st.integers(1, 3), Cs=st.integers(1, 9), Ct=st.integers(1, 40), T=st.integers(1, 9), H=st.integers(1, 7),
       W=st.integers(2, 7), shrink=st.tuples(st.integers(0, 2), st.integers(0, 3), st.integers(0, 3)),
       p=st.sampled_from((2, 1, 1.5, 3)), mode=st.sampled_from(("spatiotemporal", "per_frame")),
       distance=st.sampled_from(("mse", "l2")), seed=st.integers(0, 2**31 - 1))
def test_fuzz_cpu_backend(N, Cs, Ct, T, H, W, shrink, p, mode, distance, seed):
    torch.manual_seed(seed)  # the inputs are part of the example, so a failure replays
    # W >= 2: at least 2 elements per frame, so the loss can be nonzero
    teacher_map = (max(1, T - shrink[0]), max(1, H - shrink[1]), max(2, W - shrink[2]))
    check_backend("cpu", "cpu", *features("cpu", (N, Cs, T, H, W), (N, Ct) + teacher_map), p=p, mode=mode,
                  distance=distance)
