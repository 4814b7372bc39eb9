"""Loading of the compiled extension ``vkd_kernels._C`` and the glue to call it.

The extension is torch-free: it takes the device (``device_arg``: "cpu" or "cuda:N"),
data pointers, shapes, strides and a stream handle of that device; its CUDA launchers
make device N current around each launch. If it could not be built or imported, ``EXT`` is None, ``EXT_ERROR`` says
why, and a one-time warning is emitted; every op then still works through the
reference (and, on CUDA, Triton) backends.
"""
from __future__ import annotations

import functools
import sys
import warnings

import torch


def _extension_exists() -> bool:
    """Is there a _C to import at all? Asks every import finder directly (not through
    sys.modules, which a test may have blocked), so an editable install's finder, which
    maps _C to its build folder, counts as well as a file in the package folder."""
    name, path = f"{__package__}._C", list(sys.modules[__package__].__path__)
    for finder in sys.meta_path:
        try:
            if finder.find_spec(name, path) is not None:
                return True
        except (AttributeError, ImportError, ValueError):
            continue
    return False


try:
    from . import _C as EXT

    EXT_ERROR: str | None = None
except ImportError as error:  # pragma: no cover - exercised by the fallback test
    EXT = None
    if not _extension_exists():
        EXT_ERROR = ("vkd_kernels._C is not installed (built without a C++ compiler, or with "
                     "VKD_BUILD_EXTENSION=OFF)")
    else:
        EXT_ERROR = f"vkd_kernels._C could not be imported ({error})"
    warnings.warn(
        f"{EXT_ERROR}; the 'cpu' and 'cuda' backends are unavailable and CPU tensors "
        "use the eager reference. Reinstall with a C++17 compiler (and nvcc for CUDA).",
        RuntimeWarning,
        stacklevel=2,
    )

_DTYPE_CODES = {torch.float32: 0, torch.float64: 1, torch.float16: 2, torch.bfloat16: 3}


def dtype_code(dtype: torch.dtype) -> int:
    """The csrc/common/dtypes.h code of a floating dtype."""
    return _DTYPE_CODES[dtype]


def ptr(tensor: torch.Tensor | None) -> int:
    """Data pointer of a tensor, 0 for None."""
    return 0 if tensor is None else tensor.data_ptr()


def device_arg(device: torch.device) -> str:
    """The extension's name of ``device``: "cpu", or "cuda:N" with N the device index
    (the current device when ``device`` has none)."""
    if device.type != "cuda":
        return device.type
    return f"cuda:{torch.cuda.current_device() if device.index is None else device.index}"


def stream(device: torch.device) -> int:
    """The current CUDA stream handle for ``device`` (0 on the CPU)."""
    return torch.cuda.current_stream(device).cuda_stream if device.type == "cuda" else 0


def has_cuda_kernels() -> bool:
    """Whether the extension was built with CUDA kernels (build info only)."""
    return EXT is not None and bool(EXT.build_info()["cuda"])


@functools.lru_cache(maxsize=None)
def cuda_unavailable() -> str | None:
    """Why the extension's CUDA kernels cannot run in this process, or None: asked once
    of the CUDA runtime inside the extension (cudart is linked in statically, so the
    driver must support its CUDA version, e.g. driver >= 580 for CUDA 13)."""
    if not has_cuda_kernels():
        return "vkd_kernels._C was built without CUDA kernels (no nvcc at build time)"
    return EXT.cuda_unavailable() or None
