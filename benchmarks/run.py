"""Benchmark runner: ``python benchmarks/run.py [--op spectrum] [--quick] [--device cpu|cuda] [--cuda-graph]
[--provider vkd] [--out DIR]``.

Ops are discovered from ``benchmarks/cases_<op>.py`` modules, each defining ``OP`` (the
op name) and ``cases(device, quick) -> list[harness.Case]``; adding an op never touches
this file. The run first measures the machine's limits (copy bandwidth, launch cost);
for every (case, provider, mode) it records timings, memory, launch counts and the
roofline time, then writes ``<out>/<device-slug>/<op>[-graph].{csv,md,png}`` and prints
the markdown.
"""
from __future__ import annotations

import argparse
import csv
import datetime
import gc
import importlib
import sys
from pathlib import Path
from typing import Callable, Dict, List

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import harness  # noqa: E402
import torch  # noqa: E402
from harness import MODES, Case  # noqa: E402

from vkd_kernels.check.cli import device_slug  # noqa: E402

COLUMNS = ["device", "torch", "date", "op", "shape", "provider", "mode", "cuda_graph", "median_ms", "p20_ms",
           "p80_ms", "peak_mb", "kept_mb", "kept_beyond_inputs_mb", "ops_full", "kernels_full", "launches", "memcpys",
           "memsets", "min_bytes", "gbps", "copy_gbps", "launch_us", "roofline_ms", "of_roofline"]


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
    """(human-readable device name, filesystem slug): vkd_kernels.check's, and on the CPU the thread count."""
    name, slug = device_slug(device)
    return (name[:-1] + f", {torch.get_num_threads()} threads)" if device == "cpu" else name), slug


def machine_limits(device: str, cuda_graph: bool = False, copy_bytes=None) -> Dict[str, float]:
    """``copy_gbps`` and ``launch_us`` of this machine, measured now (harness.copy_bandwidth,
    harness.launch_cost_us), for the roofline of every row of the run."""
    dev = torch.device(device)
    return dict(copy_gbps=harness.copy_bandwidth(dev, copy_bytes), launch_us=harness.launch_cost_us(dev, cuda_graph))


def bench_case(case: Case, device: str, *, warmup: int, reps: int, limits: Dict[str, float],
               cuda_graph: bool = False, providers=None, budget_s: float = 1.5) -> List[dict]:
    """All measurements of one case: one row per (provider, mode).

    Memory and launch counts are of the eager call; with ``cuda_graph`` only the timing
    replays CUDA graphs (harness.graphed), at the graph launch cost of ``limits``.
    On CUDA ``launches`` are the kernels (memcpys and memsets apart, in their columns),
    on the CPU the dispatcher ops; the roofline charges the launch cost for each of them.
    """
    rows = []
    inputs = case.make_inputs()
    for provider, factory in case.providers.items():
        if providers and provider not in providers:
            continue
        try:
            rows += _bench_provider(case, provider, factory, inputs, warmup=warmup, reps=reps,
                                    limits=limits, cuda_graph=cuda_graph, budget_s=budget_s)
        except Exception as error:  # noqa: BLE001 - one failing provider (a compile error, a CUDA error) is reported
            first_line = (str(error).splitlines() or [""])[0][:300]
            message = f"{case.op} {case.label} {provider}: {type(error).__name__}: {first_line}"
            print(f"FAILED {message}", file=sys.stderr)
            FAILURES.append(message)
        gc.collect()
    return rows


FAILURES: List[str] = []  # "op shape provider: error" of the providers that raised, in this process


