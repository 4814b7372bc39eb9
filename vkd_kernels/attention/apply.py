"""attention_apply (ops.md 3b): F_fg = F * lam * sum(F) / sum(F * lam), fused.

F (N, C, T, *spatial) is read as rows (B, R, S): R = C*T rows of S = prod(spatial)
elements; lam (N, C, T) is constant along each row. B = N with ``per_sample=True``
(sums per sample); B = 1 with ``per_sample=False`` (the published code's batch-global
sums). With q_r = sum_s F[r, s], s1 = sum_r q_r, s2 = sum_r lam_r q_r, k = s1 / s2:

    forward   out = F * (k lam_r)                         one read of F (q), one read + write
    backward  m_r = sum_s F g,  G = sum_r lam_r m_r        one read of F and g
              dF = g * (k lam_r) + (G / s2) (1 - k lam_r)  one read of g, one write
              dlam_r = k (m_r - (G / s2) q_r)

Each pass is a single torch op reading each tensor once (a sum, a batched dot, a
broadcast multiply, an addcmul), so a hand-written kernel would not move fewer
bytes; only the (B, R) row statistics are kept for backward besides F and lam.
Where s2 == 0 (e.g. lam or F all zero in a sample) k and 1/s2 are taken as 0: that
sample's output and gradients are 0, never NaN.
"""
from __future__ import annotations

import torch

from .._backend import BACKENDS
from .._checks import check_choice, check_float_tensor


def _safe_inverse(s: torch.Tensor) -> torch.Tensor:
    nonzero = s != 0
    return torch.where(nonzero, 1.0 / torch.where(nonzero, s, torch.ones_like(s)), 0.0)


class _Apply(torch.autograd.Function):
    """rows (B, R, S), lam (B, R) -> rows * k lam_r (module docstring)."""

    @staticmethod
    def forward(ctx, rows: torch.Tensor, lam: torch.Tensor):
        acc = torch.float64 if rows.dtype == torch.float64 else torch.float32
        q = rows.sum(-1, dtype=acc)
        lam_acc = lam.to(acc)
        inv_s2 = _safe_inverse((lam_acc * q).sum(-1))
        k = q.sum(-1) * inv_s2
        alpha = k[:, None] * lam_acc
        ctx.save_for_backward(rows, lam_acc, q, inv_s2, k)
        return rows * alpha.to(rows.dtype)[..., None]

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        rows, lam_acc, q, inv_s2, k = ctx.saved_tensors
        m = (rows.unsqueeze(-2) @ grad.unsqueeze(-1)).view(q.shape).to(q.dtype)
        g_over_s2 = (lam_acc * m).sum(-1, keepdim=True) * inv_s2[:, None]
        alpha = k[:, None] * lam_acc
        d_rows = torch.addcmul((g_over_s2 * (1.0 - alpha)).to(grad.dtype)[..., None], grad,
                               alpha.to(grad.dtype)[..., None])
        d_lam = k[:, None] * (m - g_over_s2 * q)
        return (d_rows if ctx.needs_input_grad[0] else None), (d_lam if ctx.needs_input_grad[1] else None)


def _check_apply(F, lam, per_sample):
    check_float_tensor("F", F)
    check_float_tensor("lam", lam)
    if F.dim() < 3 or lam.shape != F.shape[:3]:
        raise ValueError(f"lam must be F.shape[:3] = (N, C, T), got F {tuple(F.shape)} and lam {tuple(lam.shape)}")
    if lam.device != F.device:
        raise ValueError(f"lam is on {lam.device} but F is on {F.device}")
    if lam.dtype != F.dtype:
        raise TypeError(f"lam has dtype {lam.dtype} but F has dtype {F.dtype}")
    if not isinstance(per_sample, bool):
        raise TypeError(f"per_sample must be a bool, got {type(per_sample).__name__}")


def attention_apply_reference(F: torch.Tensor, lam: torch.Tensor, per_sample: bool = True) -> torch.Tensor:
    """The plain formula (autograd through it): F * lam * sum(F) / sum(F * lam)."""
    weighted = F * lam.view(lam.shape + (1,) * (F.dim() - 3))
    dims = tuple(range(1, F.dim())) if per_sample else tuple(range(F.dim()))
    shape = (-1,) + (1,) * (F.dim() - 1)
    return weighted * (F.sum(dims).reshape(shape) / weighted.sum(dims).reshape(shape))


def attention_apply(F: torch.Tensor, lam: torch.Tensor, *, per_sample: bool = True,
                    backend: str = "auto") -> torch.Tensor:
    """F_fg = F * lam * sum(F) / sum(F * lam) for F (N, C, T, *spatial), lam (N, C, T).

    lam is broadcast over the spatial axes; the sums run per sample (``per_sample=True``)
    or over the whole batch (``False``, as the published code). ``backend="reference"``
    evaluates the plain formula (which yields NaN where sum(F * lam) == 0); any other
    backend the fused form of the module docstring (0 there).
    """
    check_choice("backend", backend, BACKENDS)
    _check_apply(F, lam, per_sample)
    if backend == "reference":
        return attention_apply_reference(F, lam, per_sample)
    B = F.shape[0] if per_sample else 1
    rows = F.reshape(B, -1, F[0, 0, 0].numel())
    return _Apply.apply(rows, lam.reshape(B, -1)).view(F.shape)
