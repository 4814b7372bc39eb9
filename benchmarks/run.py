"""Benchmark runner: ``python benchmarks/run.py [--op spectrum] [--quick] [--device cpu|cuda] [--out DIR]``.

Ops are discovered from ``benchmarks/cases_<op>.py`` modules, each defining ``OP`` (the
op name) and ``cases(device, quick) -> list[harness.Case]``; adding an op never touches
this file. For every (case, provider, mode) the runner records timings, memory and op
counts, then writes ``<out>/<device-slug>/<op>.{csv,md,png}`` and prints the markdown.
"""
from __future__ import annotations

import argparse
import csv
import datetime
import gc
import importlib
import os
import re
import sys
from pathlib import Path
from typing import Callable, Dict, List

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import torch  # noqa: E402
from harness import MODES, Case, count_ops, kept_for_backward, peak_mb, time_mode  # noqa: E402

COLUMNS = ["device", "torch", "date", "op", "shape", "provider", "mode", "median_ms", "p20_ms", "p80_ms",
           "peak_mb", "kept_mb", "kept_beyond_inputs_mb", "ops_full", "kernels_full", "gbps"]


def discover_ops() -> Dict[str, Callable[..., List[Case]]]:
    """Registry ``op name -> cases(device, quick)`` built from ``cases_*.py`` next to this file."""
    registry = {}
    for path in sorted(HERE.glob("cases_*.py")):
        module = importlib.import_module(path.stem)
        registry[module.OP] = module.cases
    return registry


def op_notes(op: str, device: str, quick: bool) -> str:
    """Extra markdown a cases module offers through ``notes(device, quick)`` (e.g. FLOP counts)."""
    for path in sorted(HERE.glob("cases_*.py")):
        module = importlib.import_module(path.stem)
        if module.OP == op and hasattr(module, "notes"):
            return module.notes(device, quick)
    return ""


def device_info(device: str):
    """(human-readable device name, filesystem slug)."""
    if device == "cuda":
        name = torch.cuda.get_device_name()
        return name, re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    cores = os.cpu_count()
    return f"cpu ({cores} cores, {torch.get_num_threads()} threads)", f"cpu-{cores}cores"


def bench_case(case: Case, device: str, *, warmup: int, reps: int) -> List[dict]:
    """All measurements of one case: one row per (provider, mode)."""
    rows = []
    inputs = case.make_inputs()
    for provider, factory in case.providers.items():
        fn = factory()
        per_mode = {mode: (time_mode(fn, inputs, mode, warmup=warmup, reps=reps), peak_mb(fn, inputs, mode))
                    for mode in MODES}
        kept, beyond = kept_for_backward(fn, inputs)
        ops, kernels = count_ops(fn, inputs)
        for mode, ((median, p20, p80), peak) in per_mode.items():
            gbps = case.min_bytes[mode] / (median * 1e-3) / 1e9 if device == "cuda" and mode in case.min_bytes else None
            rows.append(dict(op=case.op, shape=case.label, provider=provider, mode=mode, median_ms=median,
                             p20_ms=p20, p80_ms=p80, peak_mb=peak, kept_mb=kept, kept_beyond_inputs_mb=beyond,
                             ops_full=ops, kernels_full=kernels, gbps=gbps))
        del fn
        gc.collect()
    return rows


def fmt(value, spec: str = ".3g") -> str:
    return "" if value is None else format(value, spec) if isinstance(value, float) else str(value)


