"""Pretrained key mappings, on the key/shape lists of the originals (python_tests/data/,
dumped from pytorch-i3d's InceptionI3d, TSM's TSN ResNet-18/50 and torchvision's r3d_18 /
mc3_18 / r2plus1d_18 rebuilt from their public source; their logits matched ours, see docs/data.md)."""
from pathlib import Path

import pytest
import torch

from vkd_kernels.train.models import build_model
from vkd_kernels.train.models.pretrained import SOURCES, detect, load_pretrained

DATA = Path(__file__).parent / "data"
CASES = {   # key list -> (our model spec, source)
    "pytorch_i3d_rgb": ({"name": "i3d"}, "pytorch_i3d"),
    "tsm_resnet18_k400": ({"name": "tsm_resnet", "depth": 18}, "tsm"),
    "tsm_resnet50_k400": ({"name": "tsm_resnet", "depth": 50}, "tsm"),
    "torchvision_r3d_18": ({"name": "resnet3d", "depth": 18, "stem_kernel": [3, 7, 7], "stem_pool": False,
                            "temporal_strides": [1, 2, 2, 2]}, "torchvision_video"),
    "torchvision_mc3_18": ({"name": "resnet3d", "depth": 18, "stem_kernel": [3, 7, 7], "stem_pool": False},
                           "torchvision_video"),
    "torchvision_r2plus1d_18": ({"name": "resnet3d", "depth": 18, "conv": "2plus1d", "stem_pool": False,
                                 "temporal_strides": [1, 2, 2, 2]}, "torchvision_r2plus1d"),
}


def fake_checkpoint(name, prefix=""):
    state = {}
    for line in (DATA / f"{name}.keys.txt").read_text().splitlines():
        key, shape = line.split()
        shape = () if shape == "-" else tuple(int(s) for s in shape.split("x"))
        state[prefix + key] = (torch.randn(shape) if key.split(".")[-1] != "num_batches_tracked"
                               else torch.tensor(0))
    return state


@pytest.mark.parametrize("name", sorted(CASES))
def test_every_original_key_lands_on_ours(name, tmp_path):
    spec, source = CASES[name]
    state = fake_checkpoint(name, prefix="module.")        # a DataParallel checkpoint
    assert detect({k[7:]: v for k, v in state.items()}) == source
    path = tmp_path / "ckpt.pth"
    torch.save({"state_dict": state, "epoch": 3}, path)
    model = build_model(spec, 400)
    report = load_pretrained(model, path)
    assert report["source"] == source and report["classifier"] == "loaded"
    ours = model.state_dict()
    rename = SOURCES[source]
    # a bijection: every model key comes from the checkpoint (no filled-in identity shortcuts)
    mapped = {rename(k[len("module."):]) for k in state}
    assert mapped == set(ours), sorted(mapped ^ set(ours))[:6]
    for key, value in state.items():
        key = key[len("module."):]
        if key.endswith("num_batches_tracked"):
            continue
        got = ours[rename(key)]
        if value.dim() == 5 and value.shape[2] == 1 and got.dim() == 5 and got.shape[2] == 3:   # mc3: centre
            assert torch.equal(got[:, :, 1], value[:, :, 0]) and not got[:, :, [0, 2]].any()
        else:
            assert torch.equal(got, value.reshape(got.shape)), key
    # a different class count replaces only the classifier, and says so
    model = build_model(spec, 101)
    fresh = model.state_dict()["head.3.weight"].clone()
    report = load_pretrained(model, path)
    assert report["classifier"] == "replaced: the checkpoint has 400 classes, the model 101"
    assert torch.equal(model.state_dict()["head.3.weight"], fresh)


def test_unmatched_missing_and_misshaped_keys_are_listed(tmp_path):
    state = fake_checkpoint("tsm_resnet50_k400")
    del state["base_model.layer2.0.bn1.weight"]
    state["base_model.extra.weight"] = torch.zeros(3)
    state["base_model.layer1.0.conv2.weight"] = torch.zeros(64, 64, 5, 5)
    torch.save(state, tmp_path / "bad.pth")
    with pytest.raises(ValueError) as error:
        load_pretrained(build_model({"name": "tsm_resnet", "depth": 50}, 400), tmp_path / "bad.pth")
    text = str(error.value)
    assert "bad.pth (tsm)" in text
    assert "1 checkpoint keys with no place in the model: base_model.extra.weight" in text
    assert "1 model keys the checkpoint lacks: layer2.0.body.0.1.weight" in text
    assert ("1 shapes that differ: base_model.layer1.0.conv2.weight (64, 64, 5, 5) -> "
            "layer1.0.body.1.0.weight (64, 64, 3, 3)") in text
    # the I3D weights into Top-heavy I3D: its 2-D low stages cannot take 3-D kernels
    torch.save(fake_checkpoint("pytorch_i3d_rgb"), tmp_path / "i3d.pth")
    with pytest.raises(ValueError, match=r"shapes that differ: Conv3d_1a_7x7.conv3d.weight \(64, 3, 7, 7, 7\)"):
        load_pretrained(build_model({"name": "top_heavy_i3d"}, 400), tmp_path / "i3d.pth")


