"""Temporal spectrum loss: every backend against the reference, the reference against
an independent float64 DFT, gradients, registration, errors (docs/engineering.md recipe)."""
import math
import subprocess
import sys

import pytest
import torch
from harness import ALL, FUSED, assert_close, call, compare, device_for, expect_device, interpreted
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from launch_audit import audit
from tolerances import tolerance, well_conditioned

from vkd_kernels import TemporalSpectrumLoss, _backend, temporal_spectrum_loss
from vkd_kernels.spectrum import layout

SPECTRA = ("magnitude", "power", "log_magnitude")
numeric = pytest.mark.numeric


def run(backend, student, teacher, grad=None, **options):
    """Loss and (dstudent, dteacher) for grad_output ``grad`` (default 1.7)."""
    out = temporal_spectrum_loss(student, teacher, backend=backend, **options)
    if grad is None:
        grad = torch.full_like(out, 1.7)
    wrt = [x for x in (student, teacher) if x.requires_grad]
    grads = torch.autograd.grad(out, wrt, grad)
    return out, grads


def inputs(shape, device, dtype=torch.float32, teacher_grad=True):
    student = torch.randn(shape, device=device).to(dtype).requires_grad_()
    teacher = torch.randn(shape, device=device).to(dtype).requires_grad_(teacher_grad)
    return student, teacher


def check_backend(backend, device, student, teacher, **options):
    """Loss and both gradients of ``backend`` against the reference in float64 on the
    same values (harness.compare), within the tolerance table's bound."""
    expect_device(device, options)  # bin_weights
    # ill-conditioned float32 settings run at a well-conditioned eps (tolerances.py)
    options = well_conditioned("temporal_spectrum_loss", student.dtype, options)
    compare(lambda b, xs: temporal_spectrum_loss(*xs, backend=b, **options), (student, teacher), backend, device,
            bound=tolerance(student.dtype, "temporal_spectrum_loss", **options),
            names=("loss", "dstudent", "dteacher"))


# ---- the reference against an independent float64 DFT ------------------------------

def direct_spectrum(x, time_dim, spectrum, norm, eps):
    """A by the DFT definition (docs/ops.md section 1), via explicit twiddle matrices."""
    T = x.shape[time_dim]
    K = T // 2 + 1
    t = torch.arange(T, dtype=torch.float64)
    k = torch.arange(K, dtype=torch.float64)
    angle = 2 * math.pi * torch.outer(t, k) / T
    scale = {"backward": 1.0, "ortho": T ** -0.5, "forward": 1.0 / T}[norm]
    xm = x.double().movedim(time_dim, -1)
    re = scale * xm @ torch.cos(angle)
    im = -scale * xm @ torch.sin(angle)
    power = re ** 2 + im ** 2
    value = {"power": power, "magnitude": torch.sqrt(power + eps),
             "log_magnitude": torch.log(torch.sqrt(power + eps) + eps)}[spectrum]
    return value.movedim(-1, time_dim)


