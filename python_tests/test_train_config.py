"""Trainer configuration: recipes validated up front, --set typed as YAML, no shared
sections, unknown keys / methods / missing sections named; --resume checked; logs."""
import importlib.util

import pytest
import torch

from vkd_kernels.train import cli, engine
from vkd_kernels.train.config import ConfigError, load_recipe, run_config
from vkd_kernels.train.engine import cosine, fit, load_model

TINY = ["data.train.num_clips=32", "data.val.num_clips=15", "data.size=16", "teacher.model.width=4",
        "teacher.train.epochs=2", "student.model.width=2", "train.epochs=2", "train.batch_size=8"]


@pytest.mark.parametrize("override, error", [
    ("train.lerning_rate=0.5", r"train.lerning_rate: unknown key \(did you mean 'lr'\?\)"),
    ("train.learning_rate=0.5", r"did you mean 'lr'"),
    ("student.model.widht=3", r"student.model.widht: unknown key \(did you mean 'width'\?\)"),
    ("data.frequncies=[1, 2]", r"did you mean 'frequencies'"),
    ("data.train.num_clip=3", r"data.train.num_clip: unknown key \(did you mean 'num_clips'\?\)"),
    ("methods.gkd.bta=1", r"methods.gkd.bta: unknown key \(did you mean 'beta'\?\)"),
    ("methods.colab.temperature=4", r"methods.colab: unknown method 'colab' \(did you mean 'collab'\?\)"),
    ("methods.collab_spectrum.param=true", r"methods.collab_spectrum.param: fixed to False"),
    ("train.epochs=abc", r"train.epochs: expected an integer, got 'abc'"),
    ("train.epochs=2.5", r"train.epochs: expected an integer"),
    ("train.lr='0.1'", r"train.lr: expected a number, got '0.1' \(str\).*without quotes"),
    ("train.epochs=0", r"train.epochs: must be >= 1"),
    ("train.max_unreadable=2", r"train.max_unreadable: a share in \[0, 1\]"),
    ("teacher.train.warmup_epochs=20", r"teacher.train.warmup_epochs: 20 is more than epochs"),
    ("reproduce.methods=[ce, colab]", r"reproduce.methods\[1\]: unknown method 'colab'"),
    ("data.name=synthtic", r"data.name: must be one of .* \(did you mean 'synthetic'\?\)"),
    ("student.model.pretrained=/no/such.pt", r"student.model.pretrained: no file"),
    ("train.epochs", r"--set expects key=value"),
    ("train.lr.x=1", r"--set train.lr.x: train.lr is a value"),
])
def test_bad_overrides_are_rejected_naming_the_entry(override, error):
    with pytest.raises(ConfigError, match=error):
        load_recipe("synthetic-full", [override])


def test_set_values_are_yaml_scalars_and_sections_are_not_shared():
    recipe = load_recipe("synthetic-full", ["methods.gkd.beta=1e-2", "train.epochs=3", "train.amp=false",
                                             "data.frequencies=[1, 2]", "train.grad_clip=5e1"])
    assert recipe["methods"]["gkd"]["beta"] == 0.01 and isinstance(recipe["methods"]["gkd"]["beta"], float)
    assert recipe["train"]["epochs"] == 3 and recipe["train"]["amp"] is False and recipe["train"]["grad_clip"] == 50.0
    assert recipe["data"]["frequencies"] == [1, 2]
    # gkd_gd, gkd_ad, gkd_repr are YAML aliases of gkd's options: an override of one leaves the others
    assert recipe["methods"]["gkd_gd"] == {"beta": 0.1} and recipe["methods"]["gkd_repr"] == {"beta": 0.1}
    cfg = run_config(recipe, "student", method="gkd_gd")
    cfg["method_options"]["beta"] = 5.0
    assert recipe["methods"]["gkd_gd"]["beta"] == 0.1


