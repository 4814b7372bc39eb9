"""nn.Module side of the weight-spectrum distance: which conv weights of a model form
the groups (:func:`conv_weight_groups`) and the loss between two models."""
from __future__ import annotations

import math
from typing import List, Sequence, Union

import torch
from torch import nn

from .op import _check_options, weight_spectrum, weight_spectrum_distance


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



class WeightSpectrumLoss(nn.Module):
    """``loss = WeightSpectrumLoss(student, teacher, ...)()``: the weight-spectrum
    distance between ``conv_weight_groups(student_model, student_groups)`` and
    ``conv_weight_groups(teacher_model, teacher_groups)``, paired by position; the
    other options as in :func:`vkd_kernels.weight_spectrum_distance`.

    Teacher distributions are cached while no teacher weight of the groups requires
    grad (a frozen teacher costs one fused launch per step, for the student only); the
    cache is recomputed when a teacher weight changes (its ``_version``, as after an
    optimizer or EMA step, or a new tensor). When a teacher weight requires grad, the
    teacher side is recomputed every call and gradients reach it. The models are not
    registered as submodules (no duplicate parameters in ``state_dict``).
    """

    def __init__(self, student_model: nn.Module, teacher_model: nn.Module, *,
                 student_groups: Union[str, Sequence[str]] = "layer",
                 teacher_groups: Union[str, Sequence[str]] = "layer", transform: str = "dct",
                 distance: str = "kl", drop_dc: bool = False, reduction: str = "mean", eps: float = 1e-12,
                 backend: str = "auto"):
        super().__init__()
        _check_options(transform, distance, drop_dc, reduction, eps, backend)
        self._models = (student_model, teacher_model)
        self.groups = (student_groups, teacher_groups)
        self.options = dict(transform=transform, distance=distance, drop_dc=drop_dc, reduction=reduction,
                            eps=eps, backend=backend)
        self._cache_key = None
        self._cache = None

    def teacher_spectra(self) -> list:
        """The teacher side: cached distributions (frozen teacher) or weight groups."""
        teacher = conv_weight_groups(self._models[1], self.groups[1])
        weights = [w for group in teacher for w in group]
        if any(w.requires_grad for w in weights):
            self._cache_key = self._cache = None
            return teacher
        key = tuple((id(w), w.data_ptr(), w._version, w.device, w.dtype) for w in weights)
        if key != self._cache_key:
            options = {k: self.options[k] for k in ("transform", "drop_dc", "eps", "backend")}
            with torch.no_grad():
                self._cache = weight_spectrum(teacher, **options)
            self._cache_key = key
        return self._cache

    def forward(self) -> torch.Tensor:
        student = conv_weight_groups(self._models[0], self.groups[0])
        return weight_spectrum_distance(student, self.teacher_spectra(), **self.options)

    def extra_repr(self) -> str:
        return f"student_groups={self.groups[0]!r}, teacher_groups={self.groups[1]!r}, " + \
            ", ".join(f"{key}={value!r}" for key, value in self.options.items())