@pytest.mark.parametrize("spectrum", SPECTRA)
@pytest.mark.parametrize("norm", ("backward", "ortho", "forward"))
@pytest.mark.parametrize("T", (2, 7, 8))
def test_reference_matches_direct_dft(spectrum, norm, T):
    s, t = torch.randn(2, 3, T, 4, 5, dtype=torch.float64), torch.randn(2, 3, T, 4, 5, dtype=torch.float64)
    w = torch.rand(T // 2 + 1, dtype=torch.float64)
    got = temporal_spectrum_loss(s, t, spectrum=spectrum, norm=norm, bin_weights=w, reduction="none",
                                 eps=1e-6, backend="reference")
    a_s, a_t = (direct_spectrum(x, 2, spectrum, norm, 1e-6) for x in (s, t))
    expected = w.view(-1, 1, 1) * (a_s - a_t) ** 2
    assert_close(got, expected, torch.float64, "reference none")
    mean = temporal_spectrum_loss(s, t, spectrum=spectrum, norm=norm, spatial="mean", eps=1e-6, backend="reference")
    assert_close(mean, ((a_s.mean((3, 4)) - a_t.mean((3, 4))) ** 2).mean(), torch.float64, "reference spatial mean")


def test_reference_takes_every_dtype():
    # torch.fft refuses bfloat16 and float16 with odd T; the reference upcasts.
    for dtype in (torch.bfloat16, torch.float16):
        s, t = inputs((2, 3, 7, 4, 5), device_for("reference"), dtype)
        out, grads = run("reference", s, t)
        assert out.dtype == dtype and all(g.dtype == dtype for g in grads)


# ---- every fused backend against the reference --------------------------------------

@numeric
@pytest.mark.parametrize("backend", FUSED)
@pytest.mark.parametrize("T", (2, 3, 7, 8, 13, 16, 17, 32, 33, 64))
def test_every_T(backend, device, T):
    check_backend(backend, device, *inputs((2, 3, T, 5, 3), device))  # S = 15: not a multiple of any tile


@numeric
@pytest.mark.parametrize("backend", FUSED)
@pytest.mark.parametrize("dtype", (torch.float32, torch.float64, torch.float16, torch.bfloat16))
@pytest.mark.parametrize("T", (7, 16))
@pytest.mark.parametrize("spatial", ("pixel", "mean"))
def test_dtypes(backend, device, dtype, T, spatial):
    check_backend(backend, device, *inputs((2, 3, T, 4, 5), device, dtype), spatial=spatial)


@numeric
@pytest.mark.parametrize("backend", FUSED)
@pytest.mark.parametrize("spectrum", SPECTRA)
@pytest.mark.parametrize("norm", ("backward", "ortho", "forward"))
@pytest.mark.parametrize("spatial", ("pixel", "mean"))
@pytest.mark.parametrize("reduction", ("mean", "sum", "none"))
def test_options(backend, device, spectrum, norm, spatial, reduction):
    options = dict(spectrum=spectrum, norm=norm, spatial=spatial, reduction=reduction, eps=1e-6)
    check_backend(backend, device, *inputs((2, 3, 7, 4, 5), device), **options)
    if spectrum != "power":
        # float32 ran at the well-conditioned eps 1e-2 (tolerances.WELL_CONDITIONED): eps 1e-6 in float64
        check_backend(backend, device, *inputs((2, 3, 7, 4, 5), device, torch.float64), **options)


@numeric
@pytest.mark.parametrize("backend", FUSED)
@pytest.mark.parametrize("weights", ("bin_weights", "drop_dc", "both"))
def test_bin_weights(backend, device, weights):
    w = torch.rand(5, device=device) if weights != "drop_dc" else None
    check_backend(backend, device, *inputs((2, 3, 9, 4, 5), device), bin_weights=w, drop_dc=weights != "bin_weights")


def _each(pair, fn):
    return tuple(fn(x.detach()).requires_grad_() for x in pair)


LAYOUTS = {  # name -> device -> ((student, teacher), options)
    "NCTHW": lambda d: (inputs((2, 3, 7, 4, 5), d), {}),
    "N=1": lambda d: (inputs((1, 3, 7, 4, 5), d), {}),
    "1x1 spatial": lambda d: (inputs((2, 3, 7, 1, 1), d), {}),
    "NTC time_dim=1": lambda d: (inputs((3, 7, 6), d), dict(time_dim=1)),
    "time last, negative time_dim": lambda d: (inputs((3, 4, 7), d), dict(time_dim=-1)),
    "rank 2 (B, T)": lambda d: (inputs((5, 9), d), dict(time_dim=1)),
    "TSM (N*T, C, H, W)": lambda d: (inputs((2 * 5, 3, 4, 5), d), dict(num_segments=5)),
    "non-contiguous slice": lambda d: (_each(inputs((2, 6, 7, 4, 5), d), lambda x: x[:, ::2]), {}),
    "transposed": lambda d: (_each(inputs((2, 3, 7, 4, 5), d), lambda x: x.transpose(3, 4)), {}),
    "channels_last_3d": lambda d: (_each(inputs((2, 3, 7, 4, 5), d),
                                         lambda x: x.contiguous(memory_format=torch.channels_last_3d)), {}),
    "mixed layouts": lambda d: ((inputs((2, 3, 7, 4, 5), d)[0],
                                 torch.randn(2, 3, 4, 5, 7, device=d).movedim(-1, 2).requires_grad_()), {}),
}


@numeric
@pytest.mark.parametrize("backend", FUSED)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("spatial", ("pixel", "mean"))
def test_layouts(backend, device, layout, spatial):
    (student, teacher), options = LAYOUTS[layout](device)
    check_backend(backend, device, student, teacher, spatial=spatial, **options)


@pytest.mark.parametrize("backend", ALL)
def test_teacher_without_grad_gets_none(backend, device):
    student, teacher = inputs((2, 3, 7, 4, 5), device, teacher_grad=False)
    out = call(temporal_spectrum_loss, device, student, teacher, backend=backend)
    out.backward()
    assert teacher.grad is None and torch.isfinite(student.grad).all() and student.grad.abs().sum() > 0


@pytest.mark.parametrize("backend", ALL)
def test_a_first_call_under_inference_mode_leaves_training_working(backend, device):
    """The cached bin weights made by a validation pass under inference_mode are not
    inference tensors, so a later training call can save them for backward."""
    T = 11  # a T no other test uses: the weights are made here first
    student, teacher = inputs((2, 3, T, 4, 5), device, teacher_grad=False)
    with torch.inference_mode():
        call(temporal_spectrum_loss, device, student, teacher, backend=backend, drop_dc=True)
    call(temporal_spectrum_loss, device, student, teacher, backend=backend, drop_dc=True).backward()
    assert torch.isfinite(student.grad).all() and student.grad.abs().sum() > 0


@numeric
@pytest.mark.parametrize("backend", ALL)
@pytest.mark.parametrize("spectrum, eps", [("magnitude", 1e-12), ("magnitude", 0.0), ("power", 1e-12),
                                           ("power", 0.0), ("log_magnitude", 1e-12)])  # log needs eps > 0
def test_zero_lines_give_finite_gradients(backend, device, spectrum, eps):
    student, teacher = inputs((2, 3, 8, 4, 5), device)
    with torch.no_grad():
        student[0, 1] = 0  # whole lines of zeros
        teacher[0, 1] = 0
        teacher[1, 2] = 0
    out = call(temporal_spectrum_loss, device, student, teacher, spectrum=spectrum, eps=eps, backend=backend)
    grads = torch.autograd.grad(out, (student, teacher))
    assert torch.isfinite(out) and all(torch.isfinite(g).all() for g in grads)
    if backend != "reference":
        # in float64: at eps 0 / 1e-12 float32 is ill-conditioned near the zero bins (tolerances.py)
        exact = tuple(x.detach().double().requires_grad_() for x in (student, teacher))
        check_backend(backend, device, *exact, spectrum=spectrum, eps=eps)


# ---- gradcheck in float64 ------------------------------------------------------------

@pytest.mark.parametrize("backend", ALL)
@pytest.mark.parametrize("options", (dict(), dict(spatial="mean", spectrum="log_magnitude", eps=1e-3),
                                     dict(spectrum="power", norm="ortho", reduction="none", drop_dc=True)))
def test_gradcheck_float64(backend, device, options):
    student, teacher = inputs((2, 2, 5, 2, 3), device, torch.float64)
    assert call(torch.autograd.gradcheck, device,
                lambda s, t: temporal_spectrum_loss(s, t, backend=backend, **options), (student, teacher),
                fast_mode=interpreted(backend))


# ---- registration, compile, module ---------------------------------------------------

@pytest.mark.parametrize("backend", FUSED)
def test_opcheck(backend, device):
    student, teacher = inputs((2, 3, 7, 4, 5), device)
    weights = torch.rand(4, device=device)
    for reduction, spatial in (("mean", "pixel"), ("none", "mean")):
        args = (student, teacher, weights, 2, None, "magnitude", "backward", spatial, reduction, 1e-12, backend)
        call(torch.library.opcheck, device, torch.ops.vkd.temporal_spectrum_loss.default, args)


def test_torch_compile_fullgraph():
    class Distill(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.adapter = torch.nn.Conv3d(3, 3, 1)
            self.loss = TemporalSpectrumLoss(spatial="pixel")

        def forward(self, student, teacher):
            return self.loss(self.adapter(student), teacher)

    device = device_for("auto")
    model = Distill().to(device)
    student, teacher = inputs((2, 3, 8, 4, 5), device, teacher_grad=False)
    compiled = torch.compile(model, fullgraph=True)
    out = compiled(student, teacher)
    out.backward()
    grad = student.grad.clone()
    student.grad = None
    expected = model(student, teacher)
    expected.backward()
    assert_close(out.detach(), expected.detach(), torch.float32, "compiled loss")
    assert_close(grad, student.grad, torch.float32, "compiled grad")


def test_module_matches_function_and_moves_weights():
    device = device_for("auto")
    w = torch.rand(5, device=device)
    module = TemporalSpectrumLoss(bin_weights=w, spectrum="power", spatial="mean")
    student, teacher = inputs((2, 3, 8, 4, 5), device)
    assert torch.equal(module(student, teacher),
                       temporal_spectrum_loss(student, teacher, bin_weights=w, spectrum="power", spatial="mean"))
    assert "spectrum='power'" in repr(module)
    assert torch.equal(module.bin_weights, w)
    assert module.to("meta").bin_weights.device.type == "meta"  # a buffer: follows .to(device)


def test_loss_trains_student_towards_teacher():
    teacher = torch.randn(2, 4, 8, 3, 3, device=device_for("auto"))
    student = (0.1 * torch.randn_like(teacher)).requires_grad_()  # zero is a stationary point of |X|
    optimizer = torch.optim.Adam([student], lr=0.05)
    first = None
    for _ in range(60):
        optimizer.zero_grad()
        loss = temporal_spectrum_loss(student, teacher)
        loss.backward()
        optimizer.step()
        first = first if first is not None else loss.item()
    assert loss.item() < 0.05 * first


# ---- backend choice and errors -------------------------------------------------------

def test_long_T_falls_back_to_reference_with_a_warning():
    student, teacher = inputs((1, 2, 70, 3), device_for("auto"), teacher_grad=False)
    with pytest.warns(RuntimeWarning, match="T=70 exceeds"):
        out = temporal_spectrum_loss(student, teacher, time_dim=2)
    assert torch.isfinite(out)
    with pytest.raises(ValueError, match="backend='cpu' cannot run temporal_spectrum_loss: T=70"):
        temporal_spectrum_loss(student.cpu(), teacher.cpu(), backend="cpu")


def test_backend_errors_say_why(monkeypatch):
    student, teacher = inputs((2, 3, 7, 4, 5), "cpu")
    with pytest.raises(ValueError, match="the cuda backend takes CUDA tensors|without CUDA"):
        temporal_spectrum_loss(student, teacher, backend="cuda")
    with pytest.raises(ValueError, match="backend must be one of"):
        temporal_spectrum_loss(student, teacher, backend="fast")
    monkeypatch.setenv("VKD_BACKEND", "nope")
    with pytest.raises(ValueError, match="VKD_BACKEND"):
        temporal_spectrum_loss(student, teacher)
    monkeypatch.setenv("VKD_BACKEND", "reference")
    out = temporal_spectrum_loss(student, teacher)  # runs the eager reference: no custom op in the graph
    assert out.grad_fn is not None and "vkd" not in type(out.grad_fn).__name__.lower()


BAD = [
    (lambda s, t: temporal_spectrum_loss(s, t[:1]), ValueError, "teacher has shape"),
    (lambda s, t: temporal_spectrum_loss(s, t.double()), TypeError, "teacher has dtype"),
    (lambda s, t: temporal_spectrum_loss(s.int(), t), TypeError, "student must be float"),
    (lambda s, t: temporal_spectrum_loss(s.detach().numpy(), t), TypeError, "student must be a torch.Tensor"),
    (lambda s, t: temporal_spectrum_loss(s, t, time_dim=5), ValueError, "time_dim=5"),
    (lambda s, t: temporal_spectrum_loss(s[:, :, :1], t[:, :, :1]), ValueError, "T=1"),
    (lambda s, t: temporal_spectrum_loss(s[:0], t[:0]), ValueError, "student is empty"),
    (lambda s, t: temporal_spectrum_loss(s, t, num_segments=3), ValueError, "num_segments=3 must divide"),
    (lambda s, t: temporal_spectrum_loss(s, t, num_segments=1), ValueError, "num_segments must be"),
    (lambda s, t: temporal_spectrum_loss(s, t, bin_weights=torch.ones(3)), ValueError, "bin_weights must have shape"),
    (lambda s, t: temporal_spectrum_loss(s, t, bin_weights=[1, float("nan"), 1, 1]), ValueError,
     "bin_weights contains"),
    (lambda s, t: temporal_spectrum_loss(s, t, spectrum="phase"), ValueError, "spectrum must be one of"),
    (lambda s, t: temporal_spectrum_loss(s, t, norm="l1"), ValueError, "norm must be one of"),
    (lambda s, t: temporal_spectrum_loss(s, t, spatial="max"), ValueError, "spatial must be one of"),
    (lambda s, t: temporal_spectrum_loss(s, t, reduction="avg"), ValueError, "reduction must be one of"),
    (lambda s, t: temporal_spectrum_loss(s, t, eps=-1.0), ValueError, "eps must be"),
    (lambda s, t: temporal_spectrum_loss(s, t, spectrum="log_magnitude", eps=0.0), ValueError, "eps must be > 0"),
    (lambda s, t: TemporalSpectrumLoss(reduction="avg"), ValueError, "reduction must be one of"),
]


@pytest.mark.parametrize("case", range(len(BAD)))
def test_bad_input(case):
    call, error, message = BAD[case]
    student, teacher = inputs((2, 3, 7, 4, 5), "cpu")
    with pytest.raises(error, match=message):
        call(student, teacher)


def test_mismatched_devices():
    student, teacher = inputs((2, 3, 7, 4, 5), "cpu")
    with pytest.raises(ValueError, match="teacher is on meta but student is on cpu"):
        temporal_spectrum_loss(student, teacher.to("meta"))


@pytest.mark.parametrize("backend", FUSED)
def test_non_finite_input_is_named(backend, device, monkeypatch):
    monkeypatch.setenv("VKD_CHECK_FINITE", "1")  # on by default on CPU tensors only
    student, teacher = inputs((2, 3, 7, 4, 5), device)
    with torch.no_grad():
        teacher[0, 0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="teacher contains NaN or inf"):
        call(temporal_spectrum_loss, device, student, teacher, backend=backend)
    with pytest.raises(ValueError, match="overflowed in torch.float16"):
        temporal_spectrum_loss(student.detach().half() * 300, teacher.detach().nan_to_num().half() * 300,
                               backend=backend)


def test_import_without_the_extension_falls_back_with_one_warning():
    code = (
        "import sys, warnings\n"
        "sys.modules['vkd_kernels._C'] = None\n"  # makes 'from . import _C' raise ImportError
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    warnings.simplefilter('always')\n"
        "    import torch, vkd_kernels\n"
        "    x = torch.randn(2, 3, 8, 4, requires_grad=True)\n"
        "    loss = vkd_kernels.temporal_spectrum_loss(x, torch.randn(2, 3, 8, 4))\n"
        "    loss.backward()\n"
        "assert vkd_kernels.EXT_ERROR and 'could not be imported' in vkd_kernels.EXT_ERROR\n"
        "messages = [str(w.message) for w in caught]\n"
        "assert sum(m.startswith('vkd_kernels._C could not be imported') for m in messages) == 1, messages\n"
        "assert any(\"using the 'reference' backend\" in m for m in messages), messages\n"
        "print('ok')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "ok" in result.stdout, result.stderr[-3000:]


# ---- shape fuzzing ---------------------------------------------------------------------

@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(N=st.integers(1, 3), C=st.integers(1, 5), T=st.integers(2, 40), H=st.integers(1, 6), W=st.integers(1, 6),
       spectrum=st.sampled_from(SPECTRA), spatial=st.sampled_from(("pixel", "mean")),
       reduction=st.sampled_from(("mean", "sum", "none")), seed=st.integers(0, 2**31 - 1))
def test_fuzz_cpu_backend(N, C, T, H, W, spectrum, spatial, reduction, seed):
    torch.manual_seed(seed)  # the inputs are part of the example, so a failure replays
    # (magnitude and log_magnitude run at the well-conditioned eps of tolerances.WELL_CONDITIONED)
    check_backend("cpu", "cpu", *inputs((N, C, T, H, W), "cpu"), spectrum=spectrum, spatial=spatial,
                  reduction=reduction, eps=1e-6)


@pytest.mark.parametrize("backend", ALL)
def test_float64_bin_weights_are_not_rounded(backend, device):
    """float64 inputs accumulate in float64, their bin weights too: weights that float32
    cannot hold (1/3 + 1e-12 ...) give the float64 answer to ~1e-15, not ~1e-8."""
    xs, xt = (torch.randn(2, 3, 8, 5, dtype=torch.float64, device=device) for _ in range(2))
    w = torch.tensor([1 / 3 + 1e-12, 0.1, 2 / 7, 1e-3 / 3, 0.7 + 1e-11], dtype=torch.float64,
                     device=device)
    got = call(temporal_spectrum_loss, device, xs, xt, time_dim=2, bin_weights=w, reduction="none",
               backend=backend)
    a_s, a_t = ((torch.fft.rfft(x.cpu(), dim=2).abs() ** 2 + 1e-12).sqrt() for x in (xs, xt))
    expected = w.cpu()[:, None] * (a_s - a_t) ** 2
    error = ((got.cpu() - expected).abs().max() / expected.abs().max()).item()
    assert error <= 1e-13, error


# ---- what one call costs a GPU (issue 13) ----------------------------------------------

@pytest.mark.parametrize("options", [dict(), dict(spatial="mean"), dict(reduction="none"),
                                     dict(bin_weights="tensor", drop_dc=True), dict(bin_weights="list"),
                                     dict(reduction="sum", drop_dc=True, spectrum="log_magnitude")],
                         ids=["default", "mean", "none", "weights tensor drop_dc", "weights list", "sum"])
def test_one_call_launches_at_most_4_kernels_no_sync_no_copy(options):
    """Forward + backward of the Triton backend after a first call with the same
    arguments: at most 4 kernels (the 2 fused ones, the sum of the partials, the fill of
    dL/dloss = 1 autograd makes), no host sync and no host-to-device copy (launch_audit),
    so the op can also be captured in a CUDA graph."""
    device = device_for("triton")
    expect_device(device, {})
    why = _backend.device_unsupported("triton", device)
    if why:
        pytest.skip(f"triton cannot run here: {why}")
    student, teacher = inputs((2, 3, 8, 5, 6), device)
    if options.get("bin_weights") == "tensor":
        options = dict(options, bin_weights=torch.rand(5, device=device))
    elif options.get("bin_weights") == "list":
        options = dict(options, bin_weights=[0.5, 1.0, 1.5, 2.0, 2.5])
    grad = torch.ones(2, 3, 5, 5, 6, device=device) if options.get("reduction") == "none" else None

    def call():
        out = temporal_spectrum_loss(student, teacher, backend="triton", **options)
        out.backward(grad)

    result = audit(call, grad_to_none=[student, teacher])
    assert result.triton == 2, result
    assert result.total + sum(result.memsets.values()) + sum(result.memcpys.values()) <= 4, result
    assert not result.syncs and not result.h2d, result


def test_effective_weights_are_made_once_per_tensor_and_version():
    """A repeated call reuses the weights; a new tensor, an in-place write or other options
    make them anew; a tensor already in the right form is used as it is."""
    w = torch.rand(5)
    first = layout.effective_weights(w, True, 5, torch.device("cpu"), torch.float64)
    assert layout.effective_weights(w, True, 5, torch.device("cpu"), torch.float64) is first
    assert first[0] == 0 and torch.equal(first[1:], w[1:].double())
    w.mul_(2)  # in place: a new version
    second = layout.effective_weights(w, True, 5, torch.device("cpu"), torch.float64)
    assert second is not first and torch.equal(second[1:], w[1:].double())
    assert layout.effective_weights(w, False, 5, torch.device("cpu"), torch.float32) is w
    other = w.clone()
    assert layout.effective_weights(other, True, 5, torch.device("cpu"), torch.float64) is not second
    ones = layout.effective_weights(None, False, 5, torch.device("cpu"), torch.float32)
    assert layout.effective_weights(None, False, 5, torch.device("cpu"), torch.float32) is ones
    assert torch.equal(ones, torch.ones(5))
    del w, other  # entries leave with their tensors
    assert not any(ref() is None for ref, _, _ in layout._TENSOR_WEIGHTS.values())
    with pytest.raises(ValueError, match="bin_weights contains NaN"):
        layout.effective_weights(torch.tensor([1.0, float("inf"), 1, 1, 1]), False, 5, torch.device("cpu"),
                                 torch.float32)
