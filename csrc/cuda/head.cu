// The GKD head's tail around its GEMMs on CUDA, math from common/head.h: forward one
// block per (GroupNorm group, sample), grid (G, N), with a cooperative reduction over its J x Cg
// elements; the output one thread per (sample, channel); backward one block per group over every
// sample (so dgamma, dbeta and the conv bias's gradient need no second stage).
#include <algorithm>
#include "launch.h"

namespace vkd {
namespace {

constexpr int kThreads = 256;

template <typename T>
__device__ const T* in(const void* p) { return static_cast<const T*>(p); }
template <typename T>
__device__ T* out(void* p) { return static_cast<T*>(p); }

template <typename scalar_t>
__global__ void __launch_bounds__(kThreads) head_forward_kernel(HeadNormArgs a) {
  using acc_t = typename Element<scalar_t>::acc_t;
  __shared__ acc_t shared[kThreads];
  const cuda::ThreadBlock<acc_t, kThreads> block{int32_t(threadIdx.x), shared};
  const auto& pr = a.problem;
  for (int64_t n = blockIdx.y; n < pr.N; n += gridDim.y)
    head::group_norm_relu_forward(pr, in<scalar_t>(a.Z), in<scalar_t>(a.w), in<scalar_t>(a.bias),
                                  in<scalar_t>(a.gamma), in<scalar_t>(a.beta), out<scalar_t>(a.H), a.stats, n,
                                  blockIdx.x, block);
}

template <typename scalar_t>
__global__ void head_output_kernel(HeadNormArgs a) {
  const auto& pr = a.problem;
  for (int64_t nc = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; nc < pr.N * pr.C;
       nc += int64_t(gridDim.x) * blockDim.x)
    for (int32_t t = 0; t < pr.TP; ++t)  // reads coalesced across threads; lam[nc, :] per thread
      head::head_output(pr, in<scalar_t>(a.out), in<scalar_t>(a.lin_bias), out<scalar_t>(a.lam), nc, t);
}

template <typename scalar_t>
__global__ void __launch_bounds__(kThreads) head_backward_kernel(HeadNormArgs a) {
  using acc_t = typename Element<scalar_t>::acc_t;
  __shared__ acc_t shared[kThreads];
  const cuda::ThreadBlock<acc_t, kThreads> block{int32_t(threadIdx.x), shared};
  const auto& pr = a.problem;
  for (int64_t g = blockIdx.x; g < pr.G; g += gridDim.x)
    head::group_norm_relu_backward(pr, in<scalar_t>(a.Z), in<scalar_t>(a.w), in<scalar_t>(a.bias),
                                   in<scalar_t>(a.gamma), in<scalar_t>(a.beta), a.stats, in<scalar_t>(a.lam),
                                   in<scalar_t>(a.dlam), a.dlam_strides, in<scalar_t>(a.A), out<scalar_t>(a.dout),
                                   out<scalar_t>(a.dZ), out<scalar_t>(a.dgamma), out<scalar_t>(a.dbeta),
                                   out<scalar_t>(a.dbias), g, block);
}

unsigned capped(int64_t blocks) { return unsigned(std::min<int64_t>(blocks, 65535)); }

}  // namespace

template <>
void head_norm_forward<Device::CUDA>(const HeadNormArgs& args) {
  cuda::on_device(args.stream, "vkd head norm", [&](cudaStream_t stream) {
    VKD_DISPATCH_DTYPE(args.dtype, [&] {
      const dim3 grid(unsigned(args.problem.G), capped(args.problem.N));  // groups x samples
      head_forward_kernel<scalar_t><<<grid, kThreads, 0, stream>>>(args);
    });
  });
}

template <>
void head_output<Device::CUDA>(const HeadNormArgs& args) {
  cuda::on_device(args.stream, "vkd head output", [&](cudaStream_t stream) {
    const auto& pr = args.problem;
    VKD_DISPATCH_DTYPE(args.dtype, [&] {
      head_output_kernel<scalar_t>
          <<<capped((pr.N * pr.C + kThreads - 1) / kThreads), kThreads, 0, stream>>>(args);
    });
  });
}

template <>
void head_norm_backward<Device::CUDA>(const HeadNormArgs& args) {
  cuda::on_device(args.stream, "vkd head norm backward", [&](cudaStream_t stream) {
    VKD_DISPATCH_DTYPE(args.dtype, [&] {
      head_backward_kernel<scalar_t><<<capped(args.problem.G), kThreads, 0, stream>>>(args);
    });
  });
}

}  // namespace vkd
