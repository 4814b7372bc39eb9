// Temporal spectrum loss on the CPU: OpenMP over work items, math from
// common/spectrum.h. A work item is a tile of L consecutive lines (spatial="pixel")
// or one group (spatial="mean"); L = one cache line of accumulators, so the tile
// loops vectorize across lines.
#include <algorithm>
#include <vector>
#include "../kernels.h"

namespace vkd {
using namespace spectrum;

namespace {

template <typename acc_t>
struct Twiddles {
  std::vector<acc_t> c, s;
  Twiddles(const Problem& pr, double scale) : c(pr.T * pr.K()), s(pr.T * pr.K()) {
    for (int64_t i = 0; i < pr.T * pr.K(); ++i) twiddle(pr.T, pr.K(), scale, i, c.data(), s.data());
  }
};

// Work items of a problem: item i covers batch row b = i / per_b.
template <int L>
struct Items {
  bool pixel;
  int64_t S, per_b, count;
  explicit Items(const Problem& pr)
      : pixel(pr.P == 1), S(pr.S), per_b(pr.P == 1 ? (pr.S + L - 1) / L : pr.S / pr.P), count(pr.B * per_b) {}
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

template <typename scalar_t>
void forward(const SpectrumForwardArgs& a) {
  using acc_t = typename Element<scalar_t>::acc_t;
  constexpr int L = 64 / sizeof(acc_t);
  const Problem& pr = a.problem;
  const Twiddles<acc_t> tw(pr, a.scale);
  const Items<L> items(pr);
  const auto* xs = static_cast<const scalar_t*>(a.student);
  const auto* xt = static_cast<const scalar_t*>(a.teacher);
  auto* d = static_cast<scalar_t*>(a.d);
  auto item_forward = [&](int64_t i, Tile<L, acc_t>& ts, Tile<L, acc_t>& tt) -> acc_t {
    prefetch_item(items, i + kPrefetchAhead, pr, xs, a.student_strides);
    prefetch_item(items, i + kPrefetchAhead, pr, xt, a.teacher_strides);
    if (items.pixel)
      return pixel_forward<L>(pr, xs, a.student_strides, xt, a.teacher_strides, items.b(i), items.s0(i),
                              items.n(i), tw.c.data(), tw.s.data(), d, a.d_strides, ts, tt);
    return group_forward<L>(pr, xs, a.student_strides, xt, a.teacher_strides, items.b(i), items.j(i),
                            tw.c.data(), tw.s.data(), d, a.d_strides, ts);
  };
  if (d) {  // reduction="none": d as (B, K, G)
#pragma omp parallel
    {
      Tile<L, acc_t> ts, tt;
#pragma omp for schedule(static)
      for (int64_t i = 0; i < items.count; ++i) item_forward(i, ts, tt);
    }
    return;
  }
  // Fixed chunks (not per-thread sums), so the result does not depend on the thread count.
  const int64_t chunks = a.num_partials;
#pragma omp parallel
  {
    Tile<L, acc_t> ts, tt;
#pragma omp for schedule(dynamic, 1)
    for (int64_t chunk = 0; chunk < chunks; ++chunk) {
      double total = 0;
      for (int64_t i = items.count * chunk / chunks; i < items.count * (chunk + 1) / chunks; ++i)
        total += item_forward(i, ts, tt);
      static_cast<acc_t*>(a.partials)[chunk] = acc_t(total);
    }
  }
}

template <typename scalar_t>
void backward(const SpectrumBackwardArgs& a) {
  using acc_t = typename Element<scalar_t>::acc_t;
  constexpr int L = 64 / sizeof(acc_t);
  const Problem& pr = a.problem;
  const Twiddles<acc_t> tw(pr, a.scale);
  const Items<L> items(pr);
  const auto* xs = static_cast<const scalar_t*>(a.student);
  const auto* xt = static_cast<const scalar_t*>(a.teacher);
  const auto* grad = static_cast<const scalar_t*>(a.grad_d);
  auto* ds = static_cast<scalar_t*>(a.grad_student);
  auto* dt = static_cast<scalar_t*>(a.grad_teacher);
  const acc_t grad_scale = acc_t(a.grad_scale);
#pragma omp parallel
  {
    Tile<L, acc_t> ts, tt;
#pragma omp for schedule(static)
    for (int64_t i = 0; i < items.count; ++i) {
      prefetch_item(items, i + kPrefetchAhead, pr, xs, a.student_strides);
      prefetch_item(items, i + kPrefetchAhead, pr, xt, a.teacher_strides);
      if (items.pixel)
        pixel_backward<L>(pr, xs, a.student_strides, xt, a.teacher_strides, grad, a.grad_strides, grad_scale,
                          ds, a.grad_student_strides, dt, a.grad_teacher_strides, items.b(i), items.s0(i),
                          items.n(i), tw.c.data(), tw.s.data(), ts, tt);
      else
        group_backward<L>(pr, xs, a.student_strides, xt, a.teacher_strides, grad, a.grad_strides, grad_scale,
                          ds, a.grad_student_strides, dt, a.grad_teacher_strides, items.b(i), items.j(i),
                          tw.c.data(), tw.s.data(), ts);
    }
  }
}

}  // namespace

template <>
int64_t spectrum_num_partials<Device::CPU>(int64_t groups) { return std::max<int64_t>(1, std::min<int64_t>(groups, 256)); }

template <>
void spectrum_forward<Device::CPU>(const SpectrumForwardArgs& args) {
  VKD_DISPATCH_DTYPE(args.dtype, [&] { forward<scalar_t>(args); });
}

template <>
void spectrum_backward<Device::CPU>(const SpectrumBackwardArgs& args) {
  VKD_DISPATCH_DTYPE(args.dtype, [&] { backward<scalar_t>(args); });
}

}  // namespace vkd
