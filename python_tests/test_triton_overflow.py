"""The spectrum pixel kernels past 2**31 lines, one program launched directly under the
Triton interpreter (which wraps int32 products as a GPU does): a line mask computed as
the int32 product B * S masks every line there, the loss is 0 and no gradient is written.
The inputs are one line broadcast with zero strides, so no memory is needed."""
import pytest
import torch

pytest.importorskip("triton")

from conftest import DEVICE, assert_close  # noqa: E402
from vkd_kernels import _backend  # noqa: E402
from vkd_kernels.spectrum.reference import temporal_spectrum_loss_reference  # noqa: E402
from vkd_kernels.spectrum.layout import make_problem  # noqa: E402

pytestmark = pytest.mark.skipif(_backend.device_unsupported("triton", DEVICE) is not None,
                                reason="Triton cannot run here")

B, S = 2**16, 2**15 + 3  # B * S > 2**31 lines, each factor an int32
T = 8


def _line_loss(xs, xt):
    """Loss (reduction="sum", spectrum magnitude, norm ortho) of one line and its gradient."""
    xs = xs.clone().requires_grad_(True)
    pr = make_problem(xs, xt, time_dim=1, num_segments=None, spectrum="magnitude", norm="ortho",
                      spatial="pixel", reduction="sum", eps=1e-12)
    loss = temporal_spectrum_loss_reference(xs, xt, pr, None, norm="ortho", spectrum="magnitude",
                                            spatial="pixel", reduction="sum")
    loss.backward()
    return loss.detach(), xs.grad, pr


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_pixel_kernels_past_2_31_lines(dtype):
    from vkd_kernels.spectrum import triton_kernels as tk

    xs, xt = (torch.randn(1, T, 1, dtype=dtype, device=DEVICE) for _ in range(2))
    loss, grad, pr = _line_loss(xs, xt)
    c = tk.launch_constexprs(T, dtype)
    lines = lambda x: x.expand(B, T, S)  # noqa: E731 - strides (0, 1, 0)
    w = torch.ones(pr.K, dtype=torch.float32, device=DEVICE)
    acc = torch.float64 if dtype == torch.float64 else torch.float32
    out = torch.full((1,), float("nan"), dtype=acc, device=DEVICE)
    # program 0 only: its BLOCK_L lines, all equal to the one line
    tk._pixel_forward[(1,)](lines(xs), lines(xt), w, out, B, T, S, pr.K, pr.mode, pr.scale, pr.eps,
                            0, 1, 0, 0, 1, 0, 0, 0, 0, STORE_D=False, **c, num_warps=4)
    assert_close(out, loss.to(acc).view(1) * c["BLOCK_L"], dtype, "partial sum of program 0")
    dx = torch.full((T,), float("nan"), dtype=dtype, device=DEVICE)
    grad_out = torch.ones(1, dtype=dtype, device=DEVICE).expand(B, pr.K, S)
    # every line writes its (equal) gradient to the same T elements
    tk._pixel_backward[(1,)](lines(xs), lines(xt), w, grad_out, dx.as_strided((B, T, S), (0, 1, 0)), xt,
                             B, T, S, pr.K, pr.mode, pr.scale, pr.eps, 1.0, 0, 1, 0, 0, 1, 0, 0, 0, 0,
                             0, 1, 0, 0, 0, 0, NEED_S=True, NEED_T=False, **c, num_warps=4)
    assert_close(dx, grad.view(T), dtype, "student gradient")
