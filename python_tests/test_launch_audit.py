"""launch_audit counts what a GPU would see: each test audits a small function whose
launches, memsets, memcpys, host syncs and host-to-device copies are known, including
deliberately bad ones (an ``.item()``, a ``torch.tensor(list)``, one torch op too many),
and the ops at the headline shapes are audited and their counts printed (``-s``). The
op-level targets of issue 13 are asserted by each op's own tests, not here.
"""
from __future__ import annotations

import os

import pytest
import torch
from launch_audit import audit, audit_headlines, kind

from vkd_kernels import _backend

x = torch.randn(4, 6)


def _triton_device():
    why = _backend.device_unsupported("triton", torch.device("cpu"))
    if why is None:
        return torch.device("cpu")
    if torch.cuda.is_available():
        return torch.device("cuda")
    pytest.skip(f"triton cannot run here: {why}")


def test_views_allocations_and_metadata_launch_nothing():
    def fn():
        y = x.view(6, 4).t().view(-1, 1, 6).reshape(4, 6)[1:]  # viewable: no copy
        torch.empty(5), torch.empty_like(x), x.new_empty(3), x.detach(), x.unsqueeze(0).expand(2, 4, 6)
        x.contiguous(), x.to(torch.float32), x.size(), x.is_floating_point()
        return y

    result = audit(fn)
    assert result.total == 0 and not result.memsets and not result.memcpys, result
    assert result.syncs == [] and result.h2d == [], result


def test_one_launch_per_kernel_op_not_its_cpu_internals():
    # CPU sum fills its output before reducing and CPU div converts the scalar: one kernel each on CUDA
    result = audit(lambda: (x.sum(0) / 3.0, torch.where(x > 0, x, 0.0), torch.nn.functional.linear(x, x)))
    assert result.launches == {"aten::sum": 1, "aten::div": 1, "aten::gt": 1, "aten::where": 1, "aten::mm": 1}, result
    assert not result.memsets and not result.memcpys, result


def test_fills_and_copies_are_counted_apart():
    result = audit(lambda: (torch.zeros(3), torch.ones_like(x), x.t().contiguous(), x.clone(),
                            x.to(torch.float64)))
    assert result.total == 0, result
    assert result.memsets == {"aten::zero_": 1, "aten::fill_": 1}, result
    assert result.memcpys == {"aten::copy_": 3}, result


def test_one_extra_torch_op_is_one_more_launch():
    def good():
        return (x * 2).sum()

    def bad():
        return (x * 2 + 1).sum()

    assert audit(bad).total == audit(good).total + 1 == 3


def test_backward_counts_the_autograd_nodes():
    w = torch.randn(4, 6, requires_grad=True)
    g = torch.tensor(1.0)
    result = audit(lambda: (w * 2).sum().backward(g), grad_to_none=[w])
    # forward mul, sum; backward: SumBackward expands (a view), MulBackward multiplies
    assert result.launches == {"aten::mul": 2, "aten::sum": 1}, result
    assert result.memsets == {} and result.memcpys == {}, result
    accumulated = audit(lambda: (w * 2).sum().backward(g))  # .grad kept: AccumulateGrad adds
    assert accumulated.launches["aten::add_"] == 1, accumulated


def test_item_is_a_host_sync():
    def bad():
        return (x * x.max().item()).sum()

    result = audit(bad)
    assert len(result.syncs) == 1 and result.syncs[0].startswith("aten::item"), result
    assert audit(lambda: (x * x.max()).sum()).syncs == []


@pytest.mark.parametrize("read", ["if", "float", "tolist", "numpy", "nonzero"])
def test_every_host_read_is_one_sync(read):
    def bad():
        s = x.sum()
        if read == "if":
            return 1 if s > 0 else 0
        if read == "float":
            return float(s)
        if read == "tolist":
            return x[0].tolist()
        if read == "numpy":
            return x.numpy().sum()
        return x.nonzero()

    result = audit(bad)
    assert len(result.syncs) == 1, result  # the outermost only: is_nonzero, not its item and _local_scalar_dense


