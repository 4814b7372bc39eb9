"""Train and evaluate one run: data, model(s), method, optimiser, loop, checkpoints.

``fit(cfg, out_dir)`` runs one configuration (see ``vkd_kernels/train/recipes``):

* the configuration is validated first (:func:`vkd_kernels.train.config.check_run`),
  and so is ``--resume`` (``last.pt`` must exist, its stored configuration and phases
  must match), before any data or model is built;
* data order: ``DistributedSampler(shuffle=True, seed=seed)`` with ``set_epoch``,
  also with one process, so the order is a function of (seed, epoch, rank);
* SGD (momentum, weight decay; the method's uncertainty weights get none), a cosine
  learning rate with optional linear warm-up, stepped every iteration (or every epoch:
  ``train.lr_step``), optional gradient-norm clipping, AMP (float16 autocast +
  GradScaler) on CUDA; a method may declare phases (``phases()``: e.g. GKD's CVAE pass
  with Adam, then its network pass), each one pass over the data per epoch with its own
  optimiser and scheduler;
* multi-GPU / multi-process through ``torchrun``: DDP (NCCL on CUDA, gloo on CPU); the
  validation set is sharded over the ranks and its counts summed, the training metrics
  are summed over the ranks, so every logged figure is the whole data's, and no rank
  waits on another's evaluation; logs and files come from rank 0 only;
* logging through :mod:`logging` (logger ``vkd_kernels.train``; a line every
  ``train.log_interval`` iterations and one per epoch, also written to ``train.log``),
  tqdm progress bars only on a terminal, ``log.csv`` (one row per epoch) and TensorBoard
  with ``train.tensorboard: true``;
* every epoch an atomic checkpoint ``last.pt`` (write to a temp file, then
  ``os.replace``) with the method's state, the optimiser and scheduler of every phase,
  the scaler, the RNG states of torch, numpy and python, the epoch, the history and the
  configuration: tensors and plain Python values only, loaded with ``weights_only=True``;
  ``resume=True`` continues from it and ends with the same weights as a run that was
  never interrupted; ``best.pt`` holds the weights of the best validation top-1 so far;
* unreadable samples are skipped and counted; more than ``train.max_unreadable`` of an
  epoch's samples stops the run with examples;
* ``train.threads`` sets torch's CPU thread count before the run (CPU results depend
  on it; ``summary.json`` records the count used);
* at the end: ``model.pt`` (the trained model's weights and spec) and
  ``summary.json`` (final and best top-1/top-5, curves, seconds per epoch and in the
  losses, skipped samples, threads).
"""
from __future__ import annotations

import csv
import json
import logging
import math
import os
import random
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Union

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, DistributedSampler, Sampler

from .config import ConfigError, TrainConfig, check_run, config_diff
from .data import DataError, build_dataset, collate_skip, probe_batch
from .methods import build_method
from .models import build_model

log = logging.getLogger("vkd_kernels.train")

# entries of the configuration that may differ on --resume: they do not change the results
RESUME_MAY_DIFFER = ("name", "teacher", "train.workers", "train.log_interval", "train.tensorboard",
                     "train.eval_batch_size", "train.time_losses", "train.max_unreadable")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.manual_seed(seed)


def rng_state() -> Dict:
    """The RNG states as tensors and plain values (``weights_only=True`` loads them)."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "python": random.getstate(),
             "numpy": [name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)]}
    if torch.cuda.is_available():
        # the current device's generator: every rank seeds alike and draws alike, so rank 0's
        # serves each rank's own device on resume (one per visible device would hand a rank
        # rank 0's copy of its device, never advanced, and fail with fewer devices)
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: Dict) -> None:
    torch.set_rng_state(state["torch"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    random.setstate(_tuples(state["python"]))
    if "cuda" in state and torch.cuda.is_available():
        cuda = state["cuda"]
        torch.cuda.set_rng_state(cuda[0] if isinstance(cuda, (list, tuple)) else cuda)  # (a list: saved per device)


def _tuples(x):
    return tuple(_tuples(v) for v in x) if isinstance(x, (list, tuple)) else x


def atomic_save(obj, path: Path) -> None:
    """torch.save to a temporary file in the same folder, then an atomic rename."""
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def distributed() -> tuple:
    """(rank, world_size, device); initialises the process group under torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    rank = dist.get_rank() if world > 1 else 0
    if torch.cuda.is_available():
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        return rank, world, torch.device("cuda", local)
    return rank, world, torch.device("cpu")


