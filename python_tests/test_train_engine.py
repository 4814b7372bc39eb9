"""Trainer engine and CLI: exact resume after a kill, 2-process gloo DDP, end to end."""
import json
import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

from vkd_kernels.train import cli
from vkd_kernels.train.config import load_recipe, run_config
from vkd_kernels.train.engine import fit

TINY = [
    "data.train.num_clips=32", "data.val.num_clips=16", "data.size=16",
    "teacher.model.width=4", "teacher.train.epochs=2", "student.model.width=2",
    "train.epochs=2", "train.batch_size=8",
]


def tiny_recipe(*extra):
    return load_recipe("synthetic-quick", TINY + list(extra))


def test_resume_after_a_kill_gives_bit_identical_weights(tmp_path):
    recipe = tiny_recipe("train.epochs=3")
    teacher = fit(run_config(recipe, "teacher"), tmp_path / "teacher", progress=False)
    assert teacher["top1"] >= 0
    cfg = run_config(recipe, "student", method="collab_spectrum", seed=1, teacher=str(tmp_path / "teacher" / "model.pt"))
    full = fit(cfg, tmp_path / "full", progress=False)
    # "kill" after the first epoch (the checkpoint of epoch 1 is all that is left), then resume twice
    assert fit(cfg, tmp_path / "cut", stop_after=1, progress=False) == {}
    assert not (tmp_path / "cut" / "model.pt").exists()
    fit(cfg, tmp_path / "cut", resume=True, stop_after=1, progress=False)
    resumed = fit(cfg, tmp_path / "cut", resume=True, progress=False)
    a = torch.load(tmp_path / "full" / "last.pt", weights_only=False)["method"]
    b = torch.load(tmp_path / "cut" / "last.pt", weights_only=False)["method"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert resumed["curve_top1"] == full["curve_top1"]
    lines = (tmp_path / "cut" / "log.csv").read_text().splitlines()
    assert len(lines) == 4 and "s_spectrum" in lines[0]         # header + 3 epochs, no repeated row


def _ddp_worker(rank, port, out, cfg):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE="2", RANK=str(rank),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)

    def save(epoch, method, row):
        torch.save({"state": method.state_dict(), "row": row}, os.path.join(out, f"rank{rank}.pt"))

    fit(cfg, out, progress=False, callback=save)
    torch.distributed.destroy_process_group()


@pytest.mark.parametrize("method", ["kd", "collab_mutual"])   # collab_mutual: teacher, adapters, log-variances
def test_ddp_two_gloo_processes(tmp_path, method):
    cfg = run_config(tiny_recipe("train.epochs=1"), "student", method=method)
    fit(run_config(tiny_recipe("teacher.train.epochs=1"), "teacher"), tmp_path / "t", progress=False)
    cfg["teacher"] = str(tmp_path / "t" / "model.pt")
    (tmp_path / "ddp").mkdir()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_ddp_worker, args=(port, str(tmp_path / "ddp"), cfg), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / "ddp" / f"rank{r}.pt", weights_only=False) for r in (0, 1))
    # each rank trained on its own half of the data, yet DDP kept the weights identical
    assert r0["row"]["train_loss"] != r1["row"]["train_loss"]
    assert all(torch.equal(r0["state"][k], r1["state"][k]) for k in r0["state"] if "running" not in k)
    summary = json.loads((tmp_path / "ddp" / "summary.json").read_text())
    assert summary["method"] == method and len((tmp_path / "ddp" / "log.csv").read_text().splitlines()) == 2


def test_cli_reproduce_end_to_end(tmp_path, capsys):
    out = tmp_path / "repro"
    args = ["reproduce", "--recipe", "synthetic-quick", "--out", str(out), "--no-progress",
            "--methods", "ce", "kd", "collab_spectrum", "--seeds", "0", "1"]
    for item in TINY:
        args += ["--set", item]
    assert cli.main(args) == 0
    printed = capsys.readouterr().out
    assert "| teacher |" in printed and "| collab_spectrum |" in printed
    results = json.loads((out / "results.json").read_text())
    assert set(results["rows"]) == {"teacher", "ce", "kd", "collab_spectrum"}
    assert results["rows"]["kd"]["seeds"] == [0, 1] and len(results["spectra"]["teacher"]) == 5
    assert (out / "results.md").exists() and (out / "kd" / "seed1" / "log.csv").exists()
    assert (out / "accuracy.png").exists() and (out / "spectra.png").exists()      # matplotlib is in [dev]
    assert cli.main(["evaluate", "--recipe", "synthetic-quick", "--checkpoint", str(out / "kd" / "seed0" / "model.pt")]
                    + sum((["--set", i] for i in TINY), [])) == 0
    assert "top1" in json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_recipes_load_and_bad_input():
    for name in ("synthetic-full", "ucf101-i3d", "hmdb51-i3d", "kinetics400-tsm", "ssv2-tsm", "jester-tsm"):
        recipe = load_recipe(name)
        cfg = run_config(recipe, "student", method="kd")
        assert cfg["model"]["name"] and cfg["train"]["epochs"] > 0
    assert load_recipe("ssv2-tsm")["data"]["flip"] is False
    with pytest.raises(ValueError, match="recipe"):
        load_recipe("no-such-recipe")
    with pytest.raises(ValueError, match="key=value"):
        load_recipe("synthetic-quick", ["train.epochs"])
