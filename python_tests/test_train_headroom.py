"""The headroom benchmark (issue 14): its data streams, recipes, pre-trained teacher,
weight sweep, paired statistics and the committed results (reproduction/)."""
import hashlib
import json
import math
from pathlib import Path

import pytest
import torch

from vkd_kernels.train import cli, report
from vkd_kernels.train.config import (
    ConfigError,
    get_dotted,
    load_recipe,
    pretrain_config,
    run_config,
    sweep_options,
)
from vkd_kernels.train.data import build_dataset
from vkd_kernels.train.data.synthetic import SyntheticMotion, generate
from vkd_kernels.train.engine import fit

REPRODUCTION = Path(__file__).resolve().parents[1] / "reproduction"
TINY = ["data.train.num_clips=24", "data.val.num_clips=12", "data.size=16", "teacher.model.width=4",
        "teacher.train.epochs=1", "student.model.width=2", "train.epochs=1", "train.batch_size=8",
        "teacher.pretrain.train.epochs=1", "teacher.pretrain.data.train.num_clips=24"]


def _hashes(clips: torch.Tensor) -> set:
    return {hashlib.sha1(c.numpy().tobytes()).hexdigest() for c in clips}


def test_streams_are_deterministic_and_disjoint():
    recipe = load_recipe("synthetic-headroom")
    a, la = generate(12, seed=0, split="tune")
    b, lb = generate(12, seed=0, split="tune")
    assert torch.equal(a, b) and torch.equal(la, lb)
    train, val = build_dataset(recipe["data"], "train"), build_dataset(recipe["data"], "val")
    assert len(train) == 60 and not train.fresh_each_epoch          # the fixed labelled set, 5 per class,
    assert torch.bincount(train.labels).tolist() == [5] * 12        # read through the augmentation
    assert train.augment and train.views == 8 and not val.augment   # 8 fixed views of each clip
    tune = SyntheticMotion(480, split="val", stream="tune")         # what vkd sweep validates on
    small = load_recipe("synthetic-headroom", ["teacher.pretrain.data.train.num_clips=240"])
    pre = build_dataset(pretrain_config(small)["data"], "train")
    assert pre.fresh_each_epoch and pre.options["split"] == "pretrain" and not pre.augment and pre.views is None
    sets = {"train": _hashes(train.clips), "val": _hashes(val.clips), "tune": _hashes(tune.clips),
            "pretrain": _hashes(pre.clips)}
    pre.set_epoch(1)
    sets["pretrain epoch 1"] = _hashes(pre.clips)
    assert all(len(v) == len(set(v)) for v in sets.values())
    names = list(sets)
    for i, x in enumerate(names):
        for y in names[i + 1:]:
            assert not sets[x] & sets[y], (x, y)
    with pytest.raises(ValueError, match="stream"):
        SyntheticMotion(4, stream="tuning")


def test_headroom_recipes_load_and_validate():
    full, quick = load_recipe("synthetic-headroom"), load_recipe("synthetic-quick")
    for recipe in (full, quick):
        assert recipe["data"]["train"] == {"num_clips": 60, "augment": True, "views": 8}
        assert recipe["train"]["threads"] == 1
        assert run_config(recipe, "teacher", pretrained=None)["train"]["lr"] == 0.01        # fine-tuning
        assert pretrain_config(recipe)["train"]["epochs"] == 12
        for method in recipe["reproduce"]["methods"]:
            run_config(recipe, "student", method=method)
    assert len(full["reproduce"]["seeds"]) >= 5 and len(full["reproduce"]["methods"]) == 13
    assert quick["methods"] == full["methods"] and quick["data"] == full["data"]         # the same benchmark
    assert quick["reproduce"]["seeds"] == [0]
    for override, error in [
        ("sweep.grid.kd.values=[1, 2]", r"sweep.grid: every method needs the same number of values"),
        ("sweep.grid.kd.keys=[weights.kd, tau]", r"sweep.grid.kd \(value .*\)\.tau: unknown key"),
        ("sweep.grid.colab={keys: [beta], values: [1, 2, 3, 4]}", r"sweep.grid.colab: unknown method"),
        ("teacher.pretrain.data.train.stream=tuning", r"stream"),
        ("teacher.pretrain.train.epochs=0", r"teacher.pretrain.train.epochs: must be >= 1"),
        ("teacher.pretrain.epochs=3", r"teacher.pretrain.epochs: unknown key"),
        ("student.pretrain={train: {epochs: 1}}", r"student.pretrain: only the teacher"),
        ("train.threads=0", r"train.threads: must be >= 1"),
    ]:
        with pytest.raises(ConfigError, match=error):
            load_recipe("synthetic-headroom", [override])
    assert sweep_options(full, "collab", ["weights.kd", "weights.spectrum"], 0.3)["weights"] == {
        "kd": 0.3, "spectrum": 0.3, "param": full["methods"]["collab"]["weights"]["param"]}


