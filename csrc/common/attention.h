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
