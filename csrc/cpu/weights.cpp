// Weight-spectrum distance on the CPU (math and tables: common/weights.h). gram: OpenMP
// over the items (row chunks; a CPU item covers its group's whole P x P Gram matrix): a
// tile of kRows rows is converted once to the accumulation type and transposed
// (P x kRows), so the Gram entries are dot products over rows that vectorize; then the
// item's energy partial diag(B G B^T). finish / finish_backward: OpenMP over the pairs,
// each a team of one. The backward's dW = W M is a GEMM: vkd_kernels/weights/native.py
// hands it to the BLAS.
#include <algorithm>
#include <cstring>
#include <stdexcept>
#include <vector>
#include "../kernels.h"

namespace vkd {
using namespace weights;

namespace {

constexpr int64_t kRows = 64;   // rows per tile

// x86-64 GCC: an x86-64-v3 (AVX2+FMA) clone of each tile loop, picked by CPU features at
// load time (ifunc), so the portable build still runs 8 floats wide where it can.
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define VKD_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#define VKD_INLINE inline __attribute__((always_inline))  // compiled inside each clone
#else
#define VKD_CLONES
#define VKD_INLINE inline
#endif

// out[i*P + j] += sum_l tile[i][l] tile[j][l] for j >= i (the lower triangle is scratch;
// the caller mirrors the upper one). tile: P x kRows (transposed rows). Blocks of two
// i by four j share their loads.
template <typename acc_t>
VKD_INLINE void tile_gram_upper(const acc_t* tile, int64_t P, acc_t* out) {
  int64_t i = 0;
  for (; i + 2 <= P; i += 2) {
    const acc_t *a0 = tile + i * kRows, *a1 = a0 + kRows;
    int64_t j = i;
    for (; j + 4 <= P; j += 4) {
      const acc_t *b0 = tile + j * kRows, *b1 = b0 + kRows, *b2 = b1 + kRows, *b3 = b2 + kRows;
      acc_t s00 = 0, s01 = 0, s02 = 0, s03 = 0, s10 = 0, s11 = 0, s12 = 0, s13 = 0;
#pragma omp simd reduction(+ : s00, s01, s02, s03, s10, s11, s12, s13)
      for (int64_t l = 0; l < kRows; ++l) {
        s00 += a0[l] * b0[l]; s01 += a0[l] * b1[l]; s02 += a0[l] * b2[l]; s03 += a0[l] * b3[l];
        s10 += a1[l] * b0[l]; s11 += a1[l] * b1[l]; s12 += a1[l] * b2[l]; s13 += a1[l] * b3[l];
      }
      acc_t* o0 = out + i * P + j;
      acc_t* o1 = o0 + P;
      o0[0] += s00; o0[1] += s01; o0[2] += s02; o0[3] += s03;
      o1[0] += s10; o1[1] += s11; o1[2] += s12; o1[3] += s13;
    }
    for (; j < P; ++j) {
      const acc_t* b = tile + j * kRows;
      acc_t s0 = 0, s1 = 0;
#pragma omp simd reduction(+ : s0, s1)
      for (int64_t l = 0; l < kRows; ++l) { s0 += a0[l] * b[l]; s1 += a1[l] * b[l]; }
      out[i * P + j] += s0;
      out[(i + 1) * P + j] += s1;
    }
  }
  for (; i < P; ++i)  // the last row of an odd P: one entry, (i, i)
    for (int64_t j = i; j < P; ++j) {
      const acc_t *a = tile + i * kRows, *b = tile + j * kRows;
      acc_t s = 0;
#pragma omp simd reduction(+ : s)
      for (int64_t l = 0; l < kRows; ++l) s += a[l] * b[l];
      out[i * P + j] += s;
    }
}

VKD_CLONES void tile_gram(const float* tile, int64_t P, float* out) { tile_gram_upper(tile, P, out); }
VKD_CLONES void tile_gram(const double* tile, int64_t P, double* out) { tile_gram_upper(tile, P, out); }

// tile[i][l] = w[(r0 + l) * P + i] in the accumulation type, zero for l >= n.
template <typename scalar_t, typename acc_t>
void load_tile(const scalar_t* w, int64_t P, int64_t r0, int64_t n, acc_t* tile) {
  for (int64_t l = 0; l < n; ++l)
    for (int64_t i = 0; i < P; ++i) tile[i * kRows + l] = Element<scalar_t>::load(w + (r0 + l) * P + i);
  for (int64_t i = 0; n < kRows && i < P; ++i) std::fill(tile + i * kRows + n, tile + (i + 1) * kRows, acc_t(0));
}

template <typename scalar_t>
void gram(const WeightArgs& a) {
  using acc_t = typename Element<scalar_t>::acc_t;
  const Tables& tb = a.tables;
  const acc_t* basis = static_cast<const acc_t*>(a.basis);
  for (int64_t i = 0; i < tb.num_items; ++i)  // before any work: a table this driver cannot serve
    if (tb.items[i * kGramFields + kColI] != 0 || tb.items[i * kGramFields + kColJ] != 0)
      throw std::invalid_argument("vkd: a CPU gram item covers its whole P x P block (i0 = j0 = 0)");
#pragma omp parallel
  {
    std::vector<acc_t> tile(kMaxP * kRows), G(kMaxP * kMaxP);
#pragma omp for schedule(dynamic)
    for (int64_t i = 0; i < tb.num_items; ++i) {
      const int64_t* item = tb.items + i * kGramFields;
      const int64_t P = item[kItemP], end = item[kRowEnd];
      const scalar_t* w = address<const scalar_t>(item[kWeight]);
      std::fill(G.begin(), G.begin() + P * P, acc_t(0));
      for (int64_t r0 = item[kRowBegin]; r0 < end; r0 += kRows) {
        load_tile(w, P, r0, std::min(kRows, end - r0), tile.data());
        tile_gram(tile.data(), P, G.data());
      }
      for (int64_t r = 0; r < P; ++r)
        for (int64_t c = 0; c < r; ++c) G[r * P + c] = G[c * P + r];
      acc_t* out = static_cast<acc_t*>(a.partials) + item[kOut];
      const acc_t* B = basis + item[kItemBasis];
      for (int64_t b = 0; b < P; ++b) {
        acc_t e = acc_t(0);
        for (int part = 0; part < a.parts; ++part) e += block_energy(B + (part * P + b) * P, G.data(), P, 0, P, 0, P);
        out[b] = e;
      }
    }
  }
}

template <typename acc_t>
void finish(const WeightArgs& args) {
  const FinishArgs<acc_t> a = finish_args<acc_t>(args);
#pragma omp parallel
  {
    std::vector<acc_t> e_s(kMaxP), e_t(kMaxP);
    Solo solo;
#pragma omp for schedule(dynamic)
    for (int64_t i = 0; i < a.tables.num_pairs; ++i) finish_pair(a, i, e_s.data(), e_t.data(), solo);
  }
}

template <typename acc_t>
void finish_backward(const WeightArgs& args) {
  const FinishArgs<acc_t> a = finish_args<acc_t>(args);
#pragma omp parallel
  {
    std::vector<acc_t> ge(kMaxP);
    Solo solo;
#pragma omp for schedule(dynamic)
    for (int64_t i = 0; i < a.tables.num_pairs; ++i) finish_pair_backward(a, i, ge.data(), solo);
  }
}

}  // namespace

template <>
void weight_gram<Device::CPU>(const WeightArgs& args) {
  VKD_DISPATCH_DTYPE(args.dtype, [&] { gram<scalar_t>(args); });
}

template <>
void weight_finish<Device::CPU>(const WeightArgs& args) {
  VKD_DISPATCH_ACC(args.dtype, [&] { finish<acc_t>(args); });
}

template <>
void weight_finish_backward<Device::CPU>(const WeightArgs& args) {
  VKD_DISPATCH_ACC(args.dtype, [&] { finish_backward<acc_t>(args); });
}

template <>
void weight_gram_backward<Device::CPU>(const WeightArgs&) {
  throw std::invalid_argument("vkd: the CPU weight-spectrum backward is a BLAS GEMM (vkd_kernels/weights/native.py)");
}

}  // namespace vkd
