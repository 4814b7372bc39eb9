"""Attention transfer (Zagoruyko & Komodakis) with ``vkd_kernels.attention_transfer_loss``.

CE + weight * sum over stages of mean((a_s - a_t)^2), a = L2-normalised mean_c |f|^2
over (T, H, W) (the authors' code: beta / 2 = 500 per stage with "mse").
"""
from __future__ import annotations

from typing import Dict

import vkd_kernels

from .base import Method


class AT(Method):
    uses_teacher = uses_features = True

    def __init__(self, student, teacher=None, *, mode: str = "spatiotemporal", probe=None, **kwargs):
        kwargs.setdefault("weights", {"at": 500.0})
        super().__init__(student, teacher, **kwargs)
        self.mode = mode

    def terms(self, logits, t_logits, fs, ft, labels) -> Dict:
        # float32 features, as autocast runs torch's losses: under AMP a float16 loss (and the
        # float16 gradient it receives, weight x loss scale) overflows and caps the scale
        return {"at": sum(vkd_kernels.attention_transfer_loss(s.float(), (t if self.mutual else t.detach()).float(),
                                                             p=2, mode=self.mode, distance="mse")
                          for s, t in zip(fs, ft))}
