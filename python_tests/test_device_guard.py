"""Every fused op runs with its inputs' device current, and the extension is told the
device index (a tensor on cuda:1 while cuda:0 is current must launch on cuda:1 and its
stream), and the CUDA backend is refused with the reason where the CUDA runtime cannot
run (a driver older than the statically linked runtime). No second GPU is needed: the
guard, the extension and the runtime check are mocked where the hardware is missing.
"""
from __future__ import annotations

import contextlib
import types

import pytest
import torch
from conftest import FUSED_BACKENDS

import vkd_kernels
from vkd_kernels import _backend, _ext
from vkd_kernels.attention import native as attention_native
from vkd_kernels.gkd.apply import native as apply_native
from vkd_kernels.gkd.head import native as head_native
from vkd_kernels.spectrum import native as spectrum_native
from vkd_kernels.spectrum.layout import make_problem
from vkd_kernels.weights import native as weights_native
from vkd_kernels.weights.layout import Spec, Tables, make_plan

pytestmark = pytest.mark.skipif(_ext.EXT is None, reason=f"vkd_kernels._C is not importable: {_ext.EXT_ERROR}")

# The launchers a kernel module (native or triton_kernels) offers to the ops.
LAUNCHERS = ("forward", "backward", "finish_forward", "finish_backward", "output", "reduce", "finish",
             "affine", "gram", "gram_backward")


class GuardLog:
    """Replaces _backend.device_guard: records the device of every guard entered and the
    guard active at every launch."""

    def __init__(self, real):
        self.real, self.active, self.launches = real, [], []

    @contextlib.contextmanager
    def __call__(self, device):
        self.active.append(device)
        try:
            with self.real(device):
                yield
        finally:
            self.active.pop()

    def launcher(self, module_name, name, fn):
        def launch(*args, **kwargs):
            self.launches.append((f"{module_name}.{name}", self.active[-1] if self.active else None))
            return fn(*args, **kwargs)
        return launch


def _impl_modules(backend):
    if backend == "triton":
        from vkd_kernels.attention import triton_kernels as attention_triton
        from vkd_kernels.gkd.apply import triton_kernels as apply_triton
        from vkd_kernels.gkd.head import triton_kernels as head_triton
        from vkd_kernels.spectrum import triton_kernels as spectrum_triton
        from vkd_kernels.weights import triton_kernels as weights_triton
        return {"spectrum": spectrum_triton, "attention": attention_triton, "head": head_triton,
                "apply": apply_triton, "weights": weights_triton}
    return {"spectrum": spectrum_native, "attention": attention_native, "head": head_native, "apply": apply_native,
            "weights": weights_native}


def _run_every_fused_op(backend, device):
    """Forward and backward of every fused op (small shapes) on ``device``."""
    g = torch.Generator().manual_seed(0)

    def rand(*shape):
        return torch.randn(*shape, generator=g).to(device).requires_grad_()

    for spatial in ("pixel", "mean"):
        fs, ft = rand(2, 3, 4, 3, 3), rand(2, 3, 4, 3, 3)
        vkd_kernels.temporal_spectrum_loss(fs, ft, spatial=spatial, backend=backend).backward()
    fs, ft = rand(2, 3, 4, 3, 3), rand(2, 5, 4, 3, 3)
    vkd_kernels.attention_transfer_loss(fs, ft, backend=backend).backward()
    y, conv = rand(2, 4, 3), rand(8, 4, 3)
    gn_w, gn_b, lin = rand(8), rand(8), rand(3, 7)
    vkd_kernels.attention_head_tail(y, conv, None, gn_w, gn_b, 2, lin, None, upsample_length=7,
                                    backend=backend).sum().backward()
    F, lam = torch.rand(2, 3, 4, 3, 3, generator=g).to(device).requires_grad_(), \
        torch.rand(2, 3, 4, generator=g).to(device).requires_grad_()
    (vkd_kernels.attention_apply(F, lam, backend=backend) * torch.randn(F.shape, generator=g)).sum().backward()
    ws, wt = rand(4, 2, 3, 3), rand(5, 2, 3, 3)
    vkd_kernels.weight_spectrum_distance([ws], [wt], backend=backend).backward()


EXPECTED_LAUNCHES = {"spectrum.forward", "spectrum.backward", "attention.forward", "attention.backward",
                     "attention.finish_forward", "attention.finish_backward", "head.forward", "head.output",
                     "head.backward", "apply.reduce", "apply.finish", "apply.affine", "weights.gram", "weights.finish",
                     "weights.finish_backward",
                     "weights.gram_backward"}


