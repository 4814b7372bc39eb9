"""Triton device functions every op's kernels share (imported by the triton_kernels
modules only, so importing an op never imports Triton)."""
import triton
import triton.language as tl


@triton.jit
def scalar(value, IS_FP64: tl.constexpr):
    """A float argument in the accumulation dtype. Float arguments are annotated fp64: the
    JIT would type a Python float fp32, rounding a float64 launch's q, M and eps at ~1e-8,
    so they arrive as doubles and are cast once here (exact for a float64 launch; for a
    float32 one the same rounding as an fp32 argument). tl.full also takes the Python
    float the interpreter passes, without a float32 detour."""
    return tl.full((), value, tl.float64 if IS_FP64 else tl.float32)


# Division and square root without a subroutine call. On NVIDIA GPUs an IEEE division
# (div.rn, both widths) and a float64 sqrt.rn compile to a call of a slow-path subroutine,
# and the registers ptxas saves around any such call showed up as 4-52 B of spills in the
# finish kernels (ptxas -v, sm_90). rsqrt has no slow path (rsqrt.approx for float32,
# libdevice's refined rsqrt for float64), and one Newton step on top of it gives the
# result to about an ulp, which the ops' tolerances (python_tests/tolerances.py) allow.

@triton.jit
def reciprocal(x):
    """1 / x for finite x > 0: r = rsqrt(x)^2, then one Newton step r + r (1 - x r)."""
    y = tl.math.rsqrt(x)
    r = y * y
    return r + r * (1.0 - x * r)


@triton.jit
def sqrt(x):
    """sqrt(x) for finite x >= 0 (0 at 0): s = x rsqrt(x), then one Newton step
    s + (x - s^2) rsqrt(x) / 2."""
    y = tl.math.rsqrt(tl.where(x > 0, x, 1.0))
    s = x * y
    return tl.where(x > 0, s + 0.5 * y * (x - s * s), 0.0)
