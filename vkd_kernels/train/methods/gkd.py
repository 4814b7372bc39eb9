"""GKD (docs/methods.md, method A) in the trainer: the network with its attention head and
CVAE (:class:`GKDNet`) and the method with its two passes per epoch (:class:`GKD`).

The network, :class:`~vkd_kernels.train.models.gkd_net.GKDNet` (importable from here
too), wraps any trainer model with the head, classifier and CVAE of
:mod:`vkd_kernels.gkd`; this module holds the method.

Two passes over the data per epoch (phases ``cvae`` then ``net``):

* ``cvae`` (networks frozen and in eval mode, CVAE trained; Adam 1e-4, betas
  (0.8, 0.999)): L_cvae(F_s, lambda_s) + gd_weight * L_GD, with L_GD = mean((F_hat_s -
  F_hat_t)^2), both CVAEs fed the student's (F_s, lambda_s), teacher CVAE frozen;
* ``net`` (CVAE frozen, network trained; the trainer's SGD + cosine):
  CE + rec_weight * min(epoch, rec_ramp) / rec_ramp * L_rec + beta * L_AD, with
  L_rec = mean((Dec(e + lambda, lambda) - F)^2), L_AD = mean((lambda_s - lambda_t)^2).

The teacher phase is ``gkd_repr`` (the same alternation, no KD terms); its ``model.pt``
holds backbone, head and CVAE. The teacher runs under ``torch.no_grad()`` throughout.
"""
from __future__ import annotations

from typing import Dict, Optional

import torch
import torch.nn.functional as F

from vkd_kernels.gkd import attention_distillation_loss, cvae_loss, generative_distillation_loss

from ..models.gkd_net import GKDNet
from .base import Method, pool_to


