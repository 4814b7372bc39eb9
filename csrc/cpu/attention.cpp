// Attention-transfer raw map on the CPU: OpenMP over tiles of L consecutive positions
// of one sample, math from common/attention.h. Each tile reads its C row segments of L
// positions once (forward) and writes them once (backward). L = 1024 positions: short
// tiles (64) touch a new page per channel every 256 bytes, which thrashes the TLB when C
// is large (measured 2-3x slower at C = 1024, P = 1568).
#include <algorithm>
#include "../kernels.h"

namespace vkd {
using namespace attention;

namespace {

constexpr int L = 1024;

template <Power kPower, typename scalar_t>
void forward(const AttentionMapArgs& a) {
  const MapProblem& pr = a.problem;
  const int64_t tiles = (pr.P + L - 1) / L;
  const auto* x = static_cast<const scalar_t*>(a.x);
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < pr.N * tiles; ++i) {
    const int64_t n = i / tiles, p0 = (i % tiles) * L;
    map_tile<L, kPower>(pr, x, a.x_strides, a.map, a.map_strides, n, p0, int(std::min<int64_t>(L, pr.P - p0)));
  }
}

template <Power kPower, typename scalar_t>
void backward(const AttentionMapArgs& a) {
  const MapProblem& pr = a.problem;
  const int64_t tiles = (pr.P + L - 1) / L;
  const auto* x = static_cast<const scalar_t*>(a.x);
  auto* dx = static_cast<scalar_t*>(a.grad_x);
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < pr.N * tiles; ++i) {
    const int64_t n = i / tiles, p0 = (i % tiles) * L;
    map_grad_tile<L, kPower>(pr, x, a.x_strides, a.map, a.map_strides, dx, a.grad_x_strides, n, p0,
                             int(std::min<int64_t>(L, pr.P - p0)));
  }
}

}  // namespace

template <>
void attention_map_forward<Device::CPU>(const AttentionMapArgs& args) {
  VKD_DISPATCH_DTYPE(args.dtype, [&] { VKD_DISPATCH_POWER(args.problem.q, [&] { forward<kPower, scalar_t>(args); }); });
}

template <>
void attention_map_backward<Device::CPU>(const AttentionMapArgs& args) {
  VKD_DISPATCH_DTYPE(args.dtype, [&] { VKD_DISPATCH_POWER(args.problem.q, [&] { backward<kPower, scalar_t>(args); }); });
}

}  // namespace vkd
