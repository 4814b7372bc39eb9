"""The temporal spectrum loss: public function, torch.library ops and autograd.

The fused backends run inside two custom ops (forward and backward), so
torch.compile(fullgraph=True) treats each as one opaque node; the reference backend
is plain eager torch and is traced like any user code.
"""
from __future__ import annotations

from typing import Optional, Sequence, Union

import torch

from .. import _backend
from .._checks import finite_check_enabled, new_output, raise_if_not_finite
from .._ops import custom_op
from .layout import MAX_FUSED_T, SpectrumProblem, accumulation_dtype, effective_weights, make_problem
from .reference import temporal_spectrum_loss_reference

_OP = "temporal_spectrum_loss"


def _problem(student, teacher, time_dim, num_segments, spectrum, norm, spatial, reduction, eps) -> SpectrumProblem:
    return make_problem(student, teacher, time_dim=time_dim, num_segments=num_segments, spectrum=spectrum,
                        norm=norm, spatial=spatial, reduction=reduction, eps=eps)


@custom_op("vkd::temporal_spectrum_loss")
def _forward_op(student: torch.Tensor, teacher: torch.Tensor, weights: torch.Tensor, time_dim: int,
                num_segments: Optional[int], spectrum: str, norm: str, spatial: str, reduction: str,
                eps: float, backend: str) -> torch.Tensor:
    with _backend.device_guard(student.device):
        pr = _problem(student, teacher, time_dim, num_segments, spectrum, norm, spatial, reduction, eps)
        xs, xt = pr.view(student), pr.view(teacher)
        if reduction == "none":
            # allocated in the user's shape (the kernel writes its (B, K, G) view): an output that
            # is not a view of a buffer made here can be modified in place under autograd
            out = new_output(pr.out_shape, student.dtype, student.device)
            _backend.kernels(__package__, backend).forward(pr, xs, xt, weights, out.view(pr.B, pr.K, pr.G))
        else:
            # the partial sums come scaled by 1/count for "mean": their sum is the loss
            sum_scale = 1.0 / pr.count if reduction == "mean" else 1.0
            partials = _backend.kernels(__package__, backend).forward(pr, xs, xt, weights, None, sum_scale)
            out = partials.sum().to(student.dtype)
        if finite_check_enabled(student.device):
            raise_if_not_finite(out, student=student, teacher=teacher)
        return out


@_forward_op.register_fake
def _(student, teacher, weights, time_dim, num_segments, spectrum, norm, spatial, reduction, eps, backend):
    pr = _problem(student, teacher, time_dim, num_segments, spectrum, norm, spatial, reduction, eps)
    shape = pr.out_shape if reduction == "none" else ()
    return student.new_empty(shape)


