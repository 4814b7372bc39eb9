// Weight-spectrum distance on the CPU: OpenMP over (split, group) work items, table
// walk from common/weights.h. The Gram of a tile of kRows rows is computed from its
// transpose (P x kRows, converted to the accumulation type once), so every entry is a
// dot product over rows that vectorizes; four entries share each load of row i.
#include <algorithm>
#include <vector>
#include "../kernels.h"

namespace vkd {
using namespace weights;

namespace {

constexpr int64_t kRows = 64;

// out[i*P + j] += sum_l tile[i][l] tile[j][l] for j >= i (the upper triangle).
template <typename acc_t>
void tile_gram_upper(const acc_t* tile, int64_t P, acc_t* out) {
  for (int64_t i = 0; i < P; ++i) {
    const acc_t* ti = tile + i * kRows;
    int64_t j = i;
    for (; j + 4 <= P; j += 4) {
      const acc_t *t0 = tile + j * kRows, *t1 = t0 + kRows, *t2 = t1 + kRows, *t3 = t2 + kRows;
      acc_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
#pragma omp simd reduction(+ : s0, s1, s2, s3)
      for (int64_t l = 0; l < kRows; ++l) {
        s0 += ti[l] * t0[l];
        s1 += ti[l] * t1[l];
        s2 += ti[l] * t2[l];
        s3 += ti[l] * t3[l];
      }
      out[i * P + j] += s0;
      out[i * P + j + 1] += s1;
      out[i * P + j + 2] += s2;
      out[i * P + j + 3] += s3;
    }
    for (; j < P; ++j) {
      const acc_t* tj = tile + j * kRows;
      acc_t s = 0;
#pragma omp simd reduction(+ : s)
      for (int64_t l = 0; l < kRows; ++l) s += ti[l] * tj[l];
      out[i * P + j] += s;
    }
  }
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
          const int64_t n = std::min(kRows, s.end - r0);
          for (int64_t l = 0; l < kRows; ++l)
            for (int64_t i = 0; i < P; ++i)
              tile[i * kRows + l] = l < n ? Element<scalar_t>::load(w + (r0 + l) * P + i) : acc_t(0);
          tile_gram_upper(tile.data(), P, out);
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
    std::vector<acc_t> row(kMaxP);
#pragma omp for schedule(dynamic)
    for (int64_t item = 0; item < items; ++item) {
      const int64_t g = item % tb.num_groups, u = item / tb.num_groups, P = tb.group(g, kP);
      const acc_t* Mg = M + tb.group(g, kOffset);
      for_each_segment(tb, g, u, [&](Segment s) {
        const scalar_t* w = weight_rows<scalar_t>(tb, s.tensor);
        scalar_t* dw = grad_rows<scalar_t>(tb, s.tensor);
        for (int64_t r = s.begin; r < s.end; ++r) {
          acc_t* out = row.data();
          std::fill(out, out + P, acc_t(0));
          for (int64_t i = 0; i < P; ++i) {
            const acc_t wi = Element<scalar_t>::load(w + r * P + i);
            const acc_t* Mi = Mg + i * P;
            VKD_LANES for (int64_t j = 0; j < P; ++j) out[j] += wi * Mi[j];
          }
          for (int64_t j = 0; j < P; ++j) Element<scalar_t>::store(dw + r * P + j, out[j]);
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
