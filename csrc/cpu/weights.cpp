// Weight-spectrum distance on the CPU (math and tables: common/weights.h). gram: OpenMP
// over the items (row chunks; a CPU item covers its group's whole P x P Gram matrix):
// G += W^T W as rank-1 updates of register-blocked vectors of G (item_gram: float32 and
// float64 rows read in place, narrower types converted kRows rows at a time), in the
// widest vectors the CPU has; then the item's energy partial diag(B G B^T). finish /
// finish_backward: OpenMP over the pairs, each a team of one. The backward's dW = W M
// is a GEMM: vkd_kernels/weights/native.py hands it to the BLAS.
#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>
#include "../kernels.h"

namespace vkd {
using namespace weights;

namespace {

#if defined(__GNUC__)
#define VKD_INLINE inline __attribute__((always_inline))  // compiled inside each variant
#else
#define VKD_INLINE inline
#endif

constexpr int64_t kRows = 64;      // rows per step of the rank updates (64 x P values: in L1)
constexpr int64_t kOverRead = 32;  // elements a rank update may read past a row's end (below)

// Row stride of the item's Gram matrix: P rounded up to two 64-byte vectors (every
// variant's column blocks, <= 32 floats / 16 doubles, tile it exactly).
template <typename acc_t>
int64_t padded(int64_t P) {
  constexpr int64_t w = 128 / sizeof(acc_t);
  return (P + w - 1) / w * w;
}

// G[i0 .. i0 + kI, j0 .. j0 + kJ L] += sum over n rows x (row stride P) of x[i] x[j]:
// kI x kJ accumulator vectors (L lanes of kBytes) stay in registers over the rows; each
// row loads its kJ column vectors once and broadcasts its kI row entries (GCC / Clang
// vector extensions, so each instruction set below gets its own register blocking).
// Columns j >= P and rows i >= P read the next row's first values (at most kOverRead
// past the row): those entries of G are junk, never read; every entry i, j < P is exact.
template <int kBytes, int kI, int kJ, typename acc_t>
VKD_INLINE void rank_block(const acc_t* x, int64_t n, int64_t P, int64_t i0, int64_t j0, acc_t* G, int64_t ld) {
  typedef acc_t V __attribute__((vector_size(kBytes)));
  constexpr int L = kBytes / sizeof(acc_t);
  static_assert(kJ * L <= kOverRead && kI <= kOverRead, "a block may read past its row by kOverRead at most");
  V acc[kI][kJ];
  for (int ii = 0; ii < kI; ++ii)
    for (int jj = 0; jj < kJ; ++jj) std::memcpy(&acc[ii][jj], G + (i0 + ii) * ld + j0 + jj * L, sizeof(V));
  for (int64_t r = 0; r < n; ++r, x += P) {
    V cols[kJ];
    for (int jj = 0; jj < kJ; ++jj) std::memcpy(&cols[jj], x + j0 + jj * L, sizeof(V));
    for (int ii = 0; ii < kI; ++ii)
      for (int jj = 0; jj < kJ; ++jj) acc[ii][jj] += x[i0 + ii] * cols[jj];
  }
  for (int ii = 0; ii < kI; ++ii)
    for (int jj = 0; jj < kJ; ++jj) std::memcpy(G + (i0 + ii) * ld + j0 + jj * L, &acc[ii][jj], sizeof(V));
}

// G += x^T x for n rows x of P values over the blocks that hold the upper triangle
// (j >= i; the caller mirrors it): row blocks of kI rows (one of kI / 2 for the last few),
// each (row_block) from the column vector that holds its first row to the end, kJ vectors
// at a time and a single-vector tail. Starting at that vector rather than at a kJ-vector
// boundary skips the lower blocks: a 3x3x3 kernel (P = 27) in 16-lane vectors takes 16 + 16 + 8 + 4 = 44
// FMAs per row (rows 0-7, 8-15: both vectors; 16-23: the second; 24-26: 4 of it) where
// 14 x 2 blocks from vector 0 took 56 (the triangle itself is 24 vectors' worth).
template <int kBytes, int kI, int kJ, typename acc_t>
VKD_INLINE void row_block(const acc_t* x, int64_t n, int64_t P, int64_t i0, acc_t* G, int64_t ld) {
  constexpr int64_t L = kBytes / sizeof(acc_t);
  int64_t j0 = i0 / L * L;
  for (; j0 + kJ * L <= P + L - 1; j0 += kJ * L) rank_block<kBytes, kI, kJ>(x, n, P, i0, j0, G, ld);
  for (; j0 < P; j0 += L) rank_block<kBytes, kI, 1>(x, n, P, i0, j0, G, ld);
}

template <int kBytes, int kI, int kJ, typename acc_t>
VKD_INLINE void gram_rows(const acc_t* x, int64_t n, int64_t P, acc_t* G, int64_t ld) {
  int64_t i0 = 0;
  for (; P - i0 > kI / 2; i0 += kI) row_block<kBytes, kI, kJ>(x, n, P, i0, G, ld);
  if (i0 < P) row_block<kBytes, kI / 2, kJ>(x, n, P, i0, G, ld);
}

template <typename acc_t>
using GramRows = void (*)(const acc_t* x, int64_t n, int64_t P, acc_t* G, int64_t ld);

// One variant per x86-64 level, picked once by the CPU's features (other CPUs: the
// portable 16-byte one). Blocks (accumulators + column vectors + a broadcast <= the
// registers): AVX-512 8 x 2 of 32 zmm (8 rows divide a 16- or 8-lane vector, so no block
// straddles one), AVX2 6 x 2 of 16 ymm, SSE 6 x 2 of 16 xmm.
#if defined(__GNUC__) && defined(__x86_64__)
template <typename acc_t>
__attribute__((target("arch=x86-64-v4"))) void gram_rows_v4(const acc_t* x, int64_t n, int64_t P, acc_t* G,
                                                              int64_t ld) {
  gram_rows<64, 8, 2>(x, n, P, G, ld);
}
template <typename acc_t>
__attribute__((target("arch=x86-64-v3"))) void gram_rows_v3(const acc_t* x, int64_t n, int64_t P, acc_t* G,
                                                              int64_t ld) {
  gram_rows<32, 6, 2>(x, n, P, G, ld);
}
#endif
template <typename acc_t>
void gram_rows_base(const acc_t* x, int64_t n, int64_t P, acc_t* G, int64_t ld) {
  gram_rows<16, 6, 2>(x, n, P, G, ld);
}

// The variant of this CPU, or the one VKD_WEIGHT_GRAM_ISA names ("x86-64-v4",
// "x86-64-v3", "base"; the tests run each), read once.
template <typename acc_t>
GramRows<acc_t> pick_gram_rows() {
  const char* forced = std::getenv("VKD_WEIGHT_GRAM_ISA");
  const std::string isa = forced ? forced : "";
  if (!isa.empty() && isa != "x86-64-v4" && isa != "x86-64-v3" && isa != "base")
    throw std::invalid_argument("vkd: VKD_WEIGHT_GRAM_ISA must be x86-64-v4, x86-64-v3 or base, got '" + isa + "'");
#if defined(__GNUC__) && defined(__x86_64__)
  const bool v4 = __builtin_cpu_supports("x86-64-v4"), v3 = __builtin_cpu_supports("x86-64-v3");
  if ((isa == "x86-64-v4" && !v4) || (isa == "x86-64-v3" && !v3))
    throw std::invalid_argument("vkd: VKD_WEIGHT_GRAM_ISA=" + isa + " but this CPU lacks it");
  if (isa == "x86-64-v4" || (isa.empty() && v4)) return gram_rows_v4<acc_t>;
  if (isa == "x86-64-v3" || (isa.empty() && v3)) return gram_rows_v3<acc_t>;
#else
  if (isa == "x86-64-v4" || isa == "x86-64-v3")
    throw std::invalid_argument("vkd: VKD_WEIGHT_GRAM_ISA=" + isa + " but this build is not x86-64");
#endif
  return gram_rows_base<acc_t>;
}

// G (row stride ld) += W^T W over rows [begin, end) of w (P values each). Rows in the
// accumulation type are read in place, except the last few, whose over-read would leave
// the rows: those, and every row of a narrower type, are converted into `copy` first
// (kRows rows and kOverRead zeros after them).
template <typename scalar_t, typename acc_t>
void item_gram(GramRows<acc_t> rank, const scalar_t* w, int64_t P, int64_t begin, int64_t end, acc_t* copy,
               acc_t* G, int64_t ld) {
  int64_t r0 = begin;
  if (std::is_same<scalar_t, acc_t>::value) {
    const int64_t in_place_end = std::max(begin, end - (kOverRead + P - 1) / P);
    for (; r0 < in_place_end; r0 += kRows)
      rank(reinterpret_cast<const acc_t*>(w) + r0 * P, std::min(kRows, in_place_end - r0), P, G, ld);
    r0 = in_place_end;
  }
  for (; r0 < end; r0 += kRows) {
    const int64_t n = std::min(kRows, end - r0);
    for (int64_t k = 0; k < n * P; ++k) copy[k] = Element<scalar_t>::load(w + r0 * P + k);
    std::fill(copy + n * P, copy + n * P + kOverRead, acc_t(0));
    rank(copy, n, P, G, ld);
  }
}

template <typename scalar_t>
void gram(const WeightArgs& a) {
  using acc_t = typename Element<scalar_t>::acc_t;
  const Tables& tb = a.tables;
  const acc_t* basis = static_cast<const acc_t*>(a.basis);
  for (int64_t i = 0; i < tb.num_items; ++i)  // before any work: a table this driver cannot serve
    if (tb.items[i * kGramFields + kColI] != 0 || tb.items[i * kGramFields + kColJ] != 0)
      throw std::invalid_argument("vkd: a CPU gram item covers its whole P x P block (i0 = j0 = 0)");
  static const GramRows<acc_t> rank = pick_gram_rows<acc_t>();
  const int64_t ld_max = padded<acc_t>(kMaxP);
#pragma omp parallel
  {
    // G: ld_max columns, and rows past P for the last row block
    std::vector<acc_t> copy(kRows * kMaxP + kOverRead), G((ld_max + kOverRead) * ld_max);
#pragma omp for schedule(dynamic)
    for (int64_t i = 0; i < tb.num_items; ++i) {
      const int64_t* item = tb.items + i * kGramFields;
      const int64_t P = item[kItemP], ld = padded<acc_t>(P);
      std::fill(G.begin(), G.begin() + (P + kOverRead) * ld, acc_t(0));
      item_gram(rank, address<const scalar_t>(item[kWeight]), P, item[kRowBegin], item[kRowEnd], copy.data(),
                G.data(), ld);
      for (int64_t r = 0; r < P; ++r)
        for (int64_t c = 0; c < r; ++c) G[r * ld + c] = G[c * ld + r];
      acc_t* out = static_cast<acc_t*>(a.partials) + item[kOut];
      const acc_t* B = basis + item[kItemBasis];
      for (int64_t b = 0; b < P; ++b) {
        acc_t e = acc_t(0);
        for (int part = 0; part < a.parts; ++part) e += block_energy(B + (part * P + b) * P, G.data(), ld, 0, P, 0, P);
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
