"""What every op's Triton module shares: the dtypes and dot precisions of a launch and
CUDA's grid limits. Imports neither Triton nor the kernels."""
from __future__ import annotations

import torch

# Triton's name of each tensor dtype, as written in a signature ("*fp32" for a pointer).
TRITON_TYPES = {torch.float32: "fp32", torch.float64: "fp64", torch.float16: "fp16", torch.bfloat16: "bf16"}

# tl.dot input_precision per input dtype: tf32x3 keeps float32 dots at ~1e-6 relative error
# on tensor cores, float64 dots are exact ("ieee"), half types are upcast to float32 first.
DOT_PRECISION = {torch.float32: "tf32x3", torch.float64: "ieee", torch.float16: "tf32", torch.bfloat16: "tf32"}


# CUDA's grid limits: x < 2**31, y and z <= 65535. Launchers put every size-dependent
# count on x and check it (a clear error rather than a failed launch).
GRID_LIMITS = (2**31 - 1, 65535, 65535)


def check_grid(grid: tuple) -> tuple:
    """``grid``, or a ValueError if a dimension exceeds GRID_LIMITS."""
    for axis, (size, limit) in enumerate(zip(grid, GRID_LIMITS)):
        if size > limit:
            raise ValueError(f"the Triton launch needs {size} programs on grid axis {'xyz'[axis]}, more than "
                             f"CUDA's {limit}: the problem is too large for one launch")
    return grid
