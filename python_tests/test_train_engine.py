"""Trainer engine and CLI: exact resume after a kill, 2-process gloo DDP, end to end."""
import csv
import datetime
import json
import os
import socket
from concurrent.futures import Future

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


def _figures(row):
    """A log row without the timings (those are each rank's own)."""
    return {k: v for k, v in row.items() if not k.endswith("_seconds")}


def tiny_recipe(*extra):
    return load_recipe("synthetic-full", TINY + list(extra))


def test_resume_after_a_kill_gives_bit_identical_weights(tmp_path):
    recipe = tiny_recipe("train.epochs=3")
    teacher = fit(run_config(recipe, "teacher"), tmp_path / "teacher", progress=False)
    assert teacher["top1"] >= 0
    cfg = run_config(recipe, "student", method="collab_spectrum", seed=1,
                     teacher=str(tmp_path / "teacher" / "model.pt"))
    full = fit(cfg, tmp_path / "full", progress=False)
    # "kill" after the first epoch (the checkpoint of epoch 1 is all that is left), then resume twice
    assert fit(cfg, tmp_path / "cut", stop_after=1, progress=False) == {}
    assert not (tmp_path / "cut" / "model.pt").exists()
    fit(cfg, tmp_path / "cut", resume=True, stop_after=1, progress=False)
    resumed = fit(cfg, tmp_path / "cut", resume=True, progress=False)
    a = torch.load(tmp_path / "full" / "last.pt", weights_only=True)["method"]
    b = torch.load(tmp_path / "cut" / "last.pt", weights_only=True)["method"]
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


def _spawn_ranks(worker, out, cfg):
    """Two gloo ranks of ``worker(rank, port, out, cfg)``; (rank0.pt, rank1.pt) they saved."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(worker, args=(port, str(out), cfg), nprocs=2, join=True)
    return tuple(torch.load(out / f"rank{r}.pt", weights_only=False) for r in (0, 1))


# collab_mutual: teacher, adapters, log-variances; collab_param: adapters it does not use
@pytest.mark.parametrize("method", ["kd", "collab_mutual", "collab_param"])
def test_ddp_two_gloo_processes(tmp_path, method):
    cfg = run_config(tiny_recipe("train.epochs=1"), "student", method=method)
    fit(run_config(tiny_recipe("teacher.train.epochs=1"), "teacher"), tmp_path / "t", progress=False)
    cfg["teacher"] = str(tmp_path / "t" / "model.pt")
    (tmp_path / "ddp").mkdir()
    r0, r1 = _spawn_ranks(_ddp_worker, tmp_path / "ddp", cfg)
    # each rank trained on its own half of the data, yet DDP kept the weights identical, and
    # the logged figures are those of both halves on every rank
    assert _figures(r0["row"]) == _figures(r1["row"])
    assert all(torch.equal(r0["state"][k], r1["state"][k]) for k in r0["state"] if "running" not in k)
    summary = json.loads((tmp_path / "ddp" / "summary.json").read_text())
    assert summary["method"] == method and len((tmp_path / "ddp" / "log.csv").read_text().splitlines()) == 2


def test_cli_reproduce_end_to_end(tmp_path, capsys):
    out = tmp_path / "repro"
    args = ["reproduce", "--recipe", "synthetic-full", "--out", str(out), "--no-progress",
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
    assert cli.main(["evaluate", "--recipe", "synthetic-full", "--checkpoint", str(out / "kd" / "seed0" / "model.pt")]
                    + sum((["--set", i] for i in TINY), [])) == 0
    assert "top1" in json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_cli_reproduce_jobs_trains_side_by_side_to_the_same_weights(tmp_path, capsys, monkeypatch):
    """--jobs 2: the students two at a time, each in a fresh process, end with the weights
    and figures of one process training them in turn; a failed run stops the invocation."""
    def invoke(out, *extra):
        return cli.main(["reproduce", "--recipe", "synthetic-full", "--out", str(out), "--no-progress",
                         "--methods", "ce", "kd", "--seeds", "0", "1", *extra]
                        + sum((["--set", i] for i in TINY + ["train.threads=1"]), []))
    assert invoke(tmp_path / "one") == 0 and invoke(tmp_path / "two", "--jobs", "2") == 0
    for run in ("ce/seed0", "ce/seed1", "kd/seed0", "kd/seed1"):
        one, two = (torch.load(tmp_path / d / run / "model.pt", weights_only=True) for d in ("one", "two"))
        assert all(torch.equal(one["state_dict"][k], v) for k, v in two["state_dict"].items()), run
        rows = [[_figures(r) for r in csv.DictReader(open(tmp_path / d / run / "log.csv"))] for d in ("one", "two")]
        assert rows[0] == rows[1], run
    capsys.readouterr()
    recipe = tiny_recipe("train.threads=1")
    missing = run_config(recipe, "student", method="kd", teacher=str(tmp_path / "no-teacher.pt"))
    with pytest.raises(Exception, match="no-teacher.pt"):
        cli._run_all([(missing, tmp_path / "bad" / f"seed{s}") for s in (0, 1)], False, False, 2)
    assert invoke(tmp_path / "three", "--jobs", "0") == 2
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert invoke(tmp_path / "three", "--jobs", "2") == 2
    assert "--jobs" in capsys.readouterr().err and not (tmp_path / "three").exists()


def test_run_all_with_jobs_starts_the_two_pass_methods_first(tmp_path, monkeypatch):
    """GKD's runs (two passes per epoch) are submitted before the others, which keep their order."""
    submitted = []

    class Pool:
        def __init__(self, *args, **kwargs):
            pass

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def submit(self, fn, cfg, run_dir, *args):
            submitted.append(run_dir.name)
            future = Future()
            future.set_result(None)
            return future

    monkeypatch.setattr(cli, "ProcessPoolExecutor", Pool)
    recipe = tiny_recipe()
    runs = [(run_config(recipe, "student", method=m, seed=0), tmp_path / m) for m in ("ce", "gkd", "kd", "gkd_ad")]
    cli._run_all(runs, False, False, 2)
    assert submitted == ["gkd", "gkd_ad", "ce", "kd"]


