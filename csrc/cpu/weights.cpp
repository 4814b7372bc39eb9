// Weight-spectrum distance on the CPU: OpenMP over (split, group) work items, table
// walk from common/weights.h. Forward: a tile of kRows rows is converted once to the
// accumulation type and transposed (P x kRows), so the Gram entries are dot products over
// rows that vectorize. Backward: dW = W M in register blocks of rows by columns, reading
// and writing the rows in place.
#include <algorithm>
#include <cstring>
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

// dw[r] = w[r] M for rows [0, n): M zero padded to ld = a multiple of kCols columns.
// Register blocks of three rows by kCols columns (GCC vector extensions, so the block
// stays in registers); the rows are read and written in place, no transposes.
template <typename scalar_t, typename acc_t>
VKD_INLINE void rows_times_matrix(const scalar_t* w, const acc_t* M, int64_t P, int64_t ld, int64_t n,
                                  scalar_t* dw) {
  typedef acc_t vec __attribute__((vector_size(32)));
  constexpr int64_t kVecs = 4, kBlockRows = 3, kCols = kVecs * int64_t(sizeof(vec) / sizeof(acc_t));
  for (int64_t c0 = 0; c0 < P; c0 += kCols) {
    const int64_t nc = P - c0 < kCols ? P - c0 : kCols;
    for (int64_t r = 0; r < n; r += kBlockRows) {
      const int64_t nr = n - r < kBlockRows ? n - r : kBlockRows;
      vec acc[kBlockRows][kVecs] = {};
      for (int64_t i = 0; i < P; ++i) {
        vec m[kVecs];
        std::memcpy(m, M + i * ld + c0, sizeof(m));
        for (int64_t rr = 0; rr < kBlockRows; ++rr) {
          const acc_t x = rr < nr ? Element<scalar_t>::load(w + (r + rr) * P + i) : acc_t(0);
          for (int64_t v = 0; v < kVecs; ++v) acc[rr][v] += x * m[v];
        }
      }
      for (int64_t rr = 0; rr < nr; ++rr) {
        acc_t out[kCols];
        std::memcpy(out, acc[rr], sizeof(out));
        for (int64_t c = 0; c < nc; ++c) Element<scalar_t>::store(dw + (r + rr) * P + c0 + c, out[c]);
      }
    }
  }
}

// Columns of the padded M of rows_times_matrix.
template <typename acc_t>
constexpr int64_t padded_columns(int64_t P) {
  constexpr int64_t kCols = 4 * 32 / int64_t(sizeof(acc_t));
  return (P + kCols - 1) / kCols * kCols;
}

VKD_CLONES void tile_gram(const float* tile, int64_t P, float* out) { tile_gram_upper(tile, P, out); }
VKD_CLONES void tile_gram(const double* tile, int64_t P, double* out) { tile_gram_upper(tile, P, out); }
#define VKD_ROWS_TIMES_MATRIX(scalar_t, acc_t)                                                        \
  VKD_CLONES void rows_matmul(const scalar_t* w, const acc_t* M, int64_t P, int64_t ld, int64_t n, scalar_t* dw) { \
    rows_times_matrix(w, M, P, ld, n, dw);                                                            \
  }
VKD_ROWS_TIMES_MATRIX(float, float)
VKD_ROWS_TIMES_MATRIX(double, double)
VKD_ROWS_TIMES_MATRIX(Half, float)
VKD_ROWS_TIMES_MATRIX(BFloat16, float)
#undef VKD_ROWS_TIMES_MATRIX

// tile[i][l] = w[(r0 + l) * P + i] in the accumulation type, zero for l >= n.
template <typename scalar_t, typename acc_t>
void load_tile(const scalar_t* w, int64_t P, int64_t r0, int64_t n, acc_t* tile) {
  for (int64_t l = 0; l < n; ++l)
    for (int64_t i = 0; i < P; ++i) tile[i * kRows + l] = Element<scalar_t>::load(w + (r0 + l) * P + i);
  for (int64_t i = 0; n < kRows && i < P; ++i) std::fill(tile + i * kRows + n, tile + (i + 1) * kRows, acc_t(0));
}

template <typename scalar_t>
void gram(const WeightGramArgs& a) {
  using acc_t = typename Element<scalar_t>::acc_t;
  const Tables& tb = a.tables;
  acc_t* partials = static_cast<acc_t*>(a.partials);
  const int64_t items = tb.splits * tb.num_groups;
#pragma omp parallel
  {
    std::vector<acc_t> tile(kMaxP * kRows);
#pragma omp for schedule(dynamic)
    for (int64_t item = 0; item < items; ++item) {
      const int64_t g = item % tb.num_groups, u = item / tb.num_groups, P = tb.group(g, kP);
      acc_t* out = partials + u * tb.flat_size + tb.group(g, kOffset);
      std::fill(out, out + P * P, acc_t(0));
      for_each_segment(tb, g, u, [&](Segment s) {
        const scalar_t* w = weight_rows<scalar_t>(tb, s.tensor);
        for (int64_t r0 = s.begin; r0 < s.end; r0 += kRows) {
          load_tile(w, P, r0, std::min(kRows, s.end - r0), tile.data());
          tile_gram(tile.data(), P, out);
        }
      });
      for (int64_t i = 0; i < P; ++i)
        for (int64_t j = 0; j < i; ++j) out[i * P + j] = out[j * P + i];
    }
  }
}

template <typename scalar_t>
void gram_backward(const WeightGramArgs& a) {
  using acc_t = typename Element<scalar_t>::acc_t;
  const Tables& tb = a.tables;
  const acc_t* M = static_cast<const acc_t*>(a.M);
  const int64_t items = tb.splits * tb.num_groups;
#pragma omp parallel
  {
    std::vector<acc_t> padded(kMaxP * padded_columns<acc_t>(kMaxP));
#pragma omp for schedule(dynamic)
    for (int64_t item = 0; item < items; ++item) {
      const int64_t g = item % tb.num_groups, u = item / tb.num_groups, P = tb.group(g, kP);
      const int64_t ld = padded_columns<acc_t>(P);
      const acc_t* Mg = M + tb.group(g, kOffset);
      for (int64_t i = 0; i < P; ++i)
        for (int64_t j = 0; j < ld; ++j) padded[i * ld + j] = j < P ? Mg[i * P + j] : acc_t(0);
      for_each_segment(tb, g, u, [&](Segment s) {
        rows_matmul(weight_rows<scalar_t>(tb, s.tensor) + s.begin * P, padded.data(), P, ld, s.end - s.begin,
                    grad_rows<scalar_t>(tb, s.tensor) + s.begin * P);
      });
    }
  }
}

}  // namespace

template <>
void weight_gram<Device::CPU>(const WeightGramArgs& args) {
  VKD_DISPATCH_DTYPE(args.dtype, [&] { gram<scalar_t>(args); });
}

template <>
void weight_gram_backward<Device::CPU>(const WeightGramArgs& args) {
  VKD_DISPATCH_DTYPE(args.dtype, [&] { gram_backward<scalar_t>(args); });
}

}  // namespace vkd
