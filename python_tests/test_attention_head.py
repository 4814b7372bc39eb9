"""The GKD attention head: the compact tail against the plain layers (exactness, every
gradient, FLOPs, no (N, C, L) tensor), the module, errors (attention_apply: test_attention_apply.py)."""
import pytest
import tolerances
import torch
import torch.nn.functional as F
from harness import FUSED, assert_close, call, compare, device_for, expect_device
from tolerances import tolerance
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

from vkd_kernels import GenerativeAttentionHead, attention_head_tail
from vkd_kernels.gkd.head import column_classes

numeric = pytest.mark.numeric
NAMES = ("y", "conv_weight", "conv_bias", "gn_weight", "gn_bias", "linear_weight", "linear_bias")


def tail_inputs(device, N, C1, C, T, L, T_out=None, dtype=torch.float64):
    """(y, conv_weight, conv_bias, gn_weight, gn_bias, linear_weight, linear_bias), all requiring grad."""
    T_out = T_out or T

    def randn(*shape):
        return torch.randn(shape, device=device)
    tensors = (randn(N, C1, T), randn(C, C1, 3) / C1 ** 0.5, randn(C), 1 + 0.3 * randn(C), randn(C),
               randn(T_out, L) / L ** 0.5, randn(T_out))
    return [t.to(dtype).requires_grad_() for t in tensors]


def tail(backend, args, G, L):
    y, cw, cb, gw, gb, lw, lb = args
    return attention_head_tail(y, cw, cb, gw, gb, G, lw, lb, upsample_length=L, backend=backend)


# (N, C1, C, T, L, G): L a multiple of T, not a multiple, L < T, L = T, runs of length 1 and 2
SHAPES = [(2, 6, 8, 8, 64, 4), (1, 5, 6, 5, 7, 3), (2, 3, 4, 7, 5, 2), (2, 4, 4, 3, 3, 1), (1, 4, 8, 4, 9, 2),
          (2, 3, 6, 6, 12, 3), (1, 2, 4, 1, 6, 2), (3, 4, 4, 13, 40, 2), (2, 2, 4, 2, 1, 2)]


@numeric
@pytest.mark.parametrize("backend", FUSED)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", (torch.float64, torch.float32))
def test_compact_tail_matches_plain_layers(backend, device, shape, dtype):
    N, C1, C, T, L, G = shape
    if dtype == torch.float32 and C // G * L <= 2:
        pytest.skip(tolerances.HEAD_TWO_VALUE_GROUPS)
    check_tail(backend, device, shape, dtype)


@numeric
@pytest.mark.parametrize("backend", FUSED)
@pytest.mark.parametrize("dtype", (torch.bfloat16, torch.float16))
def test_compact_tail_half_precision(backend, device, dtype):
    check_tail(backend, device, (2, 8, 8, 5, 23, 4), dtype)


def check_tail(backend, device, shape, dtype):
    """Lambda and all seven gradients against the plain layers in float64 (harness.compare)."""
    N, C1, C, T, L, G = shape
    args = tail_inputs(device, N, C1, C, T, L, T_out=max(1, T - 1), dtype=dtype)
    compare(lambda b, a: tail(b, a, G, L), args, backend, device, bound=tolerance(dtype, "attention_head_tail"),
            names=("lambda",) + tuple(f"d{n}" for n in NAMES))


@pytest.mark.parametrize("backend", FUSED)
@pytest.mark.parametrize("shape", SHAPES[1:5])
def test_gradcheck_float64(backend, device, shape):
    N, C1, C, T, L, G = shape
    args = tail_inputs(device, 1, min(C1, 3), C, T, L)
    # fast_mode (a random projection) for Triton keeps the interpreter run short
    assert call(torch.autograd.gradcheck, device, lambda *a: tail(backend, a, G, L), args,
                fast_mode=backend == "triton")


