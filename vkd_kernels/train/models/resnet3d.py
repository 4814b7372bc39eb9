"""3-D ResNets (Hara et al. style), depth and width configurable; no torchvision.

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


def is_unit(stride) -> bool:
    """True for a stride of 1 in every dimension (an int or a tuple such as (1, 1, 1))."""
    return all(s == 1 for s in ((stride,) if isinstance(stride, int) else stride))


class BasicBlock3d(nn.Module):
    expansion = 1

    def __init__(self, cin: int, planes: int, stride=1, temporal_kernel: int = 3):
        super().__init__()
        k = (temporal_kernel, 3, 3)
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
    """

    feature_names = ("layer1", "layer2", "layer3", "layer4")

    def __init__(self, depth: int = 18, width: int = 64, num_classes: int = 400, in_channels: int = 3,
                 stem_kernel: Sequence[int] = (3, 7, 7), stem_stride: Sequence[int] = (1, 2, 2),
                 stem_pool: bool = True, temporal_strides: Tuple[int, ...] = (1, 1, 1, 1), dropout: float = 0.0):
        super().__init__()
        if depth not in LAYERS:
            raise ValueError(f"depth must be one of {sorted(LAYERS)}, got {depth!r}")
        kind, counts = LAYERS[depth]
        block = BasicBlock3d if kind == "basic" else Bottleneck3d
        self.stem = nn.Sequential(conv_bn(in_channels, width, tuple(stem_kernel), tuple(stem_stride)),
                                  nn.MaxPool3d(3, (1, 2, 2), 1) if stem_pool else nn.Identity())
        cin = width
        for i, n in enumerate(counts):
            planes = width * 2 ** i
            stride = (temporal_strides[i], 1 if i == 0 else 2, 1 if i == 0 else 2)
            blocks = []
            for b in range(n):
                blocks.append(block(cin, planes, stride if b == 0 else 1))
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
