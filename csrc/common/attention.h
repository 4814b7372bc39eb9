// Math of the attention-transfer raw map (docs/ops.md 3a), shared by the CPU and CUDA
// kernels: a[n, p] = (1/C) sum_c |x[n, c, p]|^q and its gradient
// dx[n, c, p] = q |x|^(q-1) sign(x) * dL/da[n, p] / C, for x viewed as (N, C, P).
// Work is done on tiles of L consecutive positions p of one sample (L = 1 on CUDA):
// the loops over a tile's lanes vectorize on the host, and a tile reads contiguous
// row segments of L elements per channel (long enough to stream, one page each).
#pragma once
#include <cmath>
#include <cstdint>
#include "dtypes.h"

namespace vkd {
namespace attention {

struct Strides3 { int64_t n, c, p; };
struct Strides2 { int64_t n, p; };

struct MapProblem {
  int64_t N, C, P;
  double q;  // the exponent p of docs/ops.md (q > 0)
};

// Exponent cases with their own exact fast paths.
enum class Power : int { Square = 0, Abs = 1, General = 2 };

inline Power power_case(double q) { return q == 2.0 ? Power::Square : q == 1.0 ? Power::Abs : Power::General; }

// |v|^q.
template <Power kPower, typename acc_t>
VKD_HD acc_t power(acc_t v, acc_t q) {
  if (kPower == Power::Square) return v * v;
  const acc_t m = v < acc_t(0) ? -v : v;
  if (kPower == Power::Abs) return m;
  return m == acc_t(0) ? acc_t(0) : acc_t(pow(m, q));
}

// d|v|^q / dv = q |v|^(q-1) sign(v), taken as 0 at v = 0 (the limit for q > 1, the
// zero subgradient for q <= 1, so no inf or NaN).
template <Power kPower, typename acc_t>
VKD_HD acc_t power_grad(acc_t v, acc_t q) {
  if (kPower == Power::Square) return acc_t(2) * v;
  const acc_t sign = v > acc_t(0) ? acc_t(1) : v < acc_t(0) ? acc_t(-1) : acc_t(0);
  if (kPower == Power::Abs) return sign;
  const acc_t m = v < acc_t(0) ? -v : v;
  return m == acc_t(0) ? acc_t(0) : acc_t(q * pow(m, q - acc_t(1))) * sign;
}

// Forward of one tile: a[n, p0 + i] for i < lanes.
template <int L, Power kPower, typename scalar_t>
VKD_HD void map_tile(const MapProblem& pr, const scalar_t* x, Strides3 xs, void* a_out, Strides2 as, int64_t n,
                     int64_t p0, int lanes) {
  using acc_t = typename Element<scalar_t>::acc_t;
  const acc_t q = acc_t(pr.q);
  acc_t acc[L];
  VKD_LANES
  for (int i = 0; i < L; ++i) acc[i] = acc_t(0);
  const scalar_t* row = x + n * xs.n + p0 * xs.p;
  for (int64_t c = 0; c < pr.C; ++c, row += xs.c) {
    VKD_LANES
    for (int i = 0; i < lanes; ++i) acc[i] += power<kPower>(Element<scalar_t>::load(row + i * xs.p), q);
  }
  acc_t* a = static_cast<acc_t*>(a_out) + n * as.n + p0 * as.p;
  const acc_t inv_c = acc_t(1) / acc_t(pr.C);
  for (int i = 0; i < lanes; ++i) a[i * as.p] = acc[i] * inv_c;
}

// Backward of one tile: dx[n, :, p0 + i] for i < lanes, from dL/da (accumulation dtype).
template <int L, Power kPower, typename scalar_t>
VKD_HD void map_grad_tile(const MapProblem& pr, const scalar_t* x, Strides3 xs, const void* grad_a, Strides2 gs,
                          scalar_t* dx, Strides3 ds, int64_t n, int64_t p0, int lanes) {
  using acc_t = typename Element<scalar_t>::acc_t;
  const acc_t q = acc_t(pr.q);
  const acc_t inv_c = acc_t(1) / acc_t(pr.C);
  const acc_t* g_row = static_cast<const acc_t*>(grad_a) + n * gs.n + p0 * gs.p;
  acc_t g[L];
  for (int i = 0; i < lanes; ++i) g[i] = g_row[i * gs.p] * inv_c;
  const scalar_t* row = x + n * xs.n + p0 * xs.p;
  scalar_t* out = dx + n * ds.n + p0 * ds.p;
  for (int64_t c = 0; c < pr.C; ++c, row += xs.c, out += ds.c) {
    VKD_LANES
    for (int i = 0; i < lanes; ++i)
      Element<scalar_t>::store(out + i * ds.p, power_grad<kPower>(Element<scalar_t>::load(row + i * xs.p), q) * g[i]);
  }
}

// Runs body with kPower bound to the exponent case of q.
#define VKD_DISPATCH_POWER(q, ...)                                                                 \
  [&] {                                                                                            \
    switch (::vkd::attention::power_case(q)) {                                                     \
      case ::vkd::attention::Power::Square: { constexpr auto kPower = ::vkd::attention::Power::Square; return __VA_ARGS__(); } \
      case ::vkd::attention::Power::Abs: { constexpr auto kPower = ::vkd::attention::Power::Abs; return __VA_ARGS__(); }       \
      default: { constexpr auto kPower = ::vkd::attention::Power::General; return __VA_ARGS__(); }                             \
    }                                                                                              \
  }()

}  // namespace attention
}  // namespace vkd

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
