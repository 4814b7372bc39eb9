"""The weight-spectrum distance: public functions, torch.library ops and autograd.

Fused path, for every group of a call at once (student and teacher sides together),
driven by the cached tables of layout.py (no host work on the device after the first
call with the same weights):

1. ``vkd::weight_spectra`` forward: ``gram`` (one launch per tile width) writes the
   energy partials of every (row chunk, Gram block) item; ``finish`` (one launch)
   sums them per group, normalises to p and computes each pair's distance d; the loss
   is d.sum() or d.mean() (one small reduction).
2. ``vkd::weight_spectra_backward``: ``finish_backward`` (one launch) turns dL/dloss (or
   dL/dp for weight_spectrum) into M_g = dL/dG_g + dL/dG_g^T per group that needs a
   gradient (and the gradients of distribution teachers); ``gram_backward`` (one launch
   per tile width) writes dW = W M into one flat buffer, split into views per weight.
"""
from __future__ import annotations

import math
from typing import List, Optional, Sequence, Tuple, Union

import torch

from .. import _backend
from .._checks import (
    check_choice,
    check_float_tensor,
    check_positive_number,
    finite_check_enabled,
    new_output,
    raise_if_not_finite,
)
from .._ops import custom_op
from .layout import (
    DISTANCE_CODES,
    DISTANCES,
    MAX_P,
    REDUCTIONS,
    TRANSFORMS,
    Spec,
    accumulation_dtype,
    backward_tables,
    basis,
    forward_tables,
    kernel_triples,
    kernels_of,
    make_plan,
)
from .reference import spectrum_reference, weight_spectrum_distance_reference

_OP = "weight_spectrum_distance"
Group = Union[torch.Tensor, Sequence[torch.Tensor]]
_PARTS = {"dct": 1, "fft": 2}


# ---- the custom ops -----------------------------------------------------------------

