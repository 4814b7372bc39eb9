"""Methods of the trainer, by name: ``build_method(name, student, teacher, probe=..., **options)``.

Each registry entry is (class, fixed options). ``at`` and the collab variants that need
the weight-spectrum op are registered only once those ops exist in vkd_kernels.
"""
from __future__ import annotations

from typing import Dict

import vkd_kernels

from .base import Method, kd_loss
from .baselines import CE, KD, FitNet
from .collab import Collab

# every method name of the trainer (REGISTRY holds those this build of vkd_kernels can run)
ALL_METHODS = ("ce", "kd", "at", "fitnet", "collab", "collab_spectrum", "collab_param", "collab_fixed",
               "collab_mutual", "gkd", "gkd_repr", "gkd_gd", "gkd_ad")

REGISTRY: Dict[str, tuple] = {
    "ce": (CE, {}),
    "kd": (KD, {}),
    "fitnet": (FitNet, {}),
    "collab_spectrum": (Collab, {"param": False}),
}
if hasattr(vkd_kernels, "attention_transfer_loss"):
    from .at import AT
    REGISTRY["at"] = (AT, {})
if hasattr(vkd_kernels, "WeightSpectrumLoss"):
    REGISTRY.update({
        "collab": (Collab, {}),
        "collab_param": (Collab, {"spectrum": False}),
        "collab_fixed": (Collab, {"uncertainty": False}),
        "collab_mutual": (Collab, {"mutual": True}),
    })
if hasattr(vkd_kernels, "GenerativeAttentionHead"):    # GKD (method A) and its ablations
    from .gkd import GKD, GKDRepr
    REGISTRY.update({
        "gkd_repr": (GKDRepr, {}),
        "gkd_gd": (GKD, {"ad": False}),
        "gkd_ad": (GKD, {"gd": False}),
        "gkd": (GKD, {}),
    })


def build_method(name: str, student, teacher=None, *, probe=None, **options) -> Method:
    if name not in REGISTRY:
        raise ValueError(f"method must be one of {sorted(REGISTRY)}, got {name!r}")
    cls, fixed = REGISTRY[name]
    kwargs = {**options, **fixed}
    if cls not in (CE, KD):
        kwargs["probe"] = probe
    return cls(student, teacher if cls is not CE else None, **kwargs)


__all__ = ["ALL_METHODS", "REGISTRY", "Method", "build_method", "kd_loss"]
