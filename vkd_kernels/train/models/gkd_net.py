"""GKD's network in the trainer (docs/methods.md, method A): a backbone with the GKD
attention head, classifier and conditional VAE, built from the public :mod:`vkd_kernels.gkd`.

A :class:`GKDNet` wraps any trainer model: the backbone runs up to its last feature
stage F (N, C, T, H, W) (read with a forward hook, so any model works; TSM layouts are
turned into video layout), then::

    lambda = GenerativeAttentionHead(F)            (N, C, T), the fused compact tail
    F_fg   = attention_apply(F, lambda)             per-sample sums
    logits = mean_t Linear(Dropout(mean_hw F_fg))  per-time-step logits averaged over T

and the :class:`~vkd_kernels.gkd.ConditionalVAE` of (F, lambda). The
backbone's own classifier (``head``) is replaced by the GKD one in the GKDNet's copy of
the backbone (the model given is not modified). T, H, W and C are
read from one probe forward; group-norm group counts adapt to C (``group_count``).
With ``channels`` different from the backbone's width, a 1x1x1 conv adapter maps F to
``channels`` first (conv + BN + ReLU, so F stays non-negative as attention_apply's
normalisation needs) and is part of the network (head, CVAE and classifier see the
adapted feature), so a narrower student is compared with the teacher like with like.

A model, not a method: ``build_model`` rebuilds it from a checkpoint's spec (its ``gkd``
key); the method with its two passes per epoch is vkd_kernels/train/methods/gkd.py.
"""
from __future__ import annotations

import copy
import math
from typing import Optional

import torch
from torch import nn

from vkd_kernels import gkd

from ..hooks import FeatureHooks, as_video
from .resnet3d import conv_bn


class GKDNet(nn.Module):
    """A backbone with the GKD attention head, classifier and CVAE on stage ``stage``.

    Args:
        backbone: a trainer model; the GKDNet holds a copy of it whose ``head`` is replaced
            by the GKD classifier (the model passed in is left as it is).
        num_classes: classifier outputs. in_channels, time_steps, spatial_size: the shape
            (C, T, (H, W)) of the stage's output. channels: width of head and CVAE
            (default in_channels; otherwise a 1x1x1 adapter maps to it).
    Use :meth:`for_model` to read the shapes from a probe batch.
    """

    def __init__(self, backbone: nn.Module, num_classes: int, stage: str, in_channels: int, time_steps: int,
                 spatial_size, channels: Optional[int] = None, gn_groups: int = 32, dropout: float = 0.0,
                 fused: bool = True, per_sample: bool = True):
        super().__init__()
        channels = channels or in_channels
        H, W = spatial_size
        self.options = dict(stage=stage, in_channels=in_channels, time_steps=time_steps, spatial_size=[H, W],
                            channels=channels, gn_groups=gn_groups, dropout=dropout, fused=fused,
                            per_sample=per_sample)
        backbone = copy.deepcopy(backbone)     # the caller's model keeps its head
        if hasattr(backbone, "head"):
            backbone.head = nn.Identity()
        self.backbone, self.stage, self.per_sample = backbone, stage, per_sample
        self.num_segments = getattr(backbone, "num_segments", None)
        self.feature_names = tuple(f"backbone.{n}" for n in getattr(backbone, "feature_names", (stage,)))
        self._hooks = FeatureHooks(backbone, [stage])
        # Conv + BN + ReLU: F stays non-negative like a stage output, so attention_apply's
        # sum(F * lambda) cannot approach 0 (a plain conv made it, and F_fg, blow up)
        self.adapter = nn.Identity() if channels == in_channels else conv_bn(in_channels, channels, 1)
        hidden = max(1, channels // 2)
        self.head = gkd.GenerativeAttentionHead(channels, time_steps, (H, W), hidden_channels=hidden,
                                                gn_groups=gkd.group_count(math.gcd(channels, hidden), gn_groups),
                                                fused=fused)
        self.cvae = gkd.ConditionalVAE(channels, (H, W), gn_groups)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(channels, num_classes))

    @classmethod
    def for_model(cls, backbone: nn.Module, probe: torch.Tensor, stage: Optional[str] = None,
                  dropout: Optional[float] = None, **options) -> "GKDNet":
        """Read num_classes and the stage's (C, T, H, W) from one forward of ``probe``;
        ``dropout`` None: the rate of the backbone's own classifier (0 if it has none)."""
        stage = stage or backbone.feature_names[-1]
        if dropout is None:
            rates = [m.p for m in getattr(backbone, "head", nn.Identity()).modules() if isinstance(m, nn.Dropout)]
            dropout = rates[0] if rates else 0.0
        with FeatureHooks(backbone, [stage]) as hooks, torch.no_grad():
            was_training = backbone.training
            backbone.eval()
            num_classes = backbone(probe).shape[1]
            backbone.train(was_training)
            feature = as_video(hooks.pop()[0], getattr(backbone, "num_segments", None))
        C, T, H, W = feature.shape[1:]
        return cls(backbone, num_classes, stage, C, T, (H, W), dropout=dropout, **options)

    def features(self, clips: torch.Tensor):
        """(F, lambda): the (adapted) stage feature (N, C, T, H, W) and its attention (N, C, T)."""
        self.backbone(clips)
        feature = self.adapter(as_video(self._hooks.pop()[0], self.num_segments))
        return feature, self.head(feature)

    def classify(self, feature: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
        """Logits (N, K) of F_fg = attention_apply(F, lambda): per-time logits averaged over T."""
        # (under autocast the head's lambda may come out in another dtype than F)
        fg = gkd.attention_apply(feature, lam.to(feature.dtype), per_sample=self.per_sample)
        return self.classifier(fg.mean((3, 4)).transpose(1, 2)).mean(1)

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        return self.classify(*self.features(clips))