@pytest.mark.parametrize("backend", [b for b in FUSED_BACKENDS if b in ("cpu", "triton", "cuda")])
def test_every_fused_op_launches_inside_a_guard_for_its_device(backend, monkeypatch):
    device = torch.device("cuda") if backend == "cuda" else torch.device("cpu")
    log = GuardLog(_backend.device_guard)
    monkeypatch.setattr(_backend, "device_guard", log)
    for module_name, module in _impl_modules(backend).items():
        for name in LAUNCHERS:
            if hasattr(module, name):
                monkeypatch.setattr(module, name, log.launcher(module_name, name, getattr(module, name)))
    _run_every_fused_op(backend, device)
    assert {name for name, _ in log.launches} == EXPECTED_LAUNCHES
    unguarded = [(name, guard) for name, guard in log.launches if guard is None or guard.type != device.type]
    assert not unguarded, f"launches outside a guard for {device}: {unguarded}"


def test_guard_makes_a_cuda_device_current_and_nothing_for_cpu(monkeypatch):
    entered = []

    @contextlib.contextmanager
    def fake_device(device):
        entered.append(torch.device(device))
        yield

    monkeypatch.setattr(torch.cuda, "device", fake_device)
    with _backend.device_guard(torch.device("cuda", 1)):
        assert entered == [torch.device("cuda", 1)]
    with _backend.device_guard(torch.device("cpu")):
        pass
    assert entered == [torch.device("cuda", 1)]


class FakeCuda1:
    """Stands for a tensor on cuda:1 where no second GPU exists: what native.py reads."""

    def __init__(self, shape, dtype=torch.float32):
        self.shape, self.dtype, self.device = torch.Size(shape), dtype, torch.device("cuda", 1)

    def stride(self):
        return torch.empty(self.shape, device="meta").stride()

    def data_ptr(self):
        return 0x1000

    def numel(self):
        return self.shape.numel()

    def contiguous(self):
        return self


class RecordingExt:
    """Replaces _ext.EXT: records every binding call's device argument, launches nothing."""

    def __init__(self):
        self.calls = []

    def __getattr__(self, name):
        def call(device, *args, **kwargs):
            self.calls.append((name, device))
            return 1
        return call


def test_native_launchers_pass_the_device_index(monkeypatch):
    ext = RecordingExt()
    monkeypatch.setattr(_ext, "EXT", ext)
    monkeypatch.setattr(_ext, "stream", lambda device: 0x2000)
    monkeypatch.setattr(spectrum_native, "new_output", lambda shape, dtype, device: FakeCuda1(shape, dtype))
    monkeypatch.setattr(weights_native, "new_output", lambda shape, dtype, device: FakeCuda1(shape, dtype))
    x = FakeCuda1((2, 4, 6))
    pr = make_problem(torch.empty(2, 4, 6, device="meta"), torch.empty(2, 4, 6, device="meta"), time_dim=1,
                      num_segments=None, spectrum="magnitude", norm="backward", spatial="pixel",
                      reduction="mean", eps=1e-12)
    w = FakeCuda1((3,))
    spectrum_native.forward(pr, x, x, w, None)
    spectrum_native.backward(pr, x, x, w, FakeCuda1((2, 3, 6)), 1.0, x, x)
    attention_native.splits(x)
    attention_native.forward(x, 2.0, FakeCuda1((2, 1, 6)))
    attention_native.backward(x, FakeCuda1((2, 6)), 2.0, x)
    Z, lam = FakeCuda1((2, 3, 4)), FakeCuda1((2, 4, 5))
    head_native.forward(Z, w, None, None, None, 2, 6.0, 1e-5, FakeCuda1((4, 2, 4)), FakeCuda1((2, 2, 2)))
    head_native.output(FakeCuda1((5, 8)), None, lam)
    head_native.backward(Z, w, None, None, None, FakeCuda1((2, 2, 2)), lam, lam, FakeCuda1((5, 3)), 2, 6.0,
                         FakeCuda1((5, 2, 4)), Z, None, None, None)
    rows, sums = FakeCuda1((2, 3, 4, 5)), FakeCuda1((2, 2))
    apply_native.reduce(rows, None, FakeCuda1((24,)))
    apply_native.finish(FakeCuda1((24,)), FakeCuda1((24,)), sums)
    apply_native.affine(rows, FakeCuda1((24,)), sums, rows)
    plan = make_plan(Spec(kernels=((3, 3),), tensors=((0, 8),), teachers=(), num_dists=0, parts=1, drop_dc=False,
                          backend="cuda", needed=(0,)))
    tables = Tables(FakeCuda1((1, 7)), FakeCuda1((1, 4)), FakeCuda1((1,)), ((32, FakeCuda1((1, 8))),))
    weight, flat = FakeCuda1((4, 2, 3, 3)), FakeCuda1((81,))
    weights_native.gram(plan, tables, [weight], flat, flat)
    weights_native.finish(plan, tables, flat, None, flat, flat, flat, 1e-12, 1)
    weights_native.finish_backward(plan, tables, flat, flat, flat, flat, flat, flat, 1e-12, 1, 1.0)
    weights_native.gram_backward(plan, tables, [weight], flat)
    names = {name for name, _ in ext.calls}
    assert names == {"spectrum_num_partials", "spectrum_forward", "spectrum_backward", "attention_map_splits",
                     "attention_map_forward", "attention_map_backward", "head_tail", "apply_rows", "weight_gram",
                     "weight_finish", "weight_finish_backward", "weight_gram_backward"}
    assert all(device == "cuda:1" for _, device in ext.calls), ext.calls


