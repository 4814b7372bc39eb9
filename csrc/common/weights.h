// Weight-spectrum distance: the table layouts and the math shared by the CPU and CUDA
// kernels (docs/ops.md section 2; tables built by vkd_kernels/weights/layout.py).
//
// gram: every item (a chunk of rows of one tensor and a block (i0, j0) of its group's
//   Gram matrix G = W^T W; CPU: the whole P x P) writes its share of the energy,
//   partials[out + b] = sum over the block (and its mirror) of B[b, i] G[i, j] B[b, j].
// finish: per pair, each side's partials summed in item order (deterministic, no float
//   atomics), e / #kernels, p = e / (sum e + eps), the distance d of the pair.
// finish_backward: per pair, gp = dL/dp, ge = (gp - <gp, p>) / S and
//   M = 2 / #kernels * sum_parts B^T diag(ge) B for every side that needs a gradient
//   (a distribution teacher gets gp itself); gram_backward: dW = W M.
#pragma once
#include <cmath>
#include "dtypes.h"

namespace vkd {
namespace weights {

constexpr int64_t kMaxP = 512;  // largest kernel (prod(k)) the fused kernels take
constexpr int kTile = 32;       // CUDA block width of G and dW (layout.tile_of("cuda"))

// Fields of the int64 tables, row-major.
enum GramField : int { kWeight = 0, kRowBegin, kRowEnd, kItemP, kOut, kItemBasis, kColI, kColJ, kGramFields };
enum BackwardField : int {
  kBackWeight = 0, kBackGrad, kBackRowBegin, kBackRowEnd, kBackP, kBackM, kBackColJ, kBackwardFields
};
enum GroupField : int { kP = 0, kRows, kPartials, kCount, kBasis, kMOffset, kNeed, kGroupFields };
enum PairField : int { kStudent = 0, kTeacher, kDist, kDistGrad, kPairFields };
enum Distance : int { kNoDistance = 0, kKL = 1, kL2 = 2, kJS = 3 };

struct Tables {
  const int64_t* items;   // gram (kGramFields) or backward (kBackwardFields) items
  int64_t num_items;
  const int64_t* groups;  // (num_groups, kGroupFields)
  int64_t num_groups;
  const int64_t* pairs;   // (num_pairs, kPairFields)
  int64_t num_pairs;
  const int64_t* dists;   // teacher distribution pointers (finish)
  int64_t Pmax;           // row length of p and of the scratch rows

