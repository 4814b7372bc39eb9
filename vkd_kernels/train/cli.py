"""The ``vkd`` command: train, distill, evaluate, reproduce.

    vkd train --recipe synthetic-quick --role teacher --out runs/teacher
    vkd distill --recipe synthetic-quick --method kd --teacher runs/teacher/model.pt --out runs/kd
    vkd evaluate --recipe synthetic-quick --checkpoint runs/kd/model.pt
    vkd reproduce --recipe synthetic-quick --out runs/quick          # teacher once, then every method
    vkd reproduce --recipe synthetic-headroom --jobs 2 --out runs/h  # two runs at a time, one process each
    vkd sweep --recipe synthetic-headroom --out runs/headroom         # the weight sweep on the tuning split
    torchrun --nproc_per_node 4 -m vkd_kernels.train.cli distill ...  # multi-GPU (DDP)

Every training command takes ``--resume`` (continue from ``last.pt``), ``--seed`` and
``--set key.sub=value`` (override a recipe entry; the value is read as YAML). The recipe,
the overrides and every run's configuration are validated before any data or model is
built; a mistake exits with status 2 and one line naming the entry.
"""
from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import os
import sys
import time
from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import torch

from . import report
from .config import (
    ConfigError,
    EvalConfig,
    TrainConfig,
    check_method_name,
    check_run,
    load_recipe,
    merge_data,
    pretrain_config,
    recipe_names,
    run_config,
    sweep_options,
)
from .data import build_dataset, collate_skip
from .engine import ShardSampler, distributed, evaluate, fit, load_model

log = logging.getLogger("vkd_kernels.train")


def _common(p: argparse.ArgumentParser, out: bool = True) -> None:
    p.add_argument("--recipe", required=True, help=f"a YAML path or a built-in name ({', '.join(recipe_names())})")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a recipe entry; VALUE is YAML (0.1, 1e-2, true, [1, 2], a string)")
    if out:
        p.add_argument("--out", required=True, help="output folder")
        p.add_argument("--resume", action="store_true",
                       help="continue from <out>/last.pt (an error if it is missing or from another configuration)")
        p.add_argument("--no-progress", action="store_true", help="no progress bars (they appear on a terminal only)")


def _add_jobs(p: argparse.ArgumentParser) -> None:
    p.add_argument("--jobs", type=int, default=1,
                   help="students trained side by side, each in its own process with the run's train.threads "
                        "(e.g. 2 on 2 cores with train.threads 1); the teachers train first, results do not "
                        "depend on it (default 1)")


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="vkd", description="Reference trainer of vkd-kernels.")
    ap.add_argument("--threads", type=int, help="torch CPU threads of every run: overrides the recipe's "
                    "train.threads (default: the recipe's, else torch's choice); CPU results depend on it")
    ap.add_argument("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"),
                    help="of the log on stderr (rank 0; other ranks log warnings and errors)")
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
    p.add_argument("--checkpoint", required=True, help="a model.pt or best.pt")
    p.add_argument("--clips", type=int, help="clips per video (default: the recipe's evaluate.clips, else 1: "
                   "the single centred clip); TSN segment offsets or uniformly spaced dense clips")
    p.add_argument("--crops", type=int, help="crops per clip: 1 centre, 3 along the long side, 10 five crops "
                   "and their mirror images (default: evaluate.crops, else 1)")
    p.add_argument("--average", choices=("prob", "score"),
                   help="over a video's views: mean softmax ('prob', mmaction2's) or mean logits "
                   "(default: evaluate.average, else prob)")
    p = sub.add_parser("reproduce", help="teacher once, then every method x seed; table and plots")
    _common(p)
    p.add_argument("--seeds", type=int, nargs="+", help="default: the recipe's reproduce.seeds")
    p.add_argument("--methods", nargs="+", help="default: the recipe's reproduce.methods")
    p.add_argument("--no-train", action="store_true",
                   help="train no student: the table and plots of the runs that have finished (a method x seed "
                        "without summary.json is left out)")
    _add_jobs(p)
    p = sub.add_parser("sweep", help="the recipe's weight sweep (sweep.grid) validated on the tuning split; "
                       "writes sweep.md / sweep.json")
    _common(p)
    p.add_argument("--methods", nargs="+", help="default: every method of sweep.grid")
    _add_jobs(p)
    from .data.formats import add_data_parser
    add_data_parser(sub)               # vkd data: official annotation files -> our lists
    return ap