def test_missing_sections_and_unknown_top_level_keys(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("data: {name: synthetic}\nteacher: {model: {name: resnet3d}}\n"
                      "student: {model: {name: resnet3d}}\n")
    with pytest.raises(ConfigError, match=r"missing section train \(a recipe needs data, teacher, student, train\)"):
        load_recipe(str(recipe))
    recipe.write_text(recipe.read_text() + "train: {epochs: 1, batch_size: 2, lr: 0.1}\nmethod: {}\n")
    with pytest.raises(ConfigError, match=r"method: unknown key \(did you mean 'methods'\?\)"):
        load_recipe(str(recipe))
    recipe.write_text(recipe.read_text().replace("student: {model: {name: resnet3d}}", "student: {}")
                      .replace("method: {}\n", ""))
    with pytest.raises(ConfigError, match="student.model: missing"):
        load_recipe(str(recipe))


def test_tensorboard_is_checked_at_load_time(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tensorboard" else real(name, *a))
    with pytest.raises(ConfigError, match=r"train.tensorboard: true needs the tensorboard package.*pip install"):
        load_recipe("synthetic-full", ["train.tensorboard=true"])


def test_fit_validates_before_building_any_data(tmp_path, monkeypatch):
    def no_data(*args, **kwargs):
        raise AssertionError("data was built before the configuration was checked")
    monkeypatch.setattr(engine, "build_dataset", no_data)
    cfg = run_config(load_recipe("synthetic-full", TINY), "student", method="kd")
    with pytest.raises(ConfigError, match="teacher: method 'kd' distils from a teacher"):
        fit(cfg, tmp_path / "a")
    cfg = run_config(load_recipe("synthetic-full", TINY), "student")
    cfg["method_options"] = {"temprature": 2.0}
    with pytest.raises(ConfigError, match=r"methods.ce.temprature: unknown key \(did you mean 'temperature'\?\)"):
        fit(cfg, tmp_path / "b")
    with pytest.raises(ConfigError, match=r"resume: no .*last.pt to continue from"):
        fit(run_config(load_recipe("synthetic-full", TINY), "teacher"), tmp_path / "c", resume=True)
    assert not (tmp_path / "c").exists()


def test_cli_unknown_method_stops_before_the_teacher_trains(tmp_path, capsys):
    out = tmp_path / "repro"
    assert cli.main(["reproduce", "--recipe", "synthetic-full", "--out", str(out), "--methods", "ce", "colab"]
                    + sum((["--set", i] for i in TINY), [])) == 2
    assert "--methods: unknown method 'colab' (did you mean 'collab'?)" in capsys.readouterr().err
    assert not out.exists()


def test_resume_checks_the_stored_config_and_phases(tmp_path):
    cfg = run_config(load_recipe("synthetic-full", TINY), "teacher")
    assert fit(cfg, tmp_path, stop_after=1, progress=False) == {}
    with pytest.raises(ConfigError, match=r"already holds a run .*pass --resume"):
        fit(cfg, tmp_path, progress=False)
    changed = run_config(load_recipe("synthetic-full", TINY + ["train.lr=0.05", "data.seed=3"]), "teacher")
    with pytest.raises(ConfigError, match=r"differs .*data.seed: 0 -> 3; train.lr: 0.1 -> 0.05"):
        fit(changed, tmp_path, resume=True, progress=False)
    ckpt = torch.load(tmp_path / "last.pt", weights_only=True)
    ckpt["phases"] = [dict(ckpt["phases"][0], name="cvae"), dict(ckpt["phases"][0], name="net")]
    torch.save(ckpt, tmp_path / "last.pt")
    with pytest.raises(ConfigError, match=r"holds the phases \['cvae', 'net'\], this run has \['train'\]"):
        fit(cfg, tmp_path, resume=True, progress=False)


def test_logs_best_checkpoint_and_opt_in_loss_timing(tmp_path, caplog, capfd):
    cfg = run_config(load_recipe("synthetic-full", TINY + ["train.log_interval=2", "train.time_losses=false",
                                                            "train.epochs=3"]), "student")
    with caplog.at_level("INFO", logger="vkd_kernels.train"):
        summary = fit(cfg, tmp_path, progress=True)
    lines = [r.getMessage() for r in caplog.records]
    assert sum(" iter " in m for m in lines) == 3 * 2 and sum("val top-1" in m for m in lines) == 3
    assert "\r" not in capfd.readouterr().err                  # no progress bar frames off a terminal
    assert "val top-1" in (tmp_path / "train.log").read_text()
    assert summary["loss_seconds"] is None and summary["best_top1"] == max(summary["curve_top1"])
    best = torch.load(tmp_path / "best.pt", weights_only=True)
    assert best["top1"] == summary["best_top1"] and best["epoch"] == summary["best_epoch"]
    load_model(tmp_path / "best.pt")
    last = torch.load(tmp_path / "last.pt", weights_only=True)          # tensors and plain values only
    assert last["best"]["top1"] == summary["best_top1"]


def test_lr_per_iteration_with_warmup_and_gradient_clipping(tmp_path, monkeypatch):
    f = cosine(10, 2)
    assert [f(0), f(1)] == [1 / 3, 2 / 3] and f(2) == 1.0 and abs(f(10)) < 1e-12 and f(6) == pytest.approx(0.5)
    norms = []
    real = torch.nn.utils.clip_grad_norm_
    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", lambda p, m: norms.append(m) or real(p, m))
    cfg = run_config(load_recipe("synthetic-full", TINY + ["train.lr_step=iteration", "train.warmup_epochs=0.5",
                                                            "train.grad_clip=1.0"]), "student")
    lrs = []
    fit(cfg, tmp_path, progress=False,
        callback=lambda epoch, method, row: lrs.append(row["lr"]))
    assert norms == [1.0] * 8                                       # 4 iterations x 2 epochs
    last = torch.load(tmp_path / "last.pt", weights_only=True)
    assert last["phases"][0]["scheduler"]["last_epoch"] == 8        # stepped every iteration
    assert lrs[0] == pytest.approx(0.1 / 3)                         # warm-up: 2 iterations, (0 + 1) / 3


def test_eval_interval_validates_every_kth_epoch_and_the_last(tmp_path, caplog):
    cfg = run_config(load_recipe("synthetic-full", TINY + ["train.epochs=5", "train.eval_interval=2"]), "student")
    with caplog.at_level("INFO", logger="vkd_kernels.train"):
        summary = fit(cfg, tmp_path, progress=False)
    assert summary["epochs"] == 5 and summary["curve_epochs"] == [2, 4, 5]
    assert len(summary["curve_top1"]) == 3 and summary["best_epoch"] in (2, 4, 5)
    assert sum("val top-1" in r.getMessage() for r in caplog.records) == 3
    rows = (tmp_path / "log.csv").read_text().splitlines()
    assert len(rows) == 6 and rows[1].split(",")[rows[0].split(",").index("val_top1")] == ""
    with pytest.raises(ConfigError, match=r"train.eval_interval: must be >= 1"):
        run_config(load_recipe("synthetic-full", TINY + ["train.eval_interval=0"]), "student")
