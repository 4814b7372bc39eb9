// Temporal spectrum loss: the math shared by the CPU and CUDA kernels (docs/ops.md
// section 1).
//
// Canonical problem: every input is viewed as (B, T, S) with arbitrary strides;
// a *line* is x[b, :, s]. Lines are compared in *groups* of P consecutive s
// (P = 1: spatial="pixel"; P = H*W: spatial="mean"), G = S / P groups per b.
//   Re_k = sum_t x[t] c[t,k],  Im_k = -sum_t x[t] s[t,k]   (c, s: twiddles * norm scale)
//   A_k  = spectrum(Re_k, Im_k)             mean over the P lines of the group
//   d_k  = w_k (A_k(student) - A_k(teacher))^2
// Backward recomputes everything from the inputs; nothing is stored between passes.
//
// How the work is laid out, the same on both devices:
// - A *tile* is L lines x[b, :, s0 + l], l < n, with l innermost so the CPU vectorizes
//   across lines (L = 16 float32 lanes); CUDA runs tiles of L = 1.
// - A tile is held by a *team* of N members: member m holds the t = j*N + m, j < TM/N,
//   and the sums over t of each bin are the members' partial sums added across the team
//   (Team::sum: identity for the CPU's Solo, warp shuffles on CUDA). TM, the size class
//   of T (8, 16, 32 or 64: the smallest >= T), is a compile-time constant, so the tile
//   arrays have fixed extents and fully unrolled loops keep them in registers on CUDA;
//   N = TM/16 (TM/8 for float64) members bound those arrays to 16 (8) values each.
// - Bins are visited one at a time (k outermost): each bin's Re, Im, A and dL/dA are
//   scalars per lane; the GPU's backward adds each bin's share of dx[t] at once (no
//   per-bin array in its registers), the CPU's keeps the bins' dL/dRe, dL/dIm and sums
//   each dx[t] over them at the end (tile_backward).
#pragma once
#include <cmath>
#include <cstring>
#include "dtypes.h"

#if defined(__CUDA_ARCH__)
#define VKD_UNROLL _Pragma("unroll")
#else
#define VKD_UNROLL
#endif

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
  VKD_HD int64_t G() const { return S / P; }
  VKD_HD int64_t groups() const { return B * G(); }
};

// The size class of T: the smallest of 8, 16, 32, 64 that holds it (drivers dispatch on it).
inline int size_class(int64_t T) { return T <= 8 ? 8 : T <= 16 ? 16 : T <= 32 ? 32 : 64; }

// Team size for size class TM and accumulation type acc_t: tile arrays of TM/N <= 16
// float32 (8 float64) values per member (CUDA; the CPU's Solo team is 1 for every TM).
// (A constant of a struct, not a constexpr function: device code may read it.)
template <int TM, typename acc_t>
struct TeamSize {
  static constexpr int value = TM * int(sizeof(acc_t)) / 64 > 1 ? TM * int(sizeof(acc_t)) / 64 : 1;
};

// A twiddle pair of the norm-scaled DFT: c = scale*cos(2 pi k t / T), s = scale*sin(...).
template <typename acc_t>
struct Twiddle { acc_t c, s; };

// The twiddle table of size class TM: entry t * (TM/2 + 1) + k, zero where t >= T or
// k >= K, so a tile's padding contributes nothing. The angle uses (k t mod T), exact.
template <int TM, typename acc_t>
VKD_HD void twiddle_entry(int64_t T, double scale, int index, Twiddle<acc_t>* table) {
  constexpr int KM = TM / 2 + 1;
  const int64_t t = index / KM, k = index % KM;
  if (t >= T || k > T / 2) {
    table[index] = {acc_t(0), acc_t(0)};
    return;
  }
  // 2 pi k t / T as a multiple of pi in [0, 2): sinpi/cospi on the device need no
  // argument reduction (sin/cos keep a 40-byte local array for their slow path).
  const double turns = 2.0 * double((k * t) % T) / double(T);
#if defined(__CUDA_ARCH__)
  table[index] = {acc_t(scale * cospi(turns)), acc_t(scale * sinpi(turns))};
#else
  const double angle = 3.141592653589793238462643 * turns;
  table[index] = {acc_t(scale * std::cos(angle)), acc_t(scale * std::sin(angle))};
#endif
}