def _world() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def gather(obj) -> list:
    """``obj`` of every rank, in rank order (``[obj]`` without a process group)."""
    if _world() == 1:
        return [obj]
    out = [None] * _world()
    dist.all_gather_object(out, obj)
    return out


def load_model(path, device="cpu") -> torch.nn.Module:
    """A model saved by :func:`fit` (``model.pt`` or ``best.pt``), rebuilt from its spec."""
    blob = torch.load(path, map_location=device, weights_only=True)
    model = build_model(blob["spec"], blob["num_classes"], load_weights=False)   # the weights are in the blob
    model.load_state_dict(blob["state_dict"])
    return model.to(device)


class ShardSampler(Sampler):
    """Indices ``rank, rank + world, ...`` of a dataset: every sample exactly once over
    the ranks (``DistributedSampler`` pads the shards with repeats, which would count some
    samples twice in an evaluation)."""

    def __init__(self, dataset, rank: int = 0, world: int = 1):
        self.indices = range(rank, len(dataset), world)

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


AVERAGES = ("prob", "score")


def average_views(logits: torch.Tensor, average: str = "prob") -> torch.Tensor:
    """(videos, views, classes) logits -> (videos, classes) scores: the mean over the views
    of the softmax probabilities ("prob", what mmaction2's recognisers are configured with,
    ``average_clips='prob'``) or of the logits ("score")."""
    if average not in AVERAGES:
        raise ValueError(f"average must be one of {', '.join(AVERAGES)}, got {average!r}")
    logits = logits.float()
    return logits.softmax(-1).mean(1) if average == "prob" else logits.mean(1)


@torch.no_grad()
def evaluate_counts(model: torch.nn.Module, loader, device, amp: bool = False, average: str = "prob") -> Dict:
    """{"correct1", "correct5", "samples", "unreadable", "examples"} of ``model`` over
    ``loader``, summed over the ranks when a process group is initialised. A batch of
    (videos, views, 3, T, H, W) clips (multi-view testing) is scored per video by
    :func:`average_views` over its views; a sample counts once whatever its views."""
    was_training = model.training
    model.eval()
    correct1 = correct5 = total = 0
    unreadable, examples = 0, []
    for clips, labels, bad in loader:
        unreadable += len(bad)
        examples += bad[:max(0, 3 - len(examples))]
        if clips is None:
            continue
        clips, labels = clips.to(device, non_blocking=True), labels.to(device)
        views = clips.shape[1] if clips.dim() == 6 else 0
        with torch.autocast(device.type, torch.float16, enabled=amp and device.type == "cuda"):
            logits = model(clips.flatten(0, 1) if views else clips)
        if views:
            logits = average_views(logits.view(len(labels), views, -1), average)
        top = logits.float().topk(min(5, logits.shape[1]), 1).indices
        correct1 += int((top[:, 0] == labels).sum())
        correct5 += int((top == labels[:, None]).any(1).sum())
        total += len(labels)
    model.train(was_training)
    parts = gather((correct1, correct5, total, unreadable, [tuple(e) for e in examples]))
    return {"correct1": sum(p[0] for p in parts), "correct5": sum(p[1] for p in parts),
            "samples": sum(p[2] for p in parts), "unreadable": sum(p[3] for p in parts),
            "examples": [e for p in parts for e in p[4]][:3]}


def evaluate(model: torch.nn.Module, loader, device, amp: bool = False, average: str = "prob") -> Dict[str, float]:
    """top-1 / top-5 accuracy (percent) of ``model`` over ``loader`` (of every rank's shard
    under DDP), the number of samples and of unreadable samples."""
    c = evaluate_counts(model, loader, device, amp, average)
    n = max(c["samples"], 1)
    return {"top1": 100.0 * c["correct1"] / n, "top5": 100.0 * c["correct5"] / n,
            "samples": c["samples"], "unreadable": c["unreadable"]}


def make_loaders(cfg: Dict, rank: int, world: int, seed: int, t: Optional[TrainConfig] = None):
    t = t or TrainConfig.from_dict(cfg["train"])
    train_set, val_set = build_dataset(cfg["data"], "train"), build_dataset(cfg["data"], "val")
    sampler = DistributedSampler(train_set, num_replicas=world, rank=rank, shuffle=True, seed=seed)
    common = dict(num_workers=t.workers, collate_fn=collate_skip, pin_memory=torch.cuda.is_available())
    train = DataLoader(train_set, batch_size=t.batch_size, sampler=sampler, drop_last=True, **common)
    val = DataLoader(val_set, batch_size=t.eval_batch_size or t.batch_size, sampler=ShardSampler(val_set, rank, world),
                     **common)
    if len(train) == 0:
        raise ConfigError(f"train.batch_size: {t.batch_size} per process is more than the "
                          f"{len(sampler)} training samples of a process: no full batch (batches are drop_last)")
    return train_set, val_set, sampler, train, val


