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

import collections
import math
import weakref
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


def _capturing(device: torch.device) -> bool:
    return device.type == "cuda" and torch.cuda.is_current_stream_capturing()


def _build_weights(source: torch.Tensor, drop_dc: bool, K: int, device: torch.device, dtype: torch.dtype,
                   check: bool) -> torch.Tensor:
    w = (source.detach() if source.requires_grad else source).to(device=device, dtype=dtype)  # no copy if so
    if w.dim() != 1 or w.shape[0] != K:
        raise ValueError(f"bin_weights must have shape ({K},) = (T//2 + 1,), got {tuple(w.shape)}")
    if check and not torch.isfinite(w).all():  # a host sync on CUDA: once per tensor and version
        raise ValueError("bin_weights contains NaN or inf values")
    if drop_dc:
        w = w.clone()
        w[0] = 0.0
    return w.contiguous()


# Weights made from a bin_weights tensor, by id(tensor): (weak reference, version, weights
# or None where the tensor serves as it is); an entry leaves when its tensor dies.
_TENSOR_WEIGHTS: dict = {}
# Weights made from None (all ones) or a sequence of values, by value (least recent out first).
_VALUE_WEIGHTS: "collections.OrderedDict" = collections.OrderedDict()
_MAX_VALUE_WEIGHTS = 64


def _tensor_weights(source: torch.Tensor, drop_dc: bool, K: int, device: torch.device,
                    dtype: torch.dtype) -> torch.Tensor:
    if _capturing(device):  # made in the graph, so replays see in-place writes; no check (a sync)
        return _build_weights(source, drop_dc, K, device, dtype, check=False)
    key = (id(source), drop_dc, K, device, dtype)
    entry = _TENSOR_WEIGHTS.get(key)
    if entry is None or entry[0]() is not source or entry[1] != source._version:
        w = _build_weights(source, drop_dc, K, device, dtype, check=True)
        ref = weakref.ref(source, lambda _, key=key: _TENSOR_WEIGHTS.pop(key, None))
        entry = _TENSOR_WEIGHTS[key] = (ref, source._version, None if w is source else w)
    return source if entry[2] is None else entry[2]


def _value_weights(values: Optional[tuple], drop_dc: bool, K: int, device: torch.device,
                   dtype: torch.dtype) -> torch.Tensor:
    key = (values, drop_dc, K, device, dtype)
    w = _VALUE_WEIGHTS.get(key)
    if w is None:
        source = torch.ones(K, dtype=dtype, device=device) if values is None else torch.tensor(values, dtype=dtype)
        w = _build_weights(source, drop_dc, K, device, dtype, check=values is not None)
        if not _capturing(device):  # a tensor made under capture holds data only in replays
            _VALUE_WEIGHTS[key] = w
            if len(_VALUE_WEIGHTS) > _MAX_VALUE_WEIGHTS:
                _VALUE_WEIGHTS.popitem(last=False)
    else:
        _VALUE_WEIGHTS.move_to_end(key)
    return w


def effective_weights(bin_weights: Union[None, torch.Tensor, Sequence[float]], drop_dc: bool, K: int,
                      device: torch.device, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The (K,) weights w (default all ones; drop_dc zeroes w_0) in ``dtype``, the
    accumulation dtype of the inputs (accumulation_dtype: float64 stays float64), so
    every backend reads them without rounding. Read-only.

    Made (copied, checked for NaN/inf: a host sync on CUDA) once per bin_weights and
    options, so a repeated call neither copies, launches nor synchronises: a tensor is
    known by its identity and version (a new tensor or an in-place write makes them
    anew; a tensor already in the right form is used as it is), None and sequences by
    value. Under CUDA graph capture a tensor's weights are made inside the graph (its
    replays see in-place writes) without the check, which would synchronise. Made outside
    inference mode, so that weights first made under it serve a later training call."""
    with torch.inference_mode(False):
        return _weights(bin_weights, drop_dc, K, device, dtype)


def _weights(bin_weights, drop_dc: bool, K: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    if isinstance(bin_weights, torch.Tensor):
        return _tensor_weights(bin_weights, drop_dc, K, device, dtype)
    values = None
    if bin_weights is not None:  # known by its values, read in Python (no tensor per call)
        try:
            values = tuple(float(v) for v in bin_weights)
        except TypeError:  # not a flat sequence of numbers
            values = ()
        if len(values) != K:
            shape = tuple(torch.as_tensor(bin_weights).shape)
            raise ValueError(f"bin_weights must have shape ({K},) = (T//2 + 1,), got {shape}")
    return _value_weights(values, drop_dc, K, device, dtype)
