"""The custom ops of every fused op, with an eager fast path.

Each fused op runs inside ``torch.library.custom_op``s (forward and backward): opaque
nodes to torch.compile and export, checked by ``torch.library.opcheck``, named in the
profiler. Called through the dispatcher, an op with a Python body costs ~40-50 us of host
time per call on a 2-core CPU (the dispatcher, schema default filling, redispatch):
more than a GPU launch, and at small shapes more than the kernels it runs.

:func:`custom_op` returns a :class:`CustomOp`: the registered op, plus a call path that in
plain eager mode runs the same Python body directly, its autograd formula (the same
``setup_context`` and ``backward`` registered on the op) applied by an
``autograd.Function``. Everything else goes through the op: torch.compile / export
tracing, fake or subclass tensors, functorch transforms, a dispatch or function mode, and
the profiler (so launch counts and traces see the ``vkd::`` ops as before).

The ops have no forward-mode formula; neither path would propagate a tangent (it would
come out zero), so a call whose inputs carry one raises NotImplementedError instead.
"""
from __future__ import annotations

import functools
from typing import Callable, Optional

import torch
from torch.autograd import forward_ad
from torch.utils import _pytree as pytree

try:
    from torch.library import infer_schema as _infer_schema
except ImportError:  # torch 2.4
    from torch._library.infer_schema import infer_schema as _infer_schema

_PLAIN_TYPES = (torch.Tensor, torch.nn.Parameter)


def _plain_eager(args) -> bool:
    """True when a call with these arguments can skip the dispatcher: nothing is tracing
    (torch.compile, export, torch.jit.trace: a trace records dispatcher ops, never the
    kernels a body launches), transforming, profiling or intercepting ops, and every
    tensor is a plain one."""
    if torch.compiler.is_compiling() or torch.autograd._profiler_enabled() or torch.jit.is_tracing():
        return False
    # (private torch state, read in this one place: dispatch / function modes such as
    # FakeTensorMode, and functorch's grad / vmap levels)
    if torch._C._len_torch_dispatch_stack() or torch._C._is_torch_function_mode_enabled():
        return False
    if torch._C._functorch.peek_interpreter_stack() is not None:
        return False
    return all(_plain_tensor(x) for x in _tensors(args))


def _plain_tensor(x: torch.Tensor) -> bool:
    """A tensor whose memory a kernel reads as it is: no subclass, strided, no lazy
    negation / conjugation (a body would hand the raw memory to its kernels; the
    dispatcher resolves them first), not a zero tensor, not a BatchedTensor of the
    legacy vmap (``autograd.grad(is_grads_batched=True)``, ``jacobian(vectorize=True)``),
    which has no storage and pushes no functorch level."""
    return (type(x) in _PLAIN_TYPES and x.layout == torch.strided and not (x.is_neg() or x.is_conj())
            and not x._is_zerotensor() and not torch._C._functorch.is_legacy_batchedtensor(x))


def _in_input_dtypes(fn: Callable) -> Callable:
    """The op's body with autocast off: a fused op computes in its inputs' dtypes (float16 /
    bfloat16 inputs in float32, as each op documents). Under autocast the GEMMs inside a
    body (the head tail's, the weight-spectrum backward's) would return half-precision
    buffers that its kernels then read as the inputs' dtype."""
    @functools.wraps(fn)
    def body(*args):
        first = next(_tensors(args), None)
        if first is None or not torch.is_autocast_enabled(first.device.type):
            return fn(*args)
        with torch.autocast(first.device.type, enabled=False):
            return fn(*args)
    return body


def _carries_tangent(args) -> bool:
    """True when an input is under forward-mode differentiation: a dual tensor of
    ``torch.autograd.forward_ad``, or a tensor wrapped by a transform while a
    ``torch.func.jvp`` level is active (jacfwd, hessian). Both set a forward-AD level, so
    outside them this is one comparison."""
    if forward_ad._current_level < 0:
        return False
    tensors = list(_tensors(args))
    if any(forward_ad.unpack_dual(x).tangent is not None for x in tensors):
        return True
    if torch._C._functorch.peek_interpreter_stack() is None:
        return False
    from torch._C._functorch import TransformType, is_functorch_wrapped_tensor
    from torch._functorch.pyfunctorch import retrieve_all_functorch_interpreters
    return (any(i.key() == TransformType.Jvp for i in retrieve_all_functorch_interpreters())
            and any(is_functorch_wrapped_tensor(x) for x in tensors))


