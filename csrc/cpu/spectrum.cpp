// Temporal spectrum loss on the CPU: OpenMP over work items, math from
// common/spectrum.h with the one-member team (Solo). A work item is a tile of L
// consecutive lines (spatial="pixel") or one group (spatial="mean"); L = one cache line
// of accumulators (16 float32, 8 float64), so the tile loops vectorize across lines.
// Each size class TM of T (8, 16, 32, 64) is compiled on its own: fixed-extent tile
// arrays and loops over t the compiler unrolls.
#include <algorithm>
#include <vector>
#include "../kernels.h"
#include "clones.h"

namespace vkd {
using namespace spectrum;

namespace {

template <int TM, typename acc_t>
struct Table {
  std::vector<Twiddle<acc_t>> entries;
  Table(const Problem& pr, double scale) : entries(TM * (TM / 2 + 1)) {
    for (int i = 0; i < int(entries.size()); ++i) twiddle_entry<TM>(pr.T, scale, i, entries.data());
  }
  const Twiddle<acc_t>* data() const { return entries.data(); }
};

// Work items of a problem: item i covers batch row b = i / per_b.
template <int L>
struct Items {
  bool pixel;
  int64_t S, per_b, count;
  explicit Items(const Problem& pr)
      : pixel(pr.P == 1), S(pr.S), per_b(pr.P == 1 ? (pr.S + L - 1) / L : pr.G()), count(pr.B * per_b) {}
  int64_t b(int64_t i) const { return i / per_b; }
  int64_t j(int64_t i) const { return i % per_b; }        // tile index (pixel) or group g
  int64_t s0(int64_t i) const { return j(i) * L; }
  int n(int64_t i) const { return int(std::min<int64_t>(L, S - s0(i))); }
  int64_t first_line(int64_t i, const Problem& pr) const { return pixel ? s0(i) : j(i) * pr.P; }
  int64_t lines(int64_t i, const Problem& pr) const { return pixel ? n(i) : pr.P; }
};

// Rows of a (B, T, S) view are short (S elements), too short for the hardware
// prefetcher: fetch the rows of the item kPrefetchAhead items ahead by hand.
constexpr int kPrefetchAhead = 2;

template <int L, typename scalar_t>
void prefetch_item(const Items<L>& items, int64_t i, const Problem& pr, const scalar_t* x, Strides3 st) {
  if (i >= items.count || st.s != 1) return;
  const scalar_t* base = x + items.b(i) * st.b + items.first_line(i, pr);
  const int64_t bytes = items.lines(i, pr) * int64_t(sizeof(scalar_t));
  for (int64_t t = 0; t < pr.T; ++t)
    for (int64_t offset = 0; offset < bytes; offset += 64)
      __builtin_prefetch(reinterpret_cast<const char*>(base + t * st.t) + offset);
}

// The item loops are compiled for AVX-512, AVX2 + FMA and the baseline (clones.h).

// Sum of d over items [first, last) (and d itself where a.d is not null).
template <int TM, typename scalar_t>
VKD_CPU_CLONES double forward_items(const SpectrumForwardArgs& a, const Twiddle<typename Element<scalar_t>::acc_t>* table,
                                    int64_t first, int64_t last) {
  using acc_t = typename Element<scalar_t>::acc_t;
  constexpr int L = 64 / sizeof(acc_t);
  const Problem& pr = a.problem;
  const Items<L> items(pr);
  const Solo team;
  const auto* xs = static_cast<const scalar_t*>(a.student);
  const auto* xt = static_cast<const scalar_t*>(a.teacher);
  auto* d = static_cast<scalar_t*>(a.d);
  double total = 0;
  for (int64_t i = first; i < last; ++i) {
    prefetch_item(items, i + kPrefetchAhead, pr, xs, a.student_strides);
    prefetch_item(items, i + kPrefetchAhead, pr, xt, a.teacher_strides);
    const int64_t b = items.b(i);
    if (items.pixel) {
      total += pixel_forward<TM, Solo, L>(pr, team, table, xs, a.student_strides, xt, a.teacher_strides, b,
                                          items.s0(i), items.n(i), d, a.d_strides);
      continue;
    }
    acc_t sum_s[kMaxK] = {}, sum_t[kMaxK] = {};
    for (int64_t p0 = 0; p0 < pr.P; p0 += L)
      add_tile_spectra<TM, Solo, L>(pr, team, table, xs, a.student_strides, xt, a.teacher_strides, b,
                                    items.j(i) * pr.P + p0, int(std::min<int64_t>(L, pr.P - p0)), sum_s, sum_t);
    total += group_loss<scalar_t>(pr, sum_s, sum_t, b, items.j(i), d, a.d_strides);
  }
  return total;
}

template <int TM, typename scalar_t>
VKD_CPU_CLONES void backward_items(const SpectrumBackwardArgs& a,
                                   const Twiddle<typename Element<scalar_t>::acc_t>* table, int64_t first,
                                   int64_t last) {
  using acc_t = typename Element<scalar_t>::acc_t;
  constexpr int L = 64 / sizeof(acc_t);
  const Problem& pr = a.problem;
  const Items<L> items(pr);
  const Solo team;
  const auto* xs = static_cast<const scalar_t*>(a.student);
  const auto* xt = static_cast<const scalar_t*>(a.teacher);
  const auto* grad = static_cast<const scalar_t*>(a.grad_d);
  auto* ds = static_cast<scalar_t*>(a.grad_student);
  auto* dt = static_cast<scalar_t*>(a.grad_teacher);
  const acc_t grad_scale = acc_t(a.grad_scale);
  for (int64_t i = first; i < last; ++i) {
    prefetch_item(items, i + kPrefetchAhead, pr, xs, a.student_strides);
    prefetch_item(items, i + kPrefetchAhead, pr, xt, a.teacher_strides);
    const int64_t b = items.b(i);
    if (items.pixel) {
      tile_backward<TM, Solo, L>(pr, team, table, xs, a.student_strides, xt, a.teacher_strides,
                                 static_cast<const acc_t*>(nullptr), grad, a.grad_strides, grad_scale, ds,
                                 a.grad_student_strides, dt, a.grad_teacher_strides, b, items.s0(i), items.n(i));
      continue;
    }
    const int64_t g = items.j(i);
    acc_t sum_s[kMaxK] = {}, sum_t[kMaxK] = {}, grad_a[kMaxK];
    for (int64_t p0 = 0; p0 < pr.P; p0 += L)
      add_tile_spectra<TM, Solo, L>(pr, team, table, xs, a.student_strides, xt, a.teacher_strides, b,
                                    g * pr.P + p0, int(std::min<int64_t>(L, pr.P - p0)), sum_s, sum_t);
    group_grad<scalar_t>(pr, sum_s, sum_t, grad, a.grad_strides, b, g, grad_a);
    for (int64_t p0 = 0; p0 < pr.P; p0 += L)
      tile_backward<TM, Solo, L>(pr, team, table, xs, a.student_strides, xt, a.teacher_strides, grad_a, grad,
                                 a.grad_strides, grad_scale, ds, a.grad_student_strides, dt, a.grad_teacher_strides,
                                 b, g * pr.P + p0, int(std::min<int64_t>(L, pr.P - p0)));
  }
}

// Work is split in fixed chunks of items (not per thread), so a sum does not depend on
// the thread count; kChunks of them where no partial sums fix the number.
constexpr int64_t kChunks = 256;

template <int TM, typename scalar_t>
void forward(const SpectrumForwardArgs& a) {
  using acc_t = typename Element<scalar_t>::acc_t;
  const Table<TM, acc_t> table(a.problem, a.scale);
  const int64_t count = Items<64 / sizeof(acc_t)>(a.problem).count;
  const int64_t chunks = a.d ? std::min(count, kChunks) : a.num_partials;
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t chunk = 0; chunk < chunks; ++chunk) {
    const double total = forward_items<TM, scalar_t>(a, table.data(), count * chunk / chunks,
                                                     count * (chunk + 1) / chunks);
    if (!a.d) static_cast<acc_t*>(a.partials)[chunk] = acc_t(total * a.partial_scale);
  }
}

template <int TM, typename scalar_t>
void backward(const SpectrumBackwardArgs& a) {
  using acc_t = typename Element<scalar_t>::acc_t;
  const Table<TM, acc_t> table(a.problem, a.scale);
  const int64_t count = Items<64 / sizeof(acc_t)>(a.problem).count;
  const int64_t chunks = std::min(count, kChunks);
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t chunk = 0; chunk < chunks; ++chunk)
    backward_items<TM, scalar_t>(a, table.data(), count * chunk / chunks, count * (chunk + 1) / chunks);
}

// Runs body.template operator()<TM>() for the size class of T.
template <typename Body>
void with_size_class(int64_t T, Body&& body) {
  switch (size_class(T)) {
    case 8: return body(std::integral_constant<int, 8>());
    case 16: return body(std::integral_constant<int, 16>());
    case 32: return body(std::integral_constant<int, 32>());
    default: return body(std::integral_constant<int, 64>());
  }
}

}  // namespace

template <>
int64_t spectrum_num_partials<Device::CPU>(const Problem& pr, DType) {
  return std::max<int64_t>(1, std::min<int64_t>(pr.groups(), 256));
}

template <>
void spectrum_forward<Device::CPU>(const SpectrumForwardArgs& args) {
  VKD_DISPATCH_DTYPE(args.dtype, [&] {
    with_size_class(args.problem.T, [&](auto tm) { forward<decltype(tm)::value, scalar_t>(args); });
  });
}

template <>
void spectrum_backward<Device::CPU>(const SpectrumBackwardArgs& args) {
  VKD_DISPATCH_DTYPE(args.dtype, [&] {
    with_size_class(args.problem.T, [&](auto tm) { backward<decltype(tm)::value, scalar_t>(args); });
  });
}

}  // namespace vkd
