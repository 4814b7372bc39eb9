// Temporal spectrum loss: the per-group math shared by the CPU and CUDA kernels
// (docs/ops.md section 1).
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
  const void* weights;  // per-bin weights w (K,) in the accumulation dtype (float64 for
                        // float64 inputs, else float32), or nullptr for all ones
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

template <typename acc_t>
VKD_HD acc_t bin_weight(const Problem& pr, int64_t k) {
  return pr.weights ? static_cast<const acc_t*>(pr.weights)[k] : acc_t(1);
}

// A tile is up to L lines x[b, :, s0 + l], l < n, processed together with l innermost
// so the CPU vectorizes across lines (L = 16); CUDA runs one thread per tile (L = 1).
template <int L, typename acc_t>
struct Tile {
  acc_t re[kMaxK][L], im[kMaxK][L], a[kMaxK][L], factor[kMaxK][L];
};

// Re, Im, A (and, kWithFactor, dA/dRe = factor Re) of the lines of a tile; lines
// l >= n are zero.
template <bool kWithFactor, int L, typename scalar_t, typename acc_t>
VKD_HD void tile_spectrum(const Problem& pr, const scalar_t* x, Strides3 st, int64_t b, int64_t s0, int n,
                          const acc_t* c, const acc_t* s, Tile<L, acc_t>& tile) {
  const int64_t K = pr.K();
  acc_t v[kMaxT][L];  // the tile, converted once
  const scalar_t* base = x + b * st.b + s0 * st.s;
  for (int64_t t = 0; t < pr.T; ++t) {
    const scalar_t* row = base + t * st.t;
    if (n == L && st.s == 1) {  // contiguous full tile: plain vector loads
      VKD_LANES for (int l = 0; l < L; ++l) v[t][l] = Element<scalar_t>::load(row + l);
    } else {
      VKD_LANES for (int l = 0; l < L; ++l) v[t][l] = l < n ? Element<scalar_t>::load(row + l * st.s) : acc_t(0);
    }
  }
  const Mode mode = Mode(pr.mode);
  const acc_t eps = acc_t(pr.eps);
  for (int64_t k = 0; k < K; ++k) {
    acc_t re[L], im[L];  // accumulated in registers over t
    VKD_LANES for (int l = 0; l < L; ++l) re[l] = im[l] = acc_t(0);
    for (int64_t t = 0; t < pr.T; ++t) {
      const acc_t ck = c[t * K + k], sk = s[t * K + k];
      VKD_LANES for (int l = 0; l < L; ++l) {
        re[l] += v[t][l] * ck;
        im[l] -= v[t][l] * sk;
      }
    }
    VKD_LANES for (int l = 0; l < L; ++l) {
      tile.re[k][l] = re[l];
      tile.im[k][l] = im[l];
      tile.a[k][l] = spectrum_value(mode, re[l], im[l], eps, kWithFactor ? &tile.factor[k][l] : nullptr);
    }
  }
}

// dx[t] = sum_k gRe_k c[t,k] - gIm_k s[t,k] for the n lines of a tile, where
// gRe = grad_a factor Re, gIm = grad_a factor Im; writes at dx[b, :, s0 + l].
template <int L, typename scalar_t, typename acc_t>
VKD_HD void tile_input_grad(const Problem& pr, Tile<L, acc_t>& tile, const acc_t (*grad_a)[L], scalar_t* dx,
                            Strides3 sd, int64_t b, int64_t s0, int n, const acc_t* c, const acc_t* s) {
  const int64_t K = pr.K();
  for (int64_t k = 0; k < K; ++k)
    VKD_LANES for (int l = 0; l < L; ++l) {
      const acc_t g = grad_a[k][l] * tile.factor[k][l];
      tile.re[k][l] *= g;
      tile.im[k][l] *= g;
    }
  scalar_t* base = dx + b * sd.b + s0 * sd.s;
  for (int64_t t = 0; t < pr.T; ++t) {
    acc_t v[L];
    VKD_LANES for (int l = 0; l < L; ++l) v[l] = acc_t(0);
    for (int64_t k = 0; k < K; ++k) {
      const acc_t ck = c[t * K + k], sk = s[t * K + k];
      VKD_LANES for (int l = 0; l < L; ++l) v[l] += tile.re[k][l] * ck - tile.im[k][l] * sk;
    }
    scalar_t* row = base + t * sd.t;
    if (n == L && sd.s == 1) {
      VKD_LANES for (int l = 0; l < L; ++l) Element<scalar_t>::store(row + l, v[l]);
    } else {
      for (int l = 0; l < n; ++l) Element<scalar_t>::store(row + l * sd.s, v[l]);
    }
  }
}