def cosine(total_steps: int, warmup_steps: int = 0) -> Callable[[int], float]:
    """Learning-rate factor of step s (from 0): linear warm-up (s + 1) / (w + 1) over
    ``warmup_steps``, then a cosine from 1 to 0 over the rest."""
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / (warmup_steps + 1)
        return 0.5 * (1 + math.cos(math.pi * (step - warmup_steps) / max(1, total_steps - warmup_steps)))
    return factor


def method_phases(method) -> list:
    """[(name, parameters, optimizer options)]: ``method.phases()`` if it declares phases
    (each one pass over the data per epoch, in order, after ``method.set_phase(name, epoch)``),
    else one phase with every trainable parameter. Options None: SGD + cosine."""
    if hasattr(method, "phases"):
        return method.phases()
    return [("train", [p for p in method.parameters() if p.requires_grad], None)]


def make_phases(method, t: Union[TrainConfig, Dict], epochs: int, steps_per_epoch: int = 1) -> list:
    """[(name, optimizer, scheduler)]. SGD (momentum, weight decay; the method's
    ``optimizer_groups`` with their own weight decay and learning-rate scale) with the
    cosine schedule (stepped ``steps_per_epoch`` times an epoch), or for options
    {"optimizer": "adam", "lr", "betas"} Adam at a constant rate."""
    if not isinstance(t, TrainConfig):
        t = TrainConfig(**{"epochs": epochs, "batch_size": 1, **t})
    special = method.optimizer_groups()
    grouped = {id(p) for g in special for p in g["params"]}
    out = []
    for name, params, options in method_phases(method):
        if options and options.get("optimizer") == "adam":
            betas = tuple(options.get("betas", (0.9, 0.999)))
            optimizer = torch.optim.Adam(params, lr=float(options["lr"]), betas=betas)
            scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
        else:
            mine = {id(p) for p in params}
            groups = [{"params": [p for p in params if id(p) not in grouped]}] + [
                {"params": [p for p in g["params"] if id(p) in mine], "lr": t.lr * g.get("lr_scale", 1.0),
                 "weight_decay": g.get("weight_decay", t.weight_decay)} for g in special]
            groups = [g for g in groups if g["params"]]          # a group of another phase's parameters
            optimizer = torch.optim.SGD(groups, lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay,
                                        nesterov=t.nesterov)
            warmup = int(round(t.warmup_epochs * steps_per_epoch))
            scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, cosine(epochs * steps_per_epoch, warmup))
        out.append((name, optimizer, scheduler))
    return out


def check_resume_config(ckpt: Dict, cfg: Dict, path: Path) -> None:
    """Refuse a resume whose configuration differs from the stored one, naming every
    difference (entries in ``RESUME_MAY_DIFFER`` are allowed and logged)."""
    diffs = config_diff(ckpt["config"], cfg)
    harmless = [d for d in diffs if d.split(":", 1)[0].startswith(RESUME_MAY_DIFFER)]
    serious = [d for d in diffs if d not in harmless]
    if serious:
        raise ConfigError(f"resume: the configuration differs from the one stored in {path} "
                          f"(stored -> now): {'; '.join(serious)}. Restore those settings to continue the run, "
                          f"or start a new --out")
    for d in harmless:
        log.info("resume: %s (allowed: does not change the results)", d)


def check_resume_phases(ckpt: Dict, phase_names: List[str], path: Path) -> None:
    """Refuse a resume whose phases (optimisers) differ from the stored ones."""
    stored = [p["name"] for p in ckpt["phases"]]
    if stored != phase_names:
        raise ConfigError(f"resume: {path} holds the phases {stored}, this run has {phase_names}: "
                          f"start a new --out")


def _unreadable_error(what: str, count: int, attempted: int, share: float, examples) -> DataError:
    shown = "; ".join(f"{p}: {e}" for p, e in examples[:3])
    return DataError(f"data: {count} of {attempted} {what} samples were unreadable, more than "
                     f"train.max_unreadable={share} of them; e.g. {shown}")


