// Weight-spectrum distance: the table layout and the Gram / backward math shared by
// the CPU and CUDA kernels (docs/ops.md section 2; layout: vkd_kernels/weights/layout.py).
//
// Every group g of a call is a list of contiguous conv weights read as rows of P_g
// elements (one kernel per row). The forward writes, for split u of each group, the
// partial Gram  partials[u, offset_g + i*P + j] = sum over the split's rows of w[i] w[j];
// the caller sums the splits (fixed order: deterministic, no float atomics).
// The backward writes dW = W M_g for every row, M_g = M_flat[offset_g :] (P x P).
#pragma once
#include "dtypes.h"

namespace vkd {
namespace weights {

constexpr int64_t kMaxP = 512;  // largest kernel (prod(k)) the fused kernels take

// Fields of the int64 tables, row-major.
enum TensorField : int { kPointer = 0, kGradPointer = 1, kRows = 2, kRowStart = 3, kTensorFields = 4 };
enum GroupField : int { kP = 0, kFirst = 1, kEnd = 2, kGroupRows = 3, kOffset = 4, kGroupFields = 5 };

struct Tables {
  const int64_t* tensors;  // (num_tensors, kTensorFields), ordered by group
  const int64_t* groups;   // (num_groups, kGroupFields)
  int64_t num_tensors, num_groups;
  int64_t splits;          // splits per group (programs per group)
  int64_t flat_size;       // sum of P^2: the row length of partials and of M_flat

  VKD_HD int64_t group(int64_t g, GroupField f) const { return groups[g * kGroupFields + f]; }
  VKD_HD int64_t tensor(int64_t t, TensorField f) const { return tensors[t * kTensorFields + f]; }
};

// One piece of work: rows [begin, end) of tensor t (local row indices).
struct Segment { int64_t tensor, begin, end; };

// Calls fn(Segment) for every tensor piece of split u of group g, in order. The split
// takes the group's rows [rows*u/splits, rows*(u+1)/splits).
template <typename Fn>
VKD_HD void for_each_segment(const Tables& tb, int64_t g, int64_t u, Fn&& fn) {
  const int64_t rows = tb.group(g, kGroupRows);
  const int64_t lo = rows * u / tb.splits, hi = rows * (u + 1) / tb.splits;
  for (int64_t t = tb.group(g, kFirst); t < tb.group(g, kEnd); ++t) {
    const int64_t start = tb.tensor(t, kRowStart), n = tb.tensor(t, kRows);
    const int64_t begin = (lo > start ? lo : start) - start, end = (hi < start + n ? hi : start + n) - start;
    if (begin < end) fn(Segment{t, begin, end});
  }
}

template <typename scalar_t>
VKD_HD const scalar_t* weight_rows(const Tables& tb, int64_t t) {
  return reinterpret_cast<const scalar_t*>(static_cast<uintptr_t>(tb.tensor(t, kPointer)));
}

template <typename scalar_t>
VKD_HD scalar_t* grad_rows(const Tables& tb, int64_t t) {
  return reinterpret_cast<scalar_t*>(static_cast<uintptr_t>(tb.tensor(t, kGradPointer)));
}

// sum over rows [begin, end) of w[r, i] w[r, j] (w: rows of P elements).
template <typename scalar_t, typename acc_t>
VKD_HD acc_t gram_entry(const scalar_t* w, int64_t P, int64_t begin, int64_t end, int64_t i, int64_t j) {
  acc_t total = acc_t(0);
  for (int64_t r = begin; r < end; ++r)
    total += Element<scalar_t>::load(w + r * P + i) * Element<scalar_t>::load(w + r * P + j);
  return total;
}

// out[j] = sum_i w[i] M[i, j] for one row of P elements (the backward, dW = W M).
template <typename scalar_t, typename acc_t>
VKD_HD acc_t row_times_column(const scalar_t* w, const acc_t* M, int64_t P, int64_t j) {
  acc_t total = acc_t(0);
  for (int64_t i = 0; i < P; ++i) total += Element<scalar_t>::load(w + i) * M[i * P + j];
  return total;
}

}  // namespace weights
}  // namespace vkd