def test_cli_reproduce_reports_on_rank_0_only(tmp_path, capsys, monkeypatch):
    """Under torchrun every rank trains (each run is distributed), but only rank 0 computes
    the spectra and writes results.md / results.json / plots; the others print nothing."""
    out, trained = tmp_path / "repro", []

    def fake_run(cfg, run_dir, resume, progress):      # a finished run, as fit leaves it
        trained.append(run_dir.relative_to(out).as_posix())
        run_dir.mkdir(parents=True)
        (run_dir / "summary.json").write_text(json.dumps({"curve_top1": [1.0, 2.0]}))

    def no_report(*args, **kwargs):
        raise AssertionError("the report is rank 0's work")
    monkeypatch.setattr(cli, "_run", fake_run)
    monkeypatch.setattr(cli.report, "table", no_report)
    monkeypatch.setattr(cli.report, "temporal_spectrum", no_report)
    monkeypatch.setattr(cli, "build_dataset", no_report)
    monkeypatch.setenv("RANK", "1")
    args = ["reproduce", "--recipe", "synthetic-full", "--out", str(out), "--no-progress",
            "--methods", "ce", "kd", "--seeds", "0", "1"]
    assert cli.main(args + sum((["--set", i] for i in TINY), [])) == 0
    assert trained == ["teacher", "ce/seed0", "ce/seed1", "kd/seed0", "kd/seed1"]
    assert capsys.readouterr().out == ""
    assert sorted(p.name for p in out.iterdir()) == ["ce", "kd", "teacher"]      # no results.* nor plots
    assert cli.reproduce(load_recipe("synthetic-full"), out, [0, 1], ["ce", "kd"], False, False) == ""


def test_recipes_load_and_bad_input():
    for name in ("synthetic-full", "ucf101-i3d", "hmdb51-i3d", "kinetics400-tsm", "ssv2-tsm", "jester-tsm"):
        recipe = load_recipe(name)
        cfg = run_config(recipe, "student", method="kd")
        assert cfg["model"]["name"] and cfg["train"]["epochs"] > 0
    assert load_recipe("ssv2-tsm")["data"]["flip"] is False
    with pytest.raises(ValueError, match="recipe"):
        load_recipe("no-such-recipe")
    with pytest.raises(ValueError, match="key=value"):
        load_recipe("synthetic-full", ["train.epochs"])


def _ddp_exact_worker(rank, port, out, cfg):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE="2", RANK=str(rank),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)

    def save(epoch, method, row):
        if epoch == 0:
            torch.save({"state": method.state_dict(), "row": row}, os.path.join(out, f"rank{rank}.pt"))
    fit(cfg, out, progress=False, callback=save)
    torch.distributed.destroy_process_group()


