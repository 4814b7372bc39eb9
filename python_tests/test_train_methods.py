"""Trainer methods: every registered method runs a step, its loss falls, gradients reach
what they should; the drop-in hook recipe of the README works on a plain model."""
import pytest
import torch
import torch.nn.functional as F

import vkd_kernels
from vkd_kernels.train.hooks import FeatureHooks
from vkd_kernels.train.methods import REGISTRY, build_method, kd_loss
from vkd_kernels.train.models import build_model

STUDENT = dict(name="resnet3d", depth=10, width=4, stem_stride=[1, 4, 4], stem_pool=False)
TEACHER = dict(name="resnet3d", depth=10, width=8, stem_stride=[1, 4, 4], stem_pool=False)


def _batch():
    g = torch.Generator().manual_seed(0)
    return torch.randn(4, 3, 8, 16, 16, generator=g), torch.tensor([0, 1, 2, 1])


@pytest.mark.parametrize("name", sorted(n for n in REGISTRY if not n.startswith("gkd")))  # gkd: test_train_gkd.py
def test_method_step_lowers_its_loss(name):
    torch.manual_seed(0)
    clips, labels = _batch()
    student, teacher = build_model(STUDENT, 3), build_model(TEACHER, 3)
    teacher_before = [p.detach().clone() for p in teacher.parameters()]
    method = build_method(name, student, teacher, probe=clips[:2])
    params = [p for p in method.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=0.02, momentum=0.9)
    method.train()
    losses = []
    for _ in range(6):
        loss, logits, terms = method(clips, labels)
        assert torch.isfinite(loss) and logits.shape == (4, 3)
        opt.zero_grad()
        loss.backward()
        if len(losses) == 0:  # every trained parameter gets a gradient: what DDP (no unused parameters) needs
            missing = [n for n, p in method.named_parameters() if p.requires_grad and p.grad is None]
            assert not missing and all(p.grad is not None for p in student.parameters()), missing
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0], losses
    assert "ce" in terms and (name == "ce" or len(terms) > 1)
    moved = any(not torch.equal(a, b) for a, b in zip(teacher_before, teacher.parameters()))
    assert moved == getattr(method, "mutual", False)
    if method.uses_teacher:
        assert teacher.training == method.mutual


def test_kd_loss_matches_its_formula_and_is_zero_on_equal_logits():
    s, t = torch.randn(5, 7, dtype=torch.float64), torch.randn(5, 7, dtype=torch.float64)
    p_t = F.softmax(t / 4, 1)
    expected = (p_t * (p_t.log() - F.log_softmax(s / 4, 1))).sum(1).mean() * 16
    torch.testing.assert_close(kd_loss(s, t, 4.0).double(), expected, rtol=1e-6, atol=0)
    assert kd_loss(s, s, 4.0).abs() < 1e-6


def test_collab_spectrum_uses_the_public_op_and_uncertainty_weights():
    torch.manual_seed(0)
    clips, labels = _batch()
    student, teacher = build_model(STUDENT, 3), build_model(TEACHER, 3)
    method = build_method("collab_spectrum", student, teacher, probe=clips[:2])
    with torch.no_grad():
        method.log_vars.copy_(torch.tensor([0.5, -0.3, 0.2]))
    loss, _, terms = method(clips, labels)
    s = method.log_variances            # -0.3 is used as 0 (the default range s >= 0)
    expected = sum(torch.exp(-s[i]) * terms[n] + s[i] for i, n in enumerate(["ce", "kd", "spectrum"]))
    torch.testing.assert_close(loss.detach(), expected)
    fs, ft = FeatureHooks(student, ["layer4"]), FeatureHooks(teacher, ["layer4"])
    student(clips), teacher(clips)
    direct = vkd_kernels.temporal_spectrum_loss(method.adapters[0](fs["layer4"]), ft["layer4"], norm="ortho")
    torch.testing.assert_close(terms["spectrum"], direct.detach())
    loss.backward()
    assert method.log_vars.grad is not None and method.optimizer_groups() == [
        {"params": [method.log_vars], "weight_decay": 0.0, "lr_scale": 0.01}]


def test_collab_log_variances_get_their_own_learning_rate_and_no_weight_decay():
    from vkd_kernels.train.engine import make_phases
    student, teacher = build_model(STUDENT, 3), build_model(TEACHER, 3)
    method = build_method("collab_spectrum", student, teacher, probe=_batch()[0][:2], log_var_lr_scale=0.01)
    (_, optimizer, scheduler), = make_phases(method, {"lr": 0.1, "weight_decay": 5e-4}, epochs=2, steps_per_epoch=2)
    rest, log_vars = optimizer.param_groups
    assert log_vars["params"] == [method.log_vars] and all(p is not method.log_vars for p in rest["params"])
    assert (rest["lr"], rest["weight_decay"]) == (0.1, 5e-4)
    assert log_vars["lr"] == pytest.approx(1e-3) and log_vars["weight_decay"] == 0.0
    optimizer.step(), scheduler.step(), scheduler.step()
    assert log_vars["lr"] == pytest.approx(0.01 * rest["lr"]) and rest["lr"] < 0.1      # the same cosine
    for bad in (0.0, -1.0):
        with pytest.raises(ValueError, match="log_var_lr_scale"):
            build_method("collab_spectrum", student, teacher, probe=_batch()[0][:2], log_var_lr_scale=bad)


