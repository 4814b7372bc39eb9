"""Train and evaluate one run: data, model(s), method, optimiser, loop, checkpoints.

``fit(cfg, out_dir)`` runs one configuration (see ``vkd_kernels/train/recipes``):

* data order: ``DistributedSampler(shuffle=True, seed=seed)`` with ``set_epoch``,
  also with one process, so the order is a function of (seed, epoch, rank);
* SGD (momentum, weight decay; the method's uncertainty weights get none), cosine
  learning rate per epoch, AMP (float16 autocast + GradScaler) on CUDA; a method may
  declare phases (``phases()``: e.g. GKD's CVAE pass with Adam, then its network pass),
  each one pass over the data per epoch with its own optimiser and scheduler;
* multi-GPU / multi-process through ``torchrun``: DDP (NCCL on CUDA, gloo on CPU);
* every epoch: one CSV row in ``log.csv`` (TensorBoard too if ``tensorboard: true``)
  and an atomic checkpoint ``last.pt`` (write to a temp file, then ``os.replace``)
  with model, the optimiser and scheduler of every phase, scaler, the RNG states of torch, numpy and
  python, and the epoch; ``resume=True`` continues from it and ends with the same
  weights as a run that was never interrupted;
* at the end: ``model.pt`` (the trained model's weights and spec) and
  ``summary.json`` (final top-1/top-5, curves, seconds per epoch and in the losses).
"""
from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import random
import time
from pathlib import Path
from typing import Callable, Dict, Optional

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, DistributedSampler

from .data import build_dataset, collate_skip
from .methods import build_method
from .models import build_model


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.manual_seed(seed)


def rng_state() -> Dict:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


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


def load_model(path, device="cpu") -> torch.nn.Module:
    """A model saved by :func:`fit` (``model.pt``), rebuilt from its spec."""
    blob = torch.load(path, map_location=device, weights_only=False)
    model = build_model(blob["spec"], blob["num_classes"])
    model.load_state_dict(blob["state_dict"])
    return model.to(device)


@torch.no_grad()
def evaluate(model: torch.nn.Module, loader, device, amp: bool = False) -> Dict[str, float]:
    """top-1 / top-5 accuracy (percent) of ``model`` over ``loader``."""
    was_training = model.training
    model.eval()
    correct1 = correct5 = total = 0
    for clips, labels, _ in loader:
        if clips is None:
            continue
        clips, labels = clips.to(device, non_blocking=True), labels.to(device)
        with torch.autocast(device.type, torch.float16, enabled=amp and device.type == "cuda"):
            logits = model(clips)
        top = logits.float().topk(min(5, logits.shape[1]), 1).indices
        correct1 += (top[:, 0] == labels).sum().item()
        correct5 += (top == labels[:, None]).any(1).sum().item()
        total += len(labels)
    model.train(was_training)
    return {"top1": 100.0 * correct1 / max(total, 1), "top5": 100.0 * correct5 / max(total, 1)}


def make_loaders(cfg: Dict, rank: int, world: int, seed: int):
    train_set, val_set = build_dataset(cfg["data"], "train"), build_dataset(cfg["data"], "val")
    t = cfg["train"]
    sampler = DistributedSampler(train_set, num_replicas=world, rank=rank, shuffle=True, seed=seed)
    workers = int(t.get("workers", 0))
    common = dict(num_workers=workers, collate_fn=collate_skip, pin_memory=torch.cuda.is_available())
    train = DataLoader(train_set, batch_size=int(t["batch_size"]), sampler=sampler, drop_last=True, **common)
    val = DataLoader(val_set, batch_size=int(t.get("eval_batch_size", t["batch_size"])), shuffle=False, **common)
    return train_set, val_set, sampler, train, val


def cosine(epochs: int, warmup: int = 0):
    def factor(epoch: int) -> float:
        if epoch < warmup:
            return (epoch + 1) / (warmup + 1)
        return 0.5 * (1 + math.cos(math.pi * (epoch - warmup) / max(1, epochs - warmup)))
    return factor