def markdown(rows: List[dict], header: str) -> str:
    """Timing table (providers side by side, speedups of the first provider) and a memory/ops table."""
    providers = list(dict.fromkeys(r["provider"] for r in rows))
    base, others = providers[0], providers[1:]
    by = {(r["shape"], r["mode"], r["provider"]): r for r in rows}
    shapes = list(dict.fromkeys(r["shape"] for r in rows))
    lines = [header, "", "Median time in ms (p20-p80 in the CSV); speedup = other / " + base + ".", "",
             "| shape | mode | " + " | ".join(f"{p} ms" for p in providers) + " | "
             + " | ".join(f"{base} vs {p}" for p in others) + " |",
             "|" + "---|" * (2 + len(providers) + len(others))]
    for shape in shapes:
        for mode in MODES:
            t = {p: by[shape, mode, p]["median_ms"] for p in providers if (shape, mode, p) in by}
            speed = [f"{t[p] / t[base]:.2f}x" if p in t and base in t else "" for p in others]
            lines.append(f"| {shape} | {mode} | " + " | ".join(fmt(t.get(p)) for p in providers) + " | "
                         + " | ".join(speed) + " |")
    lines += ["", "Memory (MB) and op counts per forward+backward.", "",
              "| shape | provider | kept for backward | kept beyond inputs | peak (full) | ops (full) |",
              "|---|---|---|---|---|---|"]
    for shape in shapes:
        for p in providers:
            r = by.get((shape, "full", p))
            if r:
                lines.append(f"| {shape} | {p} | {fmt(r['kept_mb'])} | {fmt(r['kept_beyond_inputs_mb'])} | "
                             f"{fmt(r['peak_mb'])} | {r['ops_full']}"
                             + (f" ({r['kernels_full']} kernels)" if r["kernels_full"] is not None else "") + " |")
    return "\n".join(lines) + "\n"


def plot(rows: List[dict], title: str, path: Path) -> None:
    """Grouped bars of the median ``full`` time per shape and provider (log scale)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    full = [r for r in rows if r["mode"] == "full"]
    providers = list(dict.fromkeys(r["provider"] for r in full))
    shapes = list(dict.fromkeys(r["shape"] for r in full))
    t = {(r["shape"], r["provider"]): r["median_ms"] for r in full}
    width = 0.8 / len(providers)
    fig, ax = plt.subplots(figsize=(1.8 + 2.2 * len(shapes), 4.5))
    for i, p in enumerate(providers):
        xs = [j + (i - (len(providers) - 1) / 2) * width for j in range(len(shapes))]
        ax.bar(xs, [t.get((s, p), 0) for s in shapes], width, label=p)
    ax.set_xticks(range(len(shapes)), shapes)
    ax.set_yscale("log")
    ax.set_ylabel("median forward+backward time (ms)")
    ax.set_title(title, fontsize=9)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def progress(items):
    try:
        from tqdm import tqdm
        return tqdm(items, file=sys.stderr)
    except ImportError:
        return items


def main(argv=None) -> None:
    registry = discover_ops()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--op", choices=sorted(registry), action="append",
                        help="op to benchmark (repeatable; default: all)")
    parser.add_argument("--quick", action="store_true", help="first shape only, fewer repetitions")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args(argv)

    # Each shape compiles once per provider; keep Dynamo from giving up on recompiles.
    for knob in ("recompile_limit", "cache_size_limit"):
        if hasattr(torch._dynamo.config, knob):
            setattr(torch._dynamo.config, knob, 64)
    warmup, reps = (1, 5) if args.quick else (2, 15)
    device_name, slug = device_info(args.device)
    out_dir = args.out / slug
    out_dir.mkdir(parents=True, exist_ok=True)
    meta = dict(device=device_name, torch=torch.__version__, date=datetime.date.today().isoformat())

    for op in args.op or sorted(registry):
        rows = []
        for case in progress(registry[op](args.device, args.quick)):
            rows += [{**meta, **r} for r in bench_case(case, args.device, warmup=warmup, reps=reps)]
        with open(out_dir / f"{op}.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=COLUMNS)
            writer.writeheader()
            writer.writerows({k: fmt(r[k], ".6g") for k in COLUMNS} for r in rows)
        header = f"## {op} on {device_name} (torch {meta['torch']}, {meta['date']}{', quick' if args.quick else ''})"
        table = markdown(rows, header) + op_notes(op, args.device, args.quick)
        (out_dir / f"{op}.md").write_text(table)
        plot(rows, header.lstrip("# "), out_dir / f"{op}.png")
        print(table)
        print(f"wrote {out_dir / op}.csv/.md/.png")


if __name__ == "__main__":
    main()
