// Math of the GKD head's tail around its GEMMs (docs/ops.md 3b), shared by the CPU and CUDA
// kernels (csrc/cpu/head.cpp, csrc/cuda/head.cu) and mirrored by the Triton kernels
// (vkd_kernels/gkd/head/triton_kernels.py, whose op.py runs the GEMMs in between).
//
// Z holds the J distinct conv columns without bias, channels-last (N, J, C) contiguous;
// column class j stands for w_j of the L upsampled columns, so with z = Z + b the statistics
// of group g (channels [g Cg, (g+1) Cg)) are mean = sum_{j,c} w_j z / M,
// var = sum_{j,c} w_j (z - mean)^2 / M, M = Cg L, and H = ReLU(xhat gamma_c + beta_c),
// xhat = (z - mean) rstd, written (J + 1, N, C) with row J = 1 (the Linear's bias column).
// lambda = sigmoid(A H + bias) (A: (T', J)). Backward of group g over every sample:
// dout = dlambda lambda (1 - lambda) (written (T', N, C)), dH = A^T dout,
// dxhat = dH [h > 0] gamma, dz_jc = rstd (dxhat_jc - w_j / M (sum dxhat + xhat_jc sum dxhat xhat)),
// and dgamma = sum dH [h > 0] xhat, dbeta = sum dH [h > 0], dbias = sum dz over samples and columns.
#pragma once
#include <cmath>
#include <cstdint>
#include "arith.h"
#include "block.h"
#include "dtypes.h"

