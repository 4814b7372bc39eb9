// The GKD head's weighted GroupNorm + ReLU on CUDA, math from common/head.h.
#include <algorithm>
#include "launch.h"

namespace vkd {
namespace {

constexpr int kThreads = 256;

// Grid-stride loops: at most 65535 blocks, any number of groups.
int blocks(int64_t groups) { return int(std::min<int64_t>((groups + kThreads - 1) / kThreads, 65535)); }

// The GKD head's weighted GroupNorm + ReLU: one thread per group (N G threads; the
// groups hold J Cg ~ 10^3 elements, so this part is small next to the tail's GEMMs).
template <typename scalar_t>
__global__ void head_forward_kernel(HeadNormArgs a) {
  const auto& pr = a.problem;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < pr.N * pr.G; i += int64_t(gridDim.x) * blockDim.x)
    head::group_norm_relu_forward(pr, static_cast<const scalar_t*>(a.Z), static_cast<const scalar_t*>(a.w),
                                  static_cast<const scalar_t*>(a.gamma), static_cast<const scalar_t*>(a.beta),
                                  static_cast<scalar_t*>(a.H), a.stats, i / pr.G, i % pr.G);
}

template <typename scalar_t>
__global__ void head_backward_kernel(HeadNormArgs a) {
  const auto& pr = a.problem;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < pr.N * pr.G; i += int64_t(gridDim.x) * blockDim.x)
    head::group_norm_relu_backward(pr, static_cast<const scalar_t*>(a.Z), static_cast<const scalar_t*>(a.w),
                                   static_cast<const scalar_t*>(a.gamma), static_cast<const scalar_t*>(a.beta),
                                   a.stats, static_cast<const scalar_t*>(a.dH), static_cast<scalar_t*>(a.dZ),
                                   static_cast<scalar_t*>(a.dgamma), static_cast<scalar_t*>(a.dbeta), i / pr.G,
                                   i % pr.G);
}

}  // namespace

template <>
void head_norm_forward<Device::CUDA>(const HeadNormArgs& args) {
  cuda::on_device(args.stream, "vkd head norm", [&](cudaStream_t stream) {
    VKD_DISPATCH_DTYPE(args.dtype, [&] {
      head_forward_kernel<scalar_t><<<blocks(args.problem.N * args.problem.G), kThreads, 0, stream>>>(args);
    });
  });
}

template <>
void head_norm_backward<Device::CUDA>(const HeadNormArgs& args) {
  cuda::on_device(args.stream, "vkd head norm backward", [&](cudaStream_t stream) {
    VKD_DISPATCH_DTYPE(args.dtype, [&] {
      head_backward_kernel<scalar_t><<<blocks(args.problem.N * args.problem.G), kThreads, 0, stream>>>(args);
    });
  });
}

}  // namespace vkd
