// Temporal spectrum loss: the per-group math shared by the CPU and CUDA kernels
// (spec: ops.md section 1).
//
// Canonical problem: every input is viewed as (B, T, S) with arbitrary strides;
// a *line* is x[b, :, s]. Lines are compared in *groups* of P consecutive s
// (P = 1: spatial="pixel"; P = H*W: spatial="mean"), G = S / P groups per b.
//   Re_k = sum_t x[t] c[t,k],  Im_k = -sum_t x[t] s[t,k]   (c, s: twiddles * norm scale)
//   A_k  = spectrum(Re_k, Im_k)             mean over the P lines of the group
//   d_k  = w_k (A_k(student) - A_k(teacher))^2
// Backward recomputes everything from the inputs; nothing is stored between passes.
#pragma once
#include <cmath>
#include "dtypes.h"

namespace vkd {
namespace spectrum {

constexpr int kMaxT = 64;                 // fused kernels serve 2 <= T <= 64
constexpr int kMaxK = kMaxT / 2 + 1;      // rfft bins

enum class Mode : int { Magnitude = 0, Power = 1, LogMagnitude = 2 };

struct Strides3 { int64_t b, t, s; };

struct Problem {
  int64_t B, T, S, P;   // view (B, T, S); groups of P consecutive s
  int mode;             // Mode
  double eps;
  const float* weights; // per-bin weights w (K,), or nullptr for all ones
  VKD_HD int64_t K() const { return T / 2 + 1; }
  VKD_HD int64_t groups() const { return B * (S / P); }
};

// Twiddles with the norm scale folded in: c[t*K+k] = scale*cos(2 pi k t / T),
// s[t*K+k] = scale*sin(...). The angle uses (k t mod T) so it stays exact.
template <typename acc_t>
VKD_HD void twiddle(int64_t T, int64_t K, double scale, int64_t index, acc_t* c, acc_t* s) {
  const int64_t t = index / K, k = index % K;
  const double angle = 6.283185307179586476925 * double((k * t) % T) / double(T);
  c[index] = acc_t(scale * cos(angle));
  s[index] = acc_t(scale * sin(angle));
}

// A_k and its derivative factor r with dA/dRe = r Re, dA/dIm = r Im.
template <typename acc_t>
VKD_HD acc_t spectrum_value(Mode mode, acc_t re, acc_t im, acc_t eps, acc_t* factor) {
  const acc_t sq = re * re + im * im;
  if (mode == Mode::Power) {
    if (factor) *factor = acc_t(2);
    return sq;
  }
  const acc_t m = sqrt(sq + eps);
  if (mode == Mode::Magnitude) {
    if (factor) *factor = m > acc_t(0) ? acc_t(1) / m : acc_t(0);  // subgradient 0 at 0
    return m;
  }
  if (factor) *factor = m > acc_t(0) ? acc_t(1) / (m * (m + eps)) : acc_t(0);
  return log(m + eps);
}

// Re, Im of one line.
template <typename scalar_t, typename acc_t>
VKD_HD void line_dft(const scalar_t* x, int64_t stride_t, int64_t T, int64_t K,
                     const acc_t* c, const acc_t* s, acc_t* re, acc_t* im) {
  for (int64_t k = 0; k < K; ++k) re[k] = im[k] = acc_t(0);
  for (int64_t t = 0; t < T; ++t) {
    const acc_t v = Element<scalar_t>::load(x + t * stride_t);
    for (int64_t k = 0; k < K; ++k) {
      re[k] += v * c[t * K + k];
      im[k] -= v * s[t * K + k];
    }
  }
}

// Mean spectrum A over the P lines of group (b, g), added into mean[K].
template <typename scalar_t, typename acc_t>
VKD_HD void group_mean_spectrum(const Problem& pr, const scalar_t* x, Strides3 st, int64_t b,
                                int64_t g, const acc_t* c, const acc_t* s, acc_t* mean) {
  const int64_t K = pr.K();
  acc_t re[kMaxK], im[kMaxK];
  for (int64_t k = 0; k < K; ++k) mean[k] = acc_t(0);
  for (int64_t p = 0; p < pr.P; ++p) {
    line_dft(x + b * st.b + (g * pr.P + p) * st.s, st.t, pr.T, K, c, s, re, im);
    for (int64_t k = 0; k < K; ++k)
      mean[k] += spectrum_value(Mode(pr.mode), re[k], im[k], acc_t(pr.eps), (acc_t*)nullptr);
  }
  for (int64_t k = 0; k < K; ++k) mean[k] /= acc_t(pr.P);
}

template <typename acc_t>
VKD_HD acc_t bin_weight(const Problem& pr, int64_t k) {
  return pr.weights ? acc_t(pr.weights[k]) : acc_t(1);
}

// Forward for group (b, g): returns sum_k d_k; stores d_k at d[k * d_stride_k]
// when d is not null.
template <typename scalar_t, typename acc_t>
VKD_HD acc_t group_forward(const Problem& pr, const scalar_t* xs, Strides3 ss, const scalar_t* xt,
                           Strides3 st, int64_t b, int64_t g, const acc_t* c, const acc_t* s,
                           scalar_t* d, int64_t d_stride_k) {
  const int64_t K = pr.K();
  acc_t a_s[kMaxK], a_t[kMaxK];
  group_mean_spectrum(pr, xs, ss, b, g, c, s, a_s);
  group_mean_spectrum(pr, xt, st, b, g, c, s, a_t);
  acc_t total = acc_t(0);
  for (int64_t k = 0; k < K; ++k) {
    const acc_t diff = a_s[k] - a_t[k];
    const acc_t dk = bin_weight<acc_t>(pr, k) * diff * diff;
    if (d) Element<scalar_t>::store(d + k * d_stride_k, dk);
    total += dk;
  }
  return total;
}

// dx for the P lines of group (b, g) given dL/dA_k (already divided by P): writes
// dx[t] = sum_k r_k (gA_k Re_k c[t,k] - gA_k Im_k (-s[t,k])) per line.
template <typename scalar_t, typename acc_t>
VKD_HD void group_input_grad(const Problem& pr, const scalar_t* x, Strides3 st, scalar_t* dx,
                             Strides3 sd, int64_t b, int64_t g, const acc_t* c, const acc_t* s,
                             const acc_t* grad_a) {
  const int64_t K = pr.K();
  acc_t re[kMaxK], im[kMaxK];
  for (int64_t p = 0; p < pr.P; ++p) {
    const int64_t line = g * pr.P + p;
    line_dft(x + b * st.b + line * st.s, st.t, pr.T, K, c, s, re, im);
    for (int64_t k = 0; k < K; ++k) {
      acc_t factor;
      spectrum_value(Mode(pr.mode), re[k], im[k], acc_t(pr.eps), &factor);
      re[k] *= grad_a[k] * factor;  // now dL/dRe_k
      im[k] *= grad_a[k] * factor;  // now dL/dIm_k
    }
    scalar_t* out = dx + b * sd.b + line * sd.s;
    for (int64_t t = 0; t < pr.T; ++t) {
      acc_t v = acc_t(0);
      for (int64_t k = 0; k < K; ++k) v += re[k] * c[t * K + k] - im[k] * s[t * K + k];
      Element<scalar_t>::store(out + t * sd.t, v);
    }
  }
}

// Backward for group (b, g): grad_d[k * grad_stride_k] * grad_scale is dL/dd_k.
// Writes the student gradient to ds and the teacher gradient to dt (either may be null).
template <typename scalar_t, typename acc_t>
VKD_HD void group_backward(const Problem& pr, const scalar_t* xs, Strides3 ss, const scalar_t* xt,
                           Strides3 st, const scalar_t* grad_d, int64_t grad_stride_k,
                           acc_t grad_scale, scalar_t* ds, Strides3 sds, scalar_t* dt,
                           Strides3 sdt, int64_t b, int64_t g, const acc_t* c, const acc_t* s) {
  const int64_t K = pr.K();
  acc_t a_s[kMaxK], a_t[kMaxK], grad_a[kMaxK];
  group_mean_spectrum(pr, xs, ss, b, g, c, s, a_s);
  group_mean_spectrum(pr, xt, st, b, g, c, s, a_t);
  for (int64_t k = 0; k < K; ++k) {
    const acc_t go = Element<scalar_t>::load(grad_d + k * grad_stride_k) * grad_scale;
    grad_a[k] = acc_t(2) * bin_weight<acc_t>(pr, k) * (a_s[k] - a_t[k]) * go / acc_t(pr.P);
  }
  if (ds) group_input_grad(pr, xs, ss, ds, sds, b, g, c, s, grad_a);
  if (dt) {
    for (int64_t k = 0; k < K; ++k) grad_a[k] = -grad_a[k];
    group_input_grad(pr, xt, st, dt, sdt, b, g, c, s, grad_a);
  }
}

}  // namespace spectrum
}  // namespace vkd
