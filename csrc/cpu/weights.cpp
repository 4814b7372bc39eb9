// Weight-spectrum distance on the CPU: OpenMP over (split, group) work items, table
// walk from common/weights.h. A tile of kRows rows is converted once to the
// accumulation type and transposed (P x kRows), so the Gram entries are dot products
// over rows and dW^T = M^T tile^T is a sum of scaled rows: both vectorize across rows.
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

// out[j][l] = sum_i M[i*P + j] tile[i][l]: (W M)^T of a tile, P x kRows. Register
// blocks of four j by two 32-byte vectors of rows (GCC vector extensions, so the block
// stays in registers).
template <typename acc_t>
VKD_INLINE void tile_times_matrix(const acc_t* tile, const acc_t* M, int64_t P, acc_t* out) {
  typedef acc_t vec __attribute__((vector_size(32)));
  constexpr int64_t kChunk = 2 * int64_t(sizeof(vec) / sizeof(acc_t));  // rows per register block
  static_assert(kRows % kChunk == 0, "kRows must be a multiple of the register block");
  for (int64_t j0 = 0; j0 < P; j0 += 4) {
    const int64_t nj = P - j0 < 4 ? P - j0 : 4;
    for (int64_t l0 = 0; l0 < kRows; l0 += kChunk) {
      vec acc[4][2] = {};
      for (int64_t i = 0; i < P; ++i) {
        vec x[2];
        std::memcpy(x, tile + i * kRows + l0, sizeof(x));
        const acc_t* m = M + i * P + j0;
        for (int jj = 0; jj < 4; ++jj) {
          const acc_t mj = jj < nj ? m[jj] : acc_t(0);
          acc[jj][0] += mj * x[0];
          acc[jj][1] += mj * x[1];
        }
      }
      for (int64_t jj = 0; jj < nj; ++jj) std::memcpy(out + (j0 + jj) * kRows + l0, acc[jj], sizeof(acc[jj]));
    }
  }
}

VKD_CLONES void tile_gram(const float* tile, int64_t P, float* out) { tile_gram_upper(tile, P, out); }
VKD_CLONES void tile_gram(const double* tile, int64_t P, double* out) { tile_gram_upper(tile, P, out); }
VKD_CLONES void tile_matmul(const float* tile, const float* M, int64_t P, float* out) {
  tile_times_matrix(tile, M, P, out);
}
VKD_CLONES void tile_matmul(const double* tile, const double* M, int64_t P, double* out) {
  tile_times_matrix(tile, M, P, out);
}

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
    std::vector<acc_t> tile(kMaxP * kRows), out(kMaxP * kRows);
#pragma omp for schedule(dynamic)
    for (int64_t item = 0; item < items; ++item) {
      const int64_t g = item % tb.num_groups, u = item / tb.num_groups, P = tb.group(g, kP);
      const acc_t* Mg = M + tb.group(g, kOffset);
      for_each_segment(tb, g, u, [&](Segment s) {
        const scalar_t* w = weight_rows<scalar_t>(tb, s.tensor);
        scalar_t* dw = grad_rows<scalar_t>(tb, s.tensor);
        for (int64_t r0 = s.begin; r0 < s.end; r0 += kRows) {
          const int64_t n = std::min(kRows, s.end - r0);
          load_tile(w, P, r0, n, tile.data());
          tile_matmul(tile.data(), Mg, P, out.data());
          for (int64_t l = 0; l < n; ++l)
            for (int64_t j = 0; j < P; ++j) Element<scalar_t>::store(dw + (r0 + l) * P + j, out[j * kRows + l]);
        }
      });
    }
  }
}

}  // namespace

void weight_gram_cpu(const WeightGramArgs& args) {
  VKD_DISPATCH_DTYPE(args.dtype, [&] { gram<scalar_t>(args); });
}

void weight_gram_backward_cpu(const WeightGramArgs& args) {
  VKD_DISPATCH_DTYPE(args.dtype, [&] { gram_backward<scalar_t>(args); });
}

}  // namespace vkd