def test_ddp_figures_equal_a_single_process_pass_over_the_same_data(tmp_path):
    """lr 0 keeps the weights fixed, so the training figures are a plain average over the
    samples of both ranks' batches; validation (15 clips: shards of 8 and 7) is the whole set."""
    from torch.utils.data import DataLoader, DistributedSampler
    from train_helpers import shard_counts

    from vkd_kernels.train.data import build_dataset, collate_skip
    from vkd_kernels.train.engine import load_model
    from vkd_kernels.train.models import build_model
    cfg = run_config(tiny_recipe("train.epochs=1", "train.lr=0.0", "train.momentum=0.0", "train.weight_decay=0.0",
                                 "data.val.num_clips=15", "train.batch_size=4"), "student")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_ddp_exact_worker, args=(port, str(tmp_path), cfg), nprocs=2, join=True)
    row = torch.load(tmp_path / "rank0.pt", weights_only=False)["row"]
    assert _figures(row) == _figures(torch.load(tmp_path / "rank1.pt", weights_only=False)["row"])
    train_set = build_dataset(cfg["data"], "train")
    model = build_model(cfg["model"], train_set.num_classes)
    model.load_state_dict(torch.load(tmp_path / "model.pt", weights_only=True)["state_dict"])
    model.train()                                      # batch statistics, as in training
    loss = correct = seen = 0.0
    with torch.no_grad():
        for r in (0, 1):
            sampler = DistributedSampler(train_set, num_replicas=2, rank=r, shuffle=True, seed=cfg["seed"])
            sampler.set_epoch(0)
            for clips, labels, _ in DataLoader(train_set, batch_size=4, sampler=sampler, drop_last=True,
                                               collate_fn=collate_skip):
                logits = model(clips)
                loss += float(torch.nn.functional.cross_entropy(logits, labels)) * len(labels)
                correct += float((logits.argmax(1) == labels).sum())
                seen += len(labels)
    assert seen == 32
    assert row["train_loss"] == pytest.approx(loss / seen, rel=1e-5)
    assert row["train_acc"] == pytest.approx(100 * correct / seen, rel=1e-9)
    # validation in one process over the same batches (the untrained model's logits nearly tie,
    # so other batch compositions could break ties differently in the last bit)
    val_set, model = build_dataset(cfg["data"], "val"), load_model(tmp_path / "model.pt")
    counts = shard_counts(model, val_set, batch_size=4)
    assert [c["samples"] for c in counts] == [8, 7]           # every clip once, none padded in
    top1 = 100 * sum(c["correct1"] for c in counts) / 15
    top5 = 100 * sum(c["correct5"] for c in counts) / 15
    assert (row["val_top1"], row["val_top5"]) == (top1, top5)
    assert json.loads((tmp_path / "summary.json").read_text())["top1"] == top1


def _unreadable_first_batch_worker(rank, port, out, cfg):
    """_ddp_worker, rank 1's first training batch without a readable sample (collate_skip
    gives clips None); a deadlock fails within a minute, not gloo's 30."""
    from vkd_kernels.train import engine
    from vkd_kernels.train.data import Unreadable
    calls, original, init = [], engine.collate_skip, engine.dist.init_process_group

    def collate(batch):
        calls.append(len(batch))
        if rank == 1 and len(calls) == 1:
            return None, None, [Unreadable(f"clip{i}", "corrupt") for i in range(len(batch))]
        return original(batch)
    engine.collate_skip = collate
    engine.dist.init_process_group = lambda *a, **k: init(*a, **{**k, "timeout": datetime.timedelta(seconds=60)})
    _ddp_worker(rank, port, out, cfg)


def test_ddp_steps_together_when_a_rank_has_no_readable_sample(tmp_path):
    """A rank whose batch is all unreadable joins the step with a zero-weighted stand-in,
    so the collectives pair up (it deadlocked) and the weights stay identical."""
    cfg = run_config(tiny_recipe("train.epochs=1", "train.max_unreadable=0.5"), "student", method="ce")
    (tmp_path / "ddp").mkdir()
    r0, r1 = _spawn_ranks(_unreadable_first_batch_worker, tmp_path / "ddp", cfg)
    assert all(torch.equal(r0["state"][k], r1["state"][k]) for k in r0["state"] if "running" not in k)
    assert r0["row"]["skipped"] > 0


def test_the_cuda_generator_is_saved_for_the_current_device(monkeypatch):
    """One CUDA generator state, the current device's (every rank draws alike): a rank
    restores it on its own device, with any number of visible devices; a checkpoint with
    one state per device (older) restores its first."""
    from vkd_kernels.train import engine
    restored = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_rng_state", lambda device="cuda": torch.tensor([7], dtype=torch.uint8))
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda state, device="cuda": restored.append(int(state)))
    state = engine.rng_state()
    engine.set_rng_state(state)
    per_device = [torch.tensor([5], dtype=torch.uint8), torch.tensor([6], dtype=torch.uint8)]
    engine.set_rng_state({**state, "cuda": per_device})
    assert restored == [7, 5]