// A_k and its derivative factor r with dA/dRe = r Re, dA/dIm = r Im.
template <typename acc_t>
VKD_HD acc_t spectrum_value(Mode mode, acc_t re, acc_t im, acc_t eps, acc_t* factor) {
  const acc_t sq = re * re + im * im;
  if (mode == Mode::Power) {
    *factor = acc_t(2);
    return sq;
  }
  const acc_t m = sqrt(sq + eps);
  if (mode == Mode::Magnitude) {
    *factor = m > acc_t(0) ? acc_t(1) / m : acc_t(0);  // subgradient 0 at 0
    return m;
  }
  *factor = m > acc_t(0) ? acc_t(1) / (m * (m + eps)) : acc_t(0);
  return log(m + eps);
}

template <typename acc_t>
VKD_HD acc_t bin_weight(const Problem& pr, int64_t k) {
  return pr.weights ? static_cast<const acc_t*>(pr.weights)[k] : acc_t(1);
}

// The one-member team of the CPU: sums over the team are the values themselves.
struct Solo {
  static constexpr int N = 1;
  VKD_HD int rank() const { return 0; }
  template <typename T>
  VKD_HD T sum(T value) const { return value; }
};

// A tile's slice of a (B, T, S) tensor held by one member: v[j][l] = x[b, j*N + rank, s0 + l].
template <int TM, int N, int L, typename acc_t>
struct Slice {
  static constexpr int J = TM / N;
  acc_t v[J][L];
};

// Loads the member's slice of lines x[b, :, s0 + l], l < n; zero where t >= T or l >= n.
template <int TM, int N, int L, typename scalar_t, typename acc_t>
VKD_HD void load_slice(const scalar_t* x, Strides3 st, int64_t T, int64_t b, int64_t s0, int n, int rank,
                       Slice<TM, N, L, acc_t>& out) {
  const scalar_t* base = x + b * st.b + s0 * st.s;
  VKD_UNROLL for (int j = 0; j < TM / N; ++j) {
    const int64_t t = int64_t(j) * N + rank;
    const scalar_t* row = base + t * st.t;
    if (t < T && n == L && st.s == 1) {  // contiguous full tile: plain vector loads
      VKD_LANES for (int l = 0; l < L; ++l) out.v[j][l] = Element<scalar_t>::load(row + l);
    } else {
      VKD_LANES for (int l = 0; l < L; ++l)
        out.v[j][l] = t < T && l < n ? Element<scalar_t>::load(row + l * st.s) : acc_t(0);
    }
  }
}

// Stores the member's slice of dx, times scale, to lines dx[b, :, s0 + l], l < n (t < T).
template <int TM, int N, int L, typename scalar_t, typename acc_t>
VKD_HD void store_slice(scalar_t* x, Strides3 st, int64_t T, int64_t b, int64_t s0, int n, int rank,
                        const Slice<TM, N, L, acc_t>& in, acc_t scale) {
  scalar_t* base = x + b * st.b + s0 * st.s;
  VKD_UNROLL for (int j = 0; j < TM / N; ++j) {
    const int64_t t = int64_t(j) * N + rank;
    if (t >= T) continue;
    scalar_t* row = base + t * st.t;
    if (n == L && st.s == 1) {
      VKD_LANES for (int l = 0; l < L; ++l) Element<scalar_t>::store(row + l, in.v[j][l] * scale);
    } else {
      for (int l = 0; l < n; ++l) Element<scalar_t>::store(row + l * st.s, in.v[j][l] * scale);
    }
  }
}

