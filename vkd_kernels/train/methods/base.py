"""The training objective of one run: student (and teacher) forward plus losses.

A :class:`Method` is an ``nn.Module`` holding the student, the method's own
trainable parts (adapters, uncertainty weights) and, for mutual learning, the
teacher; a frozen teacher is kept outside the module tree (not trained, not
checkpointed, not wrapped by DDP). ``forward(clips, labels)`` returns
``(total_loss, student_logits, {term: value})``. Features come from
:class:`~vkd_kernels.train.hooks.FeatureHooks`, so any model works unchanged.
"""
from __future__ import annotations

import contextlib
import time
from typing import Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..hooks import FeatureHooks, as_video


def stage_names(model: nn.Module, stages: Optional[Sequence[str]]) -> List[str]:
    """The stages to distil: ``stages`` or the model's last feature stage."""
    return list(stages) if stages else [model.feature_names[-1]]


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Hinton et al.: tau^2 KL(softmax(t / tau) || softmax(s / tau)), batch mean."""
    log_p_s = F.log_softmax(student_logits.float() / temperature, 1)
    log_p_t = F.log_softmax(teacher_logits.float() / temperature, 1)
    return F.kl_div(log_p_s, log_p_t, reduction="batchmean", log_target=True) * temperature ** 2


def pool_to(x: torch.Tensor, size) -> torch.Tensor:
    """Adaptive average pooling of (N, C, *S), 1 to 3 axes in S, to S = ``size`` (identity if equal)."""
    if tuple(x.shape[2:]) == tuple(size):
        return x
    return (F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.adaptive_avg_pool3d)[x.dim() - 3](x, size)


def match_size(fs: torch.Tensor, ft: torch.Tensor):
    """Adaptive-average-pool the larger of two (N, C, T, H, W) features to the smaller (T, H, W)."""
    size = tuple(min(a, b) for a, b in zip(fs.shape[2:], ft.shape[2:]))
    return pool_to(fs, size), pool_to(ft, size)


class Method(nn.Module):
    """Cross-entropy training; subclasses add terms in :meth:`terms`.

    Args:
        student, teacher: the models (teacher None for ce).
        weights: fixed weight per loss term (default 1); the total is sum w_i L_i.
        student_stages / teacher_stages: names of the stages whose features the method
            uses (default: each model's last stage).
        mutual: train the teacher too (its own cross-entropy is added; the
            distillation terms pass gradients to it).
    """

    uses_teacher = False
    uses_features = False

    def __init__(self, student: nn.Module, teacher: Optional[nn.Module] = None, *, weights: Optional[Dict] = None,
                 student_stages=None, teacher_stages=None, mutual: bool = False, temperature: float = 4.0):
        super().__init__()
        if self.uses_teacher and teacher is None:
            raise ValueError(f"method {type(self).__name__} needs a teacher")
        self.student, self.mutual, self.temperature = student, mutual, temperature
        self.weights = dict(weights or {})
        self._frozen: List[nn.Module] = []
        if teacher is not None and self.uses_teacher:
            if mutual:
                self.teacher = teacher
            else:
                teacher.requires_grad_(False).eval()
                self._frozen.append(teacher)
        self.loss_seconds, self.time_losses = 0.0, False
        if self.uses_features:
            self.s_stages = stage_names(student, student_stages)
            self.t_stages = stage_names(teacher, teacher_stages)
            if len(self.s_stages) != len(self.t_stages):
                raise ValueError("student_stages and teacher_stages must have the same length")
            self.s_hooks = FeatureHooks(student, self.s_stages)
            self.t_hooks = FeatureHooks(teacher, self.t_stages)

    @property
    def teacher_model(self) -> Optional[nn.Module]:
        return self.teacher if self.mutual else (self._frozen[0] if self._frozen else None)

    def train(self, mode: bool = True):
        super().train(mode)
        for teacher in self._frozen:
            teacher.eval()
        return self

    def _apply(self, fn, *args, **kwargs):
        for teacher in self._frozen:
            teacher._apply(fn, *args, **kwargs)
        return super()._apply(fn, *args, **kwargs)

    def video_features(self, hooks: FeatureHooks, model: nn.Module) -> List[torch.Tensor]:
        return [as_video(f, getattr(model, "num_segments", None)) for f in hooks.pop()]

    def forward(self, clips: torch.Tensor, labels: torch.Tensor):
        logits = self.student(clips)
        teacher, t_logits, fs, ft = self.teacher_model, None, None, None
        if teacher is not None:
            with torch.set_grad_enabled(self.mutual and torch.is_grad_enabled()):
                t_logits = teacher(clips)
        if self.uses_features:
            fs, ft = self.video_features(self.s_hooks, self.student), self.video_features(self.t_hooks, teacher)
        with self.timed(logits):
            terms = {"ce": F.cross_entropy(logits.float(), labels)}
            terms.update(self.terms(logits, t_logits, fs, ft, labels))
            if self.mutual:
                terms["ce_teacher"] = F.cross_entropy(t_logits.float(), labels)
        return self.combine(terms), logits, {k: v.detach() for k, v in terms.items()}

    @contextlib.contextmanager
    def timed(self, like: torch.Tensor):
        """Add the forward time of the block to ``loss_seconds`` when ``time_losses`` is on
        (on CUDA it synchronises before and after: off by default, ``train.time_losses``)."""
        if not self.time_losses:
            yield
            return
        sync = torch.cuda.synchronize if like.is_cuda else (lambda: None)
        sync()
        start = time.perf_counter()
        yield
        sync()
        self.loss_seconds += time.perf_counter() - start

    def after_step(self) -> None:
        """Called by the trainer after every optimiser step (e.g. to project parameters)."""

    def terms(self, logits, t_logits, fs, ft, labels) -> Dict[str, torch.Tensor]:
        return {}

    def combine(self, terms: Dict[str, torch.Tensor]) -> torch.Tensor:
        return sum(self.weights.get(name, 1.0) * value for name, value in terms.items())

    def optimizer_groups(self) -> List[Dict]:
        """Parameters with their own SGD settings, ``[{"params": [...], "weight_decay": wd,
        "lr_scale": k}]`` (each key optional: the run's weight decay, k = 1: the run's
        learning rate and schedule times k); every other parameter gets the run's settings."""
        return []