def test_device_arg():
    assert _ext.device_arg(torch.device("cpu")) == "cpu"
    assert _ext.device_arg(torch.device("cuda", 3)) == "cuda:3"


@pytest.mark.parametrize("device", ["cuda:x", "cuda:", "cuda1", "gpu", "cuda:-1"])
def test_binding_rejects_a_bad_device_name(device):
    with pytest.raises(ValueError, match="device must be 'cpu', 'cuda' or 'cuda:N'"):
        _ext.EXT.attention_map_forward(device, 1, 1, 1, 2.0, 0, 0, (1, 1, 1), 0, (1, 1), 0)


def test_cuda_launcher_makes_the_device_current_or_says_why():
    """The CUDA launchers set the device before launching: an index no machine has fails
    there, naming the device, before any kernel touches the (null) pointers."""
    if not _ext.has_cuda_kernels():
        pytest.skip("vkd_kernels._C was built without CUDA kernels")
    with pytest.raises(RuntimeError, match="cannot make CUDA device 99999 current"):
        _ext.EXT.attention_map_forward("cuda:99999", 1, 1, 1, 2.0, 0, 0, (1, 1, 1), 0, (1, 1), 0)


# ---- defect 7: the CUDA runtime check -------------------------------------------------

OLD_DRIVER = ("the CUDA driver supports CUDA 12.4, older than the 13.0 runtime vkd_kernels._C was built with "
              "(needs driver >= 580)")


@pytest.fixture
def old_driver(monkeypatch):
    """The extension's runtime check reports an old driver; the cached answer is reset."""
    if not _ext.has_cuda_kernels():
        pytest.skip("vkd_kernels._C was built without CUDA kernels")
    real = _ext.EXT
    monkeypatch.setattr(_ext, "EXT", types.SimpleNamespace(build_info=real.build_info,
                                                           cuda_unavailable=lambda: OLD_DRIVER))
    _ext.cuda_unavailable.cache_clear()
    yield
    _ext.cuda_unavailable.cache_clear()


def test_runtime_check_answers_here():
    """The real binding: "" where CUDA can run, else a reason (no driver on a CPU machine)."""
    answer = _ext.EXT.cuda_unavailable()
    assert isinstance(answer, str)
    if not _ext.has_cuda_kernels():
        assert "no CUDA kernels" in answer
    elif torch.cuda.is_available():
        assert answer == "", answer
    else:
        assert answer, "no usable CUDA here, yet the runtime check found nothing wrong"


def test_cuda_backend_refused_naming_the_driver(old_driver):
    cuda = torch.device("cuda", 0)
    assert _backend.device_unsupported("cuda", cuda) == OLD_DRIVER
    with pytest.raises(ValueError, match=r"backend='cuda' cannot run attention_map: .*needs driver >= 580"):
        _backend.resolve("attention_map", "cuda", cuda)


def test_auto_falls_back_with_a_warning(old_driver, monkeypatch):
    monkeypatch.setattr(_backend, "triton_unavailable", lambda: "triton is not installed (mock)")
    _backend._warn_once.cache_clear()
    with pytest.warns(RuntimeWarning, match="using the 'reference' backend because .*needs driver >= 580"):
        assert _backend.resolve("attention_map", "auto", torch.device("cuda", 0)) == "reference"


def test_runtime_check_is_cached(monkeypatch):
    if not _ext.has_cuda_kernels():
        pytest.skip("vkd_kernels._C was built without CUDA kernels")
    calls = []
    real = _ext.EXT
    monkeypatch.setattr(_ext, "EXT", types.SimpleNamespace(build_info=real.build_info,
                                                           cuda_unavailable=lambda: calls.append(1) or ""))
    _ext.cuda_unavailable.cache_clear()
    try:
        for _ in range(3):
            assert _backend.device_unsupported("cuda", torch.device("cuda", 0)) is None
        assert calls == [1]
    finally:
        _ext.cuda_unavailable.cache_clear()
