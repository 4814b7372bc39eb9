"""Collaborative distillation in the parameter and spectrum domains (arXiv 2009.06902).

Only the paper's abstract is public; this is our reading (docs/methods.md, method B):

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
  learnable (initialised 0), excluded from weight decay, learnt at ``log_var_lr_scale``
  (default 0.01) times the networks' learning rate (at the full rate SGD + momentum
  swung s_kd to 36 within the first epoch of synthetic-headroom), and kept inside
  ``log_var_range`` (default ``s_i >= 0``: a weight ``exp(-s_i)`` never exceeds 1) by
  projection after each optimiser step (``after_step``; ``forward`` only reads
  the clamped value, it never writes a parameter). Unbounded (``log_var_range=None``), each ``s_i`` runs
  towards ``log L_i``, so a term the networks can drive towards 0 gets a weight ~ 1 / L_i:
  measured on synthetic-full under SGD 0.1 + momentum, the parameter term's weight
  reached ~3700 in the first epoch and then jumped to ~0, and with ``mutual=True``
  the trained teacher's own CE (0.04) was up-weighted until both networks fell to
  chance (reproduction/saturating/RESULTS.md).

``weights`` (default 1 per term) scale the terms in both modes: with the learned
weighting the total is ``sum_i exp(-s_i) w_i L_i + s_i``, so with ``s_i >= 0`` the
weight of term i never exceeds ``w_i`` (the scale a weight sweep sets; w_i = 1 is the
paper's form).

Ablations: ``spectrum=False`` / ``param=False`` drop a term, ``uncertainty=False``
uses the fixed ``weights`` only, ``mutual=True`` trains the teacher too
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
                 param_options: Optional[Dict] = None,
                 log_var_range: Optional[Sequence[Optional[float]]] = (0.0, None), log_var_lr_scale: float = 0.01,
                 **kwargs):
        super().__init__(student, teacher, **kwargs)
        if not (spectrum or param):
            raise ValueError("collab needs spectrum=True or param=True")
        self.use_spectrum, self.use_param, self.uncertainty = spectrum, param, uncertainty
        if not spectrum:  # the adapters stay (the same initialisation draws) but take no part:
            self.adapters.requires_grad_(False)  # DDP then has no parameter without a gradient
        self.spectrum_loss = vkd_kernels.TemporalSpectrumLoss(**{"norm": "ortho", **(spectrum_options or {})})
        if param:
            self.param_loss = vkd_kernels.WeightSpectrumLoss(
                student, teacher, student_groups=list(student_groups or student.feature_names),
                teacher_groups=list(teacher_groups or teacher.feature_names), **(param_options or {}))
        names = ["ce", "kd"] + ["spectrum"] * spectrum + ["param"] * param + ["ce_teacher"] * self.mutual
        self.term_names = names
        self.log_vars = nn.Parameter(torch.zeros(len(names)), requires_grad=uncertainty)
        bounds = (None, None) if log_var_range is None else tuple(log_var_range)
        if len(bounds) != 2 or (None not in bounds and bounds[0] > bounds[1]):
            raise ValueError(f"log_var_range must be None or (min, max) with min <= max (either may be None), "
                             f"got {log_var_range!r}")
        self.log_var_range = bounds
        if not log_var_lr_scale > 0:
            raise ValueError(f"log_var_lr_scale must be > 0, got {log_var_lr_scale!r}")
        self.log_var_lr_scale = float(log_var_lr_scale)

    def terms(self, logits, t_logits, fs, ft, labels) -> Dict:
        out = {"kd": kd_loss(logits, t_logits.detach(), self.temperature)}
        if self.use_spectrum:
            pairs = self.adapted(fs, ft)
            # float32 features, as autocast runs torch's losses (a float16 loss caps AMP's scale)
            out["spectrum"] = sum(self.spectrum_loss(s.float(), t.float()) for s, t in pairs) / len(pairs)
        if self.use_param:
            out["param"] = self.param_loss()
        return out

    @property
    def log_variances(self) -> torch.Tensor:
        """The ``s_i`` in use: ``log_vars`` inside ``log_var_range`` (detached)."""
        s = self.log_vars.detach()
        return s if self.log_var_range == (None, None) else s.clamp(*self.log_var_range)

    def combine(self, terms: Dict[str, torch.Tensor]) -> torch.Tensor:
        if not self.uncertainty:
            return super().combine(terms)
        s = self.log_vars
        if self.log_var_range != (None, None):     # the value in use; forward never writes the parameter
            s = s.clamp(*self.log_var_range)
        return sum(torch.exp(-s[i]) * self.weights.get(name, 1.0) * terms[name] + s[i]
                   for i, name in enumerate(self.term_names))

    def after_step(self) -> None:
        """Projected SGD: put ``log_vars`` back into ``log_var_range`` after each step (at
        the bound clamp's gradient is 1, so a log-variance can leave the bound again)."""
        if self.uncertainty and self.log_var_range != (None, None):
            with torch.no_grad():
                self.log_vars.copy_(self.log_variances)

    def optimizer_groups(self):
        return [{"params": [self.log_vars], "weight_decay": 0.0, "lr_scale": self.log_var_lr_scale}]
