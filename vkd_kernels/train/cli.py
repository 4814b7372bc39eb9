"""The ``vkd`` command: train, distill, evaluate, reproduce.

    vkd train --recipe synthetic-quick --role teacher --out runs/teacher
    vkd distill --recipe synthetic-quick --method kd --teacher runs/teacher/model.pt --out runs/kd
    vkd evaluate --recipe synthetic-quick --checkpoint runs/kd/model.pt
    vkd reproduce --recipe synthetic-quick --out runs/quick          # teacher once, then every method
    torchrun --nproc_per_node 4 -m vkd_kernels.train.cli distill ...  # multi-GPU (DDP)

Every training command takes ``--resume`` (continue from ``last.pt``), ``--seed`` and
``--set key.sub=value`` (override a recipe entry).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from . import report
from .config import load_recipe, recipe_names, run_config
from .data import build_dataset, collate_skip
from .engine import evaluate, fit, load_model


def _common(p: argparse.ArgumentParser, out: bool = True) -> None:
    p.add_argument("--recipe", required=True, help=f"a YAML path or a built-in name ({', '.join(recipe_names())})")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a recipe entry")
    if out:
        p.add_argument("--out", required=True, help="output folder")
        p.add_argument("--resume", action="store_true", help="continue from <out>/last.pt")
        p.add_argument("--no-progress", action="store_true", help="no progress bars or per-epoch lines")


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="vkd", description="Reference trainer of vkd-kernels.")
    ap.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    sub = ap.add_subparsers(dest="command", required=True)
    p = sub.add_parser("train", help="train a teacher or a student with cross-entropy")
    _common(p)
    p.add_argument("--role", choices=("teacher", "student"), default="teacher")
    p.add_argument("--method", default="ce", help="a method without teacher: ce, or gkd_repr (a GKD teacher)")
    p.add_argument("--seed", type=int, default=0)
    p = sub.add_parser("distill", help="train the student with a distillation method")
    _common(p)
    p.add_argument("--method", required=True)
    p.add_argument("--teacher", required=True, help="the teacher's model.pt")
    p.add_argument("--seed", type=int, default=0)
    p = sub.add_parser("evaluate", help="top-1/top-5 of a model.pt on the recipe's val split")
    _common(p, out=False)
    p.add_argument("--checkpoint", required=True)
    p = sub.add_parser("reproduce", help="teacher once, then every method x seed; table and plots")
    _common(p)
    p.add_argument("--seeds", type=int, nargs="+", help="default: the recipe's reproduce.seeds")
    p.add_argument("--methods", nargs="+", help="default: the recipe's reproduce.methods")
    from .data.formats import add_data_parser
    add_data_parser(sub)               # vkd data: official annotation files -> our lists
    return ap


def reproduce(recipe, out: Path, seeds, methods, resume: bool, progress: bool) -> str:
    from .methods import REGISTRY
    missing = [m for m in methods if m not in REGISTRY]
    if missing:
        print(f"[vkd] not available in this build, left out: {', '.join(missing)}", flush=True)
        methods = [m for m in methods if m in REGISTRY]
    began = time.perf_counter()
    teacher_dir = out / "teacher"
    if not (teacher_dir / "summary.json").exists():
        fit(run_config(recipe, "teacher", seed=int(recipe.get("teacher_seed", 0))), teacher_dir,
            resume=resume, progress=progress)
    teacher = json.loads((teacher_dir / "summary.json").read_text())

    def teacher_for(method: str) -> Path:
        """The ce teacher, or for GKD a teacher trained with its own method (``teacher_method``)."""
        name = getattr(REGISTRY[method][0], "teacher_method", None)
        if name is None:
            return teacher_dir
        path = out / f"teacher-{name}"
        if not (path / "summary.json").exists():
            fit(run_config(recipe, "teacher", method=name, seed=int(recipe.get("teacher_seed", 0))), path,
                resume=resume, progress=progress)
        return path
    runs, curves = {}, {"teacher": [teacher["curve_top1"]]}
    for method in methods:
        for seed in seeds:
            run_dir = out / method / f"seed{seed}"
            if not (run_dir / "summary.json").exists():
                cfg = run_config(recipe, "student", method=method, seed=seed,
                                 teacher=str(teacher_for(method) / "model.pt"))
                fit(cfg, run_dir, resume=resume, progress=progress)
            summary = json.loads((run_dir / "summary.json").read_text())
            runs.setdefault(method, []).append(summary)
            curves.setdefault(method, []).append(summary["curve_top1"])
    rows = report.table(runs, teacher)
    val = torch.utils.data.DataLoader(build_dataset(recipe["data"], "val"), batch_size=32, collate_fn=collate_skip)
    spectra = {"teacher": report.temporal_spectrum(load_model(teacher_dir / "model.pt"), val)}
    for method in methods:
        spectra[method] = report.temporal_spectrum(load_model(out / method / f"seed{seeds[0]}" / "model.pt"), val)
    minutes = (time.perf_counter() - began) / 60
    header = (f"# Reproduction: recipe `{recipe.get('name')}`, seeds {list(seeds)}\n\n"
              f"Validation top-1/top-5 after the last epoch, mean ± std over seeds (sample std); "
              f"'s / epoch in losses' is the forward time spent in the loss terms. "
              f"This invocation took {minutes:.1f} min on {torch.get_num_threads()} threads.\n")
    text = report.write(out, rows, header, {"recipe": recipe, "seeds": list(seeds),
                                           "spectra": {k: v.tolist() for k, v in spectra.items()}})
    report.plots(out, curves, spectra)
    return text


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.command == "data":
        from .data.formats import run_data
        print(json.dumps(run_data(args)))
        return 0
    recipe = load_recipe(args.recipe, args.set)
    progress = not getattr(args, "no_progress", False)
    if args.command == "train":
        summary = fit(run_config(recipe, args.role, method=args.method, seed=args.seed), args.out,
                      resume=args.resume, progress=progress)
        if summary:
            print(json.dumps(summary))
    elif args.command == "distill":
        cfg = run_config(recipe, "student", method=args.method, seed=args.seed, teacher=args.teacher)
        summary = fit(cfg, args.out, resume=args.resume, progress=progress)
        if summary:
            print(json.dumps(summary))
    elif args.command == "evaluate":
        val = build_dataset(recipe["data"], "val")
        loader = torch.utils.data.DataLoader(val, batch_size=int(recipe["train"].get("batch_size", 32)),
                                             collate_fn=collate_skip)
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        print(json.dumps(evaluate(load_model(args.checkpoint, device), loader, device)))
    else:
        seeds = args.seeds or recipe["reproduce"]["seeds"]
        methods = args.methods or recipe["reproduce"]["methods"]
        print(reproduce(recipe, Path(args.out), seeds, methods, args.resume, progress))
    return 0


if __name__ == "__main__":
    sys.exit(main())
