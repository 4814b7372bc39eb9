"""Video models of the trainer (no torchvision): ``build_model({"name": ..., **kwargs}, num_classes)``."""
from __future__ import annotations

import logging
from typing import Dict

from torch import nn

from .i3d import I3D, top_heavy_i3d
from .resnet3d import ResNet3D
from .tsm import TSMResNet, temporal_shift

log = logging.getLogger("vkd_kernels.train")

MODELS = {"resnet3d": ResNet3D, "i3d": I3D, "top_heavy_i3d": top_heavy_i3d, "tsm_resnet": TSMResNet}


def build_model(spec: Dict, num_classes: int, load_weights: bool = True) -> nn.Module:
    """``spec`` = {"name": one of MODELS, other keys: the model's keyword arguments};
    ``pretrained: PATH`` loads a checkpoint (models/pretrained.py) unless ``load_weights`` is False."""
    spec = dict(spec)
    name = spec.pop("name", None)
    if name not in MODELS:
        raise ValueError(f"model name must be one of {sorted(MODELS)}, got {name!r}")
    spec.pop("features", None)
    gkd = spec.pop("gkd", None)     # a GKD network (backbone + attention head + CVAE), see models/gkd_net.py
    pretrained = spec.pop("pretrained", None)     # a checkpoint path: pytorch-i3d, TSM, torchvision, ours
    model = MODELS[name](num_classes=num_classes, **spec)
    if pretrained and load_weights:
        from .pretrained import load_pretrained
        log.info("pretrained: %s", load_pretrained(model, pretrained))
    if gkd is not None:
        from .gkd_net import GKDNet
        model = GKDNet(model, num_classes, **gkd)
    return model


__all__ = ["I3D", "MODELS", "ResNet3D", "TSMResNet", "build_model", "temporal_shift", "top_heavy_i3d"]