def fit(cfg: Dict, out_dir, *, resume: bool = False, stop_after: Optional[int] = None,
        progress: bool = True, callback: Optional[Callable] = None) -> Dict:
    """Train ``cfg["model"]`` with ``cfg["method"]`` (and ``cfg["teacher"]``, a model.pt path).

    ``resume``: continue from ``<out_dir>/last.pt`` (an error if it is missing or was
    written by a different configuration); without it, an ``out_dir`` that holds a
    ``last.pt`` is refused rather than overwritten. ``stop_after``: return after that many
    epochs of this call (a time slice; the run continues with ``resume=True``).
    ``progress``: tqdm bars (on a terminal only). ``callback(epoch, method, row)`` runs
    after each epoch on every rank. Returns the summary dict (rank 0, run complete) or {}.
    """
    t = check_run(cfg)
    out = Path(out_dir)
    ckpt_path = out / "last.pt"
    if resume and not ckpt_path.is_file():
        raise ConfigError(f"resume: no {ckpt_path} to continue from (was --out mistyped?); "
                          f"run without --resume to start afresh")
    if not resume and ckpt_path.is_file():
        raise ConfigError(f"out: {out} already holds a run ({ckpt_path}): pass --resume to continue it, "
                          f"or choose another --out")
    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True) if resume else None
    if ckpt is not None:           # the configuration first: before any data or model is built
        check_resume_config(ckpt, cfg, ckpt_path)
    rank, world, device = distributed()
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
    file_log = _file_handler(out / "train.log") if rank == 0 else None
    threads = torch.get_num_threads()
    try:
        return _fit(cfg, t, out, ckpt, rank, world, device, stop_after, progress, callback)
    finally:
        torch.set_num_threads(threads)        # train.threads is the run's, not the process's
        if file_log is not None:
            log.removeHandler(file_log)
            file_log.close()


def _file_handler(path: Path) -> logging.Handler:
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log.addHandler(handler)
    return handler