def _bench_provider(case: Case, provider: str, factory, inputs, *, warmup: int, reps: int,
                    limits: Dict[str, float], cuda_graph: bool, budget_s: float) -> List[dict]:
    """The rows of one provider (bench_case)."""
    rows = []
    fn = factory()
    timed_fn = harness.graphed(fn, inputs) if cuda_graph else fn
    # timed first: the warm-up compiles (torch.compile), which the counts must not see
    times = {mode: harness.time_mode(timed_fn, inputs, mode, warmup=warmup, reps=reps, budget_s=budget_s)
             for mode in MODES}
    counts = {mode: harness.count_ops(fn, inputs, mode) for mode in MODES}
    peaks = {mode: harness.peak_mb(fn, inputs, mode) for mode in MODES}
    kept, beyond = harness.kept_for_backward(fn, inputs)
    for mode in MODES:
        (median, p20, p80), c, nbytes = times[mode], counts[mode], case.min_bytes.get(mode)
        launches = c["ops"] if c["kernels"] is None else c["kernels"]
        every = None if launches is None else launches + (c["memcpys"] or 0) + (c["memsets"] or 0)
        roof = harness.roofline_ms(nbytes, limits["copy_gbps"], every, limits["launch_us"])
        rows.append(dict(op=case.op, shape=case.label, provider=provider, mode=mode, cuda_graph=cuda_graph,
                         median_ms=median, p20_ms=p20, p80_ms=p80, peak_mb=peaks[mode], kept_mb=kept,
                         kept_beyond_inputs_mb=beyond, ops_full=counts["full"]["ops"],
                         kernels_full=counts["full"]["kernels"], launches=launches, memcpys=c["memcpys"],
                         memsets=c["memsets"], min_bytes=nbytes,
                         gbps=None if nbytes is None else nbytes / (median * 1e-3) / 1e9,
                         roofline_ms=roof, of_roofline=None if roof is None else roof / median, **limits))
    del fn, timed_fn
    return rows


def fmt(value, spec: str = ".3g") -> str:
    return "" if value is None else format(value, spec) if isinstance(value, float) else str(value)


def _cell(row) -> str:
    """``median [roofline, of]`` of one row."""
    if row is None:
        return ""
    if row["roofline_ms"] is None:
        return fmt(row["median_ms"])
    return f"{fmt(row['median_ms'])} [{fmt(row['roofline_ms'])}, {100 * row['of_roofline']:.0f}%]"


def markdown(rows: List[dict], header: str) -> str:
    """Timing table (providers side by side, each time with its roofline, speedups of the
    first provider) and a memory/launch-count table."""
    providers = list(dict.fromkeys(r["provider"] for r in rows))
    base, others = providers[0], providers[1:]
    by = {(r["shape"], r["mode"], r["provider"]): r for r in rows}
    shapes = list(dict.fromkeys(r["shape"] for r in rows))
    limits = rows[0]
    device = "the device" if "cpu" not in rows[0]["device"] else "the CPU"
    lines = [header, "",
             f"Measured in this run: copy bandwidth {limits['copy_gbps']:.4g} GB/s (dst.copy_(src), read + write), "
             f"launch cost {limits['launch_us']:.3g} us ({'CUDA-graph replay of ' if limits['cuda_graph'] else ''}"
             f"x.add_(1) on one element, back to back, on {device})"
             + (f"; host malloc: {limits['malloc']}." if "malloc" in limits else "."), "",
             "Median time in ms (p20-p80 in the CSV) [roofline ms = min bytes / copy bandwidth + launches x launch "
             "cost, and roofline / median]; speedup = other / " + base + ".", "",
             "| shape | mode | " + " | ".join(f"{p} ms [roofline, of]" for p in providers) + " | "
             + " | ".join(f"{base} vs {p}" for p in others) + " |",
             "|" + "---|" * (2 + len(providers) + len(others))]
    for shape in shapes:
        for mode in MODES:
            t = {p: by[shape, mode, p]["median_ms"] for p in providers if (shape, mode, p) in by}
            speed = [f"{t[p] / t[base]:.2f}x" if p in t and base in t else "" for p in others]
            lines.append(f"| {shape} | {mode} | " + " | ".join(_cell(by.get((shape, mode, p))) for p in providers)
                         + " | " + " | ".join(speed) + " |")
    kernels = rows[0]["kernels_full"] is not None
    unit = "kernels (memcpys, memsets)" if kernels else "dispatcher ops"
    lines += ["", f"Memory (MB) per forward+backward; launches = {unit} per forward / backward / full.", "",
              "| shape | provider | kept for backward | kept beyond inputs | peak (full) | launches fwd / bwd / full |",
              "|---|---|---|---|---|---|"]

    def launches(r) -> str:
        if r is None:
            return "?"
        return str(r["launches"]) + (f" ({r['memcpys']}, {r['memsets']})" if kernels else "")

    for shape in shapes:
        for p in providers:
            r = by.get((shape, "full", p))
            if r:
                counts = " / ".join(launches(by.get((shape, m, p))) for m in MODES)
                lines.append(f"| {shape} | {p} | {fmt(r['kept_mb'])} | {fmt(r['kept_beyond_inputs_mb'])} | "
                             f"{fmt(r['peak_mb'])} | {counts} |")
    return "\n".join(lines) + "\n"