// Re and Im of bin k for every lane of a tile: the member's partial sums over its t,
// added across the team. `column` is the member's twiddles of bin k: table + rank*KM + k.
template <int TM, class Team, int L, typename acc_t>
VKD_HD void bin_dft(const Team& team, const Slice<TM, Team::N, L, acc_t>& x, const Twiddle<acc_t>* column,
                    acc_t (&re)[L], acc_t (&im)[L]) {
  constexpr int KM = TM / 2 + 1;
  VKD_LANES for (int l = 0; l < L; ++l) re[l] = im[l] = acc_t(0);
  VKD_UNROLL for (int j = 0; j < TM / Team::N; ++j) {
    const Twiddle<acc_t> w = column[j * Team::N * KM];
    VKD_LANES for (int l = 0; l < L; ++l) {
      re[l] += x.v[j][l] * w.c;
      im[l] -= x.v[j][l] * w.s;
    }
  }
  VKD_LANES for (int l = 0; l < L; ++l) {
    re[l] = team.sum(re[l]);
    im[l] = team.sum(im[l]);
  }
}

// Adds bin k's share of the input gradient, dx[t] += gRe c[t,k] - gIm s[t,k], to the
// member's slice (gRe = dL/dRe_k, gIm = dL/dIm_k per lane).
template <int TM, int N, int L, typename acc_t>
VKD_HD void add_bin_grad(Slice<TM, N, L, acc_t>& dx, const Twiddle<acc_t>* column, const acc_t (&g_re)[L],
                         const acc_t (&g_im)[L]) {
  constexpr int KM = TM / 2 + 1;
  VKD_UNROLL for (int j = 0; j < TM / N; ++j) {
    const Twiddle<acc_t> w = column[j * N * KM];
    VKD_LANES for (int l = 0; l < L; ++l) dx.v[j][l] += g_re[l] * w.c - g_im[l] * w.s;
  }
}

#if !defined(__CUDA_ARCH__)
// dx[t] = sum_k gRe_k c[t,k] - gIm_k s[t,k] over the K bins, for the CPU's one-member
// team (tile_backward): each t's sum is one 64-byte vector of L lanes in a register
// (GCC / Clang vector extensions), stored once.
template <int TM, int L, typename acc_t>
inline void sum_bins_grad(Slice<TM, 1, L, acc_t>& dx, const Twiddle<acc_t>* table, const acc_t (*g_re)[L],
                          const acc_t (*g_im)[L], int64_t K) {
  typedef acc_t V __attribute__((vector_size(L * sizeof(acc_t))));
  constexpr int KM = TM / 2 + 1;
  for (int j = 0; j < TM; ++j) {
    V acc = {};
    for (int64_t k = 0; k < K; ++k) {
      const Twiddle<acc_t> w = table[j * KM + k];
      V re, im;
      std::memcpy(&re, g_re[k], sizeof(V));
      std::memcpy(&im, g_im[k], sizeof(V));
      acc += re * w.c - im * w.s;
    }
    std::memcpy(dx.v[j], &acc, sizeof(V));
  }
}
#endif

// The student's and teacher's slices of one tile (lines x[b, :, s0 + l], l < n).
template <int TM, int N, int L, typename acc_t>
struct TilePair {
  Slice<TM, N, L, acc_t> s, t;
};

template <int TM, class Team, int L, typename scalar_t, typename acc_t>
VKD_HD void load_pair(const Problem& pr, const Team& team, const scalar_t* xs, Strides3 ss, const scalar_t* xt,
                      Strides3 st, int64_t b, int64_t s0, int n, TilePair<TM, Team::N, L, acc_t>& x) {
  load_slice<TM, Team::N, L>(xs, ss, pr.T, b, s0, n, team.rank(), x.s);
  load_slice<TM, Team::N, L>(xt, st, pr.T, b, s0, n, team.rank(), x.t);
}

