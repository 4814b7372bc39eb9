"""Collect the features of named stages of any nn.Module with forward hooks.

Drop-in for an existing training loop: no edit of the model::

    hooks_s = FeatureHooks(student, ["layer4"])
    hooks_t = FeatureHooks(teacher, ["layer4"])
    logits = student(clips)
    with torch.no_grad():
        teacher(clips)
    loss = F.cross_entropy(logits, labels) + vkd_kernels.temporal_spectrum_loss(
        adapter(hooks_s["layer4"]), hooks_t["layer4"])
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import torch
from torch import nn


class FeatureHooks:
    """Forward hooks on ``model.get_submodule(name)`` for every name; the latest
    output of each lands in ``self.features[name]`` (``hooks[name]``). ``pop()``
    returns them in the order of ``names`` and clears them; ``remove()`` (or leaving a
    ``with`` block) takes the hooks off."""

    def __init__(self, model: nn.Module, names: Sequence[str]):
        self.names = list(names)
        self.features: Dict[str, torch.Tensor] = {}
        self.handles = []
        for name in self.names:
            try:
                module = model.get_submodule(name)
            except AttributeError as error:
                raise ValueError(f"names: {type(model).__name__} has no submodule {name!r}") from error
            self.handles.append(module.register_forward_hook(self._hook(name)))

    def _hook(self, name: str):
        def hook(module, args, output):
            self.features[name] = output
        return hook

    def __getitem__(self, name: str) -> torch.Tensor:
        return self.features[name]

    def pop(self) -> List[torch.Tensor]:
        missing = [n for n in self.names if n not in self.features]
        if missing:
            raise RuntimeError(f"no output recorded for {missing}: did the forward pass run through them?")
        out = [self.features.pop(n) for n in self.names]
        return out

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles, self.features = [], {}

    def __enter__(self) -> "FeatureHooks":
        return self

    def __exit__(self, *exc) -> None:
        self.remove()


def as_video(feature: torch.Tensor, num_segments: Optional[int] = None) -> torch.Tensor:
    """(N, C, T, H, W) as is; TSM layout (N*T, C, H, W) with ``num_segments=T`` -> (N, C, T, H, W)."""
    if num_segments is None:
        if feature.dim() != 5:
            raise ValueError(f"feature must be (N, C, T, H, W) or pass num_segments, got shape {tuple(feature.shape)}")
        return feature
    nt, c, h, w = feature.shape
    return feature.view(nt // num_segments, num_segments, c, h, w).transpose(1, 2)