def plot(rows: List[dict], title: str, path: Path) -> None:
    """Grouped bars of the median ``full`` time per shape and provider (log scale); without
    matplotlib (the bench extra) a line says so and the CSV and markdown stand alone."""
    try:
        import matplotlib
    except ImportError:
        print(f"no plot {path.name}: matplotlib is not installed (pip install 'vkd-kernels[bench]')")
        return
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
    parser.add_argument("--cuda-graph", action="store_true",
                        help="time the replay of captured CUDA graphs (torch.cuda.make_graphed_callables; CUDA only)")
    parser.add_argument("--provider", action="append", help="provider to run (repeatable; default: all)")
    parser.add_argument("--system-malloc", action="store_true",
                        help="CPU: keep glibc malloc's defaults (large buffers fresh mapped memory, page-faulted "
                             "on every allocation); default: freed memory kept (harness.keep_freed_memory)")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args(argv)
    if args.cuda_graph and args.device != "cuda":
        parser.error("--cuda-graph needs --device cuda")

    # Each shape compiles once per provider; keep Dynamo from giving up on recompiles.
    for knob in ("recompile_limit", "cache_size_limit"):
        if hasattr(torch._dynamo.config, knob):
            setattr(torch._dynamo.config, knob, 64)
    warmup, reps = (1, 5) if args.quick else (2, 15)  # CPU; on CUDA do_bench fills the budget
    budget_s = 0.5 if args.quick else 1.5
    device_name, slug = device_info(args.device)
    out_dir = args.out / slug
    out_dir.mkdir(parents=True, exist_ok=True)
    meta = dict(device=device_name, torch=torch.__version__, date=datetime.date.today().isoformat())
    kept = args.device == "cpu" and not args.system_malloc and harness.keep_freed_memory()
    limits = machine_limits(args.device, args.cuda_graph)
    limits["malloc"] = "freed memory kept (mallopt)" if kept else "the C library's defaults"
    suffix = "-graph" if args.cuda_graph else ""

    for op in args.op or sorted(registry):
        rows = []
        for case in progress(registry[op](args.device, args.quick)):
            rows += [{**meta, **r} for r in bench_case(case, args.device, warmup=warmup, reps=reps, limits=limits,
                                                       cuda_graph=args.cuda_graph, providers=args.provider,
                                                       budget_s=budget_s)]
        with open(out_dir / f"{op}{suffix}.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=COLUMNS)
            writer.writeheader()
            writer.writerows({k: fmt(r[k], ".6g") for k in COLUMNS} for r in rows)
        header = (f"## {op} on {device_name} (torch {meta['torch']}, {meta['date']}{', quick' if args.quick else ''}"
                  f"{', CUDA graphs' if args.cuda_graph else ''})")
        table = markdown(rows, header) + op_notes(op, args.device, args.quick)
        failed = [f for f in FAILURES if f.startswith(f"{op} ")]
        if failed:
            table += "\nFailed (no rows): " + "; ".join(failed) + "\n"
        (out_dir / f"{op}{suffix}.md").write_text(table)
        plot(rows, header.lstrip("# "), out_dir / f"{op}{suffix}.png")
        print(table)
        print(f"wrote {out_dir / op}{suffix}.csv/.md/.png")


if __name__ == "__main__":
    main()
