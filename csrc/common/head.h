// Math of the GKD head's weighted GroupNorm + ReLU (docs/ops.md 3b), shared by the CPU
// and CUDA kernels (csrc/cpu/head.cpp, csrc/cuda/head.cu; Python: vkd_kernels/gkd/head/).
#pragma once
#include <cmath>
#include <cstdint>
#include "dtypes.h"

namespace vkd {
namespace head {

// Weighted GroupNorm + ReLU of the GKD head's compact tail (docs/ops.md 3b). Z holds the J
// distinct conv columns channels-last, (N, J, C) contiguous; column class j stands for
// w_j of the L upsampled columns, so the statistics of group g (channels [g Cg, (g+1) Cg))
// are mean = sum_{j,c} w_j Z / M, var = sum_{j,c} w_j (Z - mean)^2 / M, M = Cg L, and
// H = ReLU((Z - mean) rstd gamma_c + beta_c). Backward (dH -> dZ, dgamma, dbeta), with
// xhat = (Z - mean) rstd and dxhat = dH [h > 0] gamma:
//   dZ_jc = rstd (dxhat_jc - w_j / M (sum dxhat + xhat_jc sum dxhat xhat)).
struct GroupNormProblem {
  int64_t N, J, C, G;
  double M;    // Cg * L, the number of upsampled elements per group
  double eps;
  VKD_HD int64_t Cg() const { return C / G; }
};

// Forward of group (n, g): writes H and (mean, rstd) at stats[2 (n G + g)] (accumulation dtype).
template <typename scalar_t>
VKD_HD void group_norm_relu_forward(const GroupNormProblem& pr, const scalar_t* Z, const scalar_t* w,
                                    const scalar_t* gamma, const scalar_t* beta, scalar_t* H, void* stats_out,
                                    int64_t n, int64_t g) {
  using acc_t = typename Element<scalar_t>::acc_t;
  const int64_t Cg = pr.Cg(), c0 = g * Cg;
  const scalar_t* z = Z + n * pr.J * pr.C + c0;
  acc_t sum = 0;
  for (int64_t j = 0; j < pr.J; ++j) {
    acc_t row = 0;
    for (int64_t c = 0; c < Cg; ++c) row += Element<scalar_t>::load(z + j * pr.C + c);
    sum += Element<scalar_t>::load(w + j) * row;
  }
  const acc_t mean = sum / acc_t(pr.M);
  acc_t var = 0;
  for (int64_t j = 0; j < pr.J; ++j) {
    acc_t row = 0;
    for (int64_t c = 0; c < Cg; ++c) {
      const acc_t d = Element<scalar_t>::load(z + j * pr.C + c) - mean;
      row += d * d;
    }
    var += Element<scalar_t>::load(w + j) * row;
  }
  const acc_t rstd = acc_t(1) / sqrt(var / acc_t(pr.M) + acc_t(pr.eps));
  scalar_t* h = H + n * pr.J * pr.C + c0;
  for (int64_t j = 0; j < pr.J; ++j)
    for (int64_t c = 0; c < Cg; ++c) {
      acc_t v = (Element<scalar_t>::load(z + j * pr.C + c) - mean) * rstd;
      if (gamma) v *= Element<scalar_t>::load(gamma + c0 + c);
      if (beta) v += Element<scalar_t>::load(beta + c0 + c);
      Element<scalar_t>::store(h + j * pr.C + c, v > acc_t(0) ? v : acc_t(0));
    }
  acc_t* stats = static_cast<acc_t*>(stats_out) + 2 * (n * pr.G + g);
  stats[0] = mean;
  stats[1] = rstd;
}

// Backward of group (n, g): writes dZ and the per-sample partial sums dgamma[n, c],
// dbeta[n, c] (N, C) for the channels of the group (the caller sums over n).
template <typename scalar_t>
VKD_HD void group_norm_relu_backward(const GroupNormProblem& pr, const scalar_t* Z, const scalar_t* w,
                                     const scalar_t* gamma, const scalar_t* beta, const void* stats_in,
                                     const scalar_t* dH, scalar_t* dZ, scalar_t* dgamma, scalar_t* dbeta, int64_t n,
                                     int64_t g) {
  using acc_t = typename Element<scalar_t>::acc_t;
  const int64_t Cg = pr.Cg(), c0 = g * Cg, base = n * pr.J * pr.C + c0;
  const acc_t* stats = static_cast<const acc_t*>(stats_in) + 2 * (n * pr.G + g);
  const acc_t mean = stats[0], rstd = stats[1];
  acc_t sum_dxhat = 0, sum_dxhat_xhat = 0;
  for (int64_t c = 0; c < Cg; ++c) {
    const acc_t gm = gamma ? acc_t(Element<scalar_t>::load(gamma + c0 + c)) : acc_t(1);
    const acc_t bt = beta ? acc_t(Element<scalar_t>::load(beta + c0 + c)) : acc_t(0);
    acc_t dg = 0, db = 0;
    for (int64_t j = 0; j < pr.J; ++j) {
      const int64_t i = base + j * pr.C + c;
      const acc_t xhat = (Element<scalar_t>::load(Z + i) - mean) * rstd;
      const acc_t dh = xhat * gm + bt > acc_t(0) ? acc_t(Element<scalar_t>::load(dH + i)) : acc_t(0);
      dg += dh * xhat;
      db += dh;
      sum_dxhat += dh * gm;
      sum_dxhat_xhat += dh * gm * xhat;
    }
    if (dgamma) Element<scalar_t>::store(dgamma + n * pr.C + c0 + c, dg);
    if (dbeta) Element<scalar_t>::store(dbeta + n * pr.C + c0 + c, db);
  }
  for (int64_t j = 0; j < pr.J; ++j) {
    const acc_t wm = acc_t(Element<scalar_t>::load(w + j)) / acc_t(pr.M);
    for (int64_t c = 0; c < Cg; ++c) {
      const int64_t i = base + j * pr.C + c;
      const acc_t gm = gamma ? acc_t(Element<scalar_t>::load(gamma + c0 + c)) : acc_t(1);
      const acc_t bt = beta ? acc_t(Element<scalar_t>::load(beta + c0 + c)) : acc_t(0);
      const acc_t xhat = (Element<scalar_t>::load(Z + i) - mean) * rstd;
      const acc_t dxhat = xhat * gm + bt > acc_t(0) ? acc_t(Element<scalar_t>::load(dH + i)) * gm : acc_t(0);
      Element<scalar_t>::store(dZ + i, rstd * (dxhat - wm * (sum_dxhat + xhat * sum_dxhat_xhat)));
    }
  }
}

}  // namespace head
}  // namespace vkd
