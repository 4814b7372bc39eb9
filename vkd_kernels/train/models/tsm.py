"""TSM ResNet: a 2-D ResNet applied per frame with the temporal shift module.

Input (N, 3, T, H, W) with T = ``num_segments``; internally (N*T, C, H, W). Each
residual branch first shifts 1/``shift_div`` of its channels one step back in time
and 1/``shift_div`` one step forward (zero padded; Lin et al., TSM), so 2-D convs
mix time at no cost. Stage outputs (``layer1`` .. ``layer4``) are in TSM layout
(N*T, C, H, W): pass ``num_segments`` to the losses, or use
:func:`vkd_kernels.train.hooks.as_video`. Logits are averaged over segments.
"""
from __future__ import annotations

import torch
from torch import nn

from .resnet3d import LAYERS, conv_bn


def temporal_shift(x: torch.Tensor, num_segments: int, shift_div: int = 8) -> torch.Tensor:
    """(N*T, C, H, W) -> same shape; channels [0, C/d) take t+1, [C/d, 2C/d) take t-1."""
    nt, c, h, w = x.shape
    x = x.view(nt // num_segments, num_segments, c, h, w)
    fold = c // shift_div
    out = torch.zeros_like(x)
    out[:, :-1, :fold] = x[:, 1:, :fold]
    out[:, 1:, fold:2 * fold] = x[:, :-1, fold:2 * fold]
    out[:, :, 2 * fold:] = x[:, :, 2 * fold:]
    return out.view(nt, c, h, w)


class ShiftBlock(nn.Module):
    def __init__(self, cin: int, planes: int, stride: int, bottleneck: bool, num_segments: int, shift_div: int):
        super().__init__()
        self.num_segments, self.shift_div = num_segments, shift_div
        cout = planes * (4 if bottleneck else 1)
        if bottleneck:
            self.body = nn.Sequential(conv_bn(cin, planes, 1, dims=2), conv_bn(planes, planes, 3, stride, dims=2),
                                      conv_bn(planes, cout, 1, relu=False, dims=2))
        else:
            self.body = nn.Sequential(conv_bn(cin, planes, 3, stride, dims=2),
                                      conv_bn(planes, cout, 3, relu=False, dims=2))
        self.shortcut = (nn.Identity() if stride == 1 and cin == cout
                         else conv_bn(cin, cout, 1, stride, relu=False, dims=2))
        self.relu = nn.ReLU(inplace=True)
        self.out_channels = cout

    def forward(self, x):
        return self.relu(self.body(temporal_shift(x, self.num_segments, self.shift_div)) + self.shortcut(x))


class TSMResNet(nn.Module):
    feature_names = ("layer1", "layer2", "layer3", "layer4")

    def __init__(self, depth: int = 50, width: int = 64, num_classes: int = 400, num_segments: int = 8,
                 shift_div: int = 8, in_channels: int = 3, stem_pool: bool = True, dropout: float = 0.5):
        super().__init__()
        if depth not in LAYERS:
            raise ValueError(f"depth must be one of {sorted(LAYERS)}, got {depth!r}")
        kind, counts = LAYERS[depth]
        self.num_segments = num_segments
        self.stem = nn.Sequential(conv_bn(in_channels, width, 7, 2, dims=2),
                                  nn.MaxPool2d(3, 2, 1) if stem_pool else nn.Identity())
        cin = width
        for i, n in enumerate(counts):
            blocks = []
            for b in range(n):
                blocks.append(ShiftBlock(cin, width * 2 ** i, 2 if i > 0 and b == 0 else 1, kind == "bottleneck",
                                         num_segments, shift_div))
                cin = blocks[-1].out_channels
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
        self.num_features = cin
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout),
                                  nn.Linear(cin, num_classes))

    def forward(self, x):
        n, c, t, h, w = x.shape
        if t != self.num_segments:
            raise ValueError(f"x has {t} frames but the model was built for num_segments={self.num_segments}")
        x = x.transpose(1, 2).reshape(n * t, c, h, w)
        x = self.layer4(self.layer3(self.layer2(self.layer1(self.stem(x)))))
        return self.head(x).view(n, t, -1).mean(1)
