"""Which conv weights of a model form the groups of the weight-spectrum distance."""
from __future__ import annotations

import math
from typing import List, Sequence, Union

import torch
from torch import nn


def _convs(model: nn.Module):
    """(name, weight) of every 2-d or 3-d convolution with kernels of more than one element."""
    for name, module in model.named_modules():
        if isinstance(module, nn.modules.conv._ConvNd) and module.weight is not None \
                and module.weight.dim() in (4, 5) and math.prod(module.weight.shape[2:]) > 1:
            yield name, module.weight


def conv_weight_groups(model: nn.Module, by: Union[str, Sequence[str]] = "layer") -> List[List[torch.Tensor]]:
    """The k > 1 convolution weights of ``model`` (Conv2d/Conv3d and their subclasses,
    grouped and depthwise included; 1x1 kernels left out), in ``named_modules`` order:
    ``by="layer"``: one group per layer, ``[[w1], [w2], ...]``;
    ``by=["layer1", "layer2", ...]``: one group per module prefix, pooling the weights
    of the modules named ``prefix`` or ``prefix.*`` (e.g. the stages of a ResNet).

    A prefix that matches no such convolution, or whose convolutions have different
    kernel sizes, raises a ValueError (a group pools kernels of one size: pass finer
    prefixes or ``by="layer"``).
    """
    convs = list(_convs(model))
    if isinstance(by, str):
        if by != "layer":
            raise ValueError(f"by must be 'layer' or a list of module name prefixes, got {by!r}")
        if not convs:
            raise ValueError("the model has no convolution with kernels larger than 1x1")
        return [[w] for _, w in convs]
    if not isinstance(by, (list, tuple)) or not by or not all(isinstance(p, str) for p in by):
        raise TypeError(f"by must be 'layer' or a non-empty list of module name prefixes, got {by!r}")
    groups = []
    for prefix in by:
        members = [(name, w) for name, w in convs if name == prefix or name.startswith(prefix + ".")]
        if not members:
            raise ValueError(f"by: no convolution with kernels larger than 1x1 under {prefix!r}")
        sizes = {tuple(w.shape[2:]): name for name, w in members}
        if len(sizes) > 1:
            listing = ", ".join(f"{size} ({name})" for size, name in sizes.items())
            raise ValueError(f"by: the convolutions under {prefix!r} mix kernel sizes {listing}; "
                             "pass finer prefixes or by='layer'")
        groups.append([w for _, w in members])
    return groups
