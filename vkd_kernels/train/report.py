"""The reproduction table (markdown + JSON) and plots (accuracy curves, temporal spectra)."""
from __future__ import annotations

import json
import math
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


def _t_sf(t: float, dof: int) -> float:
    """P(T > t) for Student's t with ``dof`` degrees of freedom, t >= 0: I_x(dof/2, 1/2) / 2
    with x = dof / (dof + t^2), the regularised incomplete beta by Lentz's continued
    fraction (Numerical Recipes' betai / betacf; scipy is not a dependency)."""
    def betacf(a: float, b: float, x: float) -> float:
        tiny = 1e-300
        c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
        d = 1.0 / (d if abs(d) > tiny else tiny)
        h = d
        for m in range(1, 500):
            for aa in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                       -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
                d = 1.0 + aa * d
                d = 1.0 / (d if abs(d) > tiny else tiny)
                c = 1.0 + aa / c
                c = c if abs(c) > tiny else tiny
                h *= d * c
            if abs(d * c - 1.0) < 1e-15:
                break
        return h

    a, b, x = dof / 2.0, 0.5, dof / (dof + t * t)
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 0.5
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        ibeta = front * betacf(a, b, x) / a
    else:
        ibeta = 1.0 - front * betacf(b, a, 1.0 - x) / b
    return 0.5 * ibeta


def paired(values: List[float], base: List[float]) -> Dict:
    """Paired comparison of per-seed values with a baseline on the same seeds: mean
    difference, wins / ties / losses, two-sided paired t-test p and exact Wilcoxon
    signed-rank p (all 2^n sign patterns; zero differences dropped, tied ranks averaged;
    with n = 5 pairs its smallest possible p is 2/32 = 0.0625)."""
    d = np.asarray(values, np.float64) - np.asarray(base, np.float64)
    n = len(d)
    out = {"diff_mean": float(d.mean()), "wins": int((d > 0).sum()), "ties": int((d == 0).sum()),
           "losses": int((d < 0).sum()), "n": n, "t_p": None, "wilcoxon_p": None}
    if n > 1:
        sd = d.std(ddof=1)
        out["t_p"] = 1.0 if sd == 0 and d.mean() == 0 else (
            0.0 if sd == 0 else min(1.0, 2 * _t_sf(float(abs(d.mean()) / (sd / math.sqrt(n))), n - 1)))
    nz = d[d != 0]
    if len(nz):
        order = np.abs(nz).argsort()
        ranks = np.empty(len(nz))
        ranks[order] = np.arange(1, len(nz) + 1)
        for v in np.unique(np.abs(nz)):                 # average the ranks of ties
            ranks[np.abs(nz) == v] = ranks[np.abs(nz) == v].mean()
        w = ranks[nz > 0].sum()
        signs = ((np.arange(2 ** len(nz))[:, None] >> np.arange(len(nz))) & 1).astype(bool)
        null = (signs * ranks).sum(1)
        centre = ranks.sum() / 2
        out["wilcoxon_p"] = float(np.mean(np.abs(null - centre) >= abs(w - centre) - 1e-9))
    return out


def table(runs: Dict[str, List[Dict]], teachers: Optional[Dict[str, Dict]] = None, baseline: str = "ce") -> Dict:
    """Aggregate per-seed summaries: {method: {seeds, top1 (per seed), top1_mean, top1_std,
    ..., vs_<baseline>}}; ``teachers`` ({row name: summary}, e.g. the teacher and the
    pre-trained teacher before fine-tuning) come first; ``vs_<baseline>`` is :func:`paired`
    on the seeds a method shares with the baseline."""
    rows = {}
    for name, t in (teachers or {}).items():
        rows[name] = {"seeds": [t["seed"]], "top1": [t["top1"]], "top5": [t["top5"]],
                      "epoch_seconds": t["epoch_seconds"], "loss_seconds": t.get("loss_seconds"),
                      "params": t["params"], "threads": t.get("threads"), "minutes": _minutes([t])}
    for method, summaries in runs.items():
        rows[method] = {"seeds": [s["seed"] for s in summaries], "top1": [s["top1"] for s in summaries],
                        "top5": [s["top5"] for s in summaries],
                        "epoch_seconds": float(np.mean([s["epoch_seconds"] for s in summaries])),
                        "loss_seconds": _mean_or_none([s.get("loss_seconds") for s in summaries]),
                        "params": summaries[0]["params"], "threads": summaries[0].get("threads"),
                        "minutes": _minutes(summaries)}
    for row in rows.values():
        row["top1_mean"], row["top1_std"] = mean_std(row["top1"])
        row["top5_mean"], row["top5_std"] = mean_std(row["top5"])
    base = {s["seed"]: s["top1"] for s in runs.get(baseline, [])}
    for method, summaries in runs.items():
        shared = [s for s in summaries if s["seed"] in base]
        if method != baseline and len(shared) > 1:
            rows[method][f"vs_{baseline}"] = paired([s["top1"] for s in shared], [base[s["seed"]] for s in shared])
    return rows


def _minutes(summaries: List[Dict]) -> float:
    """Training minutes of the runs together (epochs x seconds per epoch: the training
    passes, without the validation)."""
    return float(sum(s.get("epochs", len(s["curve_top1"])) * s["epoch_seconds"] for s in summaries) / 60)


def markdown(rows: Dict, baseline: str = "ce") -> str:
    ce = rows.get(baseline, {}).get("top1_mean")
    lines = [f"| method | top-1 (%) | top-5 (%) | top-1 per seed | top-1 - {baseline.upper()} "
             f"| vs {baseline.upper()}: wins/ties/losses, t-test p, Wilcoxon p | s / epoch | s / epoch in losses "
             "| params |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, r in rows.items():
        delta = "" if ce is None or name == baseline or name.startswith("teacher") else f"{r['top1_mean'] - ce:+.2f}"
        p = r.get(f"vs_{baseline}")
        test = "" if p is None else (f"{p['wins']}/{p['ties']}/{p['losses']}, {_p(p['t_p'])}, {_p(p['wilcoxon_p'])}")
        loss_seconds = "n/a" if r["loss_seconds"] is None else format(r["loss_seconds"], ".3f")
        lines.append(f"| {name} | {r['top1_mean']:.2f} ± {r['top1_std']:.2f} "
                     f"| {r['top5_mean']:.2f} ± {r['top5_std']:.2f} "
                     f"| {', '.join(f'{v:.2f}' for v in r['top1'])} | {delta} | {test} | {r['epoch_seconds']:.2f} "
                     f"| {loss_seconds} | {r['params']:,} |")
    return "\n".join(lines) + "\n"


def _p(value: Optional[float]) -> str:
    return "n/a" if value is None else (f"{value:.2g}" if value < 0.01 else f"{value:.3f}")


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


def plots(out: Path, curves: Dict[str, List[List[float]]], spectra: Dict[str, np.ndarray],
          epochs: Optional[Dict[str, List[int]]] = None) -> List[str]:
    """accuracy.png (val top-1 per validated epoch, mean over seeds; ``epochs[name]``: those
    epochs, default 1, 2, ...) and spectra.png; [] without matplotlib."""
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
        x = (epochs or {}).get(name) or np.arange(1, len(runs[0]) + 1)
        ax.plot(x, np.mean(runs, axis=0), label=name, **style[name])
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
