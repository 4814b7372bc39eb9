"""nn.Module form of the weight-spectrum distance between two models."""
from __future__ import annotations

from typing import Sequence, Union

import torch
from torch import nn

from .groups import conv_weight_groups
from .op import _check_options, weight_spectrum, weight_spectrum_distance


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
