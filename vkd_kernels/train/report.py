"""The reproduction table (markdown + JSON) and plots (accuracy curves, temporal spectra)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import torch

from .hooks import FeatureHooks, as_video


def mean_std(values: List[float]) -> tuple:
    v = np.asarray(values, dtype=np.float64)
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0


def _mean_or_none(values) -> Optional[float]:
    """The mean of the values that are not None (loss timing is opt-in), or None."""
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def table(runs: Dict[str, List[Dict]], teacher: Optional[Dict] = None) -> Dict:
    """Aggregate per-seed summaries: {method: {top1_mean, top1_std, ...}}."""
    rows = {}
    if teacher:
        rows["teacher"] = {"seeds": [teacher["seed"]], "top1": [teacher["top1"]], "top5": [teacher["top5"]],
                           "epoch_seconds": teacher["epoch_seconds"], "loss_seconds": teacher.get("loss_seconds"),
                           "params": teacher["params"]}
    for method, summaries in runs.items():
        rows[method] = {"seeds": [s["seed"] for s in summaries], "top1": [s["top1"] for s in summaries],
                        "top5": [s["top5"] for s in summaries],
                        "epoch_seconds": float(np.mean([s["epoch_seconds"] for s in summaries])),
                        "loss_seconds": _mean_or_none([s.get("loss_seconds") for s in summaries]),
                        "params": summaries[0]["params"]}
    for row in rows.values():
        row["top1_mean"], row["top1_std"] = mean_std(row["top1"])
        row["top5_mean"], row["top5_std"] = mean_std(row["top5"])
    return rows


def markdown(rows: Dict) -> str:
    ce = rows.get("ce", {}).get("top1_mean")
    lines = ["| method | top-1 (%) | top-5 (%) | top-1 per seed | top-1 - CE | s / epoch | s / epoch in losses "
             "| params |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, r in rows.items():
        delta = "" if ce is None or name in ("teacher", "ce") else f"{r['top1_mean'] - ce:+.2f}"
        loss_seconds = "n/a" if r["loss_seconds"] is None else format(r["loss_seconds"], ".3f")
        lines.append(f"| {name} | {r['top1_mean']:.2f} ± {r['top1_std']:.2f} "
                     f"| {r['top5_mean']:.2f} ± {r['top5_std']:.2f} "
                     f"| {', '.join(f'{v:.2f}' for v in r['top1'])} | {delta} | {r['epoch_seconds']:.2f} "
                     f"| {loss_seconds} | {r['params']:,} |")
    return "\n".join(lines) + "\n"


@torch.no_grad()
def temporal_spectrum(model: torch.nn.Module, loader, stage: Optional[str] = None, max_batches: int = 8) -> np.ndarray:
    """Mean |rfft over time| of a stage's features (default: last), averaged over
    samples, channels and positions and normalised to sum 1: shape (T//2 + 1,)."""
    stage = stage or model.feature_names[-1]
    model.eval()
    total, count = None, 0
    with FeatureHooks(model, [stage]) as hooks:
        for i, (clips, _, _) in enumerate(loader):
            if i == max_batches:
                break
            if clips is None:          # a batch of unreadable samples
                continue
            model(clips)
            f = as_video(hooks.pop()[0], getattr(model, "num_segments", None)).float()
            a = torch.fft.rfft(f, dim=2).abs().mean(dim=(0, 1, 3, 4))
            total = a if total is None else total + a
            count += 1
    s = (total / count).numpy()
    return s / s.sum()


def _styles(names: List[str]) -> Dict[str, Dict]:
    """One look per name, the same in every plot: the 10 default colours, then again with
    another dash pattern, so no two of up to 30 lines look alike; teacher and ce thicker."""
    return {name: dict(color=f"C{i % 10}", ls=("-", "--", ":")[i // 10 % 3],
                       lw=2.2 if name in ("teacher", "ce") else 1.2) for i, name in enumerate(names)}


def _save(fig, ax, path: Path) -> str:
    """Grid, legend beside the axes, write ``path``; returns its file name."""
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return path.name


def plots(out: Path, curves: Dict[str, List[List[float]]], spectra: Dict[str, np.ndarray]) -> List[str]:
    """accuracy.png (val top-1 per epoch, mean over seeds) and spectra.png; [] without matplotlib."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("[vkd] matplotlib is not installed: no plots (pip install 'vkd-kernels[bench]')")
        return []
    written = []
    style = _styles(list(dict.fromkeys([*curves, *spectra])))
    fig, ax = plt.subplots(figsize=(8.5, 4.5))
    for name, runs in curves.items():
        ax.plot(np.arange(1, len(runs[0]) + 1), np.mean(runs, axis=0), label=name, **style[name])
    ax.set(xlabel="epoch", ylabel="val top-1 (%)", title="accuracy (mean over seeds)")
    written.append(_save(fig, ax, out / "accuracy.png"))
    if spectra:
        fig, ax = plt.subplots(figsize=(8.5, 4.5))
        for name, s in spectra.items():
            ax.plot(np.arange(len(s)), s, marker="o", label=name, **style[name])
        ax.set(xlabel="temporal frequency bin k (cycles per clip)", ylabel="share of mean |rfft|",
               title="last-stage temporal spectra: teacher vs students (seed 0)")
        written.append(_save(fig, ax, out / "spectra.png"))
    plt.close("all")
    return written


def write(out: Path, rows: Dict, header: str, extra: Dict) -> str:
    """results.md and results.json under ``out``; returns the markdown."""
    text = header + "\n" + markdown(rows)
    (out / "results.md").write_text(text)
    (out / "results.json").write_text(json.dumps({"rows": rows, **extra}, indent=1, default=float))
    return text