@pytest.mark.parametrize("backend", FUSED)
def test_tail_opcheck(backend, device):
    y, cw, cb, gw, gb, lw, lb = tail_inputs(device, 2, 3, 6, 4, 11)
    for present in (True, False):
        optional = [t if present else None for t in (cb, gw, gb, lb)]
        args = (y, cw, *optional[:3], 3, lw, optional[3], 11, 1e-5, backend)
        call(torch.library.opcheck, device, torch.ops.vkd.head_tail.default, args)
        lam, Wc, Z, H, stats, A = torch.ops.vkd.head_tail.default(*(t.detach() if isinstance(t, torch.Tensor) else t
                                                                     for t in args))
        call(torch.library.opcheck, device, torch.ops.vkd.head_tail_backward.default,
             (torch.randn_like(lam), y.detach(), *(t if t is None else t.detach() for t in optional[:3]), lam, Wc, Z,
              H, stats, A, 3, 11, backend, True))


@numeric
@pytest.mark.parametrize("backend", FUSED)
def test_biases_and_affine_may_be_none(backend, device):
    y, cw, _, _, _, lw, _ = tail_inputs(device, 2, 3, 4, 5, 11)
    got = call(attention_head_tail, device, y, cw, None, None, None, 2, lw, None, upsample_length=11,
               backend=backend)
    expected = attention_head_tail(y, cw, None, None, None, 2, lw, None, upsample_length=11, backend="reference")
    assert_close(got, expected, torch.float64, "lambda")
    grad = torch.randn_like(got)
    for name, g, e in zip(("dy", "dconv_weight", "dlinear_weight"), torch.autograd.grad(got, (y, cw, lw), grad),
                          torch.autograd.grad(expected, (y, cw, lw), grad)):
        assert_close(g, e, torch.float64, name)


@pytest.mark.parametrize("T, L", [(8, 1024), (5, 7), (7, 5), (3, 3), (1, 4), (4, 9), (6, 12), (13, 40)])
def test_column_classes_follow_torchs_nearest_rule(T, L):
    triples, inverse, counts = column_classes(T, L, torch.device("cpu"))
    src = F.interpolate(torch.arange(T, dtype=torch.float64).view(1, 1, T), size=L, mode="nearest").view(L).long()
    padded = torch.cat((torch.tensor([0]), src + 1, torch.tensor([0])))
    brute = torch.stack((padded[:-2], padded[1:-1], padded[2:]), 1)
    assert torch.equal(triples[inverse], brute) and int(counts.sum()) == L
    assert triples.shape[0] <= 3 * min(T, L)


