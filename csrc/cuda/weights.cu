// Weight-spectrum distance on CUDA: one block per (split, group), table walk and
// math from common/weights.h. Forward: each thread owns Gram entries (i <= j) of its
// group and sums them over the split's rows; backward: each thread owns elements of dW.
// No atomics: the caller sums the per-split partials in a fixed order.
#include <cuda_runtime.h>
#include <stdexcept>
#include <string>
#include "../kernels.h"

namespace vkd {
using namespace weights;

namespace {

constexpr int kThreads = 256;

template <typename scalar_t>
__global__ void gram_kernel(WeightGramArgs a) {
  using acc_t = typename Element<scalar_t>::acc_t;
  const Tables& tb = a.tables;
  const int64_t u = blockIdx.x, g = blockIdx.y, P = tb.group(g, kP);
  acc_t* out = static_cast<acc_t*>(a.partials) + u * tb.flat_size + tb.group(g, kOffset);
  for (int64_t q = threadIdx.x; q < P * P; q += blockDim.x) {
    const int64_t i = q / P, j = q % P;
    if (j < i) continue;
    acc_t total = acc_t(0);
    for_each_segment(tb, g, u, [&](Segment s) {
      total += gram_entry<scalar_t, acc_t>(weight_rows<scalar_t>(tb, s.tensor), P, s.begin, s.end, i, j);
    });
    out[i * P + j] = total;
    out[j * P + i] = total;
  }
}

template <typename scalar_t>
__global__ void gram_backward_kernel(WeightGramArgs a) {
  using acc_t = typename Element<scalar_t>::acc_t;
  const Tables& tb = a.tables;
  const int64_t u = blockIdx.x, g = blockIdx.y, P = tb.group(g, kP);
  const acc_t* Mg = static_cast<const acc_t*>(a.M) + tb.group(g, kOffset);
  for_each_segment(tb, g, u, [&](Segment s) {
    const scalar_t* w = weight_rows<scalar_t>(tb, s.tensor);
    scalar_t* dw = grad_rows<scalar_t>(tb, s.tensor);
    for (int64_t e = s.begin * P + threadIdx.x; e < s.end * P; e += blockDim.x) {
      const int64_t r = e / P, j = e % P;
      Element<scalar_t>::store(dw + e, row_times_column<scalar_t, acc_t>(w + r * P, Mg, P, j));
    }
  });
}

void check_launch(const char* what) {
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(err));
}

dim3 grid(const Tables& tb) { return dim3(unsigned(tb.splits), unsigned(tb.num_groups)); }

}  // namespace

void weight_gram_cuda(const WeightGramArgs& args) {
  VKD_DISPATCH_DTYPE(args.dtype, [&] {
    gram_kernel<scalar_t><<<grid(args.tables), kThreads, 0, reinterpret_cast<cudaStream_t>(args.stream)>>>(args);
  });
  check_launch("vkd weight gram");
}

void weight_gram_backward_cuda(const WeightGramArgs& args) {
  VKD_DISPATCH_DTYPE(args.dtype, [&] {
    gram_backward_kernel<scalar_t>
        <<<grid(args.tables), kThreads, 0, reinterpret_cast<cudaStream_t>(args.stream)>>>(args);
  });
  check_launch("vkd weight gram backward");
}

}  // namespace vkd
