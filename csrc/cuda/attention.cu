// Attention-transfer raw map on CUDA: one thread per position (n, p) looping over the
// channels (coalesced across p for the usual (N, C, P) layout), math from
// common/attention.h.
#include <algorithm>
#include "launch.h"

namespace vkd {
using namespace attention;

namespace {

constexpr int kThreads = 256;

template <Power kPower, typename scalar_t>
__global__ void forward_kernel(AttentionMapArgs a) {
  const auto* x = static_cast<const scalar_t*>(a.x);
  const MapProblem& pr = a.problem;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < pr.N * pr.P;
       i += int64_t(gridDim.x) * blockDim.x)
    map_tile<1, kPower>(pr, x, a.x_strides, a.map, a.map_strides, i / pr.P, i % pr.P, 1);
}

template <Power kPower, typename scalar_t>
__global__ void backward_kernel(AttentionMapArgs a) {
  const auto* x = static_cast<const scalar_t*>(a.x);
  auto* dx = static_cast<scalar_t*>(a.grad_x);
  const MapProblem& pr = a.problem;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < pr.N * pr.P;
       i += int64_t(gridDim.x) * blockDim.x)
    map_grad_tile<1, kPower>(pr, x, a.x_strides, a.map, a.map_strides, dx, a.grad_x_strides, i / pr.P, i % pr.P, 1);
}

// Grid-stride loops: at most 65535 blocks, any number of positions.
int blocks(int64_t positions) { return int(std::min<int64_t>((positions + kThreads - 1) / kThreads, 65535)); }

}  // namespace

template <>
void attention_map_forward<Device::CUDA>(const AttentionMapArgs& args) {
  cuda::on_device(args.stream, "vkd attention map", [&](cudaStream_t stream) {
    VKD_DISPATCH_DTYPE(args.dtype, [&] {
      VKD_DISPATCH_POWER(args.problem.q, [&] {
        forward_kernel<kPower, scalar_t><<<blocks(args.problem.N * args.problem.P), kThreads, 0, stream>>>(args);
      });
    });
  });
}

template <>
void attention_map_backward<Device::CUDA>(const AttentionMapArgs& args) {
  cuda::on_device(args.stream, "vkd attention map backward", [&](cudaStream_t stream) {
    VKD_DISPATCH_DTYPE(args.dtype, [&] {
      VKD_DISPATCH_POWER(args.problem.q, [&] {
        backward_kernel<kPower, scalar_t><<<blocks(args.problem.N * args.problem.P), kThreads, 0, stream>>>(args);
      });
    });
  });
}

}  // namespace vkd
