// Temporal spectrum loss on CUDA: one thread per group (a tile of L = 1 line), twiddles in shared memory,
// math from common/spectrum.h. Reductions are per-block partials (deterministic);
// the caller sums them.
#include "launch.h"

namespace vkd {
using namespace spectrum;

namespace {

constexpr int kThreads = 128;

template <typename acc_t>
__device__ void load_twiddles(const Problem& pr, double scale, acc_t* c, acc_t* s) {
  for (int64_t i = threadIdx.x; i < pr.T * pr.K(); i += blockDim.x) twiddle(pr.T, pr.K(), scale, i, c, s);
  __syncthreads();
}

template <typename scalar_t>
__global__ void forward_kernel(SpectrumForwardArgs a) {
  using acc_t = typename Element<scalar_t>::acc_t;
  extern __shared__ unsigned char shared[];
  const Problem& pr = a.problem;
  acc_t* c = reinterpret_cast<acc_t*>(shared);
  acc_t* s = c + pr.T * pr.K();
  acc_t* block_sums = s + pr.T * pr.K();
  load_twiddles(pr, a.scale, c, s);
  const auto* xs = static_cast<const scalar_t*>(a.student);
  const auto* xt = static_cast<const scalar_t*>(a.teacher);
  auto* d = static_cast<scalar_t*>(a.d);
  const int64_t G = pr.S / pr.P;
  Tile<1, acc_t> ts, tt;
  acc_t total = acc_t(0);
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < pr.groups();
       i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t b = i / G, g = i % G;
    total += pr.P == 1 ? pixel_forward<1>(pr, xs, a.student_strides, xt, a.teacher_strides, b, g, 1, c, s, d,
                                          a.d_strides, ts, tt)
                       : group_forward<1>(pr, xs, a.student_strides, xt, a.teacher_strides, b, g, c, s, d,
                                          a.d_strides, ts);
  }
  if (d) return;
  block_sums[threadIdx.x] = total;
  __syncthreads();
  for (int half = blockDim.x / 2; half > 0; half /= 2) {
    if (threadIdx.x < half) block_sums[threadIdx.x] += block_sums[threadIdx.x + half];
    __syncthreads();
  }
  if (threadIdx.x == 0) static_cast<acc_t*>(a.partials)[blockIdx.x] = block_sums[0];
}

template <typename scalar_t>
__global__ void backward_kernel(SpectrumBackwardArgs a) {
  using acc_t = typename Element<scalar_t>::acc_t;
  extern __shared__ unsigned char shared[];
  const Problem& pr = a.problem;
  acc_t* c = reinterpret_cast<acc_t*>(shared);
  acc_t* s = c + pr.T * pr.K();
  load_twiddles(pr, a.scale, c, s);
  const auto* grad = static_cast<const scalar_t*>(a.grad_d);
  const auto* xs = static_cast<const scalar_t*>(a.student);
  const auto* xt = static_cast<const scalar_t*>(a.teacher);
  auto* ds = static_cast<scalar_t*>(a.grad_student);
  auto* dt = static_cast<scalar_t*>(a.grad_teacher);
  const int64_t G = pr.S / pr.P;
  Tile<1, acc_t> ts, tt;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < pr.groups();
       i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t b = i / G, g = i % G;
    if (pr.P == 1)
      pixel_backward<1>(pr, xs, a.student_strides, xt, a.teacher_strides, grad, a.grad_strides,
                        acc_t(a.grad_scale), ds, a.grad_student_strides, dt, a.grad_teacher_strides, b, g, 1,
                        c, s, ts, tt);
    else
      group_backward<1>(pr, xs, a.student_strides, xt, a.teacher_strides, grad, a.grad_strides,
                        acc_t(a.grad_scale), ds, a.grad_student_strides, dt, a.grad_teacher_strides, b, g,
                        c, s, ts);
  }
}

int64_t grid_for(int64_t groups) {
  const int64_t blocks = (groups + kThreads - 1) / kThreads;
  return blocks < 65535 ? (blocks > 0 ? blocks : 1) : 65535;
}

}  // namespace

template <>
void spectrum_forward<Device::CUDA>(const SpectrumForwardArgs& args) {
  const int64_t grid = args.d ? grid_for(args.problem.groups()) : args.num_partials;
  if (grid < 1 || grid > 65535) throw std::invalid_argument("vkd spectrum forward: num_partials must be in [1, 65535]");
  cuda::on_device(args.stream, "vkd spectrum forward", [&](cudaStream_t stream) {
    VKD_DISPATCH_DTYPE(args.dtype, [&] {
      using acc_t = typename Element<scalar_t>::acc_t;
      const size_t shared = (2 * args.problem.T * args.problem.K() + kThreads) * sizeof(acc_t);
      forward_kernel<scalar_t><<<unsigned(grid), kThreads, shared, stream>>>(args);
    });
  });
}

template <>
void spectrum_backward<Device::CUDA>(const SpectrumBackwardArgs& args) {
  cuda::on_device(args.stream, "vkd spectrum backward", [&](cudaStream_t stream) {
    VKD_DISPATCH_DTYPE(args.dtype, [&] {
      using acc_t = typename Element<scalar_t>::acc_t;
      const size_t shared = 2 * args.problem.T * args.problem.K() * sizeof(acc_t);
      backward_kernel<scalar_t><<<unsigned(grid_for(args.problem.groups())), kThreads, shared, stream>>>(args);
    });
  });
}

template <>
int64_t spectrum_num_partials<Device::CUDA>(int64_t groups) { return grid_for(groups); }

}  // namespace vkd
