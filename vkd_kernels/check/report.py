"""The report of ``python -m vkd_kernels.check``: ``check.json`` (everything) and
``check.md`` (failures first, then the summary, tolerances, sanitizer and benchmark)."""
from __future__ import annotations

import json
import os
from collections import defaultdict
from typing import Dict, List


def _fmt(value, spec=".4g") -> str:
    return "" if value is None else format(value, spec)


def markdown(data: dict) -> str:
    env, summary = data["environment"], data["summary"]
    status = "PASS" if data["exit_code"] == 0 else "FAIL"
    lines = [f"# vkd_kernels.check on {env['device']}: {status}", "",
             f"`{data['command']}`", "",
             f"{env['date']}; torch {env['torch']}, triton {env['triton']}, CUDA {env['cuda']}, "
             f"python {env['python']}; {data['seconds']:.1f} s in all.", "",
             f"{summary['checks']} checks: {summary['passed']} passed, {summary['failed']} failed; "
             f"sanitizer runs failed: {summary['sanitizer_failed']}; benchmark rows failed: {summary['bench_failed']}.",
             ""]
    failures = [c for c in data["checks"] if not c["passed"]]
    if failures:
        lines += ["## Failures", "", "| op | backend | dtype | case | mode | error |", "|---|---|---|---|---|---|"]
        for c in failures:
            error = (c["error"] or "").replace("|", "\\|")
            lines.append(f"| {c['op']} | {c['backend']} | {c['dtype']} | {c['case']} | {c['mode']} | {error} |")
        lines.append("")
    if data["skipped"]:
        lines += ["## Skipped", ""] + [f"- {s['what']}: {s['why']}" for s in data["skipped"]] + [""]
    lines += ["## Checks per op, backend and mode (passed / run)", ""]
    table: Dict[tuple, Dict[str, List[int]]] = defaultdict(lambda: defaultdict(lambda: [0, 0]))
    modes = []
    for c in data["checks"]:
        cell = table[(c["op"], c["backend"])][c["mode"]]
        cell[0] += c["passed"]
        cell[1] += 1
        if c["mode"] not in modes:
            modes.append(c["mode"])
    lines += ["| op | backend | " + " | ".join(modes) + " |", "|---|---|" + "---|" * len(modes)]
    for (op, backend), cells in table.items():
        lines.append(f"| {op} | {backend} | " + " | ".join(
            f"{cells[m][0]}/{cells[m][1]}" if m in cells else "" for m in modes) + " |")
    lines += ["", "Largest relative error per op, backend and dtype (max over cases, modes and quantities; "
              "`max |got - expected| / max |expected|`, expected in float64):", "",
              "| op | backend | dtype | largest error | its tolerance |", "|---|---|---|---|---|"]
    worst: Dict[tuple, tuple] = {}
    for c in data["checks"]:
        for name, error in c["errors"].items():
            if error is None or error != error or error == float("inf"):
                continue
            key = (c["op"], c["backend"], c["dtype"])
            if key not in worst or error > worst[key][0]:
                worst[key] = (error, c["tolerance"][name])
    for (op, backend, dtype), (error, tolerance) in worst.items():
        lines.append(f"| {op} | {backend} | {dtype} | {error:.3g} | {tolerance:.3g} |")
    lines += ["", "## Tolerances", "", data["tolerance_rule"], "", "| dtype | tolerance | why |", "|---|---|---|"]
    lines += [f"| {t['dtype']} | {t['tolerance']:g} | {t['why']} |" for t in data["tolerances"]]
    lines.append("")
    if data["sanitizer"]:
        lines += ["## compute-sanitizer (cuda backend, quick cases)", "", "| tool | result | seconds | detail |",
                  "|---|---|---|---|"]
        for s in data["sanitizer"]:
            detail = (s["error"] or "").replace("|", "\\|")
            lines.append(f"| {s['tool']} | {'pass' if s['passed'] else 'FAIL'} | {s['seconds']} | {detail} |")
        lines.append("")
    bench = data.get("bench")
    if bench:
        lines += ["## Benchmark (float32, triton.testing.do_bench, L2 flushed)", "",
                  "Device copy bandwidth (dst.copy_(src), 512 MiB, read + write): "
                  + (f"{bench['copy_gbps']:.0f} GB/s." if bench.get("copy_gbps") is not None else "not measured.")
                  + (f" The benchmark failed: {bench['error']}" if bench.get("error") else ""),
                  "", "| op | shape | provider | mode | median ms | p20 | p80 | min MB | GB/s | % copy |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for r in bench["rows"]:
            if r["error"]:
                lines.append(f"| {r['op']} | {r['shape']} | {r['provider']} | {r['mode']} | FAILED: "
                             f"{r['error'].replace('|', '/')} | | | | | |")
                continue
            lines.append(f"| {r['op']} | {r['shape']} | {r['provider']} | {r['mode']} | {_fmt(r['median_ms'])} | "
                         f"{_fmt(r['p20_ms'])} | {_fmt(r['p80_ms'])} | {r['min_bytes'] / 2 ** 20:.1f} | "
                         f"{_fmt(r['gbps'], '.0f')} | {_fmt(r['pct_copy'], '.0f')} |")
        lines.append("")
    lines += ["## Phases", "", "| phase | seconds |", "|---|---|"]
    lines += [f"| {name} | {seconds:.1f} |" for name, seconds in data["phases"].items()]
    return "\n".join(lines) + "\n"


def write(out_dir: str, data: dict) -> List[str]:
    """Writes check.json and check.md into ``out_dir``; returns their paths."""
    os.makedirs(out_dir, exist_ok=True)
    paths = [os.path.join(out_dir, "check.json"), os.path.join(out_dir, "check.md")]

    def clean(value):  # JSON has no inf/NaN: a failed comparison's error is null
        if isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
            return None
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        if isinstance(value, list):
            return [clean(v) for v in value]
        return value
    cleaned = clean(data)
    with open(paths[0], "w") as f:
        json.dump(cleaned, f, indent=1)
        f.write("\n")
    with open(paths[1], "w") as f:
        f.write(markdown(cleaned))
    return paths