def _fit(cfg, t: TrainConfig, out: Path, ckpt, rank, world, device, stop_after, progress, callback) -> Dict:
    name = cfg.get("name", "run")
    seed = int(cfg.get("seed", 0))
    if t.threads is not None:          # before anything computes: CPU results depend on the count
        torch.set_num_threads(t.threads)
    seed_everything(seed)
    train_set, val_set, sampler, train_loader, val_loader = make_loaders(cfg, rank, world, seed, t)
    num_classes = train_set.num_classes
    student = build_model(cfg["model"], num_classes, load_weights=ckpt is None).to(device)  # resumed: last.pt
    teacher = load_model(cfg["teacher"], device) if cfg.get("teacher") else None
    probe = probe_batch(train_set).to(device)
    method = build_method(cfg.get("method", "ce"), student, teacher, probe=probe,
                          **dict(cfg.get("method_options") or {})).to(device)
    method.time_losses = t.time_losses
    trained = method
    if world > 1:
        trained = torch.nn.parallel.DistributedDataParallel(
            method, device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=len(method_phases(method)) > 1)   # a phase leaves the others' parameters unused

    epochs, iters = t.epochs, len(train_loader)
    phases = make_phases(method, t, epochs, iters if t.lr_step == "iteration" else 1)
    amp = t.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=amp)

    start_epoch, history, best = 0, [], {"top1": -1.0, "epoch": 0}
    if ckpt is not None:
        check_resume_phases(ckpt, [n for n, _, _ in phases], out / "last.pt")
        method.load_state_dict(ckpt["method"])
        for (_, optimizer, scheduler), state in zip(phases, ckpt["phases"]):
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
        if ckpt["scaler"]:  # empty when saved with AMP off (a CPU run resumed on CUDA starts a fresh scale)
            scaler.load_state_dict(ckpt["scaler"])
        set_rng_state(ckpt["rng"])
        start_epoch, history, best = ckpt["epoch"] + 1, ckpt["history"], ckpt["best"]
        log.info("%s: resumed from %s after epoch %d", name, out / "last.pt", ckpt["epoch"] + 1)

    writer = None
    if rank == 0 and t.tensorboard:
        from torch.utils.tensorboard import SummaryWriter
        writer = SummaryWriter(str(out / "tensorboard"))
    bars = progress and rank == 0 and sys.stderr.isatty()
    end_epoch = epochs if stop_after is None else min(epochs, start_epoch + stop_after)
    for epoch in range(start_epoch, end_epoch):
        sampler.set_epoch(epoch)
        if hasattr(train_set, "set_epoch"):
            train_set.set_epoch(epoch)
        method.train()
        method.loss_seconds = 0.0
        began, row = time.perf_counter(), {"epoch": epoch + 1, "lr": phases[-1][1].param_groups[0]["lr"]}
        for phase, optimizer, scheduler in phases:       # one pass over the data per phase
            if len(phases) > 1:
                method.set_phase(phase, epoch)
            label = f"{name} epoch {epoch + 1}/{epochs}" + (f" {phase}" if len(phases) > 1 else "")
            sums, seen, bad = _train_pass(trained, method, train_loader, optimizer, scheduler, scaler, t, device,
                                          amp, label, bars, world)
            parts = gather(({k: float(v) for k, v in sums.items()}, seen, len(bad), [tuple(b) for b in bad[:3]]))
            total = sum(p[1] for p in parts)
            unreadable = sum(p[2] for p in parts)
            examples = [e for p in parts for e in p[3]]
            if unreadable > t.max_unreadable * (total + unreadable):
                raise _unreadable_error("training", unreadable, total + unreadable, t.max_unreadable, examples)
            prefix = "train_" if phase == phases[-1][0] else f"train_{phase}_"   # the last phase: plain names
            keys = sorted({k for p in parts for k in p[0]})
            row.update({f"{prefix}{k}": sum(p[0].get(k, 0.0) for p in parts) / max(total, 1) for k in keys})
            if t.lr_step == "epoch":
                scheduler.step()
        epoch_seconds = time.perf_counter() - began
        if unreadable:
            log.warning("%s: skipped %d unreadable training samples, e.g. %s", label, unreadable,
                        "; ".join(f"{p}: {e}" for p, e in examples[:3]))
        if world > 1:        # the BatchNorm statistics of rank 0 (what model.pt holds) on every rank
            for buffer in method.buffers():
                dist.broadcast(buffer, 0)
        validated = (epoch + 1) % t.eval_interval == 0 or epoch + 1 == epochs
        if validated:
            val = evaluate_counts(method.student, val_loader, device, amp)
            attempted = val["samples"] + val["unreadable"]
            if val["unreadable"] > t.max_unreadable * attempted:
                raise _unreadable_error("validation", val["unreadable"], attempted, t.max_unreadable,
                                        val["examples"])
            n = max(val["samples"], 1)
            row.update(val_top1=100.0 * val["correct1"] / n, val_top5=100.0 * val["correct5"] / n,
                       val_skipped=val["unreadable"])
        row.update(epoch_seconds=epoch_seconds, loss_seconds=method.loss_seconds if t.time_losses else None,
                   skipped=unreadable)
        if getattr(method, "uncertainty", False):
            row.update({f"s_{term}": float(v) for term, v in zip(method.term_names, method.log_variances)})
        history.append(row)
        improved = validated and row["val_top1"] > best["top1"]
        if improved:
            best = {"top1": row["val_top1"], "epoch": epoch + 1}
        if rank == 0:
            if improved:
                atomic_save({**_model_blob(cfg, method, num_classes), "epoch": epoch + 1, "top1": row["val_top1"]},
                            out / "best.pt")
            atomic_save({"method": method.state_dict(), "scaler": scaler.state_dict(), "rng": rng_state(),
                         "phases": [{"name": n, "optimizer": o.state_dict(), "scheduler": s.state_dict()}
                                    for n, o, s in phases],
                         "epoch": epoch, "history": history, "best": best, "config": cfg}, out / "last.pt")
            _write_csv(out / "log.csv", history)
            if writer is not None:
                for k, v in row.items():
                    if v is not None:
                        writer.add_scalar(k, v, epoch + 1)
            if validated:
                log.info("%s epoch %d/%d: loss %.4f, val top-1 %.2f top-5 %.2f (best %.2f, epoch %d), %.1f s",
                         name, epoch + 1, epochs, row.get("train_loss", float("nan")), row["val_top1"],
                         row["val_top5"], best["top1"], best["epoch"], epoch_seconds)
            else:                   # not validated (train.eval_interval): a debug line only
                log.debug("%s epoch %d/%d: loss %.4f, %.1f s", name, epoch + 1, epochs,
                          row.get("train_loss", float("nan")), epoch_seconds)
        if callback is not None:
            callback(epoch, method, row)
    if writer is not None:
        writer.close()
    if len(history) < epochs:
        return {}
    summary = {}
    if rank == 0:
        atomic_save(_model_blob(cfg, method, num_classes), out / "model.pt")
        losses = [h["loss_seconds"] for h in history if h.get("loss_seconds") is not None]
        summary = {
            "name": cfg.get("name"), "method": cfg.get("method", "ce"), "seed": seed,
            "top1": history[-1]["val_top1"], "top5": history[-1]["val_top5"],
            "best_top1": best["top1"], "best_epoch": best["epoch"],
            "epochs": len(history),
            "curve_top1": [h["val_top1"] for h in history if "val_top1" in h],
            "curve_epochs": [h["epoch"] for h in history if "val_top1" in h],
            "epoch_seconds": float(np.mean([h["epoch_seconds"] for h in history])),
            "loss_seconds": float(np.mean(losses)) if losses else None,
            "skipped": int(sum(h.get("skipped", 0) for h in history)),
            "val_skipped": int(sum(h.get("val_skipped", 0) for h in history)),
            "params": sum(p.numel() for p in method.student.parameters()),
            "threads": torch.get_num_threads(), "device": device.type,
        }
        (out / "summary.json").write_text(json.dumps(summary, indent=1))
    if world > 1:
        dist.barrier()       # model.pt and summary.json exist for every rank's next step
    return summary