// ---- spatial="pixel" (P = 1): a tile of n lines is n groups -------------------

// Sum of d over the tile's lines; stores d[b, k, s0 + l] too when d is not null
// (d_strides: b, k, g).
template <int L, typename scalar_t, typename acc_t>
VKD_HD acc_t pixel_forward(const Problem& pr, const scalar_t* xs, Strides3 ss, const scalar_t* xt, Strides3 st,
                           int64_t b, int64_t s0, int n, const acc_t* c, const acc_t* s, scalar_t* d,
                           Strides3 sd, Tile<L, acc_t>& ts, Tile<L, acc_t>& tt) {
  tile_spectrum<false, L>(pr, xs, ss, b, s0, n, c, s, ts);
  tile_spectrum<false, L>(pr, xt, st, b, s0, n, c, s, tt);
  acc_t total = acc_t(0);
  for (int64_t k = 0; k < pr.K(); ++k) {
    const acc_t w = bin_weight<acc_t>(pr, k);
    for (int l = 0; l < n; ++l) {
      const acc_t diff = ts.a[k][l] - tt.a[k][l];
      const acc_t dk = w * diff * diff;
      if (d) Element<scalar_t>::store(d + b * sd.b + k * sd.t + (s0 + l) * sd.s, dk);
      total += dk;
    }
  }
  return total;
}

// grad_d[b, k, s] * grad_scale is dL/dd (grad strides: b, k, g); writes ds, dt where not null.
template <int L, typename scalar_t, typename acc_t>
VKD_HD void pixel_backward(const Problem& pr, const scalar_t* xs, Strides3 ss, const scalar_t* xt, Strides3 st,
                           const scalar_t* grad_d, Strides3 sg, acc_t grad_scale, scalar_t* ds, Strides3 sds,
                           scalar_t* dt, Strides3 sdt, int64_t b, int64_t s0, int n, const acc_t* c,
                           const acc_t* s, Tile<L, acc_t>& ts, Tile<L, acc_t>& tt) {
  const int64_t K = pr.K();
  acc_t grad_a[kMaxK][L];
  tile_spectrum<true, L>(pr, xs, ss, b, s0, n, c, s, ts);
  tile_spectrum<true, L>(pr, xt, st, b, s0, n, c, s, tt);
  for (int64_t k = 0; k < K; ++k) {
    const acc_t w2 = acc_t(2) * bin_weight<acc_t>(pr, k) * grad_scale;
    VKD_LANES for (int l = 0; l < L; ++l) {
      const acc_t go = l < n ? Element<scalar_t>::load(grad_d + b * sg.b + k * sg.t + (s0 + l) * sg.s) : acc_t(0);
      grad_a[k][l] = w2 * (ts.a[k][l] - tt.a[k][l]) * go;
    }
  }
  if (ds) tile_input_grad<L>(pr, ts, grad_a, ds, sds, b, s0, n, c, s);
  if (dt) {
    for (int64_t k = 0; k < K; ++k)
      VKD_LANES for (int l = 0; l < L; ++l) grad_a[k][l] = -grad_a[k][l];
    tile_input_grad<L>(pr, tt, grad_a, dt, sdt, b, s0, n, c, s);
  }
}

// ---- spatial="mean" (P > 1): one group of P lines, in tiles of L ----------------

template <int L, typename scalar_t, typename acc_t>
VKD_HD void group_mean_spectrum(const Problem& pr, const scalar_t* x, Strides3 st, int64_t b, int64_t g,
                                const acc_t* c, const acc_t* s, acc_t* mean, Tile<L, acc_t>& tile) {
  const int64_t K = pr.K();
  for (int64_t k = 0; k < K; ++k) mean[k] = acc_t(0);
  for (int64_t p0 = 0; p0 < pr.P; p0 += L) {
    const int n = int(pr.P - p0 < L ? pr.P - p0 : L);
    tile_spectrum<false, L>(pr, x, st, b, g * pr.P + p0, n, c, s, tile);
    for (int64_t k = 0; k < K; ++k)
      for (int l = 0; l < n; ++l) mean[k] += tile.a[k][l];
  }
  for (int64_t k = 0; k < K; ++k) mean[k] /= acc_t(pr.P);
}