def setup_logging(level: str = "INFO") -> None:
    """A stderr handler on the trainer's logger: ``level`` on rank 0, warnings elsewhere."""
    rank = int(os.environ.get("RANK", "0"))
    if not any(getattr(h, "_vkd", False) for h in log.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
        handler._vkd = True
        log.addHandler(handler)
    log.setLevel(level if rank == 0 else "WARNING")


def reproduce_plan(recipe, seeds, methods, explicit: bool):
    """The methods to run (validated), each run's configuration checked before anything trains."""
    from .methods import REGISTRY
    if not seeds:
        raise ConfigError("reproduce.seeds: no seeds (set reproduce.seeds in the recipe or pass --seeds)")
    if not methods:
        raise ConfigError("reproduce.methods: no methods (set reproduce.methods in the recipe or pass --methods)")
    for name in methods:
        check_method_name(name, "--methods" if explicit else "reproduce.methods")
    teacher_seed = int(recipe.get("teacher_seed", 0))
    if pretrain_config(recipe, teacher_seed) is not None:
        check_run(pretrain_config(recipe, teacher_seed))
    check_run(run_config(recipe, "teacher", seed=teacher_seed))
    for name in {getattr(REGISTRY[m][0], "teacher_method", None) for m in methods} - {None}:
        check_run(run_config(recipe, "teacher", method=name, seed=teacher_seed))
    for m in methods:
        check_run(run_config(recipe, "student", method=m, seed=seeds[0]), planned=True)
    return methods


def _run(cfg, run_dir: Path, resume: bool, progress: bool) -> None:
    """One run of ``reproduce``: a finished run is kept, an interrupted one needs --resume."""
    if (run_dir / "last.pt").exists() and not resume:
        raise ConfigError(f"reproduce: {run_dir} holds an interrupted run (last.pt): pass --resume to continue it")
    fit(cfg, run_dir, resume=resume and (run_dir / "last.pt").exists(), progress=progress)


def _finished(run_dir: Path) -> bool:
    """A run is finished once fit has written its summary.json (the last file it writes)."""
    return (run_dir / "summary.json").exists()


def _passes(cfg: Dict) -> int:
    """Passes over the data per epoch of a run's method (GKD's phases: 2; else 1)."""
    from .methods import REGISTRY
    return 2 if hasattr(REGISTRY[cfg["method"]][0], "phases") else 1


def _run_all(runs: List[Tuple[Dict, Path]], resume: bool, progress: bool, jobs: int) -> None:
    """Train every (configuration, folder) of ``runs``: in this process with ``jobs`` 1,
    else ``jobs`` at a time, each in a fresh (spawned) process, the runs with more passes
    per epoch first (so the longest do not start last and run alone); a run's result is
    the same either way. The first failure stops the runs not yet started and is raised here."""
    if jobs == 1 or len(runs) <= 1:
        for cfg, run_dir in runs:
            _run(cfg, run_dir, resume, progress)
        return
    runs = sorted(runs, key=lambda run: -_passes(run[0]))  # stable: the given order within a pass count
    context = multiprocessing.get_context("spawn")      # no fork of a process that holds torch's threads
    with ProcessPoolExecutor(min(jobs, len(runs)), mp_context=context, max_tasks_per_child=1,
                             initializer=setup_logging, initargs=(logging.getLevelName(log.level),)) as pool:
        futures = [pool.submit(_run, cfg, run_dir, resume, False) for cfg, run_dir in runs]
        done, _ = wait(futures, return_when=FIRST_EXCEPTION)
        failed = [f for f in futures if f in done and f.exception() is not None]
        if failed:
            pool.shutdown(cancel_futures=True)
            raise failed[0].exception()


def check_jobs(jobs: int) -> None:
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ConfigError(f"--jobs: the runs trained side by side, an integer >= 1, got {jobs!r}")
    if jobs > 1 and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ConfigError("--jobs: under torchrun every run uses all ranks; pass --jobs 1")


def _rank() -> int:
    """This process's rank: its process group's, else torchrun's ``RANK`` (0 when alone)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank()
    return int(os.environ.get("RANK", "0"))


class Teachers:
    """The teachers of ``vkd reproduce`` / ``vkd sweep`` in ``out``, each trained once when
    first needed: ``teacher-pretrain`` (with ``teacher.pretrain``: cross-entropy on the
    pre-training data), ``teacher`` (ce; fine-tuned from teacher-pretrain) and, for GKD,
    ``teacher-<teacher_method>`` (fine-tuned from teacher-pretrain with that method)."""

    def __init__(self, recipe, out: Path, resume: bool, progress: bool):
        self.recipe, self.out, self.resume, self.progress = recipe, out, resume, progress
        self.seed = int(recipe.get("teacher_seed", 0))

    def _train(self, cfg, path: Path) -> Path:
        if not _finished(path):
            _run(cfg, path, self.resume, self.progress)
        return path

    def pretrained(self) -> Optional[str]:
        cfg = pretrain_config(self.recipe, self.seed)
        return None if cfg is None else str(self._train(cfg, self.out / "teacher-pretrain") / "model.pt")

    def dir(self, method: str = "ce") -> Path:
        """The folder of the teacher of a student trained with ``method``."""
        from .methods import REGISTRY
        name = getattr(REGISTRY[method][0], "teacher_method", None)
        pretrained = self.pretrained()
        if name is None:
            return self._train(run_config(self.recipe, "teacher", seed=self.seed, pretrained=pretrained),
                               self.out / "teacher")
        return self._train(run_config(self.recipe, "teacher", method=name, seed=self.seed, pretrained=pretrained),
                           self.out / f"teacher-{name}")

    def summaries(self, methods) -> Dict[str, Dict]:
        """{row name: summary} of every teacher trained so far (the ce teacher first)."""
        names = ["teacher", "teacher-pretrain"] + sorted(p.name for p in self.out.glob("teacher-*")
                                                         if p.name != "teacher-pretrain")
        return {n: json.loads((self.out / n / "summary.json").read_text()) for n in names
                if _finished(self.out / n)}


def reproduce(recipe, out: Path, seeds, methods, resume: bool, progress: bool, explicit: bool = True,
              train: bool = True, jobs: int = 1) -> str:
    """Train the teacher(s) and every method x seed (each run on all ranks under torchrun;
    ``jobs`` runs side by side, :func:`_run_all`), then, on rank 0 only, the spectra,
    results.md / results.json and the plots; returns the markdown on rank 0, "" on the
    others. ``train=False``: report the finished runs only."""
    check_jobs(jobs)
    methods = reproduce_plan(recipe, seeds, methods, explicit)
    if resume and not out.is_dir():
        raise ConfigError(f"resume: no folder {out} to continue (was --out mistyped?); run without --resume")
    began = time.perf_counter()
    teachers = Teachers(recipe, out, resume, progress)
    teacher_dir = teachers.dir("ce")
    teacher = json.loads((teacher_dir / "summary.json").read_text())
    run_dirs = {(method, seed): out / method / f"seed{seed}" for method in methods for seed in seeds}
    if train:                    # the runs not finished yet (their teachers trained first, once)
        _run_all([(run_config(recipe, "student", method=method, seed=seed,
                              teacher=str(teachers.dir(method) / "model.pt")), run_dir)
                  for (method, seed), run_dir in run_dirs.items() if not _finished(run_dir)], resume, progress, jobs)
    runs, curves = {}, {"teacher": [teacher["curve_top1"]]}
    curve_epochs = {"teacher": teacher.get("curve_epochs")}
    for (method, seed), run_dir in run_dirs.items():
        if _finished(run_dir):
            summary = json.loads((run_dir / "summary.json").read_text())
            runs.setdefault(method, []).append(summary)
            curves.setdefault(method, []).append(summary["curve_top1"])
            curve_epochs[method] = summary.get("curve_epochs")
    if _rank() != 0:        # the runs needed every rank; the report is rank 0's work and files
        return ""
    rows = report.table(runs, teachers.summaries(methods))
    val = torch.utils.data.DataLoader(build_dataset(recipe["data"], "val"), batch_size=32, collate_fn=collate_skip)
    spectra = {"teacher": report.temporal_spectrum(load_model(teacher_dir / "model.pt"), val)}
    for method in runs:
        first = out / method / f"seed{runs[method][0]['seed']}" / "model.pt"
        spectra[method] = report.temporal_spectrum(load_model(first), val)
    minutes = (time.perf_counter() - began) / 60
    threads = sorted({r["threads"] for r in rows.values() if r.get("threads")})
    header = (f"# Reproduction: recipe `{recipe.get('name')}`, seeds {list(seeds)}\n\n"
              f"Validation top-1/top-5 after the last epoch, mean ± std over seeds (sample std); "
              f"paired with CE on the same seeds: wins/ties/losses, two-sided t-test and exact Wilcoxon p; "
              f"'s / epoch in losses' is the forward time spent in the loss terms (train.time_losses). "
              f"Runs on {', '.join(map(str, threads)) or '?'} CPU thread(s) each (train.threads; CPU numbers "
              f"depend on the count); this invocation took {minutes:.1f} min.\n")
    text = report.write(out, rows, header, {"recipe": recipe, "seeds": list(seeds), "threads": threads,
                                           "curves": curves, "curve_epochs": curve_epochs,
                                           "spectra": {k: v.tolist() for k, v in spectra.items()}})
    report.plots(out, curves, spectra, curve_epochs)
    return text


def sweep(recipe, out: Path, methods, resume: bool, progress: bool, jobs: int = 1) -> str:
    """Every point of ``sweep.grid`` (each value on each seed of ``sweep.seeds``), validated on
    the clips of ``sweep.stream`` (the tuning split, never the reported ``val``), with the
    teachers of ``reproduce`` in the same ``out``; writes ``sweep.md`` / ``sweep.json`` with
    the mean tuning top-1 of each value and the chosen one (the highest; the first on a tie).
    ``jobs``: runs side by side (:func:`_run_all`)."""
    check_jobs(jobs)
    spec = recipe.get("sweep")
    if not spec:
        raise ConfigError("sweep: the recipe has no sweep section (sweep.grid, sweep.seeds)")
    grid = spec["grid"]
    for name in methods or []:
        if name not in grid:
            raise ConfigError(f"--methods: {name!r} is not in sweep.grid ({', '.join(grid)})")
    val = {"stream": spec.get("stream", "tune"), **({"num_clips": spec["num_clips"]} if spec.get("num_clips") else {})}
    tuned = {**recipe, "data": merge_data(recipe["data"], {"val": val}),
             "train": {**recipe["train"], **(spec.get("train") or {})}}
    teachers = Teachers(recipe, out, resume, progress)       # trained on the recipe's own data
    methods = methods or list(grid)
    plan = [("ce", "ce", None, None)] + [          # (method, folder name, swept value, method options)
        (method, f"{'+'.join(grid[method]['keys'])}={value}", value,
         sweep_options(recipe, method, grid[method]["keys"], value))
        for method in methods for value in grid[method]["values"]]

    def config(method: str, seed: int, options) -> dict:
        cfg = run_config(tuned, "student", method=method, seed=seed,
                         teacher=None if method == "ce" else str(teachers.dir(method) / "model.pt"))
        return cfg if options is None else {**cfg, "method_options": options}

    def folder(method: str, name: str, seed: int) -> Path:
        return out / "sweep" / method / name / f"seed{seed}"

    _run_all([(config(method, seed, options), folder(method, name, seed))
              for method, name, _, options in plan for seed in spec["seeds"]
              if not _finished(folder(method, name, seed))], resume, progress, jobs)

    def point(method: str, name: str) -> dict:
        summaries = [json.loads((folder(method, name, seed) / "summary.json").read_text()) for seed in spec["seeds"]]
        tops = [s["top1"] for s in summaries]
        return {"top1": tops, "top1_mean": float(sum(tops) / len(tops)), "minutes": report._minutes(summaries)}

    result = {"stream": val["stream"], "seeds": list(spec["seeds"]), "ce": point("ce", "ce"), "methods": {}}
    for method in methods:
        keys = grid[method]["keys"]
        points = [{"value": value, **point(method, name)} for m, name, value, _ in plan if m == method]
        best = max(points, key=lambda p: p["top1_mean"])
        result["methods"][method] = {"keys": keys, "points": points, "chosen": best["value"]}
    if _rank() != 0:
        return ""
    width = max(len(m["points"]) for m in result["methods"].values())
    lines = [f"# Weight sweep: recipe `{recipe.get('name')}`, validated on the `{result['stream']}` split, "
             f"seeds {result['seeds']}; tuning top-1 (%) per value, mean over the seeds\n",
             "| method | option(s) | " + " | ".join(f"value {i + 1}" for i in range(width)) + " | chosen |",
             "| --- | --- | " + " | ".join("---" for _ in range(width)) + " | --- |"]
    for method, m in result["methods"].items():
        cells = [f"{p['value']}: {p['top1_mean']:.2f}" for p in m["points"]]
        lines.append(f"| {method} | {', '.join(m['keys'])} | {' | '.join(cells)} | {m['chosen']} |")
    lines.append(f"| ce (reference) | | {result['ce']['top1_mean']:.2f} |" + " |" * width)
    text = "\n".join(lines) + "\n"
    (out / "sweep.md").write_text(text)
    (out / "sweep.json").write_text(json.dumps(result, indent=1))
    return text


def evaluate_command(recipe, checkpoint: str, clips: Optional[int] = None, crops: Optional[int] = None,
                     average: Optional[str] = None) -> dict:
    """top-1/top-5 of ``checkpoint`` on the val split, each video scored over clips x crops
    views (options, else the recipe's ``evaluate`` section); the videos are sharded over the
    ranks (each exactly once) and the counts summed."""
    section = dict(recipe.get("evaluate") or {})
    for key, value, option in (("clips", clips, "--clips"), ("crops", crops, "--crops"),
                               ("average", average, "--average")):
        if value is not None:
            try:
                EvalConfig.from_dict({**section, key: value}, "evaluate")
            except ConfigError as error:
                raise ConfigError(f"{option}: {str(error).split(': ', 1)[1]}") from None
            section[key] = value
    views = EvalConfig.from_dict(section)
    if views.clips * views.crops > 1 and recipe["data"].get("name", "synthetic") == "synthetic":
        raise ConfigError(f"--clips / --crops: the synthetic dataset has one clip of one size per sample; "
                          f"multi-view testing ({views.clips} x {views.crops}) needs data.name frames or video")
    if not Path(checkpoint).is_file():
        raise ConfigError(f"--checkpoint: no file {checkpoint!r} (a model.pt or best.pt a run wrote)")
    t = TrainConfig.from_dict(recipe["train"])
    rank, world, device = distributed()
    val = build_dataset(recipe["data"], "val")
    if views.clips * views.crops > 1:
        val.set_views(views.clips, views.crops)
    loader = torch.utils.data.DataLoader(val, batch_size=t.eval_batch_size or t.batch_size,
                                         sampler=ShardSampler(val, rank, world), collate_fn=collate_skip,
                                         num_workers=t.workers)
    result = evaluate(load_model(checkpoint, device), loader, device, t.amp, views.average)
    return {**result, "clips": views.clips, "crops": views.crops, "average": views.average}


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    setup_logging(args.log_level)
    if args.threads:
        torch.set_num_threads(args.threads)
        if hasattr(args, "set"):          # every run's train.threads too (a recipe may pin it)
            args.set = [*args.set, f"train.threads={args.threads}"]
    try:
        return _main(args)
    except ConfigError as error:          # a mistake in the recipe, the options or the data: no traceback
        print(f"vkd: error: {error}", file=sys.stderr)
        return 2


def _main(args) -> int:
    if args.command == "data":            # no recipe: an official annotation file -> our list
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
        result = evaluate_command(recipe, args.checkpoint, args.clips, args.crops, args.average)
        if int(os.environ.get("RANK", "0")) == 0:
            print(json.dumps(result))
    elif args.command == "sweep":
        text = sweep(recipe, Path(args.out), args.methods, args.resume, progress, jobs=args.jobs)
        if text:
            print(text)
    else:
        reproduce_cfg = recipe.get("reproduce") or {}
        seeds = args.seeds or reproduce_cfg.get("seeds")
        methods = args.methods or reproduce_cfg.get("methods")
        text = reproduce(recipe, Path(args.out), seeds, methods, args.resume, progress, explicit=bool(args.methods),
                         train=not args.no_train, jobs=args.jobs)
        if text:
            print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