class GKD(Method):
    """GKD and its ablations: ``gd`` (L_GD in the CVAE pass), ``ad`` (L_AD in the network pass).

    Options (docs/methods.md defaults): beta 0.1 (L_AD), gd_weight 0.01, rec_weight 0.5,
    rec_ramp 20 (epochs), kl_weight 0.1, cvae_lr 1e-4, cvae_betas (0.8, 0.999),
    gn_groups 32, dropout None (the backbone classifier's rate), fused True (fused head
    tail), per_sample True (attention_apply sums per sample; False: over the batch, as the
    published code).
    """

    uses_teacher = True
    teacher_method = "gkd_repr"       # vkd reproduce trains the teacher with this first
    phase_names = ("cvae", "net")

    def __init__(self, student, teacher=None, *, probe=None, gd: bool = True, ad: bool = True, beta: float = 0.1,
                 gd_weight: float = 0.01, rec_weight: float = 0.5, rec_ramp: int = 20, kl_weight: float = 0.1,
                 cvae_lr: float = 1e-4, cvae_betas=(0.8, 0.999), gn_groups: int = 32, dropout: Optional[float] = None,
                 fused: bool = True, per_sample: bool = True, **kwargs):
        if probe is None:
            raise ValueError("probe: a sample input batch is needed to read the feature shape")
        if isinstance(rec_ramp, bool) or not isinstance(rec_ramp, int) or rec_ramp < 0:
            raise ValueError(f"rec_ramp: the epochs over which L_rec ramps up, an integer >= 0 "
                             f"(0: full weight from the first epoch), got {rec_ramp!r}")
        if kwargs.get("weights"):
            raise ValueError("weights: GKD's term weights are the options beta, gd_weight and rec_weight")
        if teacher is not None and self.uses_teacher and not isinstance(teacher, GKDNet):
            raise ValueError("teacher: GKD needs a teacher trained with gkd_repr (its model.pt holds the "
                             "attention head and CVAE); this one is a plain model")
        # a GKD teacher sets the width (adapter) even without KD terms, so that every
        # ablation has the same student network
        channels = teacher.options["channels"] if isinstance(teacher, GKDNet) else None
        super().__init__(student, teacher if self.uses_teacher else None, **kwargs)
        self.student = GKDNet.for_model(student, probe, channels=channels, gn_groups=gn_groups, dropout=dropout,
                                        fused=fused, per_sample=per_sample)
        self.gd, self.ad = gd and self.uses_teacher, ad and self.uses_teacher
        self.beta, self.gd_weight, self.rec_weight, self.rec_ramp = beta, gd_weight, rec_weight, rec_ramp
        self.kl_weight, self.cvae_lr, self.cvae_betas = kl_weight, cvae_lr, tuple(cvae_betas)
        self.phase, self.epoch = "net", 0

    def spec_extra(self) -> Dict:
        """Keys added to the model spec in model.pt (``build_model`` rebuilds the GKDNet)."""
        return {"gkd": dict(self.student.options)}

    def phases(self):
        """[(name, parameters, optimizer options)]: the CVAE pass (Adam) and the network pass
        (None: the trainer's SGD + cosine schedule)."""
        cvae = list(self.student.cvae.parameters())
        ids = {id(p) for p in cvae}
        net = [p for p in self.parameters() if id(p) not in ids]
        return [("cvae", cvae, {"optimizer": "adam", "lr": self.cvae_lr, "betas": self.cvae_betas}),
                ("net", net, None)]

    def set_phase(self, name: str, epoch: int) -> None:
        """Freeze what the phase does not train (requires_grad) and put frozen networks in eval mode."""
        if name not in self.phase_names:
            raise ValueError(f"phase must be one of {self.phase_names}, got {name!r}")
        self.phase, self.epoch = name, epoch
        cvae = {id(p) for p in self.student.cvae.parameters()}
        for p in self.parameters():
            p.requires_grad_((id(p) in cvae) == (name == "cvae"))
        self.train(self.training)

    def train(self, mode: bool = True):
        super().train(mode)
        if mode and self.phase == "cvae":          # networks frozen: no BN statistics, no dropout
            self.student.eval()
            self.student.cvae.train()
        return self

    def forward(self, clips: torch.Tensor, labels: torch.Tensor):
        student, teacher = self.student, self.teacher_model
        with torch.set_grad_enabled(self.phase == "net" and torch.is_grad_enabled()):
            fs, lam_s = student.features(clips)
            logits = student.classify(fs, lam_s)
        lam_t = None
        if self.ad and self.phase == "net":
            with torch.no_grad():
                lam_t = teacher.features(clips)[1]
        with self.timed(logits):
            terms = (self.cvae_terms(fs, lam_s) if self.phase == "cvae"
                     else self.net_terms(logits, labels, fs, lam_s, lam_t))
        return self.combine(terms), logits, {k: v.detach() for k, v in terms.items()}

    def cvae_terms(self, fs, lam_s) -> Dict[str, torch.Tensor]:
        fs, lam_s = fs.float(), lam_s.float()
        noise = torch.randn_like(lam_s)
        rec, mu, logvar = self.student.cvae(fs, lam_s, noise)
        terms = {"cvae": cvae_loss(fs, rec, mu, logvar, lam_s, self.kl_weight)}
        if self.gd:          # the teacher's CVAE on the student's (F_s, lambda_s), resized to its shape
            teacher = self.teacher_model.options
            size = (teacher["time_steps"],) + tuple(teacher["spatial_size"])
            with torch.no_grad():
                rec_t = self.teacher_model.cvae(pool_to(fs, size), pool_to(lam_s, size[:1]),
                                                pool_to(noise, size[:1]))[0]
            terms["gd"] = generative_distillation_loss(pool_to(rec, size), rec_t)
        return terms

    def net_terms(self, logits, labels, fs, lam_s, lam_t) -> Dict[str, torch.Tensor]:
        terms = {"ce": F.cross_entropy(logits.float(), labels)}
        if self.coefficients()["rec"] > 0:
            terms["rec"] = F.mse_loss(self.student.cvae.generate(lam_s.float()), fs.float())
        if lam_t is not None:
            terms["ad"] = attention_distillation_loss(pool_to(lam_s.float(), lam_t.shape[2:]), lam_t.float())
        return terms

    def coefficients(self) -> Dict[str, float]:
        """The weight of each term (rec ramps up over the first rec_ramp epochs, epoch counted from 0;
        rec_ramp 0: rec_weight from the start)."""
        return {"cvae": 1.0, "gd": self.gd_weight, "ce": 1.0, "ad": self.beta,
                "rec": self.rec_weight * (min(self.epoch, self.rec_ramp) / self.rec_ramp if self.rec_ramp else 1.0)}

    def combine(self, terms: Dict[str, torch.Tensor]) -> torch.Tensor:
        weights = self.coefficients()
        return sum(weights[name] * value for name, value in terms.items())


class GKDRepr(GKD):
    """Head + CVAE with the two passes and no KD term: the teacher phase (no teacher), and
    the 'feature representation only' ablation of a student (a GKD teacher given only sets
    the width, so the student network is the same as in gkd, gkd_gd, gkd_ad)."""
    uses_teacher = False


__all__ = ["GKD", "GKDNet", "GKDRepr"]      # GKDNet: re-exported, its former home
