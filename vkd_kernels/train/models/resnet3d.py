"""3-D ResNets (Hara et al. style), depth and width configurable; no torchvision.

``conv="2plus1d"`` builds R(2+1)D (Tran et al. 2018) as torchvision's ``r2plus1d_18`` is
built: every 3x3x3 conv of a basic block and the stem becomes a spatial (1, k, k) conv,
BatchNorm, ReLU and a temporal (t, 1, 1) conv (:func:`conv2plus1d_bn`).

Input (N, 3, T, H, W) -> logits (N, num_classes). Stages are the submodules
``layer1`` .. ``layer4`` (outputs (N, C_i, T_i, H_i, W_i)), named in
``feature_names`` for :class:`vkd_kernels.train.hooks.FeatureHooks`.
"""
from __future__ import annotations

from typing import Sequence, Tuple

from torch import nn

LAYERS = {10: ("basic", (1, 1, 1, 1)), 18: ("basic", (2, 2, 2, 2)), 34: ("basic", (3, 4, 6, 3)),
          50: ("bottleneck", (3, 4, 6, 3)), 101: ("bottleneck", (3, 4, 23, 3))}


def conv_bn(cin: int, cout: int, kernel, stride=1, relu: bool = True, dims: int = 3) -> nn.Sequential:
    """Conv (no bias, 'same' padding) + BatchNorm (+ ReLU), in 2-D or 3-D."""
    conv, bn = (nn.Conv3d, nn.BatchNorm3d) if dims == 3 else (nn.Conv2d, nn.BatchNorm2d)
    kernel = (kernel,) * dims if isinstance(kernel, int) else tuple(kernel)
    layers = [conv(cin, cout, kernel, stride, tuple(k // 2 for k in kernel), bias=False), bn(cout)]
    return nn.Sequential(*layers, nn.ReLU(inplace=True)) if relu else nn.Sequential(*layers)


def mid_channels(cin: int, cout: int, t: int = 3, k: int = 3) -> int:
    """Channels between the spatial and the temporal conv of a (2+1)-D conv: about the
    parameters of the (t, k, k) conv it replaces, ``cin*cout*t*k*k // (cin*k*k + t*cout)``."""
    return (cin * cout * t * k * k) // (cin * k * k + t * cout)


def conv2plus1d_bn(cin: int, cout: int, mid: int, kernel, stride=1, relu: bool = True) -> nn.Sequential:
    """A (2+1)-D conv (``Sequential(spatial conv, BN(mid), ReLU, temporal conv)``) + BatchNorm
    (+ ReLU): the layout of ``conv_bn``, its first module split in two. ``kernel`` (t, k, k),
    ``stride`` (st, s, s): the spatial conv takes (1, k, k) / (1, s, s), the temporal (t, 1, 1) / (st, 1, 1)."""
    t, kh, kw = (kernel,) * 3 if isinstance(kernel, int) else tuple(kernel)
    st, sh, sw = (stride,) * 3 if isinstance(stride, int) else tuple(stride)
    conv = nn.Sequential(nn.Conv3d(cin, mid, (1, kh, kw), (1, sh, sw), (0, kh // 2, kw // 2), bias=False),
                         nn.BatchNorm3d(mid), nn.ReLU(inplace=True),
                         nn.Conv3d(mid, cout, (t, 1, 1), (st, 1, 1), (t // 2, 0, 0), bias=False))
    layers = [conv, nn.BatchNorm3d(cout)]
    return nn.Sequential(*layers, nn.ReLU(inplace=True)) if relu else nn.Sequential(*layers)


def is_unit(stride) -> bool:
    """True for a stride of 1 in every dimension (an int or a tuple such as (1, 1, 1))."""
    return all(s == 1 for s in ((stride,) if isinstance(stride, int) else stride))


class BasicBlock3d(nn.Module):
    expansion = 1

    def __init__(self, cin: int, planes: int, stride=1, temporal_kernel: int = 3, conv: str = "3d"):
        super().__init__()
        k = (temporal_kernel, 3, 3)
        if conv == "2plus1d":       # both convs take the middle width of the first, as torchvision's
            mid = mid_channels(cin, planes, temporal_kernel)
            self.conv1 = conv2plus1d_bn(cin, planes, mid, k, stride)
            self.conv2 = conv2plus1d_bn(planes, planes, mid, k, relu=False)
        else:
            self.conv1 = conv_bn(cin, planes, k, stride)
            self.conv2 = conv_bn(planes, planes, k, relu=False)
        self.shortcut = (nn.Identity() if is_unit(stride) and cin == planes
                         else conv_bn(cin, planes, 1, stride, relu=False))
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        return self.relu(self.conv2(self.conv1(x)) + self.shortcut(x))


class Bottleneck3d(nn.Module):
    expansion = 4

    def __init__(self, cin: int, planes: int, stride=1, temporal_kernel: int = 3):
        super().__init__()
        cout = planes * 4
        self.conv1 = conv_bn(cin, planes, (temporal_kernel, 1, 1))
        self.conv2 = conv_bn(planes, planes, 3, stride)
        self.conv3 = conv_bn(planes, cout, 1, relu=False)
        self.shortcut = nn.Identity() if is_unit(stride) and cin == cout else conv_bn(cin, cout, 1, stride, relu=False)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        return self.relu(self.conv3(self.conv2(self.conv1(x))) + self.shortcut(x))


class ResNet3D(nn.Module):
    """``ResNet3D(depth=18, width=64, num_classes=400)``.

    Args:
        depth: 10, 18, 34, 50 or 101. width: channels of the first stage (doubles per stage).
        stem_kernel / stem_stride: the first conv; ``stem_pool`` adds a 3x3x3 max-pool.
        temporal_strides: per stage temporal stride (spatial stride is 2 from stage 2 on).
        conv: "3d" (full (t, 3, 3) convs) or "2plus1d" (R(2+1)D, basic-block depths only: each
            conv of the blocks and the stem split into spatial conv, BN, ReLU, temporal conv;
            the stem's middle width is 45 at width 64, ``45 * width // 64`` otherwise).
            torchvision's ``r2plus1d_18`` is ``depth=18, conv="2plus1d", stem_pool=False,
            temporal_strides=(1, 2, 2, 2)``.
    """

    feature_names = ("layer1", "layer2", "layer3", "layer4")

    def __init__(self, depth: int = 18, width: int = 64, num_classes: int = 400, in_channels: int = 3,
                 stem_kernel: Sequence[int] = (3, 7, 7), stem_stride: Sequence[int] = (1, 2, 2),
                 stem_pool: bool = True, temporal_strides: Tuple[int, ...] = (1, 1, 1, 1), dropout: float = 0.0,
                 conv: str = "3d"):
        super().__init__()
        if depth not in LAYERS:
            raise ValueError(f"depth must be one of {sorted(LAYERS)}, got {depth!r}")
        if conv not in ("3d", "2plus1d"):
            raise ValueError(f"conv must be '3d' or '2plus1d', got {conv!r}")
        kind, counts = LAYERS[depth]
        if conv == "2plus1d" and kind != "basic":
            raise ValueError(f"conv '2plus1d' is for the basic-block depths (10, 18, 34), got depth {depth}")
        block = BasicBlock3d if kind == "basic" else Bottleneck3d
        extra = {"conv": conv} if conv == "2plus1d" else {}
        if conv == "2plus1d":
            stem = conv2plus1d_bn(in_channels, width, max(1, 45 * width // 64), tuple(stem_kernel), tuple(stem_stride))
        else:
            stem = conv_bn(in_channels, width, tuple(stem_kernel), tuple(stem_stride))
        self.stem = nn.Sequential(stem,
                                  nn.MaxPool3d(3, (1, 2, 2), 1) if stem_pool else nn.Identity())
        cin = width
        for i, n in enumerate(counts):
            planes = width * 2 ** i
            stride = (temporal_strides[i], 1 if i == 0 else 2, 1 if i == 0 else 2)
            blocks = []
            for b in range(n):
                blocks.append(block(cin, planes, stride if b == 0 else 1, **extra))
                cin = planes * block.expansion
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
        self.num_features = cin
        self.head = nn.Sequential(nn.AdaptiveAvgPool3d(1), nn.Flatten(), nn.Dropout(dropout),
                                  nn.Linear(cin, num_classes))
        for m in self.modules():
            if isinstance(m, (nn.Conv3d, nn.Conv2d)):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x):
        x = self.stem(x)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.head(x)
