"""Pretrained key mappings, on the key/shape lists of the originals (python_tests/data/,
dumped from pytorch-i3d's InceptionI3d, TSM's TSN ResNet-18/50 and torchvision's r3d_18 /
mc3_18 rebuilt from their public source; their logits matched ours, see docs/data.md)."""
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


def test_r2plus1d_and_bad_files_are_refused_by_name(tmp_path):
    state = {"stem.0.weight": torch.zeros(45, 3, 1, 7, 7), "stem.3.weight": torch.zeros(64, 45, 3, 1, 1),
             "layer1.0.conv1.0.weight": torch.zeros(1)}
    torch.save(state, tmp_path / "r2p1.pth")
    with pytest.raises(ValueError, match="r2plus1d_18 .* none can hold it"):
        load_pretrained(build_model({"name": "resnet3d"}, 400), tmp_path / "r2p1.pth")
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
    from vkd_kernels.train.config import load_recipe            # the recipe schema takes the key
    assert load_recipe("synthetic-quick", [f"student.model.pretrained={tmp_path / 'init.pt'}"])
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
