"""Options, validation and the canonical (B, T, S) view of the temporal spectrum loss.

Every input layout maps to a strided view (B, T, S): B = dims before time,
S = dims after time. Lines x[b, :, s] are compared in groups of P consecutive s:
P = 1 for spatial="pixel", P = prod(spatial dims) for spatial="mean". With
``num_segments=T`` a TSM input (N*T, C, *spatial) is read as (N, T, C, *spatial).
The reduction="none" output is (B, K, G), G = S / P, shown to the user as the input
layout with the time axis replaced by the K = T//2 + 1 frequency bins (and the
spatial dims dropped for spatial="mean").
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Optional, Sequence, Union

import torch

from .._checks import check_choice, check_pair, check_positive_number
from .._math import accumulation_dtype  # noqa: F401  (the ops import it from here)

SPECTRA = ("magnitude", "power", "log_magnitude")
NORMS = ("backward", "ortho", "forward")
SPATIAL = ("pixel", "mean")
REDUCTIONS = ("mean", "sum", "none")
MAX_FUSED_T = 64  # csrc/common/spectrum.h kMaxT; the Triton kernels pad T to 64


@dataclass(frozen=True)
class SpectrumProblem:
    """Shapes and options of one call, in the canonical view."""

    B: int
    T: int
    S: int
    P: int
    mode: int          # index into SPECTRA
    scale: float       # norm scale folded into the twiddles
    eps: float
    unfolded_shape: tuple  # input shape with time as its own axis
    time_dim: int          # time axis of unfolded_shape
    out_shape: tuple       # user-visible shape of d for reduction="none"

    @property
    def K(self) -> int:
        return self.T // 2 + 1

    @property
    def G(self) -> int:
        return self.S // self.P

    @property
    def count(self) -> int:
        """Number of compared elements (the denominator of reduction="mean")."""
        return self.B * self.G * self.K

    def view(self, x: torch.Tensor) -> torch.Tensor:
        """x as (B, T, S): a view when the strides allow it, else a contiguous copy."""
        return x.reshape(self.unfolded_shape).reshape(self.B, self.T, self.S)


def view_strides(x: Optional[torch.Tensor]) -> tuple:
    """Strides of a (B, T, S) or (B, K, G) view; zeros for an absent tensor."""
    return tuple(x.stride()) if x is not None else (0, 0, 0)


def norm_scale(norm: str, T: int) -> float:
    return {"backward": 1.0, "ortho": 1.0 / math.sqrt(T), "forward": 1.0 / T}[norm]


def make_problem(student, teacher, *, time_dim: int, num_segments: Optional[int], spectrum: str,
                 norm: str, spatial: str, reduction: str, eps: float) -> SpectrumProblem:
    """Validate the arguments and build the canonical problem."""
    check_pair("student", student, "teacher", teacher)
    check_choice("spectrum", spectrum, SPECTRA)
    check_choice("norm", norm, NORMS)
    check_choice("spatial", spatial, SPATIAL)
    check_choice("reduction", reduction, REDUCTIONS)
    check_positive_number("eps", eps, allow_zero=spectrum != "log_magnitude")
    shape = tuple(student.shape)
    if num_segments is not None:
        if isinstance(num_segments, bool) or not isinstance(num_segments, int) or num_segments < 2:
            raise ValueError(f"num_segments must be an int >= 2, got {num_segments!r}")
        if len(shape) < 2 or shape[0] % num_segments:
            raise ValueError(
                f"num_segments={num_segments} must divide the batch dimension of the "
                f"(N*T, C, ...) input, got shape {shape}")
        unfolded = (shape[0] // num_segments, num_segments) + shape[1:]
        time_dim, first_spatial = 1, 3
    else:
        if len(shape) < 2:
            raise ValueError(f"student must have at least 2 dims, got shape {shape}")
        if isinstance(time_dim, bool) or not isinstance(time_dim, int) or not -len(shape) <= time_dim < len(shape):
            raise ValueError(f"time_dim={time_dim!r} is out of range for a {len(shape)}-d input")
        time_dim %= len(shape)
        unfolded, first_spatial = shape, time_dim + 1
    T = unfolded[time_dim]
    if T < 2:
        raise ValueError(f"the time dimension must have length >= 2, got T={T} (shape {shape})")
    first_spatial = min(first_spatial, len(unfolded))
    B = math.prod(unfolded[:time_dim])
    S = math.prod(unfolded[time_dim + 1:])
    P = math.prod(unfolded[first_spatial:]) if spatial == "mean" else 1
    K = T // 2 + 1
    kept = unfolded[time_dim + 1:first_spatial] if spatial == "mean" else unfolded[time_dim + 1:]
    return SpectrumProblem(B=B, T=T, S=S, P=P, mode=SPECTRA.index(spectrum), scale=norm_scale(norm, T),
                           eps=float(eps), unfolded_shape=unfolded, time_dim=time_dim,
                           out_shape=unfolded[:time_dim] + (K,) + kept)


@functools.lru_cache(maxsize=64)
def _ones(K: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    return torch.ones(K, dtype=dtype, device=device)


def effective_weights(bin_weights: Union[None, torch.Tensor, Sequence[float]], drop_dc: bool, K: int,
                      device: torch.device, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The (K,) weights w (default all ones; drop_dc zeroes w_0) in ``dtype``, the
    accumulation dtype of the inputs (accumulation_dtype: float64 stays float64), so
    every backend reads them without rounding. Read-only."""
    if bin_weights is None and not drop_dc:
        return _ones(K, device, dtype)
    if bin_weights is None:
        w = torch.ones(K, dtype=dtype, device=device)
    else:
        w = torch.as_tensor(bin_weights).detach().to(device=device, dtype=dtype)
        if w.dim() != 1 or w.shape[0] != K:
            raise ValueError(f"bin_weights must have shape ({K},) = (T//2 + 1,), got {tuple(w.shape)}")
        if not torch.isfinite(w).all():
            raise ValueError("bin_weights contains NaN or inf values")
        w = w.clone()
    if drop_dc:
        w[0] = 0.0
    return w.contiguous()
