"""The CPU C++ and CUDA C++ backends of the weight-spectrum distance: calls into
vkd_kernels._C with the offset tables (same interface as triton_kernels)."""
from __future__ import annotations

from typing import Sequence

import torch

from .. import _ext
from .._checks import new_output
from .layout import Layout, tables


def _call(name: str, layout: Layout, weights: Sequence[torch.Tensor], grads: Sequence[torch.Tensor],
          out: torch.Tensor) -> None:
    tensors, groups = tables(layout, weights, grads)
    device = weights[0].device
    getattr(_ext.EXT, name)(_ext.device_arg(device), _ext.dtype_code(weights[0].dtype), _ext.ptr(tensors),
                            _ext.ptr(groups), len(weights), layout.num_groups, layout.splits, layout.flat_size,
                            _ext.ptr(out), _ext.stream(device))


def gram(layout: Layout, weights: Sequence[torch.Tensor], acc: torch.dtype) -> torch.Tensor:
    """partials (splits, flat_size): per split of each group, W^T W of its rows."""
    partials = new_output((layout.splits, layout.flat_size), acc, weights[0].device)
    _call("weight_gram", layout, weights, (), partials)
    return partials


def gram_backward(layout: Layout, weights: Sequence[torch.Tensor], grads: Sequence[torch.Tensor],
                  M: torch.Tensor) -> None:
    """Writes grads[t] = W_t M_g (M: (flat_size,) in the accumulation dtype)."""
    _call("weight_gram_backward", layout, weights, grads, M.contiguous())