def _rows(weights: Sequence[torch.Tensor], kernels: List[int], groups: List[int]) -> List[int]:
    P = [math.prod(k) for k in kernels_of(kernels)]
    return [w.numel() // P[g] for w, g in zip(weights, groups)]


def _spec(kernels, groups, rows, teachers, num_dists, transform, drop_dc, backend, needed=(), dists_needed=()):
    return Spec(kernels=kernels_of(kernels), tensors=tuple(zip(groups, rows)), teachers=tuple(teachers),
                num_dists=num_dists, parts=_PARTS[transform], drop_dc=drop_dc, backend=backend,
                needed=tuple(needed), dists_needed=tuple(dists_needed))


@custom_op("vkd::weight_spectra")
def _spectra_op(weights: List[torch.Tensor], dists: List[torch.Tensor], kernels: List[int], groups: List[int],
                teachers: List[int], transform: str, drop_dc: bool, distance: str, reduction: str, eps: float,
                backend: str) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(loss, p, S). weights: contiguous, one dtype, weight t in group groups[t];
    kernels: 3 ints per group; teachers: per pair i (student group i) its teacher group
    or -1 - its index in dists (contiguous, accumulation dtype, P - drop_dc bins); empty
    for spectra only (distance "none": loss is empty). p (groups + dists, Pmax): the
    distributions, zero past each P; S: sum e + eps per row. Accumulation in float32
    (float64)."""
    device = weights[0].device
    with _backend.device_guard(device):
        plan = make_plan(_spec(kernels, groups, _rows(weights, kernels, groups), teachers, len(dists), transform,
                               drop_dc, backend))
        acc = accumulation_dtype(weights[0].dtype)
        launch = _backend.kernels(__package__, backend)
        tables = forward_tables(plan, weights, dists)
        partials = new_output((plan.partials_size,), acc, device)
        p = new_output((plan.p_rows, plan.Pmax), acc, device)
        S = new_output((plan.p_rows,), acc, device)
        d = new_output((plan.num_pairs if distance != "none" else 0,), acc, device)
        launch.gram(plan, tables, weights, basis(plan.basis_kernels, transform, drop_dc, acc, device), partials)
        launch.finish(plan, tables, partials, torch.empty((plan.num_groups, plan.Pmax), dtype=acc, device=device),
                      p, S, d, eps, DISTANCE_CODES[distance])
        loss = d if distance == "none" else d.mean() if reduction == "mean" else d.sum()
        return loss, p, S


@_spectra_op.register_fake
def _(weights, dists, kernels, groups, teachers, transform, drop_dc, distance, reduction, eps, backend):
    acc = accumulation_dtype(weights[0].dtype)
    rows = len(kernels) // 3 + len(dists)
    Pmax = max(math.prod(k) for k in kernels_of(kernels))
    loss = weights[0].new_empty((0,) if distance == "none" else (), dtype=acc)
    return loss, weights[0].new_empty((rows, Pmax), dtype=acc), weights[0].new_empty((rows,), dtype=acc)


@custom_op("vkd::weight_spectra_backward")
def _spectra_backward_op(grad: torch.Tensor, p: torch.Tensor, S: torch.Tensor, weights: List[torch.Tensor],
                         kernels: List[int], groups: List[int], rows: List[int], needed: List[int],
                         teachers: List[int], num_dists: int, dists_needed: List[int], transform: str,
                         drop_dc: bool, distance: str, reduction: str, eps: float, backend: str,
                         ) -> Tuple[List[torch.Tensor], torch.Tensor]:
    """(dW, dp_t): dW of the weights (the ``needed`` ones of the forward, whose groups
    and rows are ``groups``, ``rows``) in their dtype: one flat tensor (triton, cuda) or
    one per weight (cpu); dp_t flat over the distributions ``dists_needed``.
    grad: dL/dloss, or dL/dp (distance "none")."""
    device = p.device
    with _backend.device_guard(device):
        plan = make_plan(_spec(kernels, groups, rows, teachers, num_dists, transform, drop_dc, backend, needed,
                               dists_needed))
        launch = _backend.kernels(__package__, backend)
        tables = backward_tables(plan, weights, device)
        M = new_output((max(1, plan.m_size),), p.dtype, device)
        dist_grad = new_output((plan.dist_grad_size,), p.dtype, device)
        scale = 1.0 / plan.num_pairs if distance != "none" and reduction == "mean" else 1.0
        launch.finish_backward(plan, tables, basis(plan.basis_kernels, transform, drop_dc, p.dtype, device), p, S,
                               grad.contiguous(), dist_grad, M, eps, DISTANCE_CODES[distance], scale)
        return (launch.gram_backward(plan, tables, weights, M) if weights else []), dist_grad


@_spectra_backward_op.register_fake
def _(grad, p, S, weights, kernels, groups, rows, needed, teachers, num_dists, dists_needed, transform, drop_dc,
      distance, reduction, eps, backend):
    P = [math.prod(k) for k in kernels_of(kernels)]
    dist_size = sum(P[teachers.index(-1 - k)] - drop_dc for k in dists_needed)
    if not weights:
        dW = []
    elif backend == "cpu":
        dW = [torch.empty_like(w) for w in weights]
    else:
        dW = [p.new_empty((sum(rows[t] * P[groups[t]] for t in needed),), dtype=weights[0].dtype)]
    return dW, p.new_empty((dist_size,))


def _setup_context(ctx, inputs, output):
    """Keeps p, S and only the weights that need a gradient (a frozen teacher keeps nothing)."""
    weights, dists, kernels, groups, teachers, transform, drop_dc, distance, reduction, eps, backend = inputs
    ctx.needed = [t for t, w in enumerate(weights) if w.requires_grad]
    ctx.dists_needed = [k for k, d in enumerate(dists) if d.requires_grad]
    ctx.rows = _rows(weights, kernels, groups)
    ctx.shapes = ([w.shape for w in weights], [d.shape for d in dists])
    ctx.options = (kernels, groups, teachers, transform, drop_dc, distance, reduction, eps, backend)
    # no gradient for the options; an empty list option is matched by an empty list (the
    # autograd wrapper reads [] as a list of optional tensors)
    ctx.no_grads = tuple([] if isinstance(x, list) and not x else None for x in inputs[2:])
    ctx.save_for_backward(output[1], output[2], *[weights[t] for t in ctx.needed])
    ctx.set_materialize_grads(False)  # the unused outputs' gradients stay None (no zero fills)


def _split(grads: Sequence[torch.Tensor], indices: Sequence[int], shapes: Sequence[torch.Size], count: int) -> list:
    """[None] * count with the gradients at ``indices`` viewed as shapes[i]: ``grads`` is
    one per index, or one flat tensor of them all."""
    out: list = [None] * count
    pieces = grads[0].view(-1).split([shapes[i].numel() for i in indices]) if len(grads) == 1 and indices else grads
    for i, piece in zip(indices, pieces):
        out[i] = piece.view(shapes[i])
    return out


def _autograd_backward(ctx, grad_loss, grad_p, grad_S):
    kernels, groups, teachers, transform, drop_dc, distance, reduction, eps, backend = ctx.options
    w_shapes, d_shapes = ctx.shapes
    grad = grad_p if distance == "none" else grad_loss
    if grad is None or not (ctx.needed or ctx.dists_needed):
        return ([None] * len(w_shapes), [None] * len(d_shapes)) + ctx.no_grads
    p, S, *weights = ctx.saved_tensors
    dW, dD = _spectra_backward_op(grad, p, S, list(weights), kernels, groups, ctx.rows, ctx.needed, teachers,
                                  len(d_shapes), ctx.dists_needed, transform, drop_dc, distance, reduction, eps,
                                  backend)
    return (_split(dW, ctx.needed, w_shapes, len(w_shapes)),
            _split([dD], ctx.dists_needed, d_shapes, len(d_shapes))) + ctx.no_grads


_spectra_op.register_autograd(_autograd_backward, setup_context=_setup_context)


# ---- argument checks ----------------------------------------------------------------

def _group(name: str, item) -> List[torch.Tensor]:
    """A validated group: a list of conv weights (O, I, *k) sharing one kernel size."""
    if isinstance(item, torch.Tensor):
        tensors, names = [item], [name]
    elif isinstance(item, (list, tuple)):
        if not item:
            raise ValueError(f"{name} is an empty group")
        tensors, names = list(item), [f"{name}[{j}]" for j in range(len(item))]
    else:
        raise TypeError(f"{name} must be a weight tensor or a list of them, got {type(item).__name__}")
    for tensor_name, w in zip(names, tensors):
        check_float_tensor(tensor_name, w)
        if w.dim() not in (4, 5):
            raise ValueError(f"{tensor_name} must be a conv weight (O, I, kh, kw) or (O, I, kt, kh, kw), "
                             f"got shape {tuple(w.shape)}")
        if math.prod(w.shape[2:]) == 1:
            raise ValueError(f"{tensor_name} has 1x1 kernels (shape {tuple(w.shape)}): a single element "
                             "carries no spatial frequency; leave it out of the groups")
        if w.shape[2:] != tensors[0].shape[2:]:
            raise ValueError(f"{tensor_name} has kernel size {tuple(w.shape[2:])} but {names[0]} has "
                             f"{tuple(tensors[0].shape[2:])}: a group pools kernels of one size")
        if w.device != tensors[0].device:
            raise ValueError(f"{tensor_name} is on {w.device} but {names[0]} is on {tensors[0].device}")
    return [w if w.is_contiguous() else w.contiguous() for w in tensors]  # the kernels read rows of P


def _kernel(group: List[torch.Tensor]) -> tuple:
    # ints, also under torch.jit.trace (whose sizes are traced values): the kernel size is
    # a static parameter of the op, as in its schema's int list
    return tuple(int(k) for k in group[0].shape[2:])


def _check_options(transform, distance, drop_dc, reduction, eps, backend) -> None:
    check_choice("transform", transform, TRANSFORMS)
    check_choice("distance", distance, DISTANCES)
    check_choice("reduction", reduction, REDUCTIONS)
    check_choice("backend", backend, _backend.BACKENDS)
    check_positive_number("eps", eps, allow_zero=False)
    if not isinstance(drop_dc, bool):
        raise TypeError(f"drop_dc must be a bool, got {type(drop_dc).__name__}")


def _items(name: str, value) -> list:
    if not isinstance(value, (list, tuple)) or not value:
        raise TypeError(f"{name} must be a non-empty list of weight tensors or groups, got "
                        f"{type(value).__name__ if not isinstance(value, (list, tuple)) else 'an empty list'}")
    return list(value)


def _resolve(groups: List[List[torch.Tensor]], backend: str, name: str) -> str:
    """The backend for ``groups`` (the first ones named ``name[i]``), all on one device."""
    device = groups[0][0].device
    for i, group in enumerate(groups):
        if group[0].device != device:
            raise ValueError(f"{name}[{i}] is on {group[0].device} but {name}[0] is on {device}")
    largest = max(math.prod(_kernel(g)) for g in groups)

    def why(name: str) -> Optional[str]:
        if name != "reference" and largest > MAX_P:
            return f"a kernel of {largest} elements exceeds the fused kernels' limit of {MAX_P}"
        return None
    return _backend.resolve(_OP, backend, device, why)


# ---- the fused forward ---------------------------------------------------------------

def _fused(groups: List[List[torch.Tensor]], dists: List[torch.Tensor], teachers: List[int], transform: str,
           drop_dc: bool, distance: str, reduction: str, eps: float, backend: str):
    """(loss, p) of the fused op over ``groups`` (the student's first). Weights of mixed
    dtypes are cast to their promoted dtype (one launch per call needs one dtype);
    distributions to the accumulation dtype."""
    weights = [w for group in groups for w in group]
    dtype = weights[0].dtype
    if any(w.dtype != dtype for w in weights):
        for w in weights[1:]:
            dtype = torch.promote_types(dtype, w.dtype)  # float16 with bfloat16: float32
        weights = [w.to(dtype) for w in weights]
    acc = accumulation_dtype(dtype)
    dists = [d.to(acc).contiguous() for d in dists]  # no-ops for weight_spectrum's own output
    ids = [g for g, group in enumerate(groups) for _ in group]
    kernels = kernel_triples([_kernel(group) for group in groups])
    loss, p, _ = _spectra_op(weights, dists, kernels, ids, teachers, transform, drop_dc, distance, reduction,
                             float(eps), backend)
    return loss, p


def _named(name: str, items: list) -> dict:
    """{"student[i]" or "student[i][j]": tensor} for the finite check's message."""
    named = {}
    for i, item in enumerate(items):
        if isinstance(item, torch.Tensor):
            named[f"{name}[{i}]"] = item
        else:
            named.update({f"{name}[{i}][{j}]": w for j, w in enumerate(item) if isinstance(w, torch.Tensor)})
    return named


def _check_finite(result: torch.Tensor, named: dict) -> None:
    """Raise naming the input that holds NaN/inf if the result is not finite (CPU by
    default, see _checks.finite_check_enabled; not while torch.compile traces)."""
    if finite_check_enabled(result.device) and not torch.compiler.is_compiling():
        raise_if_not_finite(result, **named)


def weight_spectrum_distance(student: Sequence[Group], teacher: Sequence[Union[Group, torch.Tensor]], *,
                             transform: str = "dct", distance: str = "kl", drop_dc: bool = False,
                             reduction: str = "mean", eps: float = 1e-12, backend: str = "auto") -> torch.Tensor:
    """Match the spatial-frequency energy distribution of the student's conv kernels to
    the teacher's (docs/ops.md section 2).

    For a group (a weight (O, I, *k) or a list of them with one kernel size k, P = prod(k)),
    every kernel is a row w of W (#kernels, P) and::

        e[b] = mean over the group's kernels of (B w)[b]^2 = diag(B G B^T),  G = W^T W / #kernels
        p    = e / (sum e + eps)         (drop_dc: bin 0 is left out)
        kl: sum p_t (log(p_t + eps) - log(p_s + eps));  l2: sum (p_s - p_t)^2;
        js: (KL(p_s || m) + KL(p_t || m)) / 2, m = (p_s + p_t) / 2

    B: the Kronecker product of orthonormal 1-d DCT-II matrices (transform="dct"), or the
    squared magnitude of the orthonormal n-d DFT (transform="fft", bins as torch.fft.fftn).

    Args:
        student: a list of items, each a conv weight (2-d or 3-d kernels, not 1x1) or a
            group (a list of weights with the same kernel size, e.g. a stage).
        teacher: the same, paired by position (each pair with the same kernel size), or
            items replaced by distributions from :func:`weight_spectrum` (a frozen
            teacher then costs nothing per step).
        reduction: "mean" or "sum" over the pairs.
        eps: > 0, keeps empty bins and all-zero kernels finite (no NaN, finite gradients).
        backend: "auto", "triton", "cuda", "cpu" or "reference"; the fused backends
            take kernels up to 512 elements (larger fall back to the reference).

    Weights may be float32, float64, float16 or bfloat16 (computed in float32; float64
    stays float64); the result is a float32 (float64) scalar. Non-contiguous weights are
    copied contiguous. Gradients reach every weight that requires grad, the teacher's too.
    """
    _check_options(transform, distance, drop_dc, reduction, eps, backend)
    student_items, teacher_items = _items("student", student), _items("teacher", teacher)
    if len(student_items) != len(teacher_items):
        raise ValueError(f"student has {len(student_items)} items but teacher has {len(teacher_items)}: "
                         "they pair by position")
    s_groups = [_group(f"student[{i}]", item) for i, item in enumerate(student_items)]
    t_side = []
    for i, (item, s_group) in enumerate(zip(teacher_items, s_groups)):
        kernel, bins = _kernel(s_group), math.prod(_kernel(s_group)) - drop_dc
        if isinstance(item, torch.Tensor) and item.dim() == 1:
            check_float_tensor(f"teacher[{i}]", item)
            if item.device != s_group[0].device:
                raise ValueError(f"teacher[{i}] is on {item.device} but student[{i}] is on {s_group[0].device}")
            if item.shape[0] != bins:
                raise ValueError(f"teacher[{i}] is a distribution of {item.shape[0]} bins but student[{i}] has "
                                 f"kernels {kernel}: {bins} bins{' (drop_dc)' if drop_dc else ''}")
            t_side.append(item)
            continue
        group = _group(f"teacher[{i}]", item)
        if group[0].device != s_group[0].device:
            raise ValueError(f"teacher[{i}] is on {group[0].device} but student[{i}] is on {s_group[0].device}")
        if _kernel(group) != kernel:
            raise ValueError(f"teacher[{i}] has kernel size {_kernel(group)} but student[{i}] has {kernel}")
        t_side.append(group)
    t_groups = [t for t in t_side if isinstance(t, list)]
    chosen = _resolve(s_groups + t_groups, backend, "student")
    if chosen == "reference":
        result = weight_spectrum_distance_reference(s_groups, t_side, transform=transform, distance=distance,
                                                    drop_dc=drop_dc, reduction=reduction, eps=eps)
    else:
        teachers, dists, next_group = [], [], len(s_groups)
        for t in t_side:
            if isinstance(t, list):
                teachers.append(next_group)
                next_group += 1
            else:
                teachers.append(-1 - len(dists))
                dists.append(t)
        result, _ = _fused(s_groups + t_groups, dists, teachers, transform, drop_dc, distance, reduction, eps,
                           chosen)
    _check_finite(result, {**_named("student", student_items), **_named("teacher", teacher_items)})
    return result


def weight_spectrum(weights, *, transform: str = "dct", drop_dc: bool = False, eps: float = 1e-12,
                    backend: str = "auto"):
    """The energy distribution p (P,) (or (P - 1,) with drop_dc) of a weight or of a
    group (a list of weights), or a list of them for a list whose items are groups
    (or weights): the teacher side of :func:`weight_spectrum_distance`, computed once.
    One fused launch for all items; differentiable."""
    _check_options(transform, "kl", drop_dc, "mean", eps, backend)
    single = isinstance(weights, torch.Tensor) or (
        isinstance(weights, (list, tuple)) and weights and all(isinstance(w, torch.Tensor) for w in weights))
    items = [weights] if single else _items("weights", weights)
    groups = [_group("weights" if single else f"weights[{i}]", item) for i, item in enumerate(items)]
    chosen = _resolve(groups, backend, "weights")
    if chosen == "reference":
        spectra = [spectrum_reference(g, transform, drop_dc, eps) for g in groups]
    else:
        _, p = _fused(groups, [], [], transform, drop_dc, "none", "mean", eps, chosen)
        spectra = [p[i, int(drop_dc):math.prod(_kernel(g))] for i, g in enumerate(groups)]
    for i, s in enumerate(spectra):
        _check_finite(s, _named("weights", [weights]) if single else _named("weights", items))
    return spectra[0] if single else spectra