def test_r2plus1d_into_a_3d_resnet_and_bad_files_are_refused_by_name(tmp_path):
    torch.save(fake_checkpoint("torchvision_r2plus1d_18"), tmp_path / "r2p1.pth")
    plain = {"name": "resnet3d", "depth": 18, "stem_pool": False, "temporal_strides": [1, 2, 2, 2]}
    with pytest.raises(ValueError, match=r"r2p1.pth \(torchvision_r2plus1d\): .* checkpoint keys with no place "
                                         r"in the model: stem.0.weight"):
        load_pretrained(build_model(plain, 400), tmp_path / "r2p1.pth")
    with pytest.raises(ValueError, match="pretrained: no file .*nothere.pth"):
        load_pretrained(build_model({"name": "resnet3d"}, 400), tmp_path / "nothere.pth")
    (tmp_path / "junk.pth").write_bytes(b"junk")
    with pytest.raises(ValueError, match="cannot read .*junk.pth as a PyTorch checkpoint"):
        load_pretrained(build_model({"name": "resnet3d"}, 400), tmp_path / "junk.pth")


def test_model_spec_pretrained_key(tmp_path):
    teacher = build_model({"name": "resnet3d", "depth": 10, "width": 8}, 5)
    torch.save({"spec": {}, "num_classes": 5, "state_dict": teacher.state_dict()}, tmp_path / "model.pt")
    student = build_model({"name": "resnet3d", "depth": 10, "width": 8, "pretrained": str(tmp_path / "model.pt")}, 5)
    for key, value in teacher.state_dict().items():
        assert torch.equal(student.state_dict()[key], value)


def test_pretrained_logs_and_a_saved_model_does_not_reload_it(tmp_path, caplog):
    """build_model reports the load on the trainer's log (not print); a model.pt whose spec
    names a checkpoint is rebuilt from its own weights, even once that checkpoint is gone."""
    from vkd_kernels.train.config import ConfigError
    from vkd_kernels.train.engine import load_model
    teacher = build_model({"name": "resnet3d", "depth": 10, "width": 4}, 3)
    torch.save({"spec": {}, "num_classes": 3, "state_dict": teacher.state_dict()}, tmp_path / "init.pt")
    spec = {"name": "resnet3d", "depth": 10, "width": 4, "pretrained": str(tmp_path / "init.pt")}
    from vkd_kernels.train.config import load_recipe  # the recipe schema takes the key
    assert load_recipe("synthetic-full", [f"student.model.pretrained={tmp_path / 'init.pt'}"])
    with caplog.at_level("INFO", logger="vkd_kernels.train"):
        student = build_model(spec, 3)
    assert any("pretrained:" in r.getMessage() and "'source': 'vkd'" in r.getMessage() for r in caplog.records)
    with torch.no_grad():
        for p in student.parameters():
            p.add_(1.0)                                        # "trained": differs from the checkpoint
    torch.save({"spec": spec, "num_classes": 3, "state_dict": student.state_dict()}, tmp_path / "model.pt")
    (tmp_path / "init.pt").unlink()
    rebuilt = load_model(tmp_path / "model.pt")
    for key, value in student.state_dict().items():
        assert torch.equal(rebuilt.state_dict()[key], value)
    with pytest.raises(ConfigError, match="pretrained: no file .*init.pt"):   # the CLI's one-line error
        build_model(spec, 3)