def test_threads_are_the_runs_and_recorded(tmp_path):
    before = torch.get_num_threads()
    recipe = load_recipe("synthetic-headroom", TINY + ["train.threads=1"])
    summary = fit(run_config(recipe, "student"), tmp_path / "ce", progress=False)
    assert summary["threads"] == 1 and torch.get_num_threads() == before


def test_paired_statistics_against_known_values():
    # two-sided paired t-test p of t = 2.776445 with 4 degrees of freedom is 0.05 (t table)
    assert math.isclose(2 * report._t_sf(2.776445, 4), 0.05, rel_tol=1e-5)
    assert math.isclose(2 * report._t_sf(0.5, 7), 0.632407, rel_tol=1e-5)
    p = report.paired([1, -2, 3, 4, 5], [0] * 5)
    assert (p["wins"], p["losses"], p["diff_mean"]) == (4, 1, 2.2)
    assert p["wilcoxon_p"] == pytest.approx(6 / 32)      # W+ = 13: 3 of 32 sign patterns >= 13, two-sided
    assert report.paired([2, 2, 2], [1, 1, 1])["t_p"] == 0.0


def test_reproduce_pretrains_the_teacher_once_then_fine_tunes_both(tmp_path, capsys):
    out = tmp_path / "h"
    sets = sum((["--set", i] for i in TINY), [])
    assert cli.main(["sweep", "--recipe", "synthetic-headroom", "--out", str(out), "--no-progress",
                     "--methods", "kd", "--set", "sweep.grid.kd.values=[0.1]"]
                    + sum((["--set", f"sweep.grid.{m}.values=[1]"] for m in ("at", "fitnet", "collab", "gkd_ad",
                                                                          "gkd_gd")), []) + sets) == 0
    assert "| kd | weights.kd | 0.1:" in capsys.readouterr().out
    sweep = json.loads((out / "sweep.json").read_text())
    assert sweep["stream"] == "tune" and sweep["methods"]["kd"]["chosen"] == 0.1
    stored = torch.load(out / "sweep" / "kd" / "weights.kd=0.1" / "seed10" / "last.pt", weights_only=True)["config"]
    assert stored["data"]["val"]["stream"] == "tune" and stored["method_options"]["weights"]["kd"] == 0.1
    assert cli.main(["reproduce", "--recipe", "synthetic-headroom", "--out", str(out), "--no-progress",
                     "--methods", "ce", "kd", "gkd", "--seeds", "0", "1"] + sets) == 0
    capsys.readouterr()
    teacher = torch.load(out / "teacher" / "last.pt", weights_only=True)["config"]
    assert teacher["model"]["pretrained"] == str(out / "teacher-pretrain" / "model.pt")
    gkd_teacher = torch.load(out / "teacher-gkd_repr" / "last.pt", weights_only=True)["config"]
    assert gkd_teacher["model"]["pretrained"] == teacher["model"]["pretrained"]
    results = json.loads((out / "results.json").read_text())
    assert list(results["rows"])[:3] == ["teacher", "teacher-pretrain", "teacher-gkd_repr"]
    assert results["threads"] == [1] and results["rows"]["kd"]["vs_ce"]["n"] == 2
    # --no-train: the table of what has finished; a method without runs is left out, nothing trains
    assert cli.main(["reproduce", "--recipe", "synthetic-headroom", "--out", str(out), "--no-progress", "--no-train",
                     "--methods", "ce", "kd", "fitnet", "--seeds", "0", "1", "2"] + sets) == 0
    rows = json.loads((out / "results.json").read_text())["rows"]
    assert "fitnet" not in rows and rows["kd"]["seeds"] == [0, 1] and not (out / "fitnet").exists()