// Sum over k of d for group (b, g); stores d[b, k, g] too when d is not null.
template <int L, typename scalar_t, typename acc_t>
VKD_HD acc_t group_forward(const Problem& pr, const scalar_t* xs, Strides3 ss, const scalar_t* xt, Strides3 st,
                           int64_t b, int64_t g, const acc_t* c, const acc_t* s, scalar_t* d, Strides3 sd,
                           Tile<L, acc_t>& tile) {
  acc_t a_s[kMaxK], a_t[kMaxK];
  group_mean_spectrum<L>(pr, xs, ss, b, g, c, s, a_s, tile);
  group_mean_spectrum<L>(pr, xt, st, b, g, c, s, a_t, tile);
  acc_t total = acc_t(0);
  for (int64_t k = 0; k < pr.K(); ++k) {
    const acc_t diff = a_s[k] - a_t[k];
    const acc_t dk = bin_weight<acc_t>(pr, k) * diff * diff;
    if (d) Element<scalar_t>::store(d + b * sd.b + k * sd.t + g * sd.s, dk);
    total += dk;
  }
  return total;
}

template <int L, typename scalar_t, typename acc_t>
VKD_HD void group_input_grad(const Problem& pr, const scalar_t* x, Strides3 st, scalar_t* dx, Strides3 sd,
                             int64_t b, int64_t g, const acc_t* c, const acc_t* s, const acc_t* grad_a,
                             Tile<L, acc_t>& tile) {
  acc_t grad_tile[kMaxK][L];
  for (int64_t k = 0; k < pr.K(); ++k)
    VKD_LANES for (int l = 0; l < L; ++l) grad_tile[k][l] = grad_a[k];
  for (int64_t p0 = 0; p0 < pr.P; p0 += L) {
    const int n = int(pr.P - p0 < L ? pr.P - p0 : L);
    tile_spectrum<true, L>(pr, x, st, b, g * pr.P + p0, n, c, s, tile);
    tile_input_grad<L>(pr, tile, grad_tile, dx, sd, b, g * pr.P + p0, n, c, s);
  }
}

// grad_d[b, k, g] * grad_scale is dL/dd; writes ds, dt where not null.
template <int L, typename scalar_t, typename acc_t>
VKD_HD void group_backward(const Problem& pr, const scalar_t* xs, Strides3 ss, const scalar_t* xt, Strides3 st,
                           const scalar_t* grad_d, Strides3 sg, acc_t grad_scale, scalar_t* ds, Strides3 sds,
                           scalar_t* dt, Strides3 sdt, int64_t b, int64_t g, const acc_t* c, const acc_t* s,
                           Tile<L, acc_t>& tile) {
  const int64_t K = pr.K();
  acc_t a_s[kMaxK], a_t[kMaxK], grad_a[kMaxK];
  group_mean_spectrum<L>(pr, xs, ss, b, g, c, s, a_s, tile);
  group_mean_spectrum<L>(pr, xt, st, b, g, c, s, a_t, tile);
  for (int64_t k = 0; k < K; ++k) {
    const acc_t go = Element<scalar_t>::load(grad_d + b * sg.b + k * sg.t + g * sg.s) * grad_scale;
    grad_a[k] = acc_t(2) * bin_weight<acc_t>(pr, k) * (a_s[k] - a_t[k]) * go / acc_t(pr.P);
  }
  if (ds) group_input_grad<L>(pr, xs, ss, ds, sds, b, g, c, s, grad_a, tile);
  if (dt) {
    for (int64_t k = 0; k < K; ++k) grad_a[k] = -grad_a[k];
    group_input_grad<L>(pr, xt, st, dt, sdt, b, g, c, s, grad_a, tile);
  }
}

}  // namespace spectrum
}  // namespace vkd