def _model_blob(cfg: Dict, method, num_classes: int) -> Dict:
    spec = {**cfg["model"], **(method.spec_extra() if hasattr(method, "spec_extra") else {})}
    spec.pop("pretrained", None)        # the weights are in the blob
    return {"spec": spec, "num_classes": num_classes, "state_dict": method.student.state_dict()}


def _train_pass(trained, method, loader, optimizer, scheduler, scaler, t: TrainConfig, device, amp: bool,
                label: str, bars: bool, world: int):
    """One pass over ``loader``: ({term: sum over samples (a tensor)}, samples, [Unreadable])."""
    sums: Dict[str, torch.Tensor] = {}
    seen, bad = 0, []
    limit = t.max_unreadable * len(loader) * loader.batch_size
    params = [p for group in optimizer.param_groups for p in group["params"]]
    iterator = loader
    if bars:
        from tqdm import tqdm
        iterator = tqdm(loader, desc=label, leave=False)
    began = time.perf_counter()
    stand_in = None  # DDP: a batch for a step in which every sample of this rank's is unreadable
    for step, (clips, labels, unreadable) in enumerate(iterator, 1):
        bad += unreadable
        if world == 1 and len(bad) > limit:      # the epoch's share is exceeded already (DDP: at the pass end)
            raise _unreadable_error("training", len(bad), len(loader) * loader.batch_size, t.max_unreadable,
                                    [tuple(b) for b in bad])
        joined = clips is None and world > 1
        if joined:  # the other ranks step (their collectives wait for this one): step with weight 0
            if stand_in is None:
                probe = probe_batch(loader.dataset)
                stand_in = probe, torch.zeros(len(probe), dtype=torch.long)
            clips, labels = stand_in
        if clips is not None:
            clips, labels = clips.to(device, non_blocking=True), labels.to(device, non_blocking=True)
            with torch.autocast(device.type, torch.float16, enabled=amp):
                loss, logits, terms = trained(clips, labels)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss * 0.0 if joined else loss).backward()
            if t.grad_clip is not None:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(params, t.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            method.after_step()
            n = 0 if joined else len(labels)
            seen += n
            terms = {"loss": loss.detach(), **terms, "acc": (logits.detach().argmax(1) == labels).float().mean() * 100}
            for k, v in terms.items():        # on the device: no synchronisation per step
                sums[k] = sums.get(k, 0.0) + v.detach().double() * n
        if t.lr_step == "iteration":
            scheduler.step()
        if t.log_interval and step % t.log_interval == 0 and not bars and log.isEnabledFor(logging.INFO):
            mean = float(sums["loss"]) / max(seen, 1) if "loss" in sums else float("nan")
            log.info("%s iter %d/%d: loss %.4f (running mean) lr %.3g, %.3f s/iter", label, step, len(loader),
                     mean, optimizer.param_groups[0]["lr"], (time.perf_counter() - began) / step)
        elif bars and clips is not None and step % 10 == 0:
            iterator.set_postfix(loss=f"{float(loss):.3f}")
    return sums, seen, bad


def _write_csv(path: Path, history) -> None:
    """The whole history, rewritten each epoch (so a resumed run never repeats a row)."""
    tmp = path.with_name(path.name + ".tmp")
    fields = list(dict.fromkeys(k for row in history for k in row))
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(history)
    os.replace(tmp, path)
