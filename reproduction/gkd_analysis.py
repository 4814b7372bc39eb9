"""What L_AD and L_GD (GKD's two distillation terms) do on the headroom benchmark.

Reads the runs of ``vkd reproduce --recipe synthetic-headroom --out OUT`` (the GKD teacher
``teacher-gkd_repr`` and the students ``gkd_repr``, ``gkd_ad`` of every seed) and measures,
on the first ``--clips`` validation clips, one CPU thread:

* lambda statistics, teacher vs students: mean, share of entries < 0.1 / > 0.9, and the
  share of the variance of lambda_t that is between samples (the rest is a fixed
  per-(channel, time) pattern that any input gets);
* L_AD = mean((lambda_s - lambda_t)^2) of each trained student, and the L_AD of the best
  input-independent guess (lambda_t's own mean pattern);
* the gradient share: ||grad beta L_AD|| / ||grad CE|| over the student's parameters (head
  and the rest separately) and the cosine between the two, at initialisation and after
  training, at the recipe's beta and at the literature's 0.1; the same for L_rec (the
  only path from L_GD, a CVAE-pass term, to the network);
* the channel match: how far the student's channel order is from the teacher's (a student
  channel c has no reason to carry the teacher's channel c).

    PYTHONPATH=. python reproduction/gkd_analysis.py --out runs/headroom --json reproduction/gkd_analysis.json
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from vkd_kernels.train.config import load_recipe
from vkd_kernels.train.data import build_dataset, probe_batch
from vkd_kernels.train.engine import load_model, seed_everything
from vkd_kernels.train.methods import build_method
from vkd_kernels.train.models import build_model


def lambdas(net, clips):
    with torch.no_grad():
        return net.eval().features(clips)[1].float()            # (N, C, T)


def stats(lam: torch.Tensor) -> dict:
    total = lam.var(unbiased=False)
    between = lam.var(0, unbiased=False).mean()                # over samples, per (c, t)
    return {"mean": float(lam.mean()), "below_0.1": float((lam < 0.1).float().mean()),
            "above_0.9": float((lam > 0.9).float().mean()), "between_sample_share": float(between / total)}


def grad_share(method, clips, labels, beta: float) -> dict:
    """||grad w L|| / ||grad CE|| (head, rest) and the cosine with CE's gradient, for beta L_AD
    and for the L_rec term at its full weight (the path by which L_GD, which trains only the
    student's CVAE, reaches the network); one batch, training mode."""
    method.train()
    method.set_phase("net", method.rec_ramp)                  # L_rec at its full weight
    student = method.student
    fs, lam_s = student.features(clips)
    logits = student.classify(fs, lam_s)
    with torch.no_grad():
        lam_t = method.teacher_model.features(clips)[1]
    terms = method.net_terms(logits, labels, fs, lam_s, lam_t)
    weights = method.coefficients()
    named = [(n, p) for n, p in student.named_parameters() if p.requires_grad and not n.startswith("cvae.")]
    params = [p for _, p in named]

    def grads(loss):
        g = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
        return [x if x is not None else torch.zeros_like(p) for x, p in zip(g, params)]

    g_ce, g_ad, g_rec = grads(terms["ce"]), grads(beta * terms["ad"]), grads(weights["rec"] * terms["rec"])
    out = {}
    for part, keep in (("head", lambda n: n.startswith("head.")), ("rest", lambda n: not n.startswith("head."))):
        a = torch.cat([g.flatten() for (n, _), g in zip(named, g_ce) if keep(n)])
        out[part] = {}
        for name, other in (("ad", g_ad), ("rec", g_rec)):
            b = torch.cat([g.flatten() for (n, _), g in zip(named, other) if keep(n)])
            out[part][name] = {"ratio": float(b.norm() / a.norm()),
                               "cosine": float(a @ b / (a.norm() * b.norm() + 1e-30))}
    out["ce"], out["ad"], out["rec"] = float(terms["ce"]), float(terms["ad"]), float(terms["rec"])
    return out


def channel_match(lam_s: torch.Tensor, lam_t: torch.Tensor) -> dict:
    """Correlation over (samples, time) of student channel c with teacher channel c, against
    the best teacher channel for it (a greedy argmax: an upper bound of what an order could give)."""
    def z(x):
        x = x.permute(1, 0, 2).flatten(1)                       # (C, N T)
        return (x - x.mean(1, keepdim=True)) / (x.std(1, keepdim=True) + 1e-8)
    corr = z(lam_s) @ z(lam_t).T / (lam_s.shape[0] * lam_s.shape[2] - 1)     # (C_s, C_t)
    return {"same_index": float(corr.diagonal().mean()), "best_match": float(corr.max(1).values.mean())}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="runs/headroom")
    ap.add_argument("--recipe", default="synthetic-headroom")
    ap.add_argument("--clips", type=int, default=320)
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    out, recipe = Path(args.out), load_recipe(args.recipe)
    val = build_dataset(recipe["data"], "val")
    clips = torch.stack([val[i][0] for i in range(args.clips)])
    train = build_dataset(recipe["data"], "train")
    batch = torch.stack([train[i][0] for i in range(32)]), torch.stack([train[i][1] for i in range(32)])
    teacher = load_model(out / "teacher-gkd_repr" / "model.pt")
    lam_t = lambdas(teacher, clips)
    guess = ((lam_t - lam_t.mean(0, keepdim=True)) ** 2).mean()
    result = {"teacher": stats(lam_t), "constant_guess_L_AD": float(guess), "students": {}}
    seeds = json.loads((out / "results.json").read_text())["seeds"]
    for name in ("gkd_repr", "gkd_ad", "gkd"):
        rows = []
        for seed in seeds:
            path = out / name / f"seed{seed}" / "model.pt"
            if path.exists():
                lam_s = lambdas(load_model(path), clips)
                rows.append({"seed": seed, **stats(lam_s), "L_AD": float(((lam_s - lam_t) ** 2).mean()),
                             **channel_match(lam_s, lam_t)})
        result["students"][name] = rows
    beta = float(recipe["methods"]["gkd_ad"].get("beta", 0.1))
    result["grad_share"] = {}
    for when in ("init", "trained"):
        for b in sorted({beta, 0.1}):
            seed_everything(0)
            student = build_model(recipe["student"]["model"], train.num_classes)
            method = build_method("gkd_ad", student, teacher, probe=probe_batch(train), beta=b)
            if when == "trained":
                method.student.load_state_dict(torch.load(out / "gkd_ad" / f"seed{seeds[0]}" / "model.pt",
                                                          weights_only=True)["state_dict"])
            result["grad_share"][f"{when}, beta {b:g}"] = grad_share(method, *batch, b)
    text = json.dumps(result, indent=1)
    if args.json:
        Path(args.json).write_text(text + "\n")
    print(text)
    return result


if __name__ == "__main__":
    main()
