"""The eager fast path of the custom ops (vkd_kernels/_ops.py): a plain eager call runs
the op's Python body directly (autograd through the same setup_context / backward), and
anything that traces, profiles or intercepts goes through the registered vkd:: op; both
paths give the same loss and the same gradients, and no gradient where none is needed."""
from __future__ import annotations

import warnings

import pytest
import torch
from harness import FUSED, expect_device
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils._python_dispatch import TorchDispatchMode

import vkd_kernels
from vkd_kernels import _ops
from vkd_kernels.attention import op as attention_module
from vkd_kernels.gkd.apply import op as apply_module
from vkd_kernels.gkd.head import op as head_module
from vkd_kernels.spectrum import op as spectrum_module
from vkd_kernels.weights import op as weights_module

MODULES = (attention_module, apply_module, head_module, spectrum_module, weights_module)


def custom_ops():
    return [v for m in MODULES for v in vars(m).values() if isinstance(v, _ops.CustomOp)]


@pytest.fixture
def op_calls(monkeypatch):
    """Names of the vkd:: ops called through the dispatcher while the test runs."""
    called = []
    for custom in custom_ops():
        def spy(*args, _op=custom.op):
            called.append(_op._qualname)
            return _op(*args)
        monkeypatch.setattr(custom, "op", spy)
    return called


def test_every_fused_op_is_a_custom_op():
    names = sorted(c.op._qualname for c in custom_ops())
    assert len(names) == 12 and all(n.startswith("vkd::") for n in names), names


# (name, inputs on device, call(inputs, backend)): one forward + backward per op family
def _spectrum(device):
    return [torch.randn(2, 3, 6, 5, device=device, dtype=torch.float64, requires_grad=True),
            torch.randn(2, 3, 6, 5, device=device, dtype=torch.float64)]


def _attention(device):
    return [torch.randn(2, 3, 4, 5, device=device, dtype=torch.float64, requires_grad=True),
            torch.randn(2, 6, 4, 5, device=device, dtype=torch.float64)]


def _weights(device):
    return [torch.randn(4, 3, 3, 3, device=device, dtype=torch.float64, requires_grad=True),
            torch.randn(5, 2, 3, 3, device=device, dtype=torch.float64),          # no grad: a teacher in the list
            torch.randn(6, 4, 3, 3, device=device, dtype=torch.float64, requires_grad=True),
            torch.randn(8, 6, 3, 3, device=device, dtype=torch.float64)]


def _head(device):
    N, C1, T, C, L, TP = 2, 8, 4, 16, 12, 6
    shapes = [(N, C1, T), (C, C1, 3), (C,), (C,), (C,), (TP, L), (TP,)]
    return [torch.randn(s, device=device, dtype=torch.float64, requires_grad=True) for s in shapes]


def _head_loss(x, backend):
    y, conv_weight, conv_bias, gn_weight, gn_bias, linear_weight, linear_bias = x
    lam = vkd_kernels.gkd.attention_head_tail(y, conv_weight, conv_bias, gn_weight, gn_bias, 4, linear_weight,
                                              linear_bias, upsample_length=12, backend=backend)
    return lam.square().sum()


CASES = {
    "spectrum": (_spectrum, lambda x, b: vkd_kernels.temporal_spectrum_loss(x[0], x[1], backend=b)),
    "attention": (_attention, lambda x, b: vkd_kernels.attention_transfer_loss(x[0], x[1], backend=b)),
    "weights": (_weights, lambda x, b: vkd_kernels.weight_spectrum_distance([x[0], [x[1]]], [x[2], [x[3]]],
                                                                           backend=b)),
    "head": (_head, _head_loss),
}


def _loss_and_grads(case, inputs, backend):
    loss = CASES[case][1](inputs, backend)
    leaves = [x for x in inputs if x.requires_grad]
    return loss.detach(), torch.autograd.grad(loss, leaves)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("backend", FUSED)
def test_plain_eager_runs_the_body_and_agrees_with_the_op(case, backend, device, op_calls, monkeypatch):
    inputs = CASES[case][0](device)
    expect_device(device, inputs)
    fast = _loss_and_grads(case, inputs, backend)
    assert op_calls == [], f"plain eager went through the dispatcher: {op_calls}"
    monkeypatch.setattr(_ops, "_plain_eager", lambda args: False)
    slow = _loss_and_grads(case, inputs, backend)
    assert len(op_calls) == 2, op_calls          # the forward op and the backward op
    torch.testing.assert_close(fast, slow, rtol=0, atol=0)
    assert all(x.grad is None for x in inputs)
    assert not any(x.requires_grad for x in fast[1]), "a gradient needs no graph of its own"