// spectrum_value of every lane, the mode chosen outside the lane loop (inside it, a
// vectorizing compiler evaluates every mode's branch, log included, for every lane).
template <int L, typename acc_t>
VKD_HD void lane_spectra(Mode mode, const acc_t (&re)[L], const acc_t (&im)[L], acc_t eps, acc_t (&a)[L],
                         acc_t (&r)[L]) {
  switch (mode) {
    case Mode::Power:
      VKD_LANES for (int l = 0; l < L; ++l) a[l] = spectrum_value(Mode::Power, re[l], im[l], eps, &r[l]);
      break;
    case Mode::Magnitude:
      VKD_LANES for (int l = 0; l < L; ++l) a[l] = spectrum_value(Mode::Magnitude, re[l], im[l], eps, &r[l]);
      break;
    default:
      VKD_LANES for (int l = 0; l < L; ++l) a[l] = spectrum_value(Mode::LogMagnitude, re[l], im[l], eps, &r[l]);
  }
}

// A_k of the student's and the teacher's lines of a tile, and the factors r.
template <int TM, class Team, int L, typename acc_t>
VKD_HD void bin_spectra(const Problem& pr, const Team& team, const TilePair<TM, Team::N, L, acc_t>& x,
                        const Twiddle<acc_t>* column, acc_t (&re_s)[L], acc_t (&im_s)[L], acc_t (&a_s)[L],
                        acc_t (&r_s)[L], acc_t (&re_t)[L], acc_t (&im_t)[L], acc_t (&a_t)[L], acc_t (&r_t)[L]) {
  const Mode mode = Mode(pr.mode);
  const acc_t eps = acc_t(pr.eps);
  bin_dft<TM>(team, x.s, column, re_s, im_s);
  bin_dft<TM>(team, x.t, column, re_t, im_t);
  lane_spectra<L>(mode, re_s, im_s, eps, a_s, r_s);
  lane_spectra<L>(mode, re_t, im_t, eps, a_t, r_t);
}

// ---- spatial="pixel" (P = 1): a tile of n lines is n groups -------------------

// Sum of d over the tile's lines and the bins k with k % N == rank (the team's members
// split the bins: together they count each once); those bins' d[b, k, s0 + l] are also
// stored when d is not null (d strides: b, k, g).
template <int TM, class Team, int L, typename scalar_t, typename acc_t>
VKD_HD acc_t pixel_forward(const Problem& pr, const Team& team, const Twiddle<acc_t>* table, const scalar_t* xs,
                           Strides3 ss, const scalar_t* xt, Strides3 st, int64_t b, int64_t s0, int n,
                           scalar_t* d, Strides3 sd) {
  constexpr int KM = TM / 2 + 1;
  TilePair<TM, Team::N, L, acc_t> x;
  load_pair<TM>(pr, team, xs, ss, xt, st, b, s0, n, x);
  acc_t total[L];  // per lane, added in order at the end
  VKD_LANES for (int l = 0; l < L; ++l) total[l] = acc_t(0);
  for (int64_t k = 0; k < pr.K(); ++k) {
    acc_t re_s[L], im_s[L], a_s[L], r_s[L], re_t[L], im_t[L], a_t[L], r_t[L], dk[L];
    bin_spectra<TM>(pr, team, x, table + team.rank() * KM + k, re_s, im_s, a_s, r_s, re_t, im_t, a_t, r_t);
    if (k % Team::N != team.rank()) continue;
    const acc_t w = bin_weight<acc_t>(pr, k);
    VKD_LANES for (int l = 0; l < L; ++l) {
      const acc_t diff = a_s[l] - a_t[l];
      dk[l] = l < n ? w * diff * diff : acc_t(0);
      total[l] += dk[l];
    }
    if (d)
      for (int l = 0; l < n; ++l) Element<scalar_t>::store(d + b * sd.b + k * sd.t + (s0 + l) * sd.s, dk[l]);
  }
  acc_t sum = acc_t(0);
  for (int l = 0; l < L; ++l) sum += total[l];
  return sum;
}

// ---- spatial="mean" (P > 1): a group of P lines -----------------------------------

