"""The CPU C++ and CUDA C++ backends of the GKD head's tail kernels: calls into
vkd_kernels._C with pointers (same interface as triton_kernels)."""
from __future__ import annotations

from ... import _ext


def _call(pass_: int, ref, N, J, C, groups, TP, M=1.0, eps=1.0, Z=None, w=None, bias=None, gamma=None, beta=None,
          H=None, stats=None, out=None, lin_bias=None, lam=None, dlam=None, A=None, dout=None, dZ=None, dgamma=None,
          dbeta=None, dbias=None) -> None:
    p = _ext.ptr
    _ext.EXT.head_tail(_ext.device_arg(ref.device), pass_, N, J, C, groups, TP, M, eps, _ext.dtype_code(ref.dtype),
                       p(Z), p(w), p(bias), p(gamma), p(beta), p(H), p(stats), p(out), p(lin_bias), p(lam), p(dlam),
                       tuple(dlam.stride()) if dlam is not None else (0, 0, 0), p(A), p(dout), p(dZ), p(dgamma),
                       p(dbeta), p(dbias), _ext.stream(ref.device))


def forward(Z, w, cb, gamma, beta, groups: int, M: float, eps: float, H, stats) -> None:
    """+ conv bias, weighted GroupNorm + ReLU: writes H (J + 1, N, C) (row J = 1) and stats (N, G, 2)."""
    N, J, C = Z.shape
    _call(0, Z, N, J, C, groups, 1, M, eps, Z=Z, w=w, bias=cb, gamma=gamma, beta=beta, H=H, stats=stats)


def output(out, bias, lam) -> None:
    """lam (N, C, T') = sigmoid(out (T', N C) + bias)."""
    N, C, TP = lam.shape
    _call(1, out, N, 1, C, 1, TP, out=out, lin_bias=bias, lam=lam)


def backward(Z, w, cb, gamma, beta, stats, lam, dlam, A, groups: int, M: float, dout, dZ, dgamma, dbeta,
             dcb) -> None:
    """Writes dout (T', N, C), dZ (N, J, C) and dgamma, dbeta, dcb (C,) where given."""
    N, J, C = Z.shape
    _call(2, Z, N, J, C, groups, A.shape[0], M, 1.0, Z=Z, w=w, bias=cb, gamma=gamma, beta=beta, stats=stats,
          lam=lam, dlam=dlam, A=A, dout=dout, dZ=dZ, dgamma=dgamma, dbeta=dbeta, dbias=dcb)