@custom_op("vkd::temporal_spectrum_loss_backward")
def _backward_op(grad: torch.Tensor, student: torch.Tensor, teacher: torch.Tensor, weights: torch.Tensor,
                 time_dim: int, num_segments: Optional[int], spectrum: str, norm: str, spatial: str,
                 reduction: str, eps: float, backend: str, need_student: bool,
                 need_teacher: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(dL/dstudent, dL/dteacher); an unneeded one comes back empty."""
    with _backend.device_guard(student.device):
        pr = _problem(student, teacher, time_dim, num_segments, spectrum, norm, spatial, reduction, eps)
        if reduction == "none":
            grad3 = grad.reshape(pr.B, pr.K, pr.G)
        else:  # a scalar read through zero strides
            grad3 = grad.reshape(1, 1, 1).expand(pr.B, pr.K, pr.G)
        grad_scale = 1.0 / pr.count if reduction == "mean" else 1.0

        def new_grad(needed: bool) -> Optional[torch.Tensor]:
            return new_output((pr.B, pr.T, pr.S), student.dtype, student.device) if needed else None

        ds, dt = new_grad(need_student), new_grad(need_teacher)
        _backend.kernels(__package__, backend).backward(pr, pr.view(student), pr.view(teacher), weights, grad3,
                                                        grad_scale, ds, dt)
        return tuple(g.view(student.shape) if g is not None else student.new_empty(0) for g in (ds, dt))


@_backward_op.register_fake
def _(grad, student, teacher, weights, time_dim, num_segments, spectrum, norm, spatial, reduction, eps,
      backend, need_student, need_teacher):
    return (torch.empty_like(student) if need_student else student.new_empty(0),
            torch.empty_like(teacher) if need_teacher else teacher.new_empty(0))


def _setup_context(ctx, inputs, output):
    student, teacher, weights, *options = inputs
    ctx.save_for_backward(student, teacher, weights)
    ctx.options = options


def _autograd_backward(ctx, grad):
    student, teacher, weights = ctx.saved_tensors
    need_student, need_teacher = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
    ds, dt = _backward_op(grad, student, teacher, weights, *ctx.options, need_student, need_teacher)
    return (ds if need_student else None, dt if need_teacher else None) + (None,) * 9


_forward_op.register_autograd(_autograd_backward, setup_context=_setup_context)


def _op_unsupported(pr: SpectrumProblem):
    def why(backend: str) -> Optional[str]:
        if backend != "reference" and pr.T > MAX_FUSED_T:
            return f"T={pr.T} exceeds the fused kernels' limit of {MAX_FUSED_T}"
        return None
    return why


def temporal_spectrum_loss(student: torch.Tensor, teacher: torch.Tensor, *, time_dim: int = 2,
                           num_segments: Optional[int] = None, spectrum: str = "magnitude",
                           norm: str = "backward",
                           bin_weights: Union[None, torch.Tensor, Sequence[float]] = None,
                           drop_dc: bool = False, spatial: str = "pixel", reduction: str = "mean",
                           eps: float = 1e-12, backend: str = "auto") -> torch.Tensor:
    """Match the student's temporal frequency spectrum to the teacher's (docs/ops.md section 1).

    For every line x[0..T-1] along time (all other indices fixed), with K = T//2 + 1::

        X_k = s * sum_t x[t] exp(-2 pi i k t / T)        s = 1, 1/sqrt(T), 1/T for norm
        A_k = |X_k| (spectrum="magnitude", sqrt(|X|^2 + eps)), |X_k|^2 ("power"),
              log(|X_k| + eps) ("log_magnitude")
        d_k = w_k (A_k(student) - A_k(teacher))^2         w = bin_weights, w_0 = 0 if drop_dc

    Args:
        student, teacher: same shape, dtype and device; (N, C, T, H, W) with
            ``time_dim=2`` (any rank >= 2, any time_dim), or TSM layout (N*T, C, H, W)
            with ``num_segments=T``. float32, float64, float16 or bfloat16; T >= 2
            (the fused kernels take T <= 64; longer T falls back to the reference).
        spatial: "pixel" compares every position; "mean" averages A over the
            spatial dims (those after time, or after C in TSM layout) first.
        reduction: "mean" over every compared element (zero-weighted bins count),
            "sum", or "none": d with the time axis replaced by the K bins.
        backend: "auto", "triton", "cuda", "cpu" or "reference" (see README).

    Gradients reach the student, and the teacher too when it requires grad.
    Returns a scalar (or d for reduction="none") in the input dtype.
    """
    pr = make_problem(student, teacher, time_dim=time_dim, num_segments=num_segments, spectrum=spectrum,
                      norm=norm, spatial=spatial, reduction=reduction, eps=eps)
    weights = effective_weights(bin_weights, drop_dc, pr.K, student.device, accumulation_dtype(student.dtype))
    chosen = _backend.resolve(_OP, backend, student.device, _op_unsupported(pr))
    if chosen == "reference":
        plain = bin_weights is None and not drop_dc
        return temporal_spectrum_loss_reference(student, teacher, pr, None if plain else weights, norm=norm,
                                                spectrum=spectrum, spatial=spatial, reduction=reduction)
    return _forward_op(student, teacher, weights, pr.time_dim if num_segments is None else time_dim,
                       num_segments, spectrum, norm, spatial, reduction, float(eps), chosen)