// Adds A_k of the tile's n lines to sum_s[k] and sum_t[k] for the bins k % N == rank.
template <int TM, class Team, int L, typename scalar_t, typename acc_t>
VKD_HD void add_tile_spectra(const Problem& pr, const Team& team, const Twiddle<acc_t>* table, const scalar_t* xs,
                             Strides3 ss, const scalar_t* xt, Strides3 st, int64_t b, int64_t s0, int n,
                             acc_t* sum_s, acc_t* sum_t) {
  constexpr int KM = TM / 2 + 1;
  TilePair<TM, Team::N, L, acc_t> x;
  load_pair<TM>(pr, team, xs, ss, xt, st, b, s0, n, x);
  for (int64_t k = 0; k < pr.K(); ++k) {
    acc_t re_s[L], im_s[L], a_s[L], r_s[L], re_t[L], im_t[L], a_t[L], r_t[L];
    bin_spectra<TM>(pr, team, x, table + team.rank() * KM + k, re_s, im_s, a_s, r_s, re_t, im_t, a_t, r_t);
    if (k % Team::N != team.rank()) continue;
    acc_t add_s = acc_t(0), add_t = acc_t(0);
    for (int l = 0; l < n; ++l) {
      add_s += a_s[l];
      add_t += a_t[l];
    }
    sum_s[k] += add_s;
    sum_t[k] += add_t;
  }
}

// Sum over k of d for group (b, g) from the sums of A over its P lines; stores
// d[b, k, g] too when d is not null.
template <typename scalar_t, typename acc_t>
VKD_HD acc_t group_loss(const Problem& pr, const acc_t* sum_s, const acc_t* sum_t, int64_t b, int64_t g,
                        scalar_t* d, Strides3 sd) {
  acc_t total = acc_t(0);
  for (int64_t k = 0; k < pr.K(); ++k) {
    const acc_t diff = (sum_s[k] - sum_t[k]) / acc_t(pr.P);
    const acc_t dk = bin_weight<acc_t>(pr, k) * diff * diff;
    if (d) Element<scalar_t>::store(d + b * sd.b + k * sd.t + g * sd.s, dk);
    total += dk;
  }
  return total;
}

// dL/dA_k of group (b, g) from the sums of A over its lines, before the reduction's
// grad_scale (tile_backward applies it): 2 w_k (mean_s - mean_t) * grad_d[b, k, g] / P
// (the mean's 1/P included), written to grad_a[k].
template <typename scalar_t, typename acc_t>
VKD_HD void group_grad(const Problem& pr, const acc_t* sum_s, const acc_t* sum_t, const scalar_t* grad_d,
                       Strides3 sg, int64_t b, int64_t g, acc_t* grad_a) {
  for (int64_t k = 0; k < pr.K(); ++k) {
    const acc_t go = Element<scalar_t>::load(grad_d + b * sg.b + k * sg.t + g * sg.s);
    const acc_t mean_diff = (sum_s[k] - sum_t[k]) / acc_t(pr.P);
    grad_a[k] = acc_t(2) * bin_weight<acc_t>(pr, k) * mean_diff * go / acc_t(pr.P);
  }
}

// ---- backward of a tile, both modes -------------------------------------------------