def method_phases(method) -> list:
    """[(name, parameters, optimizer options)]: ``method.phases()`` if it declares phases
    (each one pass over the data per epoch, in order, after ``method.set_phase(name, epoch)``),
    else one phase with every trainable parameter. Options None: SGD + cosine."""
    if hasattr(method, "phases"):
        return method.phases()
    return [("train", [p for p in method.parameters() if p.requires_grad], None)]


def make_phases(method, t: Dict, epochs: int) -> list:
    """[(name, optimizer, scheduler)]. SGD (momentum, weight decay except the method's
    ``no_decay_parameters``) with the cosine schedule, or for options
    {"optimizer": "adam", "lr", "betas"} Adam at a constant rate."""
    no_decay = {id(p) for p in method.no_decay_parameters()}
    out = []
    for name, params, options in method_phases(method):
        if options and options.get("optimizer") == "adam":
            betas = tuple(options.get("betas", (0.9, 0.999)))
            optimizer = torch.optim.Adam(params, lr=float(options["lr"]), betas=betas)
            scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: 1.0)
        else:
            groups = [{"params": [p for p in params if id(p) not in no_decay]},
                      {"params": [p for p in params if id(p) in no_decay], "weight_decay": 0.0}]
            optimizer = torch.optim.SGD(groups, lr=float(t["lr"]), momentum=float(t.get("momentum", 0.9)),
                                        weight_decay=float(t.get("weight_decay", 5e-4)),
                                        nesterov=bool(t.get("nesterov", False)))
            scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, cosine(epochs, int(t.get("warmup_epochs", 0))))
        out.append((name, optimizer, scheduler))
    return out