namespace vkd {
namespace head {

struct GroupNormProblem {
  int64_t N, J, C, G;
  double M;    // Cg * L, the number of upsampled elements per group
  double eps;
  int64_t TP;  // T', the Linear's outputs
  VKD_HD int32_t Cg() const { return int32_t(C) / int32_t(G); }  // C < 2^31 (see below)
};

// Indices within a group (j < J, c < C, t < T') are 32-bit: the host checks J C and T' C
// < 2^31 (gkd/head/layout.py), so the GPU divides in 32 bits (inline) instead of calling
// the 64-bit division routine; offsets into the (N, ., C) tensors are 64-bit products.
// Divisions, square roots and the sigmoid's reciprocal go through common/arith.h.

// Strides of dL/dlambda (N, C, T').
struct Strides3 { int64_t n, c, t; };

template <typename scalar_t, typename acc_t = typename Element<scalar_t>::acc_t>
VKD_HD acc_t load_or(const scalar_t* p, int64_t i, acc_t fallback) {
  return p ? acc_t(Element<scalar_t>::load(p + i)) : fallback;
}

// Forward of group (n, g): H and (mean, rstd) at stats[2 (n G + g)] (accumulation dtype).
template <typename scalar_t, typename Block>
VKD_HD void group_norm_relu_forward(const GroupNormProblem& pr, const scalar_t* Z, const scalar_t* w,
                                    const scalar_t* bias, const scalar_t* gamma, const scalar_t* beta, scalar_t* H,
                                    void* stats_out, int64_t n, int64_t g, const Block& block) {
  using acc_t = typename Element<scalar_t>::acc_t;
  using E = Element<scalar_t>;
  const int32_t Cg = pr.Cg(), size = int32_t(pr.J) * Cg;
  const int64_t c0 = g * Cg;
  const scalar_t* z = Z + n * pr.J * pr.C + c0;
  const acc_t M = acc_t(pr.M);
  acc_t sum = 0;
  for (int32_t e = block.lane; e < size; e += block.step) {
    const int32_t j = e / Cg, c = e % Cg;
    sum += acc_t(E::load(w + j)) * (acc_t(E::load(z + int64_t(j) * pr.C + c)) + load_or(bias, c0 + c, acc_t(0)));
  }
  const acc_t mean = divide(block.sum(sum), M);
  acc_t var = 0;
  for (int32_t e = block.lane; e < size; e += block.step) {
    const int32_t j = e / Cg, c = e % Cg;
    const acc_t d = acc_t(E::load(z + int64_t(j) * pr.C + c)) + load_or(bias, c0 + c, acc_t(0)) - mean;
    var += acc_t(E::load(w + j)) * d * d;
  }
  const acc_t rstd = reciprocal(root(divide(block.sum(var), M) + acc_t(pr.eps)));
  for (int32_t e = block.lane; e < size; e += block.step) {
    const int32_t j = e / Cg, c = e % Cg;
    const acc_t v = (acc_t(E::load(z + int64_t(j) * pr.C + c)) + load_or(bias, c0 + c, acc_t(0)) - mean) * rstd *
                        load_or(gamma, c0 + c, acc_t(1)) + load_or(beta, c0 + c, acc_t(0));
    E::store(H + (j * pr.N + n) * pr.C + c0 + c, v > acc_t(0) ? v : acc_t(0));
  }
  for (int32_t c = block.lane; c < Cg; c += block.step) E::store(H + (pr.J * pr.N + n) * pr.C + c0 + c, acc_t(1));
  if (block.lane == 0) {
    acc_t* stats = static_cast<acc_t*>(stats_out) + 2 * (n * pr.G + g);
    stats[0] = mean;
    stats[1] = rstd;
  }
}

// lambda[nc, t] (N C, T') = sigmoid(out[t, nc] + bias[t]) for out = A H (T', N C), the
// sigmoid as e / (1 + e) or 1 / (1 + e), e = exp(-|v|) <= 1 (no overflow for any v).
template <typename scalar_t>
VKD_HD void head_output(const GroupNormProblem& pr, const scalar_t* out, const scalar_t* bias, scalar_t* lam,
                        int64_t nc, int32_t t) {
  using acc_t = typename Element<scalar_t>::acc_t;
  const acc_t v = acc_t(Element<scalar_t>::load(out + t * pr.N * pr.C + nc)) + load_or(bias, t, acc_t(0));
  const acc_t e = exp(v < acc_t(0) ? v : -v), r = reciprocal(acc_t(1) + e);
  Element<scalar_t>::store(lam + nc * pr.TP + t, v < acc_t(0) ? e * r : r);
}

// dL/d(A H)[n, t, c] = dlambda lambda (1 - lambda).
template <typename scalar_t, typename acc_t = typename Element<scalar_t>::acc_t>
VKD_HD acc_t dout(const GroupNormProblem& pr, const scalar_t* lam, const scalar_t* dlam, Strides3 ds, int64_t n,
                  int64_t c, int32_t t) {
  const acc_t l = Element<scalar_t>::load(lam + (n * pr.C + c) * pr.TP + t);
  return acc_t(Element<scalar_t>::load(dlam + n * ds.n + c * ds.c + t * ds.t)) * l * (acc_t(1) - l);
}

// Everything the backward of one element (n, j, c) needs: xhat, dH [h > 0].
template <typename scalar_t, typename acc_t = typename Element<scalar_t>::acc_t>
VKD_HD void element_grad(const GroupNormProblem& pr, const scalar_t* Z, const scalar_t* bias, const scalar_t* gamma,
                         const scalar_t* beta, const scalar_t* lam, const scalar_t* dlam, Strides3 ds,
                         const scalar_t* A, acc_t mean, acc_t rstd, int64_t n, int32_t j, int64_t c, acc_t& xhat,
                         acc_t& dh) {
  xhat = (acc_t(Element<scalar_t>::load(Z + (n * pr.J + j) * pr.C + c)) + load_or(bias, c, acc_t(0)) - mean) * rstd;
  dh = 0;
  if (xhat * load_or(gamma, c, acc_t(1)) + load_or(beta, c, acc_t(0)) > acc_t(0))
    for (int32_t t = 0; t < pr.TP; ++t)
      dh += acc_t(Element<scalar_t>::load(A + t * pr.J + j)) * dout(pr, lam, dlam, ds, n, c, t);
}

// Backward of group g over every sample: dout, dZ, and dgamma, dbeta, dbias (where not null).
template <typename scalar_t, typename Block>
VKD_HD void group_norm_relu_backward(const GroupNormProblem& pr, const scalar_t* Z, const scalar_t* w,
                                     const scalar_t* bias, const scalar_t* gamma, const scalar_t* beta,
                                     const void* stats_in, const scalar_t* lam, const scalar_t* dlam, Strides3 ds,
                                     const scalar_t* A, scalar_t* dout_out, scalar_t* dZ, scalar_t* dgamma,
                                     scalar_t* dbeta, scalar_t* dbias, int64_t g, const Block& block) {
  using acc_t = typename Element<scalar_t>::acc_t;
  using E = Element<scalar_t>;
  const int32_t Cg = pr.Cg(), size = int32_t(pr.J) * Cg, TP = int32_t(pr.TP);
  const int64_t c0 = g * Cg;
  const acc_t M = acc_t(pr.M);
  const acc_t* stats = static_cast<const acc_t*>(stats_in);
  for (int64_t n = 0; n < pr.N; ++n) {
    const acc_t mean = stats[2 * (n * pr.G + g)], rstd = stats[2 * (n * pr.G + g) + 1];
    for (int32_t e = block.lane; e < TP * Cg; e += block.step) {
      const int32_t t = e / Cg;
      const int64_t c = c0 + e % Cg;
      E::store(dout_out + (t * pr.N + n) * pr.C + c, dout(pr, lam, dlam, ds, n, c, t));
    }
    acc_t s1 = 0, s2 = 0;
    for (int32_t e = block.lane; e < size; e += block.step) {
      const int32_t j = e / Cg;
      const int64_t c = c0 + e % Cg;
      acc_t xhat, dh;
      element_grad(pr, Z, bias, gamma, beta, lam, dlam, ds, A, mean, rstd, n, j, c, xhat, dh);
      const acc_t dxhat = dh * load_or(gamma, c, acc_t(1));
      s1 += dxhat;
      s2 += dxhat * xhat;
    }
    const acc_t sum_dxhat = block.sum(s1), sum_dxhat_xhat = block.sum(s2);
    for (int32_t e = block.lane; e < size; e += block.step) {
      const int32_t j = e / Cg;
      const int64_t c = c0 + e % Cg;
      acc_t xhat, dh;
      element_grad(pr, Z, bias, gamma, beta, lam, dlam, ds, A, mean, rstd, n, j, c, xhat, dh);
      const acc_t wm = divide(acc_t(E::load(w + j)), M);
      E::store(dZ + (n * pr.J + j) * pr.C + c,
               rstd * (dh * load_or(gamma, c, acc_t(1)) - wm * (sum_dxhat + xhat * sum_dxhat_xhat)));
    }
  }
  if (!dgamma && !dbeta && !dbias) return;
  block.sync();  // dZ is read back below at other lanes' positions
  for (int64_t c = c0 + block.lane; c < c0 + Cg; c += block.step) {
    acc_t dg = 0, db = 0, dc = 0;
    for (int64_t n = 0; n < pr.N; ++n) {
      const acc_t mean = stats[2 * (n * pr.G + g)], rstd = stats[2 * (n * pr.G + g) + 1];
      for (int32_t j = 0; j < pr.J; ++j) {
        acc_t xhat, dh;
        if (dgamma || dbeta) {
          element_grad(pr, Z, bias, gamma, beta, lam, dlam, ds, A, mean, rstd, n, j, c, xhat, dh);
          dg += dh * xhat;
          db += dh;
        }
        if (dbias) dc += acc_t(E::load(dZ + (n * pr.J + j) * pr.C + c));
      }
    }
    if (dgamma) E::store(dgamma + c, dg);
    if (dbeta) E::store(dbeta + c, db);
    if (dbias) E::store(dbias + c, dc);
  }
}

}  // namespace head
}  // namespace vkd
