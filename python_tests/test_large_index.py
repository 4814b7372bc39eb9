"""Calls past 2^31 lines (or elements) give the right numbers, without allocating 8 GB:
the inputs are views of a small buffer with a huge logical size (as_strided with
overlapping strides, x[b, t, s] = buf[b + s + t st], so lines still differ), and the
expected value is computed exactly (float64) on the small equivalent problem (the
distinct lines, weighted by how often each occurs). The cpu backend runs every line;
the Triton kernels, under the interpreter that cannot run millions of programs, run the
real launcher with only the last few program ids executed (the interpreter's grid is
patched) and their outputs are checked.

Only what fits in memory is checked: forward passes whose outputs are small (scalar
spectrum losses, the (N, P) attention map of a C-heavy feature, the row sums of
attention_apply); gradients and the attention_apply output have the input's size.
"""
from __future__ import annotations

import contextlib

import numpy as np
import pytest
import torch
from harness import assert_close, device_for

from vkd_kernels import _backend
from vkd_kernels.attention.op import raw_map
from vkd_kernels.gkd.apply import native as apply_native
from vkd_kernels.spectrum.layout import effective_weights, make_problem
from vkd_kernels.spectrum.op import temporal_spectrum_loss
from vkd_kernels.spectrum.reference import temporal_spectrum_loss_reference

DEVICE = torch.device("cpu")  # the logical-size views are built on CPU storage
B, S, T = 1 << 16, (1 << 15) + 3, 2  # B S = 2^31 + 196608 lines


def _skip_unless(backend, device=DEVICE):
    why = _backend.device_unsupported(backend, device)
    if why:
        pytest.skip(f"{backend} cannot run here: {why}")


def _lines_view(buf: torch.Tensor, B: int, T: int, S: int) -> torch.Tensor:
    """(B, T, S) with x[b, t, s] = buf[b + s + t (B + S)]: line (b, s) is distinct line b + s."""
    return buf.as_strided((B, T, S), (1, B + S, 1))


def _line_spectra(buf: torch.Tensor) -> torch.Tensor:
    """A (B + S - 1, K) = |rfft|^2 (spectrum="power") of each distinct line j = b + s, in float64."""
    lines = buf.double().as_strided((B + S - 1, T), (1, B + S))
    return torch.fft.rfft(lines, dim=1).abs() ** 2


def _inputs(seed):
    """Student and teacher buffers (float32); the teacher is ~3x larger, so that d is not
    a cancellation of nearly equal spectra (the mean path averages 2^15 lines)."""
    g = torch.Generator().manual_seed(seed)
    size = T * (B + S)
    return torch.randn(size, generator=g).float(), 3 * torch.randn(size, generator=g).float()


def _pixel_line_d(bs, bt):
    """d (J, K) of each distinct line for spatial="pixel" (unit bin weights)."""
    return (_line_spectra(bs) - _line_spectra(bt)) ** 2


def _pixel_expected_mean(bs, bt):
    j = torch.arange(B + S - 1, dtype=torch.float64)
    count = torch.minimum(torch.minimum(j + 1, torch.full_like(j, min(B, S))), B + S - 1 - j)  # #(b, s): b+s=j
    d = _pixel_line_d(bs, bt)
    return (count[:, None] * d).sum() / (B * S * d.shape[1])