def fit(cfg: Dict, out_dir, *, resume: bool = False, stop_after: Optional[int] = None,
        progress: bool = True, callback: Optional[Callable] = None) -> Dict:
    """Train ``cfg["model"]`` with ``cfg["method"]`` (and ``cfg["teacher"]``, a model.pt path).

    ``stop_after``: return after that many epochs of this call (a time slice; the run
    continues with ``resume=True``). ``callback(epoch, method, row)`` runs after each
    epoch on every rank. Returns the summary dict (rank 0, run complete) or {}.
    """
    out = Path(out_dir)
    rank, world, device = distributed()
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
    t = cfg["train"]
    seed = int(cfg.get("seed", 0))
    seed_everything(seed)
    train_set, val_set, sampler, train_loader, val_loader = make_loaders(cfg, rank, world, seed)
    num_classes = train_set.num_classes
    student = build_model(cfg["model"], num_classes).to(device)
    teacher = load_model(cfg["teacher"], device) if cfg.get("teacher") else None
    probe = torch.stack([train_set[i][0] for i in range(2)]).to(device)
    method_cfg = dict(cfg.get("method_options") or {})
    method = build_method(cfg.get("method", "ce"), student, teacher, probe=probe, **method_cfg).to(device)
    trained = method
    if world > 1:
        trained = torch.nn.parallel.DistributedDataParallel(
            method, device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=len(method_phases(method)) > 1)   # a phase leaves the others' parameters unused

    epochs = int(t["epochs"])
    phases = make_phases(method, t, epochs)
    amp = bool(t.get("amp", True)) and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=amp)

    start_epoch, history = 0, []
    ckpt_path = out / "last.pt"
    if resume and ckpt_path.exists():
        ckpt = torch.load(ckpt_path, map_location=device, weights_only=False)
        method.load_state_dict(ckpt["method"])
        for (_, optimizer, scheduler), state in zip(phases, ckpt["phases"]):
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(ckpt["scaler"])
        set_rng_state(ckpt["rng"])
        start_epoch, history = ckpt["epoch"] + 1, ckpt["history"]

    writer = None
    if rank == 0 and t.get("tensorboard"):
        from torch.utils.tensorboard import SummaryWriter
        writer = SummaryWriter(str(out / "tensorboard"))
    tqdm = _tqdm(progress and rank == 0)
    end_epoch = epochs if stop_after is None else min(epochs, start_epoch + stop_after)
    for epoch in range(start_epoch, end_epoch):
        sampler.set_epoch(epoch)
        if hasattr(train_set, "set_epoch"):
            train_set.set_epoch(epoch)
        method.train()
        method.loss_seconds = 0.0
        began, row = time.perf_counter(), {"epoch": epoch + 1, "lr": phases[-1][1].param_groups[0]["lr"]}
        for name, optimizer, scheduler in phases:       # one pass over the data per phase
            if len(phases) > 1:
                method.set_phase(name, epoch)
            sums, seen, skipped = {}, 0, 0
            bar = tqdm(train_loader, desc=f"{cfg.get('name', 'run')} epoch {epoch + 1}/{epochs}", leave=False)
            for clips, labels, n_skipped in bar:
                skipped += n_skipped
                if clips is None:
                    continue
                clips, labels = clips.to(device, non_blocking=True), labels.to(device, non_blocking=True)
                with torch.autocast(device.type, torch.float16, enabled=amp):
                    loss, logits, terms = trained(clips, labels)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
                n = len(labels)
                seen += n
                terms = {"loss": loss.detach(), **terms, "acc": (logits.argmax(1) == labels).float().mean() * 100}
                for k, v in terms.items():
                    sums[k] = sums.get(k, 0.0) + float(v) * n
                if hasattr(bar, "set_postfix"):
                    bar.set_postfix(loss=f"{float(loss):.3f}")
            prefix = "train_" if name == phases[-1][0] else f"train_{name}_"   # the last phase: plain names
            row.update({f"{prefix}{k}": v / max(seen, 1) for k, v in sums.items()})
            scheduler.step()
        epoch_seconds = time.perf_counter() - began
        if skipped:
            print(f"[vkd] epoch {epoch + 1}: skipped {skipped} unreadable samples")
        if rank == 0:
            row.update({f"val_{k}": v for k, v in evaluate(method.student, val_loader, device, amp).items()})
        row.update(epoch_seconds=epoch_seconds, loss_seconds=method.loss_seconds, skipped=skipped)
        if getattr(method, "uncertainty", False):
            row.update({f"s_{n}": float(v) for n, v in zip(method.term_names, method.log_variances)})
        history.append(row)
        if rank == 0:
            atomic_save({"method": method.state_dict(), "scaler": scaler.state_dict(), "rng": rng_state(),
                         "phases": [{"name": n, "optimizer": o.state_dict(), "scheduler": s.state_dict()}
                                    for n, o, s in phases],
                         "epoch": epoch, "history": history, "config": cfg}, ckpt_path)
            _write_csv(out / "log.csv", history)
            if writer is not None:
                for k, v in row.items():
                    writer.add_scalar(k, v, epoch + 1)
            if progress:
                print(f"[{cfg.get('name', 'run')}] epoch {epoch + 1}/{epochs} loss {row.get('train_loss', 0):.4f} "
                      f"val top-1 {row['val_top1']:.2f} top-5 {row['val_top5']:.2f} ({epoch_seconds:.1f} s)", flush=True)
        if callback is not None:
            callback(epoch, method, row)
        if world > 1:
            dist.barrier()
    if writer is not None:
        writer.close()
    if rank != 0 or len(history) < epochs:
        return {}
    spec = {**cfg["model"], **(method.spec_extra() if hasattr(method, "spec_extra") else {})}
    atomic_save({"spec": spec, "num_classes": num_classes, "state_dict": method.student.state_dict()}, out / "model.pt")
    summary = {
        "name": cfg.get("name"), "method": cfg.get("method", "ce"), "seed": seed,
        "top1": history[-1]["val_top1"], "top5": history[-1]["val_top5"],
        "curve_top1": [h["val_top1"] for h in history],
        "epoch_seconds": float(np.mean([h["epoch_seconds"] for h in history])),
        "loss_seconds": float(np.mean([h["loss_seconds"] for h in history])),
        "params": sum(p.numel() for p in method.student.parameters()),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary


def _write_csv(path: Path, history) -> None:
    """The whole history, rewritten each epoch (so a resumed run never repeats a row)."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(history[-1]), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(history)
    os.replace(tmp, path)


def _tqdm(enabled: bool):
    if enabled:
        with contextlib.suppress(ImportError):
            from tqdm import tqdm
            return lambda it, **kw: tqdm(it, **kw)
    return lambda it, **kw: it
