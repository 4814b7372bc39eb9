// Math of attention_apply (docs/ops.md 3b) shared by the CPU and CUDA kernels. F (N, C, T, S)
// is read as N C T rows of S elements (strides n, c, t, s); row i = (n, c, t) with
// n = i / (C T), c = i / T % C, t = i % T, so channels_last_3d features are read in place.
// Two passes cover forward and backward (vkd_kernels/gkd/apply/op.py):
//   reduce   q_i = sum_s x[i, s] (y == null) or m_i = sum_s x[i, s] y[i, s]   (accumulation dtype)
//   affine   out[i, s] = x[i, s] a_i + b_i (b == null: 0; a, b accumulation dtype)
// forward: q = reduce(F), out = affine(F, k lam); backward: m = reduce(F, g),
// dF = affine(g, k lam, (G / s2)(1 - k lam)). Each lane handles s = s0, s0 + step, ...
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
  VKD_HD int64_t rows() const { return N * C * T; }
};

// Offset of element (row, 0) of a tensor with strides st.
VKD_HD int64_t row_offset(const RowProblem& pr, const RowStrides& st, int64_t row) {
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

// This lane's part of out[s] = x[s] a + b over one row (unit strides: a vectorizable loop).
template <int step, typename scalar_t, typename acc_t = typename Element<scalar_t>::acc_t>
VKD_HD void affine_row(const scalar_t* x, int64_t xs, acc_t a, acc_t b, scalar_t* out, int64_t os, int64_t S,
                       int64_t s0) {
  using E = Element<scalar_t>;
  if (xs == 1 && os == 1) {
    VKD_LANES
    for (int64_t s = s0; s < S; s += step) E::store(out + s, acc_t(E::load(x + s)) * a + b);
  } else {
    VKD_LANES
    for (int64_t s = s0; s < S; s += step) E::store(out + s * os, acc_t(E::load(x + s * xs)) * a + b);
  }
}

}  // namespace apply
}  // namespace vkd
