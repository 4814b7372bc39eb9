"""Methods of the trainer, by name: ``build_method(name, student, teacher, probe=..., **options)``.

Each registry entry is (class, fixed options): the ablations are a method with some
options fixed.
"""
from __future__ import annotations

from typing import Dict

from .at import AT
from .base import Method, kd_loss
from .baselines import CE, KD, FitNet
from .collab import Collab
from .gkd import GKD, GKDRepr

REGISTRY: Dict[str, tuple] = {
    "ce": (CE, {}),
    "kd": (KD, {}),
    "at": (AT, {}),
    "fitnet": (FitNet, {}),
    "collab": (Collab, {}),
    "collab_spectrum": (Collab, {"param": False}),
    "collab_param": (Collab, {"spectrum": False}),
    "collab_fixed": (Collab, {"uncertainty": False}),
    "collab_mutual": (Collab, {"mutual": True}),
    "gkd": (GKD, {}),                    # GKD (method A) and its ablations
    "gkd_repr": (GKDRepr, {}),
    "gkd_gd": (GKD, {"ad": False}),
    "gkd_ad": (GKD, {"gd": False}),
}
# every method name of the trainer, in the order of the docs
ALL_METHODS = tuple(REGISTRY)


def build_method(name: str, student, teacher=None, *, probe=None, **options) -> Method:
    if name not in REGISTRY:
        raise ValueError(f"method must be one of {sorted(REGISTRY)}, got {name!r}")
    cls, fixed = REGISTRY[name]
    kwargs = {**options, **fixed}
    if cls not in (CE, KD):
        kwargs["probe"] = probe
    return cls(student, teacher if cls is not CE else None, **kwargs)


__all__ = ["ALL_METHODS", "REGISTRY", "Method", "build_method", "kd_loss"]
