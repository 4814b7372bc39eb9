"""GKD in the trainer: the network on any model, each pass trains only its part, the
teacher is never updated and builds no graph, losses fall, exact resume, DDP, CLI end to end."""
import json
import socket

import pytest
import torch
import torch.multiprocessing as mp

from vkd_kernels.train import cli
from vkd_kernels.train.config import load_recipe, run_config
from vkd_kernels.train.engine import fit, load_model, make_phases
from vkd_kernels.train.methods import build_method
from vkd_kernels.train.methods.gkd import GKDNet
from vkd_kernels.train.models import build_model

TEACHER = dict(name="resnet3d", depth=10, width=8, stem_stride=[1, 2, 2], stem_pool=False)
STUDENT = dict(name="resnet3d", depth=10, width=4, stem_stride=[1, 2, 2], stem_pool=False)
TRAIN = {"lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4}
TINY = ["data.train.num_clips=24", "data.val.num_clips=12", "data.size=16", "teacher.model.width=4",
        "teacher.train.epochs=2", "student.model.width=2", "train.epochs=3", "train.batch_size=8"]


def _batch(n=4):
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, 3, 8, 16, 16, generator=g), torch.arange(n) % 3


def _teacher(clips):
    torch.manual_seed(1)
    return GKDNet.for_model(build_model(TEACHER, 3), clips[:2])


@pytest.mark.parametrize("spec, shape", [
    (dict(name="resnet3d", depth=10, width=6, stem_stride=[1, 1, 1], stem_pool=False), (48, 8, 2, 2)),
    (dict(name="i3d", width=0.05, temporal_pool=False), (50, 8, 1, 1)),
    (dict(name="tsm_resnet", depth=18, width=4, num_segments=8, stem_pool=False), (32, 8, 1, 1)),
])
def test_gkd_net_reads_the_shapes_of_any_model(spec, shape):
    clips, _ = _batch(2)
    net = GKDNet.for_model(build_model(spec, 5), clips)
    feature, lam = net.features(clips)
    assert tuple(feature.shape[1:]) == shape and tuple(lam.shape) == (2, shape[0], shape[1])
    assert ((lam > 0) & (lam < 1)).all() and net(clips).shape == (2, 5)
    assert net.options["dropout"] == (0.0 if spec["name"] == "resnet3d" else 0.5)    # the backbone head's rate
    C = shape[0]            # group counts adapt to C: 48 (C1 24) -> 24 groups, 50 (C1 25) -> 25
    assert C % net.cvae.encoder_norm.num_groups == 0 and C % net.head.gn2.num_groups == 0
    rebuilt = build_model({**spec, "gkd": net.options}, 5)       # what load_model does with model.pt
    rebuilt.load_state_dict(net.state_dict())
    net.eval(), rebuilt.eval()
    assert torch.equal(rebuilt(clips), net(clips))


def test_student_narrower_than_teacher_gets_an_adapter():
    clips, labels = _batch()
    method = build_method("gkd", build_model(STUDENT, 3), _teacher(clips), probe=clips[:2])
    assert isinstance(method.student.adapter[0], torch.nn.Conv3d)
    same = build_method("gkd_repr", build_model(STUDENT, 3), _teacher(clips), probe=clips[:2])
    assert same.student.options == method.student.options and same.teacher_model is None     # width only
    assert method.student.options["in_channels"] == 32 and method.student.options["channels"] == 64
    for phase in ("cvae", "net"):
        method.set_phase(phase, 5)
        loss, logits, terms = method(clips, labels)
        assert torch.isfinite(loss) and logits.shape == (4, 3)
        assert set(terms) == ({"cvae", "gd"} if phase == "cvae" else {"ce", "rec", "ad"})


