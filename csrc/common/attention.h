// Math of attention transfer (docs/ops.md 3a), shared by the CPU and CUDA kernels (and
// mirrored by vkd_kernels/attention/triton_kernels.py).
//
// Feature-sized: the raw map a[n, p] = (1/C) sum_c |x[n, c, p]|^q and its gradient
// dx[n, c, p] = q |x|^(q-1) sign(x) * dL/da[n, p] / C, for x viewed as (N, C, P). The
// channels may be split into K ranges whose partial maps parts[n, k, p] (N, K, P) the
// finish adds in order. Work is done on tiles of L consecutive positions p of one
// sample (L = 1 on CUDA): the loops over a tile's lanes vectorize on the host, and a
// tile reads contiguous row segments of L elements per channel.
//
// Map-sized, per sample (the finish, below): pooling to the common size, normalisation
// per group (the sample or each frame), distance, and their backward.
#pragma once
#include <cmath>
#include <cstdint>
#include "arith.h"
#include "block.h"
#include "dtypes.h"

namespace vkd {
namespace attention {

struct Strides3 { int64_t n, c, p; };
struct Strides2 { int64_t n, p; };

struct MapProblem {
  int64_t N, C, P;
  double q;  // the exponent p of docs/ops.md (q > 0)
  int64_t K; // channel splits: split k reads channels [k C / K, (k + 1) C / K)
  VKD_HD int64_t c_begin(int64_t k) const { return k * C / K; }
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
// Forward of one tile and split k: the partial map parts[n, k, p0 + i] for i < lanes
// (a_out, as: the (N, P) view of split k).
template <int L, Power kPower, typename scalar_t>
VKD_HD void map_tile(const MapProblem& pr, const scalar_t* x, Strides3 xs, void* a_out, Strides2 as, int64_t n,
                     int64_t p0, int lanes, int64_t k = 0) {
  using acc_t = typename Element<scalar_t>::acc_t;
  const acc_t q = acc_t(pr.q);
  acc_t acc[L];
  VKD_LANES
  for (int i = 0; i < L; ++i) acc[i] = acc_t(0);
  using E = Element<scalar_t>;
  const scalar_t* row = x + n * xs.n + p0 * xs.p + pr.c_begin(k) * xs.c;
  int64_t c = pr.c_begin(k);
  // four channels a step: a quarter of the read-modify-writes of acc, four row streams in flight
  for (; c + 4 <= pr.c_begin(k + 1); c += 4, row += 4 * xs.c) {
    VKD_LANES
    for (int i = 0; i < lanes; ++i)
      acc[i] += (power<kPower>(E::load(row + i * xs.p), q) + power<kPower>(E::load(row + xs.c + i * xs.p), q)) +
                (power<kPower>(E::load(row + 2 * xs.c + i * xs.p), q) +
                 power<kPower>(E::load(row + 3 * xs.c + i * xs.p), q));
  }
  for (; c < pr.c_begin(k + 1); ++c, row += xs.c) {
    VKD_LANES
    for (int i = 0; i < lanes; ++i) acc[i] += power<kPower>(E::load(row + i * xs.p), q);
  }
  acc_t* a = static_cast<acc_t*>(a_out) + n * as.n + p0 * as.p;
  const acc_t inv_c = acc_t(1) / acc_t(pr.C);
  for (int i = 0; i < lanes; ++i) a[i * as.p] = acc[i] * inv_c;
}

// Backward of one tile and split k: dx[n, c, p0 + i] for the split's channels c and
// i < lanes, from dL/da (accumulation dtype).
template <int L, Power kPower, typename scalar_t>
VKD_HD void map_grad_tile(const MapProblem& pr, const scalar_t* x, Strides3 xs, const void* grad_a, Strides2 gs,
                          scalar_t* dx, Strides3 ds, int64_t n, int64_t p0, int lanes, int64_t k = 0) {
  using acc_t = typename Element<scalar_t>::acc_t;
  const acc_t q = acc_t(pr.q);
  const acc_t inv_c = acc_t(1) / acc_t(pr.C);
  const acc_t* g_row = static_cast<const acc_t*>(grad_a) + n * gs.n + p0 * gs.p;
  acc_t g[L];
  for (int i = 0; i < lanes; ++i) g[i] = g_row[i * gs.p] * inv_c;
  const scalar_t* row = x + n * xs.n + p0 * xs.p + pr.c_begin(k) * xs.c;
  scalar_t* out = dx + n * ds.n + p0 * ds.p + pr.c_begin(k) * ds.c;
  for (int64_t c = pr.c_begin(k); c < pr.c_begin(k + 1); ++c, row += xs.c, out += ds.c) {
    if (ds.p == 1) {  // a unit-stride store the host compiler vectorizes (a strided one stays scalar)
      VKD_LANES
      for (int i = 0; i < lanes; ++i)
        Element<scalar_t>::store(out + i, power_grad<kPower>(Element<scalar_t>::load(row + i * xs.p), q) * g[i]);
    } else {
      VKD_LANES
      for (int i = 0; i < lanes; ++i)
        Element<scalar_t>::store(out + i * ds.p,
                                 power_grad<kPower>(Element<scalar_t>::load(row + i * xs.p), q) * g[i]);
    }
  }
}

// ---- the finish (per sample; docs/ops.md 3a) ---------------------------------------------
//
// Maps as (T, H, W) (1 to 3 axes padded in front with 1s; vkd_kernels/attention/layout.py
// Geometry), pooled by adaptive average pooling to the common size (To, Ho, Wo) of Q
// elements, normalised per group of QF = Q / frames elements, u = b_s / max(||b_s||, eps),
// v likewise, d = u - v. Forward: the per-sample term scale sum d^2 (mse) or
// scale ||d|| (l2), or d^2 per element (mse, reduction "none"). Backward: dL/dd = coef d
// (coef = 2 g, or g / ||d||), normalisation backward (gd - u (u . gd)) / ||b|| (gd / eps
// where ||b|| < eps), pooling backward: each raw element collects from the (at most 2 per
// axis) bins holding it.
//
// Indices within a sample are 32-bit (the host checks P < 2^31 and, on a pooled side,
// (in + 1)(out + 1) < 2^31 per axis: layout.py Geometry.index_limit), so the GPU divides
// in 32 bits (inline) instead of calling the 64-bit division routine; offsets of samples
// and of the K partials are 64-bit products. Divisions and square roots go through
// common/arith.h. The per-sample functions take a Block (common/block.h).

constexpr double kNormEps = 1e-12;  // as F.normalize

struct PoolSide {
  int32_t in[3];   // raw sizes (T, H, W)
  int32_t bin[3];  // the longest pooling bin per axis (1 where sizes are equal)
  int32_t K, P;    // splits of the partial maps (N, K, P), P = T H W
  VKD_HD bool pooled() const { return bin[0] * bin[1] * bin[2] != 1; }
  // Every axis splits into equal bins (in = out bin, e.g. 14 -> 7): bin o of an axis is
  // [o bin, (o + 1) bin), and every raw element lies in exactly one bin.
  VKD_HD bool exact(const int32_t* out) const {
    return in[0] == out[0] * bin[0] && in[1] == out[1] * bin[1] && in[2] == out[2] * bin[2];
  }
};

struct TransferGeometry {
  int64_t N;
  PoolSide s, t;   // student, teacher
  int32_t out[3];  // pooled sizes (To, Ho, Wo)
  int32_t frames;  // normalisation groups per sample: 1, or To (per_frame)
  double scale;    // factor of the per-sample term
  bool l2, none;   // distance l2; mse with reduction "none"
  VKD_HD int32_t Q() const { return out[0] * out[1] * out[2]; }
  VKD_HD int32_t QF() const { return Q() / frames; }
};

VKD_HD int32_t bin_start(int32_t o, int32_t in, int32_t out) { return o * in / out; }
VKD_HD int32_t bin_end(int32_t o, int32_t in, int32_t out) { return ((o + 1) * in + out - 1) / out; }

// The raw range [b, e) per axis of pooled flat index o (equal bins: no division by the sizes).
VKD_HD void bin_range(const PoolSide& side, const int32_t* out, int32_t o, int32_t* b, int32_t* e) {
  const int32_t oo[3] = {o / (out[1] * out[2]), o / out[2] % out[1], o % out[2]};
  const bool exact = side.exact(out);
  for (int x = 0; x < 3; ++x) {
    b[x] = exact ? oo[x] * side.bin[x] : bin_start(oo[x], side.in[x], out[x]);
    e[x] = exact ? b[x] + side.bin[x] : bin_end(oo[x], side.in[x], out[x]);
  }
}

// The pooled raw map a (one sample, P contiguous) at pooled flat index o.
template <typename acc_t>
VKD_HD acc_t pooled(const acc_t* a, const PoolSide& side, const int32_t* out, int32_t o) {
  if (!side.pooled()) return a[o];
  int32_t b[3], e[3];
  bin_range(side, out, o, b, e);
  acc_t sum = 0;
  for (int32_t t = b[0]; t < e[0]; ++t)
    for (int32_t h = b[1]; h < e[1]; ++h)
      for (int32_t w = b[2]; w < e[2]; ++w) sum += a[(t * side.in[1] + h) * side.in[2] + w];
  return divide(sum, acc_t((e[0] - b[0]) * (e[1] - b[1]) * (e[2] - b[2])));
}

// 1 / |bin o| of a pooled side: what dL/d pool(a)[o] spreads to each raw element of bin o.
template <typename acc_t>
VKD_HD acc_t bin_share(const PoolSide& side, const int32_t* out, int32_t o) {
  if (side.exact(out)) return reciprocal(acc_t(side.bin[0] * side.bin[1] * side.bin[2]));
  int32_t b[3], e[3], count = 1;
  bin_range(side, out, o, b, e);
  for (int x = 0; x < 3; ++x) count *= e[x] - b[x];
  return reciprocal(acc_t(count));
}

// Pooling backward at raw flat index i: sum over the bins o holding i of s[o], where s
// holds dL/d pool(a) already times bin_share.
template <typename acc_t>
VKD_HD acc_t unpooled(const acc_t* s, const PoolSide& side, const int32_t* out, int32_t i) {
  const int32_t* in = side.in;
  const int32_t ii[3] = {i / (in[1] * in[2]), i / in[2] % in[1], i % in[2]};
  int32_t o0[3], o1[3];
  for (int x = 0; x < 3; ++x) {
    o0[x] = ii[x] * out[x] / in[x];
    o1[x] = (o0[x] + 1) * in[x] < (ii[x] + 1) * out[x] ? o0[x] + 2 : o0[x] + 1;  // bin o holds i iff o < (i+1) O / I
  }
  acc_t sum = 0;
  for (int32_t t = o0[0]; t < o1[0]; ++t)
    for (int32_t h = o0[1]; h < o1[1]; ++h)
      for (int32_t w = o0[2]; w < o1[2]; ++w) sum += s[(t * out[1] + h) * out[2] + w];
  return sum;
}

// Pooling backward of one sample: da[i] = unpooled(s, i) for the P raw elements. Equal
// bins hold each raw element once: each bin o writes its elements s[o] (0 + s[o], the
// one-term sum of the general path, so the values are the same to the bit).
template <typename acc_t, typename Block>
VKD_HD void unpool(const acc_t* s, const PoolSide& side, const int32_t* out, acc_t* da, const Block& block) {
  if (!side.exact(out)) {
    for (int32_t i = block.lane; i < side.P; i += block.step) da[i] = unpooled(s, side, out, i);
    return;
  }
  for (int32_t o = block.lane; o < out[0] * out[1] * out[2]; o += block.step) {
    int32_t b[3], e[3];
    bin_range(side, out, o, b, e);
    const acc_t v = acc_t(0) + s[o];
    for (int32_t t = b[0]; t < e[0]; ++t)
      for (int32_t h = b[1]; h < e[1]; ++h)
        for (int32_t w = b[2]; w < e[2]; ++w) da[(t * side.in[1] + h) * side.in[2] + w] = v;
  }
}

// parts[n, 0, :] = sum_k parts[n, k, :], k in order.
template <typename acc_t, typename Block>
VKD_HD void reduce_parts(acc_t* parts, const PoolSide& side, const Block& block) {
  if (side.K == 1) return;
  for (int32_t p = block.lane; p < side.P; p += block.step) {
    acc_t sum = parts[p];
    for (int32_t k = 1; k < side.K; ++k) sum += parts[int64_t(k) * side.P + p];
    parts[p] = sum;
  }
}

// (||b_s||, ||b_t||) of frame f. With keep_s / keep_t, the pooled b_s / b_t are also
// stored at their index o there (each lane at the indices it visits, as the later
// passes over the frame visit them), so those passes read them back instead of pooling again.
template <typename acc_t, typename Block>
VKD_HD void frame_norms(const TransferGeometry& g, const acc_t* as, const acc_t* at, int32_t f, const Block& block,
                        acc_t& ns, acc_t& nt, acc_t* keep_s = nullptr, acc_t* keep_t = nullptr) {
  acc_t s2 = 0, t2 = 0;
  for (int32_t o = f * g.QF() + block.lane; o < (f + 1) * g.QF(); o += block.step) {
    const acc_t bs = pooled(as, g.s, g.out, o), bt = pooled(at, g.t, g.out, o);
    if (keep_s) keep_s[o] = bs;
    if (keep_t) keep_t[o] = bt;
    s2 += bs * bs;
    t2 += bt * bt;
  }
  ns = root(block.sum(s2));
  nt = root(block.sum(t2));
}

template <typename acc_t>
VKD_HD acc_t clamp_norm(acc_t n) { return n > acc_t(kNormEps) ? n : acc_t(kNormEps); }

// sum over the sample of d^2; with `d2_out`, d^2 per pooled element too.
template <typename acc_t, typename Block>
VKD_HD acc_t sample_distance(const TransferGeometry& g, const acc_t* as, const acc_t* at, acc_t* d2_out,
                             const Block& block) {
  acc_t total = 0;
  for (int32_t f = 0; f < g.frames; ++f) {
    acc_t ns, nt;
    frame_norms(g, as, at, f, block, ns, nt);
    const acc_t rs = reciprocal(clamp_norm(ns)), rt = reciprocal(clamp_norm(nt));
    for (int32_t o = f * g.QF() + block.lane; o < (f + 1) * g.QF(); o += block.step) {
      const acc_t d = pooled(as, g.s, g.out, o) * rs - pooled(at, g.t, g.out, o) * rt;
      if (d2_out) d2_out[o] = d * d;
      total += d * d;
    }
  }
  return block.sum(total);
}

// Forward of sample n: parts[:, 0] become the raw maps; out[n] (or out[n, :] when none).
template <typename acc_t, typename Block>
VKD_HD void transfer_forward_sample(const TransferGeometry& g, acc_t* parts_s, acc_t* parts_t, acc_t* out,
                                    int64_t n, const Block& block) {
  acc_t* as = parts_s + n * g.s.K * g.s.P;
  acc_t* at = parts_t + n * g.t.K * g.t.P;
  reduce_parts(as, g.s, block);
  reduce_parts(at, g.t, block);
  block.sync();
  const acc_t total = sample_distance(g, as, at, g.none ? out + n * g.Q() : static_cast<acc_t*>(nullptr), block);
  if (!g.none && block.lane == 0) out[n] = (g.l2 ? root(total) : total) * acc_t(g.scale);
}

// Backward of sample n: da_s[n, :] (and da_t[n, :] when da_t) from the raw maps and
// grad (g_sn, g_so: strides of the per-sample or per-element incoming gradient).
// scratch_s / scratch_t (N, Q): dL/d pool(a) of a pooled side (unused otherwise).
template <typename acc_t, typename Block>
VKD_HD void transfer_backward_sample(const TransferGeometry& g, const acc_t* parts_s, const acc_t* parts_t,
                                     const acc_t* grad, int64_t g_sn, int64_t g_so, acc_t* da_s, acc_t* da_t,
                                     acc_t* scratch_s, acc_t* scratch_t, int64_t n, const Block& block) {
  const acc_t* as = parts_s + n * g.s.K * g.s.P;
  const acc_t* at = parts_t + n * g.t.K * g.t.P;
  const bool pool_s = g.s.P != g.Q(), pool_t = da_t && g.t.P != g.Q();
  acc_t* ds = pool_s ? scratch_s + n * g.Q() : da_s + n * g.s.P;
  acc_t* dt = !da_t ? nullptr : pool_t ? scratch_t + n * g.Q() : da_t + n * g.t.P;
  const acc_t* gs = grad + n * g_sn;
  const acc_t gn = gs[0] * acc_t(g.scale);
  acc_t coef = acc_t(2) * gn;
  if (g.l2) {
    const acc_t norm = root(sample_distance(g, as, at, static_cast<acc_t*>(nullptr), block));
    coef = norm > acc_t(0) ? divide(gn, norm) : acc_t(0);
  }
  // A pooled side's scratch first holds its pooled map (frame_norms), then dL/d pool(a):
  // the map is pooled once, not once per pass.
  const acc_t* bs = pool_s ? ds : as;
  const acc_t* bt = pool_t ? dt : at;
  for (int32_t f = 0; f < g.frames; ++f) {
    acc_t ns, nt;
    frame_norms(g, as, at, f, block, ns, nt, pool_s ? ds : nullptr, pool_t ? dt : nullptr);
    const acc_t rs = reciprocal(clamp_norm(ns)), rt = reciprocal(clamp_norm(nt));
    acc_t us = 0, vs = 0;
    for (int32_t o = f * g.QF() + block.lane; o < (f + 1) * g.QF(); o += block.step) {
      const acc_t u = bs[o] * rs, v = (pool_t ? bt[o] : pooled(at, g.t, g.out, o)) * rt;
      const acc_t gd = (g.none ? acc_t(2) * gs[o * g_so] : coef) * (u - v);
      us += u * gd;
      vs += v * gd;
    }
    us = block.sum(us);
    vs = block.sum(vs);
    if (!(ns >= acc_t(kNormEps))) us = 0;
    if (!(nt >= acc_t(kNormEps))) vs = 0;
    for (int32_t o = f * g.QF() + block.lane; o < (f + 1) * g.QF(); o += block.step) {
      const acc_t u = bs[o] * rs, v = (pool_t ? bt[o] : pooled(at, g.t, g.out, o)) * rt;
      const acc_t gd = (g.none ? acc_t(2) * gs[o * g_so] : coef) * (u - v);
      ds[o] = (gd - u * us) * rs * (pool_s ? bin_share<acc_t>(g.s, g.out, o) : acc_t(1));
      if (dt) dt[o] = (v * vs - gd) * rt * (pool_t ? bin_share<acc_t>(g.t, g.out, o) : acc_t(1));
    }
  }
  if (!pool_s && !pool_t) return;
  block.sync();
  if (pool_s) unpool(ds, g.s, g.out, da_s + n * g.s.P, block);
  if (pool_t) unpool(dt, g.t, g.out, da_t + n * g.t.P, block);
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