class LargestTensor(TorchDispatchMode):
    """Records the largest tensor any op produces."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
        return out


@pytest.mark.parametrize("backend, builds", [("auto", False), ("reference", True)])
def test_never_builds_the_upsampled_tensors(backend, builds):
    N, C1, C, T, L = 2, 8, 16, 4, 256
    args = tail_inputs(device_for("auto"), N, C1, C, T, L, dtype=torch.float32)
    expect_device(device_for("auto"), args)
    with LargestTensor() as mode:
        tail(backend, args, 4, L).sum().backward()
    assert (mode.largest >= N * C * L) == builds, mode.largest


def test_flop_reduction_at_the_papers_shape():
    """At N=6, C1=512, C=1024, T=8, L=1024 the compact form needs >= 20x fewer FLOPs."""
    N, C1, C, T, L = 6, 512, 1024, 8, 1024
    args = [t.detach().requires_grad_() for t in tail_inputs(device_for("auto"), N, C1, C, T, L, dtype=torch.float32)]
    flops = {}
    for backend in ("auto", "reference"):
        with FlopCounterMode(display=False) as counter:
            tail(backend, args, 32, L).sum().backward()
        flops[backend] = counter.get_total_flops()
    assert flops["reference"] >= 20 * flops["auto"] > 0, flops


# ---- the module ------------------------------------------------------------------------

def test_module_fused_and_plain_agree_with_one_state_dict():
    device = device_for("auto")
    head = GenerativeAttentionHead(64, 8, (3, 5), gn_groups=8).to(device)
    plain = GenerativeAttentionHead(64, 8, (3, 5), gn_groups=8, fused=False).to(device)
    plain.load_state_dict(head.state_dict())
    assert head.state_dict().keys() == plain.state_dict().keys()
    x = torch.randn(2, 64, 8, 3, 5, device=device)
    got, expected = head(x), plain(x)
    assert got.shape == (2, 64, 8) and ((got > 0) & (got < 1)).all()
    assert_close(got, expected, torch.float32, "lambda")
    grad = torch.randn_like(got)
    got.backward(grad)
    expected.backward(grad)
    for (name, p), q in zip(head.named_parameters(), plain.parameters()):
        assert_close(p.grad, q.grad, torch.float32, name)


BAD = [
    (lambda a: attention_head_tail(a[0][0], *a[1:5], 2, *a[5:], upsample_length=9), ValueError, "y must be"),
    (lambda a: attention_head_tail(a[0], a[1][:, :2], *a[2:5], 2, *a[5:], upsample_length=9), ValueError,
     "conv_weight must be"),
    (lambda a: attention_head_tail(*a[:5], 3, *a[5:], upsample_length=9), ValueError, "gn_groups"),
    (lambda a: attention_head_tail(*a[:5], 2, *a[5:], upsample_length=8), ValueError, "linear_weight must be"),
    (lambda a: attention_head_tail(*a[:5], 2, *a[5:], upsample_length=0), ValueError, "upsample_length"),
    (lambda a: attention_head_tail(a[0], a[1], a[2][:3], *a[3:5], 2, *a[5:], upsample_length=9), ValueError,
     "conv_bias must have shape"),
    (lambda a: attention_head_tail(a[0].float(), *a[1:5], 2, *a[5:], upsample_length=9), ValueError,
     "must match y"),
    (lambda a: attention_head_tail(*a[:5], 2, *a[5:], upsample_length=9, eps=0), ValueError, "eps must be"),
    (lambda a: attention_head_tail(*a[:5], 2, *a[5:], upsample_length=9, backend="gpu"), ValueError, "backend"),
    (lambda a: GenerativeAttentionHead(48, 8, 3, gn_groups=32), ValueError, "must divide in_channels"),
    (lambda a: GenerativeAttentionHead(64, 8, 3, gn_groups=8)(torch.ones(1, 64, 8, 4, 3)), ValueError,
     "features must be"),
]


def test_tail_past_the_cpp_index_limit_is_refused_before_any_work():
    """The C++ head kernels index within a GroupNorm group in 32 bits: a tail with
    (J + 1) C past 2^31 is refused by the cpu backend with the reason, before any work
    (conv_weight a zero-stride view of 2^30 channels: nothing is allocated)."""
    y, _, _, _, _, A, _ = tail_inputs("cpu", 2, 3, 4, 5, 9)
    conv = torch.zeros((), dtype=y.dtype).expand(2**30, 3, 3)
    with pytest.raises(ValueError, match=r"backend='cpu' cannot run attention_head_tail: \(J \+ 1\) C = "):
        attention_head_tail(y, conv, None, None, None, 2, A, None, upsample_length=9, backend="cpu")


@pytest.mark.parametrize("case", range(len(BAD)))
def test_bad_input(case):
    call, error, message = BAD[case]
    with pytest.raises(error, match=message):
        call(tail_inputs("cpu", 2, 3, 4, 5, 9))


@pytest.mark.parametrize("backend", FUSED)
def test_strided_one_dimensional_parameters_are_read_by_their_strides(backend, device):
    """Biases and GroupNorm affine parameters given as strided views (every other element
    of a longer tensor): the kernels, reading them at [c], get contiguous copies."""
    N, C1, T, C, L, TP = 2, 8, 4, 16, 12, 6
    g = torch.Generator().manual_seed(0)
    y, conv_weight, linear_weight = (torch.randn(s, generator=g, dtype=torch.float64).to(device)
                                     for s in ((N, C1, T), (C, C1, 3), (TP, L)))
    conv_bias, gn_weight, gn_bias = (torch.randn(2 * C, generator=g, dtype=torch.float64).to(device)[::2]
                                     for _ in range(3))
    linear_bias = torch.randn(2 * TP, generator=g, dtype=torch.float64).to(device)[::2]
    expect_device(device, [y, conv_bias, linear_bias])
    args = (y, conv_weight, conv_bias, gn_weight, gn_bias, 4, linear_weight, linear_bias)
    torch.testing.assert_close(attention_head_tail(*args, upsample_length=L, backend=backend),
                               attention_head_tail(*args, upsample_length=L, backend="reference"))
