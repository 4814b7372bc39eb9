"""Trainer models: forward shapes, stage features through FeatureHooks, temporal shift."""
import pytest
import torch

from vkd_kernels.train.hooks import FeatureHooks, as_video
from vkd_kernels.train.models import build_model, temporal_shift

CASES = [
    (dict(name="resnet3d", depth=10, width=4, stem_pool=False), {"layer4": (2, 32, 4, 2, 2)}),
    (dict(name="resnet3d", depth=50, width=2, temporal_strides=(1, 2, 1, 1)), {"layer2": (2, 16, 2, 4, 4)}),
    (dict(name="resnet3d", depth=10, width=4, conv="2plus1d", stem_pool=False, temporal_strides=(1, 2, 2, 2)),
     {"layer4": (2, 32, 1, 2, 2)}),
    (dict(name="i3d", width=0.05, temporal_pool=False), {"Mixed_5c": (2, 50, 4, 1, 1)}),
    (dict(name="top_heavy_i3d", width=0.05), {"Mixed_4f": (2, 41, 1, 2, 2)}),
    (dict(name="tsm_resnet", depth=18, width=4, num_segments=4), {"layer4": (8, 32, 1, 1)}),
]


IDS = [c[0]["name"] + str(c[0].get("depth", "")) + c[0].get("conv", "") for c in CASES]


@pytest.mark.parametrize("spec,features", CASES, ids=IDS)
def test_forward_and_feature_hooks(spec, features):
    torch.manual_seed(0)
    model = build_model(spec, num_classes=5).eval()
    x = torch.randn(2, 3, 4, 32, 32)
    with FeatureHooks(model, list(features)) as hooks:
        logits = model(x)
        assert logits.shape == (2, 5) and torch.isfinite(logits).all()
        for name, shape in features.items():
            assert tuple(hooks[name].shape) == shape
        got = hooks.pop()
    assert not hooks.handles
    video = as_video(got[0], getattr(model, "num_segments", None))
    assert video.dim() == 5 and video.shape[0] == 2


def test_top_heavy_low_stages_are_per_frame():
    model = build_model(dict(name="top_heavy_i3d", width=0.05, temporal_pool=False), 3)
    kt = lambda m: [c.kernel_size[0] for c in m.modules() if isinstance(c, torch.nn.Conv3d)]  # noqa: E731
    assert set(kt(model.stem)) == {1} and set(kt(model.Mixed_3c)) == {1}
    assert 3 in kt(model.Mixed_4b) and 3 in kt(model.Mixed_5c)
    assert 3 in kt(build_model(dict(name="i3d", width=0.05), 3).Mixed_3b)


def test_temporal_shift_moves_channel_folds_in_time():
    x = torch.arange(2 * 3 * 8, dtype=torch.float32).view(2 * 3, 8, 1, 1)     # N=2, T=3, C=8
    y = temporal_shift(x, num_segments=3, shift_div=4).view(2, 3, 8)
    v = x.view(2, 3, 8)
    assert torch.equal(y[:, :-1, :2], v[:, 1:, :2]) and (y[:, -1, :2] == 0).all()
    assert torch.equal(y[:, 1:, 2:4], v[:, :-1, 2:4]) and (y[:, 0, 2:4] == 0).all()
    assert torch.equal(y[:, :, 4:], v[:, :, 4:])


def test_bad_arguments():
    with pytest.raises(ValueError, match="depth"):
        build_model(dict(name="resnet3d", depth=11), 3)
    with pytest.raises(ValueError, match="model name"):
        build_model(dict(name="nope"), 3)
    with pytest.raises(ValueError, match="names"):
        FeatureHooks(torch.nn.Linear(2, 2), ["layer9"])
    with pytest.raises(ValueError, match="conv must be '3d' or '2plus1d'"):
        build_model(dict(name="resnet3d", conv="2+1d"), 3)
    with pytest.raises(ValueError, match="basic-block depths"):
        build_model(dict(name="resnet3d", depth=50, conv="2plus1d"), 3)
    with pytest.raises(ValueError, match="num_segments"):
        build_model(dict(name="tsm_resnet", depth=18, width=4, num_segments=4), 3)(torch.randn(1, 3, 5, 16, 16))


def test_resnet3d_shortcut_is_identity_where_stride_and_channels_allow():
    """The stride of a block is a tuple: (1, 1, 1) must count as 1, so layer1.0 of a basic
    ResNet (and every later block of a stage) adds its input unchanged, as torchvision's
    r3d_18 does; a strided or widening block projects."""
    from torch import nn
    model = build_model(dict(name="resnet3d", depth=18, width=4), 5)
    assert isinstance(model.layer1[0].shortcut, nn.Identity) and isinstance(model.layer2[1].shortcut, nn.Identity)
    assert not isinstance(model.layer2[0].shortcut, nn.Identity)
    assert not any(k.startswith("layer1.0.shortcut") for k in model.state_dict())
    strided = build_model(dict(name="resnet3d", depth=18, width=4, temporal_strides=(2, 1, 1, 1)), 5)
    assert not isinstance(strided.layer1[0].shortcut, nn.Identity)             # (2, 1, 1): a projection
    deep = build_model(dict(name="resnet3d", depth=50, width=4), 5)
    assert not isinstance(deep.layer1[0].shortcut, nn.Identity)                # 4 -> 16 channels
    assert isinstance(deep.layer1[1].shortcut, nn.Identity)
