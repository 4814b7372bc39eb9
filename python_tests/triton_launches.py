"""Capture of the Triton launches the public ops make, as a GPU launch would see them.

``capture()`` must run in a process without TRITON_INTERPRET (the kernels are then real
JITFunctions; triton_aot.py spawns one). It replaces ``JITFunction.run`` with a recorder
that binds the real arguments with the JIT's own binder (create_function_from_signature)
and ``_pack_args`` for the CUDA backend object, so the signature (scalar types as the JIT
derives them from the Python values), the constexprs (stride 1 and other ints equal to 1
specialised as constants) and the multiple-of-16 attributes are what a GPU launch would
compile, and records them without running anything. The ops then run with
backend="triton" on CPU tensors (Triton is accepted on CPU for the capture), forward and
backward, over ``SCENARIOS``: every op, dtype, constexpr combination and launch config,
plus layouts that change the specialisation. Outputs are never written, so no value is
checked here (the interpreter tests do that); only the launches matter.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

DTYPE_NAMES = ("float32", "float64", "float16", "bfloat16")


@dataclass(frozen=True)
class Launch:
    """One distinct compile of a kernel: what the JIT keys its cache on (and the grid's
    dimensions are recorded beside it, per call)."""

    module: str
    kernel: str
    signature: tuple   # (name, type) per parameter: "*fp32", "i32", "fp64", "constexpr"...
    constexprs: tuple  # (name, value): the declared constexprs and the specialised ints
    attrs: tuple       # (name, (("tt.divisibility", 16),)) for the multiple-of-16 hints
    options: tuple     # (name, value): the launch options passed to the compiler

    def types(self) -> dict:
        return dict(self.signature)


@dataclass(frozen=True)
class Call:
    """One captured launch: the compile it needs, its grid and the scenario that made it."""

    launch: Launch
    grid: tuple
    scenario: str


# ---- the recorder -------------------------------------------------------------------

def _install_recorder(calls: list, scenario: list) -> None:
    from triton import knobs
    from triton.backends.compiler import GPUTarget
    from triton.compiler import make_backend
    from triton.runtime.jit import JITFunction, create_function_from_signature

    backend = make_backend(GPUTarget("cuda", 90, 32))  # sm_80 specialises alike (BaseBackend rules)
    binders = {}

    def record(self, *args, grid, warmup, **kwargs):
        # as JITFunction.run: the options it adds, then its binder and _pack_args
        kwargs["debug"] = kwargs.get("debug", self.debug) or knobs.runtime.debug
        kwargs["instrumentation_mode"] = knobs.compilation.instrumentation_mode
        if hasattr(knobs.compilation, "fpsan_homomorphic_casts"):  # (Triton 3.6 has no such option)
            kwargs["fpsan_homomorphic_casts"] = knobs.compilation.fpsan_homomorphic_casts
        if self not in binders:
            binders[self] = create_function_from_signature(self.signature, self.params, backend)
        bound_args, specialization, options = binders[self](*args, **kwargs)
        _, signature, constexprs, attrs = self._pack_args(backend, kwargs, bound_args, specialization, options)
        names = self.arg_names
        launch = Launch(
            module=self.fn.__module__, kernel=self.fn.__name__,
            signature=tuple(signature.items()),
            constexprs=tuple((names[path[0]], value) for path, value in sorted(constexprs.items())),
            attrs=tuple((names[path[0]], tuple(tuple(a) for a in value))
                        for path, value in sorted(attrs.items()) if value),
            options=tuple(sorted((k, v) for k, v in kwargs.items() if k not in names)))
        grid = grid(bound_args) if callable(grid) else tuple(grid)
        calls.append(Call(launch, tuple(int(g) for g in grid), scenario[0]))
        return None

    JITFunction.run = record


def capture(names=None) -> list:
    """Every Call the scenarios make (``names``: a subset of SCENARIOS)."""
    assert os.environ.get("TRITON_INTERPRET", "0") != "1", "capture needs real JITFunctions"
    os.environ["VKD_CHECK_FINITE"] = "0"     # outputs are never written
    os.environ.pop("VKD_POISON_OUTPUTS", None)
    import torch

    from vkd_kernels import _backend

    calls, scenario = [], [""]
    _install_recorder(calls, scenario)
    _backend.triton_interpreting = lambda: True  # Triton accepted on CPU tensors
    torch.manual_seed(0)
    for name, run in SCENARIOS.items():
        if names is None or name in names:
            scenario[0] = name
            run()
    return calls


# ---- the scenarios ------------------------------------------------------------------

def _dtypes():
    import torch
    return [getattr(torch, name) for name in DTYPE_NAMES]


def _spectrum(shape, dtype, grads=("s",), reductions=("mean", "none"), spatial=("pixel", "mean"),
              backward_none=False, **options):
    """temporal_spectrum_loss over every reduction x spatial: forward (STORE_D for "none"),
    and backward with the gradient to the student ("s"), the teacher ("t") or both ("st")
    for reduction="mean" (dL/dd a broadcast scalar), to the student for "none" where
    ``backward_none`` (a contiguous dL/dd; "sum" launches as "mean")."""
    import torch

    from vkd_kernels import temporal_spectrum_loss

    for sp in spatial:
        for reduction in reductions:
            for need in grads if reduction != "none" else ("s",) if backward_none else ("",):
                xs = torch.randn(shape, dtype=dtype).requires_grad_("s" in need)
                xt = torch.randn(shape, dtype=dtype).requires_grad_("t" in need)
                loss = temporal_spectrum_loss(xs, xt, spatial=sp, reduction=reduction, backend="triton", **options)
                if need:
                    loss.backward(torch.randn_like(loss) if reduction == "none" else None)


def spectrum_configs():
    """Every dtype and T config (T_PAD 16, 32, 64: T = 8, 32, 64), every constexpr
    combination: STORE_D by reduction, NEED_S / NEED_T by which side needs a gradient
    (the student's alone: a frozen teacher), each layout (BLOCK_S, ALIGN): S = 16
    (aligned rows), 9 (odd rows), 1 (time last: pixel kernels only)."""
    for dtype in _dtypes():
        for T in (8, 32, 64):
            _spectrum((2, 3, T, 4, 4), dtype, grads=("s", "t", "st"))
            _spectrum((2, 3, T, 3, 3), dtype, grads=("s", "t", "st"))
            _spectrum((2, 3, T), dtype, grads=("s", "t", "st"), spatial=("pixel",))


def spectrum_layouts():
    """float32 layouts and options that change the specialisation, not the constexprs."""
    import torch
    f32 = torch.float32
    _spectrum((2, 3, 8, 4, 4), f32, backward_none=True)                               # contiguous dL/dd
    _spectrum((2, 3, 16, 4, 4), f32, reductions=("mean",), spectrum="power")         # mode == 1: a constant
    _spectrum((2, 3, 31, 4, 4), f32, reductions=("mean",), spectrum="log_magnitude", norm="ortho")  # K = 16
    _spectrum((1, 1, 13, 5, 5), f32, norm="forward", backward_none=True)              # B = 1, odd sizes
    _spectrum((2, 3, 12), f32, spatial=("pixel",), reductions=("sum",))               # time last: S = 1
    _spectrum((4 * 7, 3, 5, 5), f32, reductions=("mean",), num_segments=7, time_dim=0)  # TSM (N*T, C, H, W)


# benchmarks/cases_spectrum.py SHAPES (test_spectrum_static.py checks they agree)
SPECTRUM_BENCH_SHAPES = ((8, 256, 8, 14, 14), (8, 512, 16, 7, 7), (4, 64, 32, 28, 28), (16, 2048, 8, 7, 7))


def spectrum_bench_shapes():
    """temporal_spectrum_loss at the benchmark shapes with its options (float32, the
    student's gradient alone), spatial "pixel" (the benchmark's) and "mean": the grids,
    layouts and compiled loads test_spectrum_static.py reads."""
    import torch

    from vkd_kernels import temporal_spectrum_loss

    for shape in SPECTRUM_BENCH_SHAPES:
        for spatial in ("pixel", "mean"):
            xs, xt = torch.empty(shape).requires_grad_(), torch.empty(shape)  # values are never read
            temporal_spectrum_loss(xs, xt, spatial=spatial, backend="triton").backward()


def attention_maps():
    """attention_transfer_loss (raw map forward and backward) per dtype and POWER case."""
    import torch

    from vkd_kernels import attention_map, attention_transfer_loss

    for dtype in _dtypes():
        for p in (2, 1, 1.5):  # POWER 0, 1, 2
            fs = torch.randn(2, 8, 4, 6, 6, dtype=dtype, requires_grad=True)
            ft = torch.randn(2, 8, 4, 6, 6, dtype=dtype)  # a frozen teacher: no teacher backward
            attention_transfer_loss(fs, ft, p=p, backend="triton").backward()
    fs, ft = torch.randn(2, 8, 4, 6, 6, requires_grad=True), torch.randn(2, 16, 4, 3, 3, requires_grad=True)
    attention_transfer_loss(fs, ft, distance="l2", backend="triton").backward()  # Cs != Ct, pooled, both grads
    for dtype in (torch.float32, torch.float64):  # the finish per option (maps in the accumulation dtype)
        for distance, reduction in (("mse", "mean"), ("mse", "none"), ("l2", "none")):
            for shape_t, teacher_grad in (((2, 8, 4, 6, 6), False), ((2, 8, 4, 3, 3), False),
                                          ((2, 8, 4, 6, 6), True), ((2, 8, 4, 3, 3), True), ((2, 8, 8, 3, 6), True),
                                          ((2, 8, 8, 6, 6), True)):  # pooled: neither, student, teacher, both
                fs = torch.randn(2, 8, 4, 6, 6, dtype=dtype, requires_grad=True)
                ft = torch.randn(shape_t, dtype=dtype, requires_grad=teacher_grad)
                loss = attention_transfer_loss(fs, ft, distance=distance, reduction=reduction, backend="triton")
                loss.sum().backward()
    x = torch.randn(2, 8, 4, 6, 6).to(memory_format=torch.channels_last_3d).requires_grad_()
    attention_map(x, 1.7, backend="triton").sum().backward()     # channel stride 1
    attention_map(torch.randn(70000, 4, 2, 2), backend="triton")  # more samples than grid axis y allows


def attention_heads():
    """attention_head_tail: its GroupNorm + ReLU kernels with gamma and beta each present
    or absent, forward and backward, per dtype."""
    import torch

    from vkd_kernels.gkd.head import attention_head_tail

    for dtype in _dtypes():
        for bias in (True, False):
            for gamma in (True, False):
                for beta in (True, False):
                    y = torch.randn(2, 8, 4, dtype=dtype, requires_grad=True)
                    conv = torch.randn(16, 8, 3, dtype=dtype, requires_grad=True)
                    conv_b = torch.randn(16, dtype=dtype, requires_grad=True) if bias else None
                    gn_w = torch.randn(16, dtype=dtype, requires_grad=True) if gamma else None
                    gn_b = torch.randn(16, dtype=dtype, requires_grad=True) if beta else None
                    lin = torch.randn(5, 12, dtype=dtype, requires_grad=True)
                    lin_b = torch.randn(5, dtype=dtype, requires_grad=True) if bias else None
                    out = attention_head_tail(y, conv, conv_b, gn_w, gn_b, 4, lin, lin_b, upsample_length=12,
                                              backend="triton")
                    out.sum().backward()


def attention_applies():
    """attention_apply: its reduce (HAS_Y) and affine (HAS_B) kernels both ways
    (forward and backward) per dtype, both spatial options (spatial="mean": the affine on
    rows of one element forward, on a stride-0 gradient backward)."""
    import torch

    from vkd_kernels.gkd.apply import attention_apply

    for dtype in _dtypes():
        for F_grad in (True, False):
            for spatial in ("keep", "mean"):
                F = torch.randn(2, 8, 4, 6, 6, dtype=dtype, requires_grad=F_grad)
                lam = torch.rand(2, 8, 4, dtype=dtype, requires_grad=True)
                attention_apply(F, lam, spatial=spatial, backend="triton").sum().backward()
    lam = torch.rand(2, 8, 4, requires_grad=True)  # a gradient to lam only: no affine backward
    attention_apply(torch.randn(2, 8, 4, 6, 6).to(memory_format=torch.channels_last_3d), lam,
                    per_sample=False, backend="triton").sum().backward()
    attention_apply(torch.randn(1, 1, 1, 2049, 2049), torch.rand(1, 1, 1), backend="triton")  # > 65535 S blocks


# The benchmark shapes of the attention ops (benchmarks/cases_{attention,apply,head}.py
# SHAPES; test_attention_static checks they agree): their grids are what a GPU would run.
ATTENTION_BENCH_SHAPES = (((8, 256, 8, 14, 14), (8, 1024, 8, 14, 14)), ((8, 256, 8, 14, 14), (8, 2048, 4, 7, 7)))
APPLY_BENCH_SHAPES = ((6, 1024, 8, 7, 7), (8, 2048, 8, 14, 14))
HEAD_BENCH_SHAPES = ((6, 512, 1024, 8, 1024, 32), (6, 256, 512, 7, 500, 32))


def attention_benchmarks():
    """The three attention ops at their benchmark shapes, forward and backward (float32)."""
    import torch

    from vkd_kernels import attention_apply, attention_head_tail, attention_transfer_loss

    for shape_s, shape_t in ATTENTION_BENCH_SHAPES:
        fs = torch.empty(shape_s, requires_grad=True)
        attention_transfer_loss(fs, torch.empty(shape_t), backend="triton").backward()
    for shape in APPLY_BENCH_SHAPES:
        for spatial in ("keep", "mean"):
            F, lam = torch.empty(shape, requires_grad=True), torch.empty(shape[:3], requires_grad=True)
            attention_apply(F, lam, spatial=spatial, backend="triton").sum().backward()
    for N, C1, C, T, L, G in HEAD_BENCH_SHAPES:
        params = [torch.zeros(s, requires_grad=True) for s in ((N, C1, T), (C, C1, 3), (C,), (C,), (C,), (T, L), (T,))]
        attention_head_tail(*params[:5], G, *params[5:], upsample_length=L, backend="triton").sum().backward()


def weight_spectra():
    """weight_spectrum_distance per dtype and tile (P <= 16, <= 32, 49 in 32-blocks and
    512), a frozen teacher, gradients to both sides and to a distribution teacher,
    weight_spectrum's own backward, and more pairs and items than grid axis y allows."""
    import torch

    from vkd_kernels import weight_spectrum, weight_spectrum_distance

    for dtype in _dtypes():
        for kernel in ((3, 3), (3, 3, 3), (7, 7), (8, 8, 8)):
            student = [torch.randn(8, 4, *kernel, dtype=dtype, requires_grad=True),
                       torch.randn(4, 4, 3, 3, dtype=dtype, requires_grad=True)]
            teacher = [torch.randn(16, 4, *kernel, dtype=dtype), torch.randn(8, 4, 3, 3, dtype=dtype)]
            weight_spectrum_distance(student, teacher, backend="triton").backward()
    student = [torch.randn(128, 64, 3, 3, 3, requires_grad=True), torch.randn(6, 3, 3, 7, 7, requires_grad=True)]
    teacher = [torch.randn(64, 64, 3, 3, 3, requires_grad=True), torch.rand(147, requires_grad=True)]
    weight_spectrum_distance(student, teacher, transform="fft", distance="js", drop_dc=False,
                             backend="triton").backward()
    sum(p.sum() for p in weight_spectrum([student[1], [student[0]]], drop_dc=True, backend="triton")).backward()
    # 70000 pairs and gram items through the launchers (the op's per-group Python is slow)
    from vkd_kernels.weights import layout, triton_kernels
    weights = list(torch.randn(70000, 1, 1, 3, 3).unbind(0))
    spec = layout.Spec(kernels=((3, 3),) * 70000, tensors=tuple((g, 1) for g in range(70000)), teachers=(),
                       num_dists=0, parts=1, drop_dc=False, backend="triton", needed=tuple(range(70000)))
    plan = layout.make_plan(spec)
    forward, backward = layout.forward_tables(plan, weights, []), layout.backward_tables(plan, weights, "cpu")
    basis = layout.basis(plan.basis_kernels, "dct", False, torch.float32, torch.device("cpu"))
    partials, p = torch.empty(plan.partials_size), torch.empty(plan.p_rows, plan.Pmax)
    triton_kernels.gram(plan, forward, weights, basis, partials)
    triton_kernels.finish(plan, forward, partials, torch.empty_like(p), p, p[:, 0], p[:, 0], 1e-12, 0)
    M = torch.empty(plan.m_size)
    triton_kernels.finish_backward(plan, backward, basis, p, p[:, 0], p, p[:, 0], M, 1e-12, 0, 1.0)
    triton_kernels.gram_backward(plan, backward, weights, M)


SCENARIOS = {f.__name__: f for f in (spectrum_configs, spectrum_layouts, spectrum_bench_shapes, attention_maps,
                                     attention_heads, attention_applies, attention_benchmarks, weight_spectra)}