@pytest.mark.parametrize("record", ["", "fresh-views"])
def test_committed_results_have_five_seeds_per_method_and_consistent_statistics(record):
    """The table (and the second design's record, reproduction/fresh-views: its own recipe,
    kept in its results.json)."""
    results = json.loads((REPRODUCTION / record / "results.json").read_text())
    methods = results["recipe"]["reproduce"]["methods"]
    if not record:
        assert methods == load_recipe("synthetic-headroom")["reproduce"]["methods"]
    assert results["recipe"]["name"] == "synthetic-headroom" and results["threads"] == [1]
    rows = results["rows"]
    assert "teacher" in rows
    ce = dict(zip(rows["ce"]["seeds"], rows["ce"]["top1"]))
    for method in methods:
        row = rows[method]
        assert len(row["top1"]) >= 5 and len(row["seeds"]) == len(set(row["seeds"])) == len(row["top1"])
        mean, std = report.mean_std(row["top1"])
        assert row["top1_mean"] == pytest.approx(mean, abs=1e-9) and row["top1_std"] == pytest.approx(std, abs=1e-9)
        if method != "ce":
            again = report.paired(row["top1"], [ce[s] for s in row["seeds"]])
            assert row["vs_ce"]["wins"] == again["wins"] and row["vs_ce"]["t_p"] == pytest.approx(again["t_p"])
            assert row["vs_ce"]["wilcoxon_p"] == pytest.approx(again["wilcoxon_p"])


@pytest.mark.parametrize("record,factor", [("", 2), ("", 4), ("", 8)] + [("fresh-views", f) for f in (2, 4, 8, 16)])
def test_committed_longer_schedules_change_nothing_but_the_epochs(record, factor):
    """... and how often they validate (1152 epochs: every 32; 4608: every 64)."""
    table = json.loads((REPRODUCTION / record / "results.json").read_text())
    epochs = table["recipe"]["train"]["epochs"]
    longer = json.loads((REPRODUCTION / record / "longer" / str(factor * epochs) / "results.json").read_text())
    changed = {"epochs": factor * epochs, "eval_interval": longer["recipe"]["train"]["eval_interval"]}
    assert longer["recipe"]["train"] == {**table["recipe"]["train"], **changed}
    for section in ("student", "teacher", "data", "methods"):
        assert longer["recipe"][section] == table["recipe"][section], section
    assert longer["threads"] == [1] and "ce" in longer["rows"]
    for method, row in longer["rows"].items():
        if method in table["rows"] and not method.startswith("teacher"):
            assert set(row["seeds"]) <= set(table["rows"][method]["seeds"])


def test_committed_sweep_table_matches_the_recipe():
    sweep = json.loads((REPRODUCTION / "sweep.json").read_text())
    assert (REPRODUCTION / "sweep.md").read_text().startswith("# Weight sweep")
    recipe = load_recipe("synthetic-headroom")
    assert sweep["stream"] == "tune" and set(sweep["methods"]) == set(recipe["sweep"]["grid"])
    assert not set(sweep["seeds"]) & set(recipe["reproduce"]["seeds"])
    sizes = {len(m["points"]) for m in sweep["methods"].values()}
    assert len(sizes) == 1                                   # the same budget per method
    for method, m in sweep["methods"].items():
        best = max(m["points"], key=lambda p: p["top1_mean"])
        assert m["chosen"] == best["value"]
        for key in m["keys"]:             # the recipe runs the chosen weight
            assert get_dotted(recipe["methods"][method], key) == m["chosen"], (method, key)
    gkd = recipe["methods"]["gkd"]        # gkd: both terms, each at the weight of its one-term sweep
    assert gkd["beta"] == sweep["methods"]["gkd_ad"]["chosen"]
    assert gkd["gd_weight"] == sweep["methods"]["gkd_gd"]["chosen"]