@pytest.mark.parametrize("build", ["tensor", "as_tensor", "scalar", "from_numpy"])
def test_a_tensor_of_host_data_is_a_host_to_device_copy(build):
    import numpy as np

    def bad():
        if build == "tensor":
            t = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
        elif build == "as_tensor":
            t = torch.as_tensor([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
        elif build == "scalar":
            t = torch.tensor(2.0)
        else:
            t = torch.from_numpy(np.ones(6, dtype=np.float32))
        return x * t

    result = audit(bad)
    assert len(result.h2d) == 1, result
    assert audit(lambda: x * 2.0).h2d == []


def test_warmup_calls_fill_caches_and_are_not_counted():
    cache = {}

    def cached():
        if "w" not in cache:
            cache["w"] = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
            cache["n"] = int(x.sum() > 0)
        return x * cache["w"]

    first = audit(cached, warmup=0)
    assert len(first.h2d) == 1 and len(first.syncs) == 1, first
    cache.clear()
    warm = audit(cached, warmup=1)
    assert warm.h2d == [] and warm.syncs == [] and warm.launches == {"aten::mul": 1}, warm


def test_the_call_runs_as_on_cuda(monkeypatch):
    monkeypatch.setenv("VKD_POISON_OUTPUTS", "1")
    monkeypatch.setenv("VKD_CHECK_FINITE", "1")
    seen = []
    audit(lambda: seen.append((os.environ.get("VKD_CHECK_FINITE"), os.environ.get("VKD_POISON_OUTPUTS"))))
    assert seen == [("0", None), ("0", None)]
    assert os.environ["VKD_POISON_OUTPUTS"] == "1" and os.environ["VKD_CHECK_FINITE"] == "1"  # restored


def test_classification_of_op_names():
    assert kind("aten::empty_strided") == kind("aten::as_strided") == kind("aten::detach_") == "none"
    assert kind("aten::_unsafe_view") == kind("aten::lift_fresh") == "none"
    assert kind("aten::mul") == kind("aten::fill_") == kind("aten::copy_") == "kernel"
    assert kind("aten::reshape") == kind("aten::contiguous") == kind("autograd::engine::x") == "transparent"
    assert kind("aten::_to_copy") == kind("vkd::anything") == kind("aten::where") == "composite"


def _triton_kernel():
    import triton
    import triton.language as tl

    @triton.jit
    def _twice(x_ptr, y_ptr, n, BLOCK: tl.constexpr):
        offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        tl.store(y_ptr + offs, 2 * tl.load(x_ptr + offs, mask=offs < n), mask=offs < n)
    return _twice


@pytest.mark.parametrize("run_kernels", [True, False])
def test_triton_launches_count_once_by_name(run_kernels):
    device = _triton_device()
    kernel = _triton_kernel()
    a = torch.randn(100, device=device)
    b = torch.zeros(100, device=device)

    def fn():
        kernel[(4,)](a, b, a.numel(), BLOCK=32)
        kernel[(4,)](b, b, a.numel(), BLOCK=32)
        return b.sum()

    result = audit(fn, run_kernels=run_kernels)
    # the interpreter's copies of the arguments to its host buffers and back are not launches
    assert result.launches == {"triton::_twice": 2, "aten::sum": 1}, result
    assert not result.memcpys and not result.memsets and result.triton == 2, result
    if run_kernels or device.type == "cuda":
        torch.testing.assert_close(b, 4 * a)
    else:
        assert torch.all(b == 0)  # recorded, not run


def test_headline_counts():
    """Today's counts per op (one forward + backward(g), backend="triton", headline
    shapes, kernels recorded and not run): printed, and stable from call to call."""
    _triton_device()
    audits = audit_headlines()
    again = audit_headlines(["temporal_spectrum_loss"])
    assert again["temporal_spectrum_loss"].launches == audits["temporal_spectrum_loss"].launches
    for op, result in audits.items():
        print(f"\n{op}: {result}")
        assert result.triton >= 2, (op, result)  # a forward and a backward kernel at least