// Writes ds, dt (where not null) for the tile's lines. dL/dA_k is grad_a[k] for every
// line when grad_a is not null (spatial="mean": the group's), else (pixel) each line's
// own 2 w_k (A_s - A_t) grad_d[b, k, s0 + l] (grad strides: b, k, g); the reduction's
// grad_scale (1 / count for "mean") multiplies dx once, at the store: applied to every
// bin's factors it scaled them by ~1e-5, and enough of their products were subnormal
// that the CPU backward ran 2.8x slower than for reduction="sum" (flush to zero alone: 1.9x faster).
template <int TM, class Team, int L, typename scalar_t, typename acc_t>
VKD_HD void tile_backward(const Problem& pr, const Team& team, const Twiddle<acc_t>* table, const scalar_t* xs,
                          Strides3 ss, const scalar_t* xt, Strides3 st, const acc_t* grad_a,
                          const scalar_t* grad_d, Strides3 sg, acc_t grad_scale, scalar_t* ds, Strides3 sds,
                          scalar_t* dt, Strides3 sdt, int64_t b, int64_t s0, int n) {
  constexpr int KM = TM / 2 + 1;
  constexpr int N = Team::N;
  // The GPU adds each bin's share to dx as it goes (add_bin_grad: a member's TM / N values
  // stay in registers, and no per-bin array is kept). The CPU keeps every bin's dL/dRe,
  // dL/dIm (KM x L values per side, in L1) and sums each dx[t] over the bins at the end
  // (sum_bins_grad): adding bin by bin left its dx tile on the stack, a load, add and
  // store per t and bin, and made the backward 5x the forward.
#if defined(__CUDA_ARCH__)
  constexpr int kKept = 1;
#else
  constexpr int kKept = KM;
  static_assert(N == 1, "the CPU's team has one member");
#endif
  TilePair<TM, N, L, acc_t> x;
  load_pair<TM>(pr, team, xs, ss, xt, st, b, s0, n, x);
  TilePair<TM, N, L, acc_t> dx;
#if defined(__CUDA_ARCH__)
  VKD_UNROLL for (int j = 0; j < TM / N; ++j)
    VKD_LANES for (int l = 0; l < L; ++l) dx.s.v[j][l] = dx.t.v[j][l] = acc_t(0);
#endif
  acc_t g_re_s[kKept][L], g_im_s[kKept][L], g_re_t[kKept][L], g_im_t[kKept][L];
  for (int64_t k = 0; k < pr.K(); ++k) {
    const Twiddle<acc_t>* column = table + team.rank() * KM + k;
    const int64_t kept = kKept == 1 ? 0 : k;
    acc_t re_s[L], im_s[L], a_s[L], r_s[L], re_t[L], im_t[L], a_t[L], r_t[L], g[L];
    bin_spectra<TM>(pr, team, x, column, re_s, im_s, a_s, r_s, re_t, im_t, a_t, r_t);
    if (grad_a) {
      VKD_LANES for (int l = 0; l < L; ++l) g[l] = grad_a[k];
    } else {
      const acc_t w2 = acc_t(2) * bin_weight<acc_t>(pr, k);
      const scalar_t* grad_row = grad_d + b * sg.b + k * sg.t + s0 * sg.s;
      if (sg.s == 0) {  // a reduced loss's scalar gradient, read through zero strides: one load
        const acc_t go = w2 * acc_t(Element<scalar_t>::load(grad_row));
        VKD_LANES for (int l = 0; l < L; ++l) g[l] = l < n ? go * (a_s[l] - a_t[l]) : acc_t(0);
      } else {
        VKD_LANES for (int l = 0; l < L; ++l) {
          const acc_t go = l < n ? Element<scalar_t>::load(grad_row + l * sg.s) : acc_t(0);
          g[l] = w2 * (a_s[l] - a_t[l]) * go;
        }
      }
    }
    if (ds) {
      VKD_LANES for (int l = 0; l < L; ++l) {
        g_re_s[kept][l] = g[l] * r_s[l] * re_s[l];
        g_im_s[kept][l] = g[l] * r_s[l] * im_s[l];
      }
#if defined(__CUDA_ARCH__)
      add_bin_grad<TM>(dx.s, column, g_re_s[0], g_im_s[0]);
#endif
    }
    if (dt) {  // the teacher's loss gradient is the negative
      VKD_LANES for (int l = 0; l < L; ++l) {
        g_re_t[kept][l] = -g[l] * r_t[l] * re_t[l];
        g_im_t[kept][l] = -g[l] * r_t[l] * im_t[l];
      }
#if defined(__CUDA_ARCH__)
      add_bin_grad<TM>(dx.t, column, g_re_t[0], g_im_t[0]);
#endif
    }
  }
#if !defined(__CUDA_ARCH__)
  if (ds) sum_bins_grad<TM>(dx.s, table, g_re_s, g_im_s, pr.K());
  if (dt) sum_bins_grad<TM>(dx.t, table, g_re_t, g_im_t, pr.K());
#endif
  if (ds) store_slice<TM, N, L>(ds, sds, pr.T, b, s0, n, team.rank(), dx.s, grad_scale);
  if (dt) store_slice<TM, N, L>(dt, sdt, pr.T, b, s0, n, team.rank(), dx.t, grad_scale);
}

}  // namespace spectrum
}  // namespace vkd