  VKD_HD int64_t group(int64_t g, GroupField f) const { return groups[g * kGroupFields + f]; }
  VKD_HD int64_t pair(int64_t i, PairField f) const { return pairs[i * kPairFields + f]; }
};

template <typename T>
VKD_HD T* address(int64_t value) {
  return reinterpret_cast<T*>(static_cast<uintptr_t>(value));
}

// Per-bin term of the distance and its derivative by p_s (side 0) or p_t (side 1).
template <typename T>
VKD_HD T distance_term(int distance, T ps, T pt, T eps) {
  if (distance == kKL) return pt * (log(pt + eps) - log(ps + eps));
  if (distance == kL2) return (ps - pt) * (ps - pt);
  const T log_m = log((ps + pt) * T(0.5) + eps);
  return T(0.5) * (ps * (log(ps + eps) - log_m) + pt * (log(pt + eps) - log_m));
}

template <typename T>
VKD_HD T distance_grad(int distance, int side, T ps, T pt, T eps) {
  if (distance == kKL) return side == 0 ? -pt / (ps + eps) : log(pt + eps) - log(ps + eps) + pt / (pt + eps);
  if (distance == kL2) return side == 0 ? T(2) * (ps - pt) : T(2) * (pt - ps);
  const T x = side == 0 ? ps : pt, m = (ps + pt) * T(0.5);
  return T(0.5) * (log(x + eps) - log(m + eps) + x / (x + eps) - m / (m + eps));
}

// One bin's share of a Gram block: sum_ij Bb[i0 + i] g[i * ld + j] Bb[j0 + j] for
// i < ni, j < nj (Bb: the basis row of bin b).
template <typename T>
VKD_HD T block_energy(const T* Bb, const T* g, int64_t ld, int64_t i0, int64_t ni, int64_t j0, int64_t nj) {
  T total = T(0);
  for (int64_t i = 0; i < ni; ++i) {
    T row = T(0);
    for (int64_t j = 0; j < nj; ++j) row += g[i * ld + j] * Bb[j0 + j];
    total += Bb[i0 + i] * row;
  }
  return total;
}

// M[i, j] = scale * sum_parts sum_b B[b, i] ge[b] B[b, j] (B: parts x P x P).
template <typename T>
VKD_HD T m_entry(const T* B, const T* ge, int64_t P, int parts, int64_t i, int64_t j, T scale) {
  T total = T(0);
  for (int part = 0; part < parts; ++part)
    for (int64_t b = 0; b < P; ++b) total += B[(part * P + b) * P + i] * ge[b] * B[(part * P + b) * P + j];
  return total * scale;
}

// What the finishing passes read and write (accumulation type T).
template <typename T>
struct FinishArgs {
  Tables tables;
  const T* basis;
  const T* partials;
  T* p;                 // (rows, Pmax)
  T* S;                 // (rows,)
  T* d;                 // (num_pairs,), null for spectra only
  const T* grad;        // backward: dL/dloss (a scalar) or dL/dp (rows, Pmax) for spectra only
  T* dist_grad;         // backward: flat gradients of the distributions that need one
  T* M;                 // backward: flat M
  int distance, drop_dc, parts;
  T eps, grad_scale;
};

// A team of `size` workers, this one `rank`, that sums values and waits for each other:
// the CPU runs teams of one (Solo), CUDA a thread block (cuda/weights.cu).
struct Solo {
  int rank = 0, size = 1;
  template <typename T> VKD_HD T sum(T v) { return v; }
  VKD_HD void sync() {}
};

// sum_b e_g[b] with e_g = (sum of group g's partials, in item order) / #kernels, e_g
// written to e (P values).
template <typename T, typename Team>
VKD_HD T group_energy(const FinishArgs<T>& a, int64_t g, T* e, Team& team) {
  const Tables& tb = a.tables;
  const int64_t P = tb.group(g, kP), count = tb.group(g, kCount);
  const T* partials = a.partials + tb.group(g, kPartials);
  const T n = T(tb.group(g, kRows));
  T local = T(0);
  for (int64_t b = team.rank; b < P; b += team.size) {
    T total = T(0);
    for (int64_t c = 0; c < count; ++c) total += partials[c * P + b];
    e[b] = total / n;
    local += e[b];
  }
  return team.sum(local);
}

// Pair i: p of both sides (zero past P), S, and the distance. e_s, e_t: P-value scratch.
template <typename T, typename Team>
VKD_HD void finish_pair(const FinishArgs<T>& a, int64_t i, T* e_s, T* e_t, Team& team) {
  const Tables& tb = a.tables;
  const int64_t s = tb.pair(i, kStudent), t = tb.pair(i, kTeacher), k = tb.pair(i, kDist);
  const int64_t P = tb.group(s, kP), Pmax = tb.Pmax, front = a.drop_dc;
  const T S_s = group_energy(a, s, e_s, team) + a.eps;
  const T S_t = t >= 0 && k < 0 ? group_energy(a, t, e_t, team) + a.eps : T(1);
  team.sync();
  const T* dist = k >= 0 ? address<const T>(tb.dists[k]) : nullptr;
  T local = T(0);
  for (int64_t b = team.rank; b < Pmax; b += team.size) {
    const T ps = b < P ? e_s[b] / S_s : T(0);
    a.p[s * Pmax + b] = ps;
    if (t < 0) continue;
    const T pt = b >= P ? T(0) : dist ? (b >= front ? dist[b - front] : T(0)) : e_t[b] / S_t;
    a.p[t * Pmax + b] = pt;
    if (a.distance != kNoDistance && b < P) local += distance_term(a.distance, ps, pt, a.eps);
  }
  const T d = team.sum(local);
  if (team.rank == 0) {
    a.S[s] = S_s;
    if (t >= 0) a.S[t] = S_t;
    if (a.d) a.d[i] = d;
  }
}

// gp (scaled) of side `side` of pair (s, t) at bin b < P, and that side's p.
template <typename T>
VKD_HD T side_grad(const FinishArgs<T>& a, int64_t s, int64_t t, int side, int64_t b, T scale, T* p) {
  const int64_t Pmax = a.tables.Pmax;
  const T ps = a.p[s * Pmax + b];
  if (a.distance == kNoDistance) {
    *p = ps;
    return a.grad[s * Pmax + b] * scale;
  }
  const T pt = a.p[t * Pmax + b];
  *p = side == 0 ? ps : pt;
  return distance_grad(a.distance, side, ps, pt, a.eps) * scale;
}

// M of group g (side `side` of pair (s, t)); ge: P-value scratch.
template <typename T, typename Team>
VKD_HD void group_m(const FinishArgs<T>& a, int64_t g, int64_t s, int64_t t, int side, T scale, T* ge, Team& team) {
  const Tables& tb = a.tables;
  const int64_t P = tb.group(g, kP);
  T local = T(0), p = T(0);
  for (int64_t b = team.rank; b < P; b += team.size) local += side_grad(a, s, t, side, b, scale, &p) * p;
  const T dot = team.sum(local);
  for (int64_t b = team.rank; b < P; b += team.size) ge[b] = (side_grad(a, s, t, side, b, scale, &p) - dot) / a.S[g];
  team.sync();
  const T* B = a.basis + tb.group(g, kBasis);
  T* M = a.M + tb.group(g, kMOffset);
  const T factor = T(2) / T(tb.group(g, kRows));
  for (int64_t q = team.rank; q < P * P; q += team.size) M[q] = m_entry(B, ge, P, a.parts, q / P, q % P, factor);
  team.sync();  // ge is reused by the next side
}

// Pair i of the backward: M of each side that needs a gradient, gp of a distribution
// teacher that needs one.
template <typename T, typename Team>
VKD_HD void finish_pair_backward(const FinishArgs<T>& a, int64_t i, T* ge, Team& team) {
  const Tables& tb = a.tables;
  const int64_t s = tb.pair(i, kStudent), t = tb.pair(i, kTeacher), k = tb.pair(i, kDist);
  const T scale = a.grad_scale * (a.distance != kNoDistance ? a.grad[0] : T(1));
  if (tb.group(s, kNeed)) group_m(a, s, s, t, 0, scale, ge, team);
  if (k >= 0) {
    const int64_t offset = tb.pair(i, kDistGrad), P = tb.group(s, kP);
    T p = T(0);
    if (offset >= 0)
      for (int64_t b = a.drop_dc + team.rank; b < P; b += team.size)
        a.dist_grad[offset + b - a.drop_dc] = side_grad(a, s, t, 1, b, scale, &p);
  } else if (t >= 0 && tb.group(t, kNeed)) {
    group_m(a, t, s, t, 1, scale, ge, team);
  }
}

}  // namespace weights
}  // namespace vkd
