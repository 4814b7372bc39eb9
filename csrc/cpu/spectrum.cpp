// Temporal spectrum loss on the CPU: OpenMP over groups, math from common/spectrum.h.
#include <vector>
#include "../kernels.h"

namespace vkd {
using namespace spectrum;

namespace {

template <typename acc_t>
void twiddle_table(const Problem& pr, double scale, std::vector<acc_t>& c, std::vector<acc_t>& s) {
  const int64_t n = pr.T * pr.K();
  c.resize(n);
  s.resize(n);
  for (int64_t i = 0; i < n; ++i) twiddle(pr.T, pr.K(), scale, i, c.data(), s.data());
}

template <typename scalar_t>
void forward(const SpectrumForwardArgs& a) {
  using acc_t = typename Element<scalar_t>::acc_t;
  const Problem& pr = a.problem;
  std::vector<acc_t> c, s;
  twiddle_table(pr, a.scale, c, s);
  const auto* xs = static_cast<const scalar_t*>(a.student);
  const auto* xt = static_cast<const scalar_t*>(a.teacher);
  auto* d = static_cast<scalar_t*>(a.d);
  const int64_t G = pr.S / pr.P, groups = pr.groups();
  if (d) {  // reduction="none": d as (B, K, G)
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < groups; ++i) {
      const int64_t b = i / G, g = i % G;
      group_forward(pr, xs, a.student_strides, xt, a.teacher_strides, b, g, c.data(), s.data(),
                    d + b * a.d_strides.b + g * a.d_strides.s, a.d_strides.t);
    }
    return;
  }
  // Fixed chunks (not per-thread sums) so the result does not depend on the thread count.
  const int64_t chunks = a.num_partials;
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t chunk = 0; chunk < chunks; ++chunk) {
    double total = 0;
    for (int64_t i = groups * chunk / chunks; i < groups * (chunk + 1) / chunks; ++i)
      total += group_forward(pr, xs, a.student_strides, xt, a.teacher_strides, i / G, i % G,
                             c.data(), s.data(), (scalar_t*)nullptr, 0);
    static_cast<acc_t*>(a.partials)[chunk] = acc_t(total);
  }
}

template <typename scalar_t>
void backward(const SpectrumBackwardArgs& a) {
  using acc_t = typename Element<scalar_t>::acc_t;
  const Problem& pr = a.problem;
  std::vector<acc_t> c, s;
  twiddle_table(pr, a.scale, c, s);
  const int64_t G = pr.S / pr.P, groups = pr.groups();
  const auto* grad = static_cast<const scalar_t*>(a.grad_d);
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < groups; ++i) {
    const int64_t b = i / G, g = i % G;
    group_backward(pr, static_cast<const scalar_t*>(a.student), a.student_strides,
                   static_cast<const scalar_t*>(a.teacher), a.teacher_strides,
                   grad + b * a.grad_strides.b + g * a.grad_strides.s, a.grad_strides.t,
                   acc_t(a.grad_scale), static_cast<scalar_t*>(a.grad_student),
                   a.grad_student_strides, static_cast<scalar_t*>(a.grad_teacher),
                   a.grad_teacher_strides, b, g, c.data(), s.data());
  }
}

}  // namespace

int64_t spectrum_num_partials_cpu(int64_t groups) { return groups < 256 ? (groups > 0 ? groups : 1) : 256; }

void spectrum_forward_cpu(const SpectrumForwardArgs& args) {
  VKD_DISPATCH_DTYPE(args.dtype, [&] { forward<scalar_t>(args); });
}

void spectrum_backward_cpu(const SpectrumBackwardArgs& args) {
  VKD_DISPATCH_DTYPE(args.dtype, [&] { backward<scalar_t>(args); });
}

}  // namespace vkd