def test_collab_log_variances_are_projected_into_log_var_range():
    torch.manual_seed(0)
    clips, labels = _batch()
    student, teacher = build_model(STUDENT, 3), build_model(TEACHER, 3)
    method = build_method("collab_spectrum", student, teacher, probe=clips[:2])     # default range (0, None)
    with torch.no_grad():
        method.log_vars.copy_(torch.tensor([-2.0, 0.5, -0.1]))
    loss, _, terms = method(clips, labels)
    # forward uses the projected values and writes no parameter; the trainer's after_step projects
    torch.testing.assert_close(method.log_vars.detach(), torch.tensor([-2.0, 0.5, -0.1]))
    torch.testing.assert_close(method.log_variances, torch.tensor([0.0, 0.5, 0.0]))
    expected = terms["ce"] + torch.exp(torch.tensor(-0.5)) * terms["kd"] + 0.5 + terms["spectrum"]
    torch.testing.assert_close(loss.detach(), expected)
    loss.backward()
    assert method.log_vars.grad[1] != 0 and method.log_vars.grad[0] == 0      # outside the range: clamped
    method.after_step()
    torch.testing.assert_close(method.log_vars.detach(), torch.tensor([0.0, 0.5, 0.0]))
    loss, _, _ = method(clips, labels)
    loss.backward()
    assert (method.log_vars.grad != 0).all()         # at the bound the gradient flows again
    free = build_method("collab_spectrum", student, teacher, probe=clips[:2], log_var_range=None)
    with torch.no_grad():
        free.log_vars.copy_(torch.tensor([-2.0, 0.5, -0.1]))
    free(clips, labels)
    torch.testing.assert_close(free.log_vars.detach(), torch.tensor([-2.0, 0.5, -0.1]))
    for bad in [(1.0, 0.0), (0.0,), (0.0, 1.0, 2.0)]:
        with pytest.raises(ValueError, match="log_var_range"):
            build_method("collab_spectrum", student, teacher, probe=clips[:2], log_var_range=bad)


@pytest.mark.parametrize("log_var_range", [(0.0, None), None])
def test_collab_weight_of_a_vanishing_term_stays_bounded(log_var_range):
    """The failure the default range prevents: under SGD 0.1 + momentum 0.9 (the recipes'),
    s_i runs to log L_i, so a term near 0 (here 1e-3, as the parameter term reached) gets
    a weight ~ 1 / L_i, which made training diverge (reproduction/saturating/RESULTS.md)."""
    student, teacher = build_model(STUDENT, 3), build_model(TEACHER, 3)
    method = build_method("collab_spectrum", student, teacher, probe=_batch()[0][:2], log_var_range=log_var_range)
    opt = torch.optim.SGD([method.log_vars], lr=0.1, momentum=0.9)
    terms = {"ce": torch.tensor(0.04), "kd": torch.tensor(20.0), "spectrum": torch.tensor(1e-3)}
    largest = 0.0
    for _ in range(40):
        loss = method.combine(terms)
        opt.zero_grad()
        loss.backward()
        opt.step()
        method.after_step()                      # what the trainer does after every step
        largest = max(largest, float(torch.exp(-method.log_variances).max()))
    if log_var_range is None:
        assert largest > 100          # unbounded: the vanishing terms' weights explode
    else:
        assert largest <= 1.0         # bounded: never above the fixed weight 1
        assert float(method.log_variances[1]) > 1.0    # the large kd term is still turned down


def test_readme_drop_in_recipe_on_an_unmodified_model():
    """FeatureHooks + a vkd-kernels loss added to a plain loop, no model edit."""
    torch.manual_seed(0)
    student, teacher = build_model(STUDENT, 3), build_model(TEACHER, 3).eval()
    adapter = torch.nn.Conv3d(32, 64, 1)
    hooks_s, hooks_t = FeatureHooks(student, ["layer4"]), FeatureHooks(teacher, ["layer4"])
    opt = torch.optim.SGD(list(student.parameters()) + list(adapter.parameters()), lr=0.05)
    clips, labels = _batch()
    first = None
    for _ in range(5):
        logits = student(clips)
        with torch.no_grad():
            teacher(clips)
        spec = vkd_kernels.temporal_spectrum_loss(adapter(hooks_s["layer4"]), hooks_t["layer4"])
        loss = F.cross_entropy(logits, labels) + spec
        opt.zero_grad()
        loss.backward()
        opt.step()
        first = first if first is not None else loss.item()
    assert loss.item() < first


def test_unknown_method_and_missing_teacher():
    with pytest.raises(ValueError, match="method must be one of"):
        build_method("nope", build_model(STUDENT, 3))
    with pytest.raises(ValueError, match="needs a teacher"):
        build_method("kd", build_model(STUDENT, 3), None)


def test_loss_timing_is_opt_in():
    clips, labels = _batch()
    method = build_method("kd", build_model(STUDENT, 3), build_model(TEACHER, 3))
    method(clips, labels)
    assert method.loss_seconds == 0.0                # off by default: no timing, no synchronisation
    method.time_losses = True
    method(clips, labels)
    assert method.loss_seconds > 0.0


@pytest.mark.parametrize("name", ["at", "collab"])
def test_fused_loss_terms_are_float32_under_autocast(name):
    """Under AMP the fused losses see float32 features, as autocast runs torch's losses: a
    half-precision term (and the half gradient it receives, weight x loss scale) overflows
    and caps GradScaler's scale."""
    torch.manual_seed(0)
    clips, labels = _batch()
    method = build_method(name, build_model(STUDENT, 3), build_model(TEACHER, 3), probe=clips[:2])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        _, _, terms = method(clips, labels)
    fused = {"at": ["at"], "collab": ["spectrum", "param"]}[name]
    assert all(terms[t].dtype == torch.float32 for t in fused), {k: v.dtype for k, v in terms.items()}
