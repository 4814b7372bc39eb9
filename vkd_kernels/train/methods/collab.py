"""Collaborative distillation in the parameter and spectrum domains (arXiv 2009.06902).

Only the paper's abstract is public; this is our reading (methods.md, method B):

* spectrum term: ``vkd_kernels.temporal_spectrum_loss(adapter(f_s), f_t)`` on the
  chosen stages (default: last), a 1x1x1 conv adapter on the student;
* parameter term: ``vkd_kernels.WeightSpectrumLoss`` between the stage-pooled k>1
  conv kernels of student and teacher (stage prefixes: the models' feature stages, or
  ``student_groups`` / ``teacher_groups``; paired groups need one kernel size, so
  I3D -> Top-heavy I3D pairs only the 3-D stages, and a bottleneck 3-D ResNet, whose
  stages mix (3, 1, 1) and (3, 3, 3) kernels, needs per-layer groups);
* standard logit KD at temperature 4, and CE;
* "collaborative learning from a probabilistic view": learned homoscedastic
  uncertainty weighting ``L = sum_i exp(-s_i) L_i + s_i`` over the terms, ``s_i``
  learnable (initialised 0) and excluded from weight decay.

Ablations: ``spectrum=False`` / ``param=False`` drop a term, ``uncertainty=False``
uses the fixed ``weights`` (default 1), ``mutual=True`` trains the teacher too
(its CE joins the terms; the spectrum and parameter terms pass gradients to it).
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence

import torch
from torch import nn

import vkd_kernels

from .base import kd_loss
from .baselines import Adapted


class Collab(Adapted):
    def __init__(self, student, teacher=None, *, spectrum: bool = True, param: bool = True,
                 uncertainty: bool = True, spectrum_options: Optional[Dict] = None,
                 student_groups: Optional[Sequence[str]] = None, teacher_groups: Optional[Sequence[str]] = None,
                 param_options: Optional[Dict] = None, **kwargs):
        super().__init__(student, teacher, **kwargs)
        if not (spectrum or param):
            raise ValueError("collab needs spectrum=True or param=True")
        self.use_spectrum, self.use_param, self.uncertainty = spectrum, param, uncertainty
        self.spectrum_loss = vkd_kernels.TemporalSpectrumLoss(**{"norm": "ortho", **(spectrum_options or {})})
        if param:
            self.param_loss = vkd_kernels.WeightSpectrumLoss(
                student, teacher, student_groups=list(student_groups or student.feature_names),
                teacher_groups=list(teacher_groups or teacher.feature_names), **(param_options or {}))
        names = ["ce", "kd"] + ["spectrum"] * spectrum + ["param"] * param + ["ce_teacher"] * self.mutual
        self.term_names = names
        self.log_vars = nn.Parameter(torch.zeros(len(names)), requires_grad=uncertainty)

    def terms(self, logits, t_logits, fs, ft, labels) -> Dict:
        out = {"kd": kd_loss(logits, t_logits.detach(), self.temperature)}
        if self.use_spectrum:
            pairs = self.adapted(fs, ft)
            out["spectrum"] = sum(self.spectrum_loss(s, t) for s, t in pairs) / len(pairs)
        if self.use_param:
            out["param"] = self.param_loss()
        return out

    def combine(self, terms: Dict[str, torch.Tensor]) -> torch.Tensor:
        if not self.uncertainty:
            return super().combine(terms)
        s = self.log_vars
        return sum(torch.exp(-s[i]) * terms[name] + s[i] for i, name in enumerate(self.term_names))

    def no_decay_parameters(self):
        return [self.log_vars]