def _window_mean(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean of the line spectra a over lines b .. b + S - 1 (the group of batch row b)."""
    c = torch.cat((a.new_zeros(1, a.shape[1]), a.cumsum(0)))
    return (c[b + S] - c[b]) / S


def _mean_expected(bs, bt):
    """spatial="mean" over all S positions: one group per b."""
    b = torch.arange(B)
    return ((_window_mean(_line_spectra(bs), b) - _window_mean(_line_spectra(bt), b)) ** 2).mean()


# ---- cpu backend: every line runs ------------------------------------------------------

# Each runs all 2^31 + 196608 lines: 68 s (pixel) and 92 s (mean) on 2 idle cores, up to twice
# that when memory is slow, a sixth of the suite; the group path (mean) is --run-slow only,
# its index math past 2^31 also checked by test_spectrum_triton_last_programs_past_2_31_lines.
@pytest.mark.parametrize("spatial", ["pixel", pytest.param("mean", marks=pytest.mark.slow)])
def test_spectrum_loss_past_2_31_lines_cpu(spatial):
    """The cpu backend over every line of a (B, T, S) view with B S > 2^31."""
    _skip_unless("cpu")
    bs, bt = _inputs(1)
    xs, xt = _lines_view(bs, B, T, S), _lines_view(bt, B, T, S)
    got = temporal_spectrum_loss(xs, xt, time_dim=1, spectrum="power", spatial=spatial, backend="cpu")
    expected = _pixel_expected_mean(bs, bt) if spatial == "pixel" else _mean_expected(bs, bt)
    assert abs(got.item() - expected.item()) <= 1e-5 * abs(expected.item()), (got.item(), expected.item())


def test_attention_map_past_2_31_elements_cpu():
    """x (N, C, P) with N C P > 2^31: a[n, p] = mean_c x[n, c, p]^2, x[n, c, p] = buf[n sn + c + p]."""
    _skip_unless("cpu")
    N, C, P = 4, (1 << 15) + 1, 1 << 14
    sn = 1000
    g = torch.Generator().manual_seed(2)
    buf = torch.randn(N * sn + C + P, generator=g)
    x = buf.as_strided((N, C, P), (sn, 1, 1))
    got = raw_map(x, 2.0, 1, "cpu")
    cs = torch.cat((torch.zeros(1, dtype=torch.float64), (buf.double() ** 2).cumsum(0)))
    start = torch.arange(N)[:, None] * sn + torch.arange(P)[None, :]
    expected = (cs[start + C] - cs[start]) / C
    error = ((got.double() - expected).abs() / expected.abs()).max().item()
    assert error <= 1e-5, error


def test_apply_row_sums_past_2_31_elements_cpu():
    """attention_apply's reduce pass (its forward's only full read of F) over F (N, C, T, S)
    with N C T S > 2^31: q[r] = sum_s F[r, s], F[r, s] = buf[r + s]."""
    _skip_unless("cpu")
    N, C, Tn, Sn = 2, 3, 5462, 1 << 16
    rows = N * C * Tn
    g = torch.Generator().manual_seed(3)
    buf = torch.rand(rows + Sn, generator=g, dtype=torch.float64)
    F = buf.as_strided((N, C, Tn, Sn), (C * Tn, Tn, 1, 1))
    q = torch.full((rows,), float("nan"), dtype=torch.float64)
    apply_native.reduce(F, None, q)
    cs = torch.cat((torch.zeros(1, dtype=torch.float64), buf.cumsum(0)))
    expected = cs[Sn:Sn + rows] - cs[:rows]
    assert torch.allclose(q, expected, rtol=1e-10, atol=0), (q - expected).abs().max()


# ---- Triton (interpreter): only the last program ids run ---------------------------------

@contextlib.contextmanager
def only_last_programs(keep: int):
    """Runs the interpreter's grid over the last `keep` program ids of each axis only:
    the launch sees the full grid size, program_id returns the real (offset) ids."""
    import triton.language as tl
    from triton.runtime import interpreter
    from triton.runtime.interpreter import TensorHandle

    builder, executor = interpreter.interpreter_builder, interpreter.GridExecutor
    real_init, offsets = executor.__init__, [0, 0, 0]
    ran = []

    def init(self, fn, arg_names, grid, *args, **kwargs):
        real_init(self, fn, arg_names, grid, *args, **kwargs)
        full = self.grid

        def tail(call_args):
            sizes = tuple(full(call_args) if callable(full) else full)
            sizes = sizes + (1,) * (3 - len(sizes))
            offsets[:] = [max(0, n - keep) for n in sizes]
            ran.append(sizes)
            return tuple(n - o for n, o in zip(sizes, offsets))
        self.grid = tail

    def program_id(axis):
        return TensorHandle(np.array([builder.grid_idx[axis] + offsets[axis]], dtype=np.int32), tl.int32)

    executor.__init__ = init
    builder.create_get_program_id = program_id
    try:
        yield ran
    finally:
        executor.__init__ = real_init
        del builder.create_get_program_id


@pytest.mark.parametrize("spatial", ["pixel", "mean"])
def test_spectrum_triton_last_programs_past_2_31_lines(spatial):
    """The last programs of the pixel / group kernels, whose lines lie past 2^31, write
    the partial sums of exactly their lines. Fails while the Triton kernels compute
    `line < B * S` (and other size products) in int32 (fixed on branch issue-11-triton)."""
    _skip_unless("triton")
    from vkd_kernels.spectrum import triton_kernels

    bs, bt = _inputs(4)
    xs, xt = _lines_view(bs, B, T, S), _lines_view(bt, B, T, S)
    pr = make_problem(xs, xt, time_dim=1, num_segments=None, spectrum="power", norm="backward",
                      spatial=spatial, reduction="sum", eps=0.0)
    w = effective_weights(None, False, pr.K, DEVICE, torch.float32)
    keep = 2 if spatial == "pixel" else 1
    with only_last_programs(keep) as ran:
        partials = triton_kernels.forward(pr, xs, xt, w, None)
    (programs, _, _), = ran
    got = partials[programs - keep:].double()
    if spatial == "pixel":
        # program p: BLOCK_L // 16 batch rows times 16 consecutive s (triton_kernels._pixel_lines)
        rows = triton_kernels.launch_constexprs(triton_kernels._pixel_forward, T, torch.float32)["BLOCK_L"] // 16
        blocks_s = -(-S // 16)
        d = _pixel_line_d(bs, bt).sum(1)  # by distinct line j = b + s
        expected = []
        for p in range(programs - keep, programs):
            b = torch.arange((p // blocks_s) * rows, min((p // blocks_s + 1) * rows, B))
            s = torch.arange((p % blocks_s) * 16, min((p % blocks_s + 1) * 16, S))
            expected.append(d[(b[:, None] + s[None, :]).flatten()].sum())
        expected = torch.stack(expected)
    else:  # one program per b; the last ones are b = B - keep .. B - 1
        b = torch.arange(B - keep, B)
        expected = ((_window_mean(_line_spectra(bs), b) - _window_mean(_line_spectra(bt), b)) ** 2).sum(1)
    assert torch.isfinite(got).all(), got
    assert torch.allclose(got, expected, rtol=1e-4, atol=0), (got, expected)


# ---- one program of each Triton pixel kernel, forward and backward, on the backend's device ----



def _one_line_loss(xs, xt):
    """Loss (reduction="sum", spectrum magnitude, norm ortho) of one line and its gradient."""
    xs = xs.clone().requires_grad_(True)
    pr = make_problem(xs, xt, time_dim=1, num_segments=None, spectrum="magnitude", norm="ortho",
                      spatial="pixel", reduction="sum", eps=1e-12)
    loss = temporal_spectrum_loss_reference(xs, xt, pr, None, norm="ortho", spectrum="magnitude",
                                            spatial="pixel", reduction="sum")
    loss.backward()
    return loss.detach(), xs.grad, pr


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_pixel_kernels_past_2_31_lines_one_program(dtype):
    """Program 0 of each Triton pixel kernel (forward and backward), launched directly on a
    device tensor: a line mask computed as the int32 product B * S masks every line there,
    the loss is 0 and no gradient is written. One line broadcast with zero strides."""
    device = device_for("triton")
    _skip_unless("triton", device)
    T = 8
    from vkd_kernels.spectrum import triton_kernels as tk

    xs, xt = (torch.randn(1, T, 1, dtype=dtype, device=device) for _ in range(2))
    loss, grad, pr = _one_line_loss(xs, xt)
    def config(kernel):
        return dict(tk.launch_constexprs(kernel, T, dtype), BLOCK_S=16, ALIGN=1, **tk._launch_options(kernel, T, dtype))

    c = config(tk._pixel_forward)
    lines = lambda x: x.expand(B, T, S)  # noqa: E731 - strides (0, 1, 0)
    w = torch.ones(pr.K, dtype=torch.float32, device=device)
    acc = torch.float64 if dtype == torch.float64 else torch.float32
    out = torch.full((1,), float("nan"), dtype=acc, device=device)
    # program 0 only: its BLOCK_L lines, all equal to the one line
    tk._pixel_forward[(1,)](lines(xs), lines(xt), w, out, B, T, S, pr.K, pr.mode, pr.scale, pr.eps, 1.0,
                            0, 1, 0, 0, 1, 0, 0, 0, 0, STORE_D=False, **c)
    assert_close(out, loss.to(acc).view(1) * c["BLOCK_L"], dtype, "partial sum of program 0")
    dx = torch.full((T,), float("nan"), dtype=dtype, device=device)
    grad_out = torch.ones(1, dtype=dtype, device=device).expand(B, pr.K, S)
    # every line writes its (equal) gradient to the same T elements
    tk._pixel_backward[(1,)](lines(xs), lines(xt), w, grad_out, dx.as_strided((B, T, S), (0, 1, 0)), xt,
                             B, T, S, pr.K, pr.mode, pr.scale, pr.eps, 1.0, 0, 1, 0, 0, 1, 0, 0, 0, 0,
                             0, 1, 0, 0, 0, 0, NEED_S=True, NEED_T=False, **config(tk._pixel_backward))
    assert_close(dx, grad.view(T), dtype, "student gradient")
