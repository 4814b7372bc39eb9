"""The weight-spectrum distance: public functions, torch.library ops and autograd.

Fused path, for every group of a call at once (student and teacher sides together):

1. ``vkd::weight_gram`` (one kernel launch): G_g = W_g^T W_g for every group g, as
   deterministic per-split partials summed in a fixed order -> (groups, Pmax, Pmax).
2. The finish, plain differentiable torch ops on (groups, Pmax, Pmax) tensors:
   e = diag(B G B^T) / #kernels, p = e / (sum e + eps), the distances, the reduction.
3. Backward: autograd through the finish gives dL/dG; ``vkd::weight_gram_backward``
   (one launch) applies dW = W M per tensor, M = dL/dG + dL/dG^T of its group.
"""
from __future__ import annotations

import math
from typing import List, Optional, Sequence, Union

import torch
import torch.nn.functional as F

from .. import _backend
from .._checks import (
    check_choice,
    check_float_tensor,
    check_positive_number,
    finite_check_enabled,
    new_output,
    raise_if_not_finite,
)
from .layout import (
    DISTANCES,
    MAX_P,
    REDUCTIONS,
    TRANSFORMS,
    accumulation_dtype,
    layout_of,
    normalize,
    pad_positions,
    padded_basis,
    spectrum_distance,
)
from .reference import spectrum_reference, weight_spectrum_distance_reference

_OP = "weight_spectrum_distance"
Group = Union[torch.Tensor, Sequence[torch.Tensor]]


# ---- the custom ops -----------------------------------------------------------------

@torch.library.custom_op("vkd::weight_gram", mutates_args=())
def _gram_op(weights: List[torch.Tensor], group_ids: List[int], num_groups: int, Pmax: int,
             backend: str) -> torch.Tensor:
    """(num_groups, Pmax, Pmax): sum over the group's tensors of W^T W, zero padded.
    Every weight contiguous and of one dtype; accumulation in float32 (float64)."""
    with _backend.device_guard(weights[0].device):
        layout = layout_of(weights, group_ids, num_groups)
        partials = _backend.kernels(__package__, backend).gram(layout, weights, accumulation_dtype(weights[0].dtype))
        flat = partials.sum(0) if layout.splits > 1 else partials[0]
        G = flat.new_zeros(num_groups * Pmax * Pmax)
        G[pad_positions(layout, Pmax, flat.device)] = flat
        return G.view(num_groups, Pmax, Pmax)


@_gram_op.register_fake
def _(weights, group_ids, num_groups, Pmax, backend):
    return weights[0].new_empty((num_groups, Pmax, Pmax), dtype=accumulation_dtype(weights[0].dtype))


@torch.library.custom_op("vkd::weight_gram_backward", mutates_args=())
def _gram_backward_op(grad: torch.Tensor, weights: List[torch.Tensor], group_ids: List[int], num_groups: int,
                      backend: str) -> List[torch.Tensor]:
    """dW = W (grad_g + grad_g^T) for each weight of group g."""
    with _backend.device_guard(weights[0].device):
        layout = layout_of(weights, group_ids, num_groups)
        M = (grad + grad.transpose(1, 2)).reshape(-1)[pad_positions(layout, grad.shape[-1], grad.device)]
        grads = [new_output(w.shape, w.dtype, w.device) for w in weights]
        M = M.to(accumulation_dtype(weights[0].dtype))
        _backend.kernels(__package__, backend).gram_backward(layout, weights, grads, M)
        return grads


@_gram_backward_op.register_fake
def _(grad, weights, group_ids, num_groups, backend):
    return [torch.empty_like(w) for w in weights]


def _setup_context(ctx, inputs, output):
    """Keeps only the weights that need a gradient (a frozen teacher keeps nothing)."""
    weights, group_ids, num_groups, _, backend = inputs
    ctx.needed = [i for i, w in enumerate(weights) if w.requires_grad]
    ctx.options = (len(weights), [group_ids[i] for i in ctx.needed], num_groups, backend)
    ctx.save_for_backward(*[weights[i] for i in ctx.needed])


def _autograd_backward(ctx, grad):
    count, group_ids, num_groups, backend = ctx.options
    grads: list = [None] * count
    if ctx.needed:
        for i, g in zip(ctx.needed, _gram_backward_op(grad, list(ctx.saved_tensors), group_ids, num_groups, backend)):
            grads[i] = g
    return grads, None, None, None, None


_gram_op.register_autograd(_autograd_backward, setup_context=_setup_context)


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
    return tuple(group[0].shape[2:])


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

def _fused_spectra(groups: List[List[torch.Tensor]], transform: str, drop_dc: bool, eps: float,
                   backend: str) -> torch.Tensor:
    """p (groups, Pmax) of every group (zero beyond each group's P; p[:, 0] = 0 for
    drop_dc): one gram launch per weight dtype present (one in the usual case)."""
    kernels = tuple(_kernel(g) for g in groups)
    Pmax = max(math.prod(k) for k in kernels)
    flat = [(w, g) for g, group in enumerate(groups) for w in group]
    dtypes = list(dict.fromkeys(w.dtype for w, _ in flat))
    acc = torch.float64 if torch.float64 in dtypes else torch.float32
    G = None
    for dtype in dtypes:
        part = [(w, g) for w, g in flat if w.dtype == dtype]
        Gd = _gram_op([w for w, _ in part], [g for _, g in part], len(groups), Pmax, backend).to(acc)
        G = Gd if G is None else G + Gd
    # e = diag(B G B^T) / #kernels, batched per kernel size (not padded to Pmax: a
    # (3,7,7) stem would make every 3x3x3 group cost 147^3)
    sizes: dict = {}
    for g, kernel in enumerate(kernels):
        sizes.setdefault(kernel, []).append(g)
    e = None
    for kernel, members in sizes.items():
        P, n = math.prod(kernel), len(members)
        counts = torch.tensor([sum(w.numel() // P for w in groups[g]) for g in members], dtype=acc, device=G.device)
        index = torch.tensor(members, device=G.device)
        Gk = (G if n == len(groups) else G.index_select(0, index))[:, :P, :P] / counts[:, None, None]
        basis = padded_basis((kernel,) * n, transform, drop_dc, P, acc, G.device)
        ek = (torch.bmm(basis, Gk) * basis).sum(-1)
        ek = F.pad(ek.view(n, -1, P).sum(1), (0, Pmax - P))
        e = ek if len(sizes) == 1 else (G.new_zeros(len(groups), Pmax) if e is None else e).index_put((index,), ek)
    return normalize(e, eps)


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
        p = _fused_spectra(s_groups + t_groups, transform, drop_dc, float(eps), chosen)
        n, Pmax = len(s_groups), p.shape[1]
        if len(t_groups) == n:
            pt = p[n:]
        else:
            rows, next_group = [], n
            for t, s_group in zip(t_side, s_groups):
                if isinstance(t, list):
                    rows.append(p[next_group])
                    next_group += 1
                else:
                    front = int(drop_dc)
                    rows.append(F.pad(t.to(p.dtype), (front, Pmax - front - t.shape[0])))
            pt = torch.stack(rows)
        d = spectrum_distance(p[:n], pt, distance, float(eps))
        result = d.mean() if reduction == "mean" else d.sum()
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
        p = _fused_spectra(groups, transform, drop_dc, float(eps), chosen)
        spectra = [p[i, int(drop_dc):math.prod(_kernel(g))] for i, g in enumerate(groups)]
    for i, s in enumerate(spectra):
        _check_finite(s, _named("weights", [weights]) if single else _named("weights", items))
    return spectra[0] if single else spectra