@pytest.mark.parametrize("backend", FUSED)
def test_the_profiler_sees_the_ops(backend, device, op_calls):
    inputs = _attention(device)
    expect_device(device, inputs)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        _loss_and_grads("attention", inputs, backend)
    assert op_calls == ["vkd::attention_transfer", "vkd::attention_transfer_backward"]
    names = {e.name for e in prof.events()}
    assert {"vkd::attention_transfer", "vkd::attention_transfer_backward"} <= names, sorted(names)[:40]


def test_no_grad_needed_runs_the_body_without_autograd(op_calls):
    x, y = _attention("cpu")
    with torch.no_grad():
        loss = vkd_kernels.attention_transfer_loss(x, y, backend="reference" if vkd_kernels.EXT_ERROR else "cpu")
    assert op_calls == [] and loss.grad_fn is None


class _Passthrough(TorchDispatchMode):
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        return func(*args, **(kwargs or {}))


def test_what_takes_the_op_path():
    x = torch.ones(2)
    assert _ops._plain_eager((x, [x, x], 3, "s"))
    assert _ops._plain_eager((torch.nn.Parameter(x),))
    with FakeTensorMode():
        assert not _ops._plain_eager((x,))
    with _Passthrough():
        assert not _ops._plain_eager((x,))
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]):
        assert not _ops._plain_eager((x,))
    seen = []
    torch.func.grad(lambda t: seen.append(_ops._plain_eager((t,))) or t.sum())(x)
    assert seen == [False]

    class Sub(torch.Tensor):
        pass
    assert not _ops._plain_eager((x.as_subclass(Sub),))
    assert not _ops._plain_eager(([x, x.as_subclass(Sub)],))


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("backend", FUSED)
def test_jit_trace_records_the_op(case, backend, device):
    """torch.jit.trace records dispatcher ops: the body's kernel launches would be missing
    from the trace (which then returns uninitialised memory), so tracing takes the op path."""
    make, call = CASES[case]
    inputs = [x.detach() for x in make(device)]
    expect_device(device, inputs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        traced = torch.jit.trace(lambda *xs: call(list(xs), backend), tuple(inputs))
    assert "vkd::" in str(traced.graph)
    fresh = [torch.randn_like(x) for x in make(device)]
    torch.testing.assert_close(traced(*fresh), call(fresh, backend))


def test_compile_goes_through_the_op(op_calls):
    x, y = _attention("cpu")
    backend = "reference" if vkd_kernels.EXT_ERROR else "cpu"
    compiled = torch.compile(lambda a, b: vkd_kernels.attention_transfer_loss(a, b, backend=backend),
                             fullgraph=True, backend="eager")
    torch.testing.assert_close(compiled(x, y), vkd_kernels.attention_transfer_loss(x, y, backend=backend))
    assert "vkd::attention_transfer" in op_calls


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("backend", FUSED)
def test_forward_mode_ad_is_refused_not_zeroed(case, backend, device):
    """The ops have no forward-mode formula: a tangent through one raises (it would be a
    silent zero), while forward AD of the reference and of constants around it still works."""
    import torch.autograd.forward_ad as fwAD
    inputs = [x.detach() for x in CASES[case][0](device)]
    expect_device(device, inputs)
    call = CASES[case][1]
    tangent = torch.randn_like(inputs[0])

    def loss_of_first(b):
        return lambda first: call([first, *inputs[1:]], b)
    with pytest.raises(NotImplementedError, match="forward-mode derivative.*backend='reference'"):
        torch.func.jvp(loss_of_first(backend), (inputs[0],), (tangent,))
    with pytest.raises(NotImplementedError, match="forward-mode"):
        torch.func.jacfwd(loss_of_first(backend))(inputs[0])
    with fwAD.dual_level(), pytest.raises(NotImplementedError, match="forward-mode"):
        call([fwAD.make_dual(inputs[0], tangent), *inputs[1:]], backend)
    with fwAD.dual_level():  # no input of the op carries a tangent: it runs
        call(inputs, backend)
    value, jvp = torch.func.jvp(lambda t: t.sum() + call(inputs, backend), (inputs[0],), (tangent,))
    torch.testing.assert_close(jvp, tangent.sum())
    reference, eps = loss_of_first("reference"), 1e-6   # the advice of the message works
    _, jvp = torch.func.jvp(reference, (inputs[0],), (tangent,))
    central = (reference(inputs[0] + eps * tangent) - reference(inputs[0] - eps * tangent)) / (2 * eps)
    torch.testing.assert_close(jvp, central)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("backend", FUSED)
def test_a_second_derivative_raises_on_both_paths(case, backend, device, monkeypatch):
    """create_graph=True: the gradient is a node of the backward op, and differentiating it
    raises (no second-order formula), in plain eager as through the dispatcher; never a
    gradient without a graph whose second derivative would silently be zero."""
    original = _ops._plain_eager
    for path in (original, lambda args: False):
        monkeypatch.setattr(_ops, "_plain_eager", path)
        inputs = CASES[case][0](device)
        expect_device(device, inputs)
        first = inputs[0]
        (grad,) = torch.autograd.grad(CASES[case][1](inputs, backend), first, create_graph=True)
        assert grad.requires_grad
        with pytest.raises(RuntimeError, match="vkd.*_backward"):
            torch.autograd.grad(grad.square().sum(), first)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("backend", FUSED)
def test_autocast_leaves_the_ops_in_their_input_dtypes(case, backend, device, monkeypatch):
    """Under autocast an op computes as without it (its body's GEMMs stay in the inputs'
    dtype, which its kernels read), on both paths: same loss, same gradients, bitwise."""
    inputs = [x.detach().float().requires_grad_(x.requires_grad) for x in CASES[case][0](device)]
    expect_device(device, inputs)
    expected = _loss_and_grads(case, inputs, backend)
    original = _ops._plain_eager
    for path in (original, lambda args: False):
        monkeypatch.setattr(_ops, "_plain_eager", path)
        with torch.autocast(torch.device(device).type):
            got = _loss_and_grads(case, inputs, backend)
        torch.testing.assert_close(got, expected, rtol=0, atol=0)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("backend", FUSED)
def test_lazily_negated_inputs_agree_with_the_op(case, backend, device):
    """x.conj().imag is a plain torch.Tensor whose memory holds -x (the neg bit): the
    dispatcher resolves it, and so must the fast path (it takes the op path)."""
    values = CASES[case][0](device)
    expect_device(device, values)
    first = torch.complex(torch.zeros_like(values[0]), -values[0].detach()).conj().imag.requires_grad_()
    assert first.is_neg() and torch.equal(first, values[0])
    got = _loss_and_grads(case, [first, *values[1:]], backend)
    expected = _loss_and_grads(case, values, backend)
    torch.testing.assert_close(got, expected, rtol=0, atol=0)


@pytest.mark.parametrize("backend", FUSED)
def test_batched_gradients_of_the_legacy_vmap_agree_with_a_loop(backend, device):
    """autograd.grad(is_grads_batched=True) runs the backward on BatchedTensors of the
    legacy vmap (no storage, no functorch level): they take the op path."""
    x, y = _attention(device)
    expect_device(device, [x, y])
    loss = vkd_kernels.attention_transfer_loss(x, y, backend=backend, reduction="none")
    seeds = torch.randn(3, *loss.shape, dtype=loss.dtype, device=device)
    (batched,) = torch.autograd.grad(loss, x, seeds, is_grads_batched=True, retain_graph=True)
    looped = torch.stack([torch.autograd.grad(loss, x, g, retain_graph=True)[0] for g in seeds])
    torch.testing.assert_close(batched, looped)


@pytest.mark.parametrize("backend", FUSED)
def test_inference_mode_records_no_graph_even_with_grad_enabled(backend, device):
    x, y = _attention(device)
    expect_device(device, [x, y])
    with torch.inference_mode(), torch.enable_grad():
        loss = vkd_kernels.attention_transfer_loss(x, y, backend=backend)
    assert not loss.requires_grad and loss.grad_fn is None


@pytest.mark.parametrize("backend", FUSED)
def test_graph_nodes_are_named_after_the_op(backend, device):
    x, y = _attention(device)
    expect_device(device, [x, y])
    loss = vkd_kernels.attention_transfer_loss(x, y, backend=backend)
    names = [type(f).__name__ for f, _ in loss.grad_fn.next_functions if f is not None] + [type(loss.grad_fn).__name__]
    assert "vkd_attention_transferBackward" in names, names


OUTPUTS = {  # ops returning a tensor a user may modify in place: (inputs on device, call)
    "apply keep": (lambda d: [torch.rand(2, 3, 4, 5, 5, device=d, dtype=torch.float64, requires_grad=True),
                              torch.rand(2, 3, 4, device=d, dtype=torch.float64)],
                   lambda x, b: vkd_kernels.gkd.attention_apply(x[0], x[1], backend=b)),
    "apply mean": (lambda d: [torch.rand(2, 3, 4, 5, 5, device=d, dtype=torch.float64, requires_grad=True),
                              torch.rand(2, 3, 4, device=d, dtype=torch.float64)],
                   lambda x, b: vkd_kernels.gkd.attention_apply(x[0], x[1], spatial="mean", backend=b)),
    "spectrum none": (_spectrum, lambda x, b: vkd_kernels.temporal_spectrum_loss(x[0], x[1], reduction="none",
                                                                                 backend=b)),
}


@pytest.mark.parametrize("case", OUTPUTS)
@pytest.mark.parametrize("backend", FUSED)
def test_outputs_can_be_modified_in_place(case, backend, device):
    """An output is not a view of a buffer made inside the op (autograd forbids modifying
    those in place): out.mul_(2) then backward gives twice the gradient."""
    make, call = OUTPUTS[case]
    inputs = make(device)
    expect_device(device, inputs)
    (plain,) = torch.autograd.grad(call(inputs, backend).sum(), inputs[0])
    out = call(inputs, backend)
    out.mul_(2)
    (doubled,) = torch.autograd.grad(out.sum(), inputs[0])
    torch.testing.assert_close(doubled, 2 * plain)


@_ops.custom_op("vkd_test::weighted_sum")
def _weighted_sum(xs: list[torch.Tensor], w: torch.Tensor, scale: float) -> torch.Tensor:
    return sum(x.sum() for x in xs) * w.sum() * scale


_weighted_sum.register_fake(lambda xs, w, scale: w.new_empty(()))
_seen_needs = []


def _setup(ctx, inputs, output):
    xs, w, scale = inputs
    ctx.save_for_backward(w, *xs)
    ctx.scale = scale


def _backward(ctx, grad):
    _seen_needs.append(ctx.needs_input_grad)
    w, *xs = ctx.saved_tensors
    total = sum(x.sum() for x in xs)
    return ([grad * w.sum() * ctx.scale * torch.ones_like(x) for x in xs], grad * total * ctx.scale
            * torch.ones_like(w), None)


_weighted_sum.register_autograd(_backward, setup_context=_setup)


@_ops.custom_op("vkd_test::badly_shaped_backward")
def _badly_shaped(xs: list[torch.Tensor]) -> torch.Tensor:
    return sum(x.sum() for x in xs)


_badly_shaped.register_fake(lambda xs: xs[0].new_empty(()))
_badly_shaped.register_autograd(lambda ctx, grad: (None,), setup_context=lambda ctx, inputs, output: None)


def test_a_backward_shaped_unlike_the_arguments_raises():
    """A list argument's gradient is a list (of tensors or None): the fast path checks the
    structure the backward returns, naming the op."""
    xs = [torch.ones(2, requires_grad=True), torch.ones(3, requires_grad=True)]
    with pytest.raises(RuntimeError, match="vkd_test::badly_shaped_backward"):
        _badly_shaped(xs).backward()


def test_a_list_argument_reads_as_the_op_would(monkeypatch):
    """A list of tensors is flattened into the Function's inputs, and its backward still
    sees needs_input_grad per argument, as torch.library's wrapper passes it."""
    xs = [torch.randn(3, requires_grad=True), torch.randn(2), torch.randn(4, requires_grad=True)]
    w = torch.randn(5, requires_grad=True)
    got = []
    for plain in (True, False):
        monkeypatch.setattr(_ops, "_plain_eager", lambda args, plain=plain: plain)
        got.append(torch.autograd.grad(_weighted_sum(xs, w, 0.5), [xs[0], xs[2], w]))
    torch.testing.assert_close(got[0], got[1], rtol=0, atol=0)
    assert _seen_needs[0] == _seen_needs[1], _seen_needs
    assert list(_seen_needs[0][0]) == [True, False, True] and _seen_needs[0][1:] == (True, False)
