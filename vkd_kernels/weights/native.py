"""The CPU C++ and CUDA C++ backends of the weight-spectrum distance: calls into
vkd_kernels._C with the tables of layout.py (same interface as triton_kernels). The CPU
backward's dW = W M is a GEMM per weight, handed to the BLAS (torch.mm)."""
from __future__ import annotations

from typing import Sequence

import torch

from .. import _ext
from .._checks import new_output
from .._math import accumulation_dtype
from .layout import Plan, Tables


def _call(name: str, plan: Plan, tables: Tables, dtype: torch.dtype, device: torch.device, items=None,
          **buffers) -> None:
    args = dict(items=_ext.ptr(items), num_items=0 if items is None else items.shape[0],
                groups=_ext.ptr(tables.groups), num_groups=plan.num_groups, pairs=_ext.ptr(tables.pairs),
                num_pairs=plan.num_pairs, dists=_ext.ptr(tables.dists), Pmax=plan.Pmax, parts=plan.spec.parts,
                drop_dc=int(plan.spec.drop_dc), distance=buffers.pop("distance", 0),
                eps=float(buffers.pop("eps", 0.0)), grad_scale=float(buffers.pop("grad_scale", 1.0)))
    for key in ("basis", "partials", "p", "S", "d", "grad", "dist_grad", "M", "grad_w"):
        args[key] = _ext.ptr(buffers.pop(key, None))
    assert not buffers, f"unknown buffers {sorted(buffers)}"
    getattr(_ext.EXT, name)(_ext.device_arg(device), _ext.dtype_code(dtype), args, _ext.stream(device))


def _items(tables: Tables):
    """The one item table of a native launch (a single tile width per backend)."""
    assert len(tables.items) <= 1, "native backends use one tile width"
    return tables.items[0][1] if tables.items else None


def gram(plan: Plan, tables: Tables, weights: Sequence[torch.Tensor], basis: torch.Tensor,
         partials: torch.Tensor) -> None:
    """Writes every gram item's energy partial."""
    _call("weight_gram", plan, tables, weights[0].dtype, partials.device, _items(tables), basis=basis,
          partials=partials)


def finish(plan: Plan, tables: Tables, partials: torch.Tensor, scratch: torch.Tensor, p: torch.Tensor,
           S: torch.Tensor, d: torch.Tensor, eps: float, distance: int) -> None:
    """p, S and (distance > 0) the per-pair distances d (scratch: Triton only)."""
    _call("weight_finish", plan, tables, p.dtype, p.device, partials=partials, p=p, S=S, d=d if distance else None,
          eps=eps, distance=distance)


def finish_backward(plan: Plan, tables: Tables, basis: torch.Tensor, p: torch.Tensor, S: torch.Tensor,
                    grad: torch.Tensor, dist_grad: torch.Tensor, M: torch.Tensor, eps: float, distance: int,
                    grad_scale: float) -> None:
    """M of every group that needs a gradient, and the distributions' gradients."""
    _call("weight_finish_backward", plan, tables, p.dtype, p.device, basis=basis, p=p, S=S, grad=grad,
          dist_grad=dist_grad, M=M, eps=eps, distance=distance, grad_scale=grad_scale)


def gram_backward(plan: Plan, tables: Tables, weights: Sequence[torch.Tensor], M: torch.Tensor) -> list:
    """dW = W M for every needed weight. CUDA: one kernel into one flat buffer ([flat]).
    CPU: one BLAS GEMM per weight (in the accumulation dtype), each into its own tensor:
    per-weight blocks come back from the allocator's heap, while one flat buffer of the
    whole student (130 MB at the benchmark shape) would be a fresh mmap, page-faulted
    on every call (+18 ms measured)."""
    if M.device.type == "cuda":
        grad = new_output((plan.grad_size,), weights[0].dtype, M.device)
        _call("weight_gram_backward", plan, tables, weights[0].dtype, M.device, _items(tables), M=M, grad_w=grad)
        return [grad]
    acc = accumulation_dtype(weights[0].dtype)
    grads = []
    for t, w in zip(plan.spec.needed, weights):
        group = plan.groups[plan.spec.tensors[t][0]]
        P, m = group[0], group[5]
        Mg = M[m:m + P * P].view(P, P)  # symmetric: W M = W M^T
        rows = w.view(-1, P)
        grads.append(torch.mm(rows if w.dtype == acc else rows.to(acc), Mg).to(w.dtype).view(w.shape))
    return grads
