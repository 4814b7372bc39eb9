// Attention transfer on CUDA, math from common/attention.h.
//
// Raw map: one thread per position p of sample n and channel split k, grid (position
// blocks of a sample, K, samples): consecutive threads read consecutive p of one channel
// row (coalesced for the usual (N, C, P) layout), and no thread divides a flat index. K
// splits the channels until the launch has ~kTargetBlocks blocks, so a small map (a 7 x 7
// teacher: N P = 1568) still fills the GPU; the finish adds the K partials in order
// (deterministic, no atomics).
// Finish: one block of kFinishThreads per sample, its lanes striding over the map, block
// sums in a fixed tree order through shared memory.
#include <algorithm>
#include "launch.h"

namespace vkd {
using namespace attention;

namespace {

// 128 threads per block: 4 warps, so a small N P still gives many blocks to spread.
constexpr int kThreads = 128;
constexpr int kTargetBlocks = 528;        // 4 per SM of a 132-SM H100
constexpr int64_t kMinSplitChannels = 64; // as the Triton kernels: a split reads >= 64 channels
constexpr int kFinishThreads = 256;
// Blocks per SM the finish's register allocation must allow: with __launch_bounds__(256)
// alone ptxas held the float64 backward at 64 registers on sm_80 and spilled 16 B around an
// 8 B stack frame (ptxas -v); one block of 256 threads leaves it up to 255, and it is one
// block per sample anyway.
constexpr int kFinishMinBlocks = 1;
constexpr int64_t kMaxGridYZ = 65535;

int64_t position_blocks(int64_t P) { return std::min<int64_t>((P + kThreads - 1) / kThreads, kMaxGridYZ); }
int64_t sample_blocks(int64_t N) { return std::min<int64_t>(N, kMaxGridYZ); }

int64_t splits(int64_t N, int64_t C, int64_t P) {
  const int64_t blocks = position_blocks(P) * sample_blocks(N);
  return std::max<int64_t>(1, std::min<int64_t>({C / kMinSplitChannels, (kTargetBlocks + blocks - 1) / blocks, kMaxGridYZ}));
}

// Runs body(n, p) for every (sample, position) of the launch's split blockIdx.y.
template <typename Body>
__device__ void for_each_position(const MapProblem& pr, Body&& body) {
  for (int64_t n = blockIdx.z; n < pr.N; n += gridDim.z)
    for (int64_t p = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; p < pr.P; p += int64_t(gridDim.x) * blockDim.x)
      body(n, p);
}

template <Power kPower, typename scalar_t>
__global__ void forward_kernel(AttentionMapArgs a) {
  using acc_t = typename Element<scalar_t>::acc_t;
  const auto* x = static_cast<const scalar_t*>(a.x);
  const MapProblem& pr = a.problem;
  const int64_t k = blockIdx.y;
  void* part = static_cast<acc_t*>(a.map) + k * pr.P * a.map_strides.p;
  for_each_position(pr, [&](int64_t n, int64_t p) {
    map_tile<1, kPower>(pr, x, a.x_strides, part, a.map_strides, n, p, 1, k);
  });
}

template <Power kPower, typename scalar_t>
__global__ void backward_kernel(AttentionMapArgs a) {
  const auto* x = static_cast<const scalar_t*>(a.x);
  auto* dx = static_cast<scalar_t*>(a.grad_x);
  const MapProblem& pr = a.problem;
  for_each_position(pr, [&](int64_t n, int64_t p) {
    map_grad_tile<1, kPower>(pr, x, a.x_strides, a.map, a.map_strides, dx, a.grad_x_strides, n, p, 1, blockIdx.y);
  });
}

template <typename acc_t>
__global__ void __launch_bounds__(kFinishThreads, kFinishMinBlocks) finish_forward_kernel(TransferArgs a) {
  __shared__ acc_t shared[kFinishThreads];
  const cuda::ThreadBlock<acc_t, kFinishThreads> block{int32_t(threadIdx.x), shared};
  for (int64_t n = blockIdx.x; n < a.geometry.N; n += gridDim.x)
    transfer_forward_sample(a.geometry, static_cast<acc_t*>(a.parts_s), static_cast<acc_t*>(a.parts_t),
                            static_cast<acc_t*>(a.out), n, block);
}

template <typename acc_t>
__global__ void __launch_bounds__(kFinishThreads, kFinishMinBlocks) finish_backward_kernel(TransferArgs a) {
  __shared__ acc_t shared[kFinishThreads];
  const cuda::ThreadBlock<acc_t, kFinishThreads> block{int32_t(threadIdx.x), shared};
  for (int64_t n = blockIdx.x; n < a.geometry.N; n += gridDim.x)
    transfer_backward_sample(a.geometry, static_cast<const acc_t*>(a.parts_s), static_cast<const acc_t*>(a.parts_t),
                             static_cast<const acc_t*>(a.grad), a.g_sn, a.g_so, static_cast<acc_t*>(a.da_s),
                             static_cast<acc_t*>(a.da_t), static_cast<acc_t*>(a.scratch_s),
                             static_cast<acc_t*>(a.scratch_t), n, block);
}

dim3 map_grid(const MapProblem& pr) {
  return dim3(unsigned(position_blocks(pr.P)), unsigned(pr.K), unsigned(sample_blocks(pr.N)));
}

}  // namespace

template <>
int64_t attention_map_splits<Device::CUDA>(int64_t N, int64_t C, int64_t P) { return splits(N, C, P); }

template <>
void attention_map_forward<Device::CUDA>(const AttentionMapArgs& args) {
  cuda::on_device(args.stream, "vkd attention map", [&](cudaStream_t stream) {
    VKD_DISPATCH_DTYPE(args.dtype, [&] {
      VKD_DISPATCH_POWER(args.problem.q, [&] {
        forward_kernel<kPower, scalar_t><<<map_grid(args.problem), kThreads, 0, stream>>>(args);
      });
    });
  });
}

template <>
void attention_map_backward<Device::CUDA>(const AttentionMapArgs& args) {
  cuda::on_device(args.stream, "vkd attention map backward", [&](cudaStream_t stream) {
    VKD_DISPATCH_DTYPE(args.dtype, [&] {
      VKD_DISPATCH_POWER(args.problem.q, [&] {
        backward_kernel<kPower, scalar_t><<<map_grid(args.problem), kThreads, 0, stream>>>(args);
      });
    });
  });
}

template <>
void attention_transfer_forward<Device::CUDA>(const TransferArgs& args) {
  cuda::on_device(args.stream, "vkd attention transfer", [&](cudaStream_t stream) {
    if (args.fp64)
      finish_forward_kernel<double><<<unsigned(sample_blocks(args.geometry.N)), kFinishThreads, 0, stream>>>(args);
    else
      finish_forward_kernel<float><<<unsigned(sample_blocks(args.geometry.N)), kFinishThreads, 0, stream>>>(args);
  });
}

template <>
void attention_transfer_backward<Device::CUDA>(const TransferArgs& args) {
  cuda::on_device(args.stream, "vkd attention transfer backward", [&](cudaStream_t stream) {
    if (args.fp64)
      finish_backward_kernel<double><<<unsigned(sample_blocks(args.geometry.N)), kFinishThreads, 0, stream>>>(args);
    else
      finish_backward_kernel<float><<<unsigned(sample_blocks(args.geometry.N)), kFinishThreads, 0, stream>>>(args);
  });
}

}  // namespace vkd