def test_every_gkd_pass_runs_under_autocast():
    """AMP (the trainer's amp on CUDA; here CPU autocast, bfloat16): the fused head returns
    lambda in autocast's dtype as its layers would, attention_apply gets F and lambda in one
    dtype, and each phase's loss and gradients are finite (it raised a dtype TypeError)."""
    clips, labels = _batch()
    method = build_method("gkd", build_model(STUDENT, 3), _teacher(clips), probe=clips[:2])
    head = method.student.head
    assert head.fused
    with torch.autocast("cpu", dtype=torch.bfloat16):
        feature = torch.rand(2, head.conv3d.in_channels, head.time_steps, *head.spatial_size)
        fused = head(feature)
        head.fused = False
        unfused = head(feature)
        head.fused = True
        for phase in ("cvae", "net"):
            method.set_phase(phase, 5)
            loss, logits, terms = method(clips, labels)
            loss.backward()
            assert torch.isfinite(loss) and all(torch.isfinite(v) for v in terms.values())
    assert fused.dtype == unfused.dtype == torch.bfloat16
    torch.testing.assert_close(fused.float(), unfused.float(), rtol=0, atol=2e-2)
    grads = [p.grad for p in method.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


def _state(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def test_each_pass_trains_only_its_part_and_the_teacher_is_untouched():
    clips, labels = _batch()
    teacher = _teacher(clips)
    graph = []
    teacher.head.register_forward_hook(lambda m, a, out: graph.append(torch.is_grad_enabled() or out.requires_grad))
    teacher.cvae.register_forward_hook(lambda m, a, out: graph.append(torch.is_grad_enabled() or out[0].requires_grad))
    teacher_before = _state(teacher)
    method = build_method("gkd", build_model(TEACHER, 3), teacher, probe=clips[:2])
    phases = {name: optimizer for name, optimizer, _ in make_phases(method, TRAIN, 4)}
    method.train()
    net_keys = [k for k in method.student.state_dict() if not k.startswith("cvae.")]
    for phase in ("cvae", "net"):
        method.set_phase(phase, 3)
        before = _state(method.student)
        for _ in range(2):
            loss, _, _ = method(clips, labels)
            phases[phase].zero_grad(set_to_none=True)
            loss.backward()
            phases[phase].step()
        after = _state(method.student)
        changed = {k for k in after if not torch.equal(before[k], after[k])}
        cvae_changed = {k for k in changed if k.startswith("cvae.")}
        if phase == "cvae":      # networks frozen: weights and BN statistics unchanged
            assert changed and changed == cvae_changed
        else:
            assert not cvae_changed and changed <= set(net_keys) and any("backbone" in k for k in changed)
            assert any(k.startswith("head.") for k in changed)
    assert graph and not any(graph)          # both teacher parts ran, always without a graph
    assert all(torch.equal(v, teacher.state_dict()[k]) for k, v in teacher_before.items())
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())


@pytest.mark.parametrize("name, terms", [
    ("gkd_repr", ("cvae", "ce", "rec")), ("gkd_gd", ("cvae", "gd", "ce", "rec")),
    ("gkd_ad", ("cvae", "ce", "rec", "ad")), ("gkd", ("cvae", "gd", "ce", "rec", "ad"))])
def test_every_term_falls_on_a_tiny_problem(name, terms):
    clips, labels = _batch()
    torch.manual_seed(0)
    method = build_method(name, build_model(STUDENT, 3), _teacher(clips), probe=clips[:2], beta=10.0, cvae_lr=1e-2)
    phases = {n: o for n, o, _ in make_phases(method, TRAIN, 4)}
    method.train()
    history = {}
    for _ in range(12):
        for phase in ("cvae", "net"):
            method.set_phase(phase, 20)
            torch.manual_seed(0)                         # the same CVAE noise each step
            loss, _, step_terms = method(clips, labels)
            phases[phase].zero_grad(set_to_none=True)
            loss.backward()
            phases[phase].step()
            for k, v in step_terms.items():
                history.setdefault(k, []).append(float(v))
    assert tuple(history) == terms
    for k, values in history.items():
        assert values[-1] < values[0], (k, values)


def test_bad_input():
    clips, _ = _batch(2)
    with pytest.raises(ValueError, match="gkd_repr"):
        build_method("gkd", build_model(STUDENT, 3), build_model(TEACHER, 3), probe=clips)
    with pytest.raises(ValueError, match="weights"):
        build_method("gkd_repr", build_model(STUDENT, 3), None, probe=clips, weights={"ce": 2.0})
    with pytest.raises(ValueError, match="probe"):
        build_method("gkd_repr", build_model(STUDENT, 3), None)
    method = build_method("gkd_repr", build_model(STUDENT, 3), None, probe=clips)
    with pytest.raises(ValueError, match="phase"):
        method.set_phase("both", 0)


def test_resume_after_a_kill_gives_bit_identical_networks_and_cvaes(tmp_path):
    recipe = load_recipe("synthetic-full", TINY)
    teacher_cfg = run_config(recipe, "teacher", method="gkd_repr")
    fit(teacher_cfg, tmp_path / "teacher", progress=False)
    fit(teacher_cfg, tmp_path / "teacher-cut", stop_after=1, progress=False)      # the teacher phase resumes too
    fit(teacher_cfg, tmp_path / "teacher-cut", resume=True, progress=False)
    a, b = (torch.load(tmp_path / d / "model.pt", weights_only=True)["state_dict"] for d in ("teacher", "teacher-cut"))
    assert any(k.startswith("cvae.") for k in a) and all(torch.equal(a[k], b[k]) for k in a)
    teacher = load_model(tmp_path / "teacher" / "model.pt")
    assert isinstance(teacher, GKDNet)                  # backbone + head + CVAE
    cfg = run_config(recipe, "student", method="gkd", seed=1, teacher=str(tmp_path / "teacher" / "model.pt"))
    full = fit(cfg, tmp_path / "full", progress=False)
    assert fit(cfg, tmp_path / "cut", stop_after=1, progress=False) == {}     # "killed" after epoch 1
    resumed = fit(cfg, tmp_path / "cut", resume=True, progress=False)
    a, b = (torch.load(tmp_path / d / "last.pt", weights_only=True) for d in ("full", "cut"))
    assert any(k.startswith("student.cvae.") for k in a["method"])
    assert a["method"].keys() == b["method"].keys()
    assert all(torch.equal(a["method"][k], b["method"][k]) for k in a["method"])
    assert [p["name"] for p in a["phases"]] == ["cvae", "net"]
    adam = a["phases"][0]["optimizer"]
    assert adam["state"] and tuple(adam["param_groups"][0]["betas"]) == (0.8, 0.999)
    assert all(torch.equal(x["state"][i]["exp_avg"], y["state"][i]["exp_avg"])       # the optimiser resumed too
               for x, y in [(adam, b["phases"][0]["optimizer"])] for i in x["state"])
    assert resumed["curve_top1"] == full["curve_top1"]
    header = (tmp_path / "cut" / "log.csv").read_text().splitlines()[0]
    assert "train_cvae_gd" in header and "train_ad" in header and "train_rec" in header


def test_cli_reproduce_gkd_end_to_end(tmp_path, capsys):
    out = tmp_path / "repro"
    args = ["reproduce", "--recipe", "synthetic-full", "--out", str(out), "--no-progress",
            "--methods", "gkd", "--seeds", "0"] + sum((["--set", i] for i in TINY + ["train.epochs=1"]), [])
    assert cli.main(args) == 0
    assert "| gkd |" in capsys.readouterr().out
    assert (out / "teacher-gkd_repr" / "model.pt").exists()
    results = json.loads((out / "results.json").read_text())
    assert set(results["rows"]) == {"teacher", "teacher-gkd_repr", "gkd"}       # every teacher is a row
    checkpoint = str(out / "gkd" / "seed0" / "model.pt")
    assert cli.main(["evaluate", "--recipe", "synthetic-full", "--checkpoint", checkpoint]
                    + sum((["--set", i] for i in TINY), [])) == 0
    assert "top1" in json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_ddp_two_gloo_processes_with_two_phases(tmp_path):
    from test_train_engine import _ddp_worker, _figures
    cfg = run_config(load_recipe("synthetic-full", TINY + ["train.epochs=1"]), "student", method="gkd_repr")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_ddp_worker, args=(port, str(tmp_path), cfg), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in (0, 1))
    assert _figures(r0["row"]) == _figures(r1["row"])          # the logged figures are summed over both ranks' halves
    assert all(torch.equal(r0["state"][k], r1["state"][k]) for k in r0["state"] if "running" not in k)
    assert any(k.startswith("student.cvae.") for k in r0["state"])     # the whole method state: CVAE too


def test_gkd_leaves_the_given_model_alone_and_rec_ramp_zero_is_full_weight():
    clips, labels = _batch()
    backbone = build_model(STUDENT, 3)
    head = backbone.head
    method = build_method("gkd_repr", backbone, None, probe=clips[:2], rec_ramp=0, rec_weight=0.5)
    assert backbone.head is head and backbone(clips).shape == (4, 3)       # the user's model keeps its head
    assert isinstance(method.student.backbone.head, torch.nn.Identity)
    method.set_phase("net", 0)
    assert method.coefficients()["rec"] == 0.5                             # no ramp: full weight at epoch 0
    _, _, terms = method(clips, labels)
    assert "rec" in terms
    ramped = build_method("gkd_repr", build_model(STUDENT, 3), None, probe=clips[:2], rec_ramp=4)
    ramped.set_phase("net", 1)
    assert ramped.coefficients()["rec"] == 0.5 * 1 / 4
    for bad in (-1, 1.5):
        with pytest.raises(ValueError, match="rec_ramp"):
            build_method("gkd_repr", build_model(STUDENT, 3), None, probe=clips[:2], rec_ramp=bad)
