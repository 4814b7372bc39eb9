"""The baselines every table carries: ce, kd (Hinton, tau 4), at, fitnet."""
from __future__ import annotations

from typing import Dict

import torch.nn.functional as F
from torch import nn

from .base import Method, kd_loss, match_size


class CE(Method):
    """Cross-entropy only."""


class KD(Method):
    """CE + tau^2 KL(teacher || student) at temperature tau (default 4)."""
    uses_teacher = True

    def terms(self, logits, t_logits, fs, ft, labels) -> Dict:
        return {"kd": kd_loss(logits, t_logits.detach(), self.temperature)}


def feature_channels(model: nn.Module, stages, probe) -> list:
    """Channel count of each stage's output, from one forward pass on ``probe``."""
    import torch

    from ..hooks import FeatureHooks, as_video
    with FeatureHooks(model, stages) as hooks, torch.no_grad():
        was_training = model.training
        model.eval()
        model(probe)
        model.train(was_training)
        return [as_video(f, getattr(model, "num_segments", None)).shape[1] for f in hooks.pop()]


class Adapted(Method):
    """A method with a 1x1x1 conv adapter (student -> teacher channels) per stage."""
    uses_teacher = uses_features = True

    def __init__(self, student, teacher=None, *, probe=None, **kwargs):
        super().__init__(student, teacher, **kwargs)
        if probe is None:
            raise ValueError("probe: a sample input batch is needed to size the adapters")
        cs = feature_channels(student, self.s_stages, probe)
        ct = feature_channels(teacher, self.t_stages, probe)
        self.adapters = nn.ModuleList(nn.Conv3d(a, b, 1) for a, b in zip(cs, ct))

    def adapted(self, fs, ft):
        """Pairs (adapter(student feature), teacher feature) of matching size."""
        return [match_size(adapter(s), t if self.mutual else t.detach())
                for adapter, s, t in zip(self.adapters, fs, ft)]


class FitNet(Adapted):
    """CE + mean over stages of MSE(adapter(f_s), f_t) (FitNets hint loss)."""

    def terms(self, logits, t_logits, fs, ft, labels) -> Dict:
        pairs = self.adapted(fs, ft)
        return {"fitnet": sum(F.mse_loss(s.float(), t.float()) for s, t in pairs) / len(pairs)}