class CustomOp:
    """A ``torch.library.custom_op`` (``.op``) called directly in plain eager mode.

    ``register_fake`` and ``register_autograd`` register on the op, as on the op itself;
    calls take positional arguments, as the op's schema lists them.
    """

    def __init__(self, name: str, fn: Callable):
        self.fn = _in_input_dtypes(fn)
        schema = _infer_schema(fn, mutates_args=())  # from fn's own annotations
        self.op = torch.library.custom_op(name, mutates_args=(), schema=schema)(self.fn)
        self._function: Optional[type] = None

    def register_fake(self, fn: Callable) -> Callable:
        return self.op.register_fake(fn)

    def register_autograd(self, backward: Callable, *, setup_context: Callable) -> None:
        self.op.register_autograd(backward, setup_context=setup_context)
        self._function = _autograd_function(self.op._qualname, self.fn, backward, setup_context)

    def __call__(self, *args):
        if not torch.compiler.is_compiling() and _carries_tangent(args):
            raise NotImplementedError(
                f"{self.op._qualname} has no forward-mode derivative (torch.func.jvp / jacfwd, "
                "torch.autograd.forward_ad), and a tangent through it would silently be zero; "
                "call the loss with backend='reference' (torch ops) to differentiate it forward")
        if not _plain_eager(args):
            return self.op(*args)
        # (under inference mode torch records no graph, even where grad mode is on)
        if torch.is_grad_enabled() and not torch.is_inference_mode_enabled() and _any_requires_grad(args):
            if self._function is None:
                # An op without a derivative (a backward op under create_graph=True): the
                # op's autograd kernel makes differentiating it raise, not give zero.
                return self.op(*args)
            leaves, spec = pytree.tree_flatten(args, is_leaf=_not_tensor_list)
            return self._function.apply(*leaves, spec)
        return self.fn(*args)


def _not_tensor_list(tree) -> bool:
    """A pytree leaf for the autograd Function: anything but a tuple or a list of tensors
    (a list of tensors is flattened into inputs; a list of ints stays one argument)."""
    return not isinstance(tree, tuple) and not (isinstance(tree, list) and all(isinstance(x, torch.Tensor)
                                                                                for x in tree))


def _not_optional_tensor_list(tree) -> bool:
    return not isinstance(tree, tuple) and not (isinstance(tree, list) and all(
        x is None or isinstance(x, torch.Tensor) for x in tree))


def _tensors(args):
    for arg in args:
        if isinstance(arg, torch.Tensor):
            yield arg
        elif isinstance(arg, (list, tuple)):
            yield from (x for x in arg if isinstance(x, torch.Tensor))


def _any_requires_grad(args) -> bool:
    return any(x.requires_grad for x in _tensors(args))


def _autograd_function(name: str, fn: Callable, backward: Callable, setup_context: Callable) -> type:
    """An autograd.Function applying the op's Python body ``fn`` with the op's
    ``setup_context`` and ``backward``, as the op's own autograd wrapper does: a list of
    tensors is flattened into inputs of their own, the argument structure comes last
    (so ``needs_input_grad`` reads per leaf in ``setup_context``, per argument in
    ``backward``). Its graph nodes are named after the op (``vkd_<op>Backward``)."""

    def forward(*inputs):
        return fn(*pytree.tree_unflatten(list(inputs[:-1]), inputs[-1]))

    def setup(ctx, inputs, output):
        ctx.args_spec = inputs[-1]
        setup_context(ctx, pytree.tree_unflatten(list(inputs[:-1]), inputs[-1]), output)

    def backward_flat(ctx, *grads):
        flat_needs = ctx.needs_input_grad
        try:
            ctx.needs_input_grad = pytree.tree_unflatten(list(flat_needs[:-1]), ctx.args_spec)
            per_argument = backward(ctx, *grads)
        finally:
            ctx.needs_input_grad = flat_needs
        if not isinstance(per_argument, tuple):
            per_argument = (per_argument,)
        flat, spec = pytree.tree_flatten(per_argument, is_leaf=_not_optional_tensor_list)
        if spec != ctx.args_spec:
            raise RuntimeError(f"the backward of {name} returned gradients shaped {spec}, not as its "
                               f"arguments {ctx.args_spec}")
        return (*flat, None)

    return type(name.replace("::", "_"), (torch.autograd.Function,),
                {"forward": staticmethod(forward), "setup_context": staticmethod(setup),
                 "backward": staticmethod(backward_flat), "__doc__": f"{name} in plain eager mode"})


def custom_op(name: str) -> Callable[[Callable], CustomOp]:
    """Decorator: ``@custom_op("vkd::name")`` on the op's Python body (no mutated arguments)."""
    return lambda fn: CustomOp(name, fn)
