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
