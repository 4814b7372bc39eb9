// Math of attention_apply (docs/ops.md 3b) shared by the CPU and CUDA kernels. F (N, C, T, S)
// is read as N C T rows of S elements (strides n, c, t, s); row i = (n, c, t) with
// n = i / (C T), c = i / T % C, t = i % T, so channels_last_3d features are read in place.
// Three passes each way (vkd_kernels/gkd/apply/op.py):
//   reduce   q_i = sum_s x[i, s] (y == null) or m_i = sum_s x[i, s] y[i, s]   (accumulation dtype)
//   finish   per group b of Rg rows: (sum_i v_i, sum_i lam_i v_i) for v = q or m
//   affine   out[i, s] = x[i, s] a_i + b_i with the row factors of row_factors() (times a scale)
// forward: q = reduce(F), (s1, s2) = finish(q), out = affine(F, k lam, 0); backward:
// m = reduce(F, g), (., G) = finish(m), dF = affine(g, k lam, (G / s2)(1 - k lam)),
// dlam = k (m - (G / s2) q). Each lane handles s = s0, s0 + step, ...
// (CPU: one lane, step 1; CUDA: the 32 lanes of a warp; step is a template argument so
// the host compiler sees unit-stride loops).
#pragma once
#include <cstdint>
#include "dtypes.h"

// Marks a lane's sum over a row for vectorization by the host compiler (fixed order per build).
#if defined(__CUDA_ARCH__) || !defined(_OPENMP)
#define VKD_SUM_LANES
#else
#define VKD_SUM_LANES _Pragma("omp simd reduction(+ : acc)")
#endif

namespace vkd {
namespace apply {

struct RowStrides { int64_t n, c, t, s; };

struct RowProblem {
  int64_t N, C, T, S;
  int64_t B;  // groups: N (per sample) or 1 (the batch)
  VKD_HD int64_t rows() const { return N * C * T; }
  VKD_HD int64_t group_rows() const { return rows() / B; }
};

template <typename acc_t>
VKD_HD acc_t safe_inverse(acc_t s) { return s != acc_t(0) ? acc_t(1) / s : acc_t(0); }

// This lane's part of (sum v, sum lam v) over rows [begin, end) (rows begin + lane, + step, ...).
template <typename scalar_t, typename acc_t>
VKD_HD void group_sums(const acc_t* v, const scalar_t* lam, int64_t begin, int64_t end, int64_t lane, int64_t step,
                       acc_t& sum_v, acc_t& sum_lam_v) {
  sum_v = sum_lam_v = acc_t(0);
  for (int64_t i = begin + lane; i < end; i += step) {
    sum_v += v[i];
    sum_lam_v += acc_t(Element<scalar_t>::load(lam + i)) * v[i];
  }
}

// The affine factors of row i: a = k lam_i, b = (G / s2)(1 - a) (0 forward: bsums null),
// and, backward, dlam_i = k (m_i - (G / s2) q_i). k = s1 / s2, 1/s2 taken as 0 where s2 = 0.
// All three are multiplied by scale: 1, or 1 / S where spatial "mean" passes the row sums q
// forward and g (N, C, T) backward, so that no pass divides them first (an exact no-op at 1).
template <typename scalar_t, typename acc_t>
VKD_HD void row_factors(const RowProblem& pr, const acc_t* sums, const acc_t* bsums, const scalar_t* lam,
                        const acc_t* m, const acc_t* q, acc_t scale, int64_t i, acc_t& a, acc_t& b, acc_t& dlam) {
  const int64_t g = i / pr.group_rows();
  const acc_t inv_s2 = safe_inverse(sums[2 * g + 1]), k = sums[2 * g] * inv_s2;
  a = k * acc_t(Element<scalar_t>::load(lam + i));
  b = dlam = acc_t(0);
  if (bsums) {
    const acc_t g_over_s2 = bsums[2 * g + 1] * inv_s2;
    b = g_over_s2 * (acc_t(1) - a) * scale;
    dlam = k * (m[i] - g_over_s2 * q[i]) * scale;
  }
  a *= scale;
}

// Offset of element (row, 0) of a tensor with strides st (rows evenly spaced, as in a
// contiguous tensor: one product instead of three divisions).
VKD_HD int64_t row_offset(const RowProblem& pr, const RowStrides& st, int64_t row) {
  if (st.c == pr.T * st.t && st.n == pr.C * st.c) return row * st.t;
  return row / (pr.C * pr.T) * st.n + row / pr.T % pr.C * st.c + row % pr.T * st.t;
}

// This lane's part of sum_s x (y == nullptr) or sum_s x y over one row. Unit strides take
// their own loops (the host compiler vectorizes those; runtime strides would gather).
template <int step, typename scalar_t, typename acc_t = typename Element<scalar_t>::acc_t>
VKD_HD acc_t reduce_row(const scalar_t* x, int64_t xs, const scalar_t* y, int64_t ys, int64_t S, int64_t s0) {
  using E = Element<scalar_t>;
  acc_t acc = acc_t(0);
  if (y == nullptr && xs == 1) {
    VKD_SUM_LANES
    for (int64_t s = s0; s < S; s += step) acc += acc_t(E::load(x + s));
  } else if (y == nullptr) {
    VKD_SUM_LANES
    for (int64_t s = s0; s < S; s += step) acc += acc_t(E::load(x + s * xs));
  } else if (xs == 1 && ys == 1) {
    VKD_SUM_LANES
    for (int64_t s = s0; s < S; s += step) acc += acc_t(E::load(x + s)) * acc_t(E::load(y + s));
  } else {
    VKD_SUM_LANES
    for (int64_t s = s0; s < S; s += step) acc += acc_t(E::load(x + s * xs)) * acc_t(E::load(y + s * ys));
  }
  return acc;
}

// This lane's part of out[s] = x[s] a + b over one row (unit strides: a vectorizable loop;
// xs = 0, a row-constant x as attention_apply's spatial="mean" backward reads: a fill).
template <int step, typename scalar_t, typename acc_t = typename Element<scalar_t>::acc_t>
VKD_HD void affine_row(const scalar_t* x, int64_t xs, acc_t a, acc_t b, scalar_t* out, int64_t os, int64_t S,
                       int64_t s0) {
  using E = Element<scalar_t>;
  if (xs == 1 && os == 1) {
    VKD_LANES
    for (int64_t s = s0; s < S; s += step) E::store(out + s, acc_t(E::load(x + s)) * a + b);
  } else if (xs == 0 && os == 1) {
    const acc_t v = acc_t(E::load(x)) * a + b;
    VKD_LANES
    for (int64_t s = s0; s < S; s += step) E::store(out + s, v);
  } else {
    VKD_LANES
    for (int64_t s = s0; s < S; s += step) E::store(out + s * os, acc_t(E::load(x + s * xs)) * a + b);
  }
}

}  // namespace apply
}  // namespace vkd
