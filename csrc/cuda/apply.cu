// attention_apply on CUDA: reduce and affine one warp per row (rows are short, S ~
// 49..196), its 32 lanes striding over S (coalesced for contiguous rows), a fixed-order
// warp shuffle sum for the reduction; finish one block per group (deterministic, no
// atomics). Math in common/apply.h.
#include <algorithm>
#include "launch.h"

namespace vkd {
using namespace apply;

namespace {

constexpr int kThreads = 256, kWarp = 32, kRowsPerBlock = kThreads / kWarp;

// Calls body(row, lane) for each row of this thread's warp (grid-stride; a whole warp per row).
template <typename Body>
__device__ void for_each_warp_row(int64_t rows, Body body) {
  for (int64_t i = blockIdx.x * int64_t(kRowsPerBlock) + threadIdx.x / kWarp; i < rows;
       i += int64_t(gridDim.x) * kRowsPerBlock)
    body(i, int(threadIdx.x % kWarp));
}

template <typename scalar_t>
__global__ void reduce_kernel(ApplyArgs a) {
  using acc_t = typename Element<scalar_t>::acc_t;
  const RowProblem& pr = a.problem;
  const auto* x = static_cast<const scalar_t*>(a.x);
  const auto* y = static_cast<const scalar_t*>(a.y);
  for_each_warp_row(pr.rows(), [&](int64_t i, int lane) {
    const scalar_t* y_row = y ? y + row_offset(pr, a.y_strides, i) : nullptr;
    acc_t acc = reduce_row<kWarp>(x + row_offset(pr, a.x_strides, i), a.x_strides.s, y_row, a.y_strides.s, pr.S, lane);
    for (int offset = kWarp / 2; offset > 0; offset /= 2) acc += __shfl_down_sync(0xffffffffu, acc, offset);
    if (lane == 0) static_cast<acc_t*>(a.rows)[i] = acc;
  });
}

// One block of kThreads per group: lanes stride over the group's rows, then a fixed-order
// tree sum through shared memory (deterministic, no atomics).
template <typename scalar_t>
__global__ void __launch_bounds__(kThreads) finish_kernel(ApplyArgs a) {
  using acc_t = typename Element<scalar_t>::acc_t;
  __shared__ acc_t shared[2][kThreads];
  const RowProblem& pr = a.problem;
  auto* sums = static_cast<acc_t*>(a.sums);
  for (int64_t g = blockIdx.x; g < pr.B; g += gridDim.x) {
    acc_t sv, slv;
    group_sums(static_cast<const acc_t*>(a.rows), static_cast<const scalar_t*>(a.lam), g * pr.group_rows(),
               (g + 1) * pr.group_rows(), threadIdx.x, kThreads, sv, slv);
    __syncthreads();  // the previous group's readers are done with shared
    shared[0][threadIdx.x] = sv;
    shared[1][threadIdx.x] = slv;
    __syncthreads();
    for (int width = kThreads / 2; width > 0; width /= 2) {
      if (threadIdx.x < width) {
        shared[0][threadIdx.x] += shared[0][threadIdx.x + width];
        shared[1][threadIdx.x] += shared[1][threadIdx.x + width];
      }
      __syncthreads();
    }
    if (threadIdx.x == 0) sums[2 * g] = shared[0][0], sums[2 * g + 1] = shared[1][0];
  }
}

template <typename scalar_t>
__global__ void affine_kernel(ApplyArgs args) {
  using acc_t = typename Element<scalar_t>::acc_t;
  const RowProblem& pr = args.problem;
  const auto* x = static_cast<const scalar_t*>(args.x);
  const auto* lam = static_cast<const scalar_t*>(args.lam);
  const auto* sums = static_cast<const acc_t*>(args.sums);
  const auto* bsums = static_cast<const acc_t*>(args.bsums);
  auto* out = static_cast<scalar_t*>(args.out);
  auto* dlam = static_cast<scalar_t*>(args.dlam);
  for_each_warp_row(pr.rows(), [&](int64_t i, int lane) {
    acc_t a, b, dl;
    row_factors(pr, sums, bsums, lam, static_cast<const acc_t*>(args.m), static_cast<const acc_t*>(args.q),
                acc_t(args.scale), i, a, b, dl);
    if (bsums && lane == 0) Element<scalar_t>::store(dlam + i, dl);
    if (out)
      affine_row<kWarp>(x + row_offset(pr, args.x_strides, i), args.x_strides.s, a, b,
                        out + row_offset(pr, args.out_strides, i), args.out_strides.s, pr.S, lane);
  });
}

int blocks(int64_t rows) { return int(std::min<int64_t>((rows + kRowsPerBlock - 1) / kRowsPerBlock, 65535)); }

}  // namespace

template <>
void apply_reduce<Device::CUDA>(const ApplyArgs& args) {
  cuda::on_device(args.stream, "vkd attention_apply", [&](cudaStream_t stream) {
    VKD_DISPATCH_DTYPE(args.dtype, [&] {
      reduce_kernel<scalar_t><<<blocks(args.problem.rows()), kThreads, 0, stream>>>(args);
    });
  });
}

template <>
void apply_finish<Device::CUDA>(const ApplyArgs& args) {
  cuda::on_device(args.stream, "vkd attention_apply", [&](cudaStream_t stream) {
    VKD_DISPATCH_DTYPE(args.dtype, [&] {
      finish_kernel<scalar_t><<<unsigned(std::min<int64_t>(args.problem.B, 65535)), kThreads, 0, stream>>>(args);
    });
  });
}

template <>
void apply_affine<Device::CUDA>(const ApplyArgs& args) {
  cuda::on_device(args.stream, "vkd attention_apply", [&](cudaStream_t stream) {
    VKD_DISPATCH_DTYPE(args.dtype, [&] {
      affine_kernel<scalar_t><<<blocks(args.problem.rows()), kThreads, 0, stream>>>(args);
    });
  });
}

}  // namespace vkd