def _tf_pad(size, kernel, stride):
    """F.pad's tuple for TensorFlow SAME, as pytorch-i3d computes it per dimension."""
    out = []
    for s, k, st in zip(size, kernel, stride):
        total = max(k - st, 0) if s % st == 0 else max(k - s % st, 0)
        out.append((total // 2, total - total // 2))
    return tuple(p for pair in reversed(out) for p in pair)


def _inception_i3d_reference(state, x, eps=1e-3):
    """pytorch-i3d's InceptionI3d forward (Unit3D: SAME zero pad, conv, BN eps 1e-3, ReLU;
    MaxPool3dSamePadding; AvgPool3d((2, 7, 7), stride 1), the 1x1x1 logits conv, then the
    mean over time), written out with torch.nn.functional over a state dict in our names."""
    import torch.nn.functional as F

    def unit(x, prefix, stride=(1, 1, 1)):
        w = state[prefix + ".0.weight"]
        x = F.conv3d(F.pad(x, _tf_pad(x.shape[2:], w.shape[2:], stride)), w, None, stride)
        bn = [state[f"{prefix}.1.{k}"] for k in ("running_mean", "running_var", "weight", "bias")]
        return F.relu(F.batch_norm(x, *bn, False, 0.0, eps))

    def pool(x, kernel, stride):
        return F.max_pool3d(F.pad(x, _tf_pad(x.shape[2:], kernel, stride)), kernel, stride)

    def mixed(x, name):
        return torch.cat([unit(x, f"{name}.b0"), unit(unit(x, f"{name}.b1.0"), f"{name}.b1.1"),
                          unit(unit(x, f"{name}.b2.0"), f"{name}.b2.1"),
                          unit(pool(x, (3, 3, 3), (1, 1, 1)), f"{name}.b3.1")], 1)

    x = pool(unit(x, "stem.0", (2, 2, 2)), (1, 3, 3), (1, 2, 2))
    x = pool(unit(unit(x, "stem.2"), "stem.3"), (1, 3, 3), (1, 2, 2))
    x = pool(mixed(mixed(x, "Mixed_3b"), "Mixed_3c"), (3, 3, 3), (2, 2, 2))
    for name in ("Mixed_4b", "Mixed_4c", "Mixed_4d", "Mixed_4e", "Mixed_4f"):
        x = mixed(x, name)
    x = mixed(mixed(pool(x, (2, 2, 2), (2, 2, 2)), "Mixed_5b"), "Mixed_5c")
    window = tuple(min(w, s) for w, s in zip((2, 7, 7), x.shape[2:]))    # the original needs a 224 input
    x = F.avg_pool3d(x, window, 1)
    w = state["head.3.weight"]
    logits = F.conv3d(x, w.view(*w.shape, 1, 1, 1), state["head.3.bias"])   # (N, classes, T', H', W')
    return logits.mean((2, 3, 4))


@pytest.mark.parametrize("shape", [(16, 64, 64), (10, 66, 66)], ids=["even: asymmetric pads", "odd sizes"])
def test_i3d_tf_same_gives_the_inception_i3d_logits(shape):
    torch.manual_seed(0)
    model = build_model({"name": "i3d", "width": 0.25, "padding": "tf_same", "bn_eps": 1e-3}, 7).eval()
    with torch.no_grad():
        for m in model.modules():                 # BN statistics far from (0, 1), so eps and padding show
            if isinstance(m, torch.nn.BatchNorm3d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.005, 0.05)
                m.weight.uniform_(0.5, 1.5)
    x = torch.randn(2, 3, *shape)
    with torch.no_grad():
        want = _inception_i3d_reference(model.state_dict(), x)
        got = model(x)
        assert torch.allclose(got, want, rtol=1e-4, atol=1e-5 * want.abs().max()), (got - want).abs().max()
        default = build_model({"name": "i3d", "width": 0.25}, 7).eval()
        default.load_state_dict(model.state_dict())
        assert not torch.allclose(default(x), want, rtol=1e-3, atol=1e-3 * want.abs().max())   # the test has teeth


def test_i3d_head_window_mean_by_hand():
    from vkd_kernels.train.models.i3d import WindowMean
    x = torch.randn(1, 2, 3, 8, 9)
    windows = [x[:, :, t:t + 2, h:h + 7, w:w + 7].mean((2, 3, 4)) for t in range(2) for h in range(2) for w in range(3)]
    assert torch.allclose(WindowMean((2, 7, 7))(x).flatten(1), torch.stack(windows).mean(0), atol=1e-6)
    assert torch.allclose(WindowMean((2, 7, 7))(x[:, :, :1, :5, :5]).flatten(1), x[:, :, :1, :5, :5].mean((2, 3, 4)),
                          atol=1e-6)                                    # smaller than the window: the mean


def test_pytorch_i3d_checkpoint_reports_whether_the_model_is_exact(tmp_path, caplog):
    path = tmp_path / "rgb_imagenet.pt"
    torch.save(fake_checkpoint("pytorch_i3d_rgb"), path)
    exact = build_model({"name": "i3d", "padding": "tf_same", "bn_eps": 1e-3}, 400)
    assert load_pretrained(exact, path)["exact"] is True
    with caplog.at_level("WARNING", logger="vkd_kernels.train"):
        report = load_pretrained(build_model({"name": "i3d"}, 400), path)
    assert report["exact"] is False and "padding: tf_same and bn_eps: 0.001" in report["note"]
    assert any("tf_same" in r.getMessage() for r in caplog.records)
    from vkd_kernels.train.config import ConfigError, load_recipe
    with pytest.raises(ConfigError, match=r"teacher.model.padding: expected one of 'symmetric', 'tf_same'"):
        load_recipe("ucf101-i3d", ["teacher.model.padding=same"])
