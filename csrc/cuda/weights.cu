// Weight-spectrum distance on CUDA: one block per (split, group) work item (a 1-d
// grid-stride loop over splits * groups, so no grid dimension limit), table walk and
// math from common/weights.h. Forward: each thread owns Gram entries (i <= j) of its
// group and sums them over the split's rows; backward: each thread owns elements of dW.
// No atomics: the caller sums the per-split partials in a fixed order.
#include <algorithm>
#include "launch.h"

namespace vkd {
using namespace weights;

namespace {

constexpr int kThreads = 256;

// Calls body(u, g) for each (split u, group g) work item of this block.
template <typename Body>
__device__ void for_each_item(const Tables& tb, Body body) {
  for (int64_t item = blockIdx.x; item < tb.splits * tb.num_groups; item += gridDim.x)
    body(item / tb.num_groups, item % tb.num_groups);
}

template <typename scalar_t>
__global__ void gram_kernel(WeightGramArgs a) {
  using acc_t = typename Element<scalar_t>::acc_t;
  const Tables& tb = a.tables;
  for_each_item(tb, [&](int64_t u, int64_t g) {
    const int64_t P = tb.group(g, kP);
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
  });
}

template <typename scalar_t>
__global__ void gram_backward_kernel(WeightGramArgs a) {
  using acc_t = typename Element<scalar_t>::acc_t;
  const Tables& tb = a.tables;
  for_each_item(tb, [&](int64_t u, int64_t g) {
    const int64_t P = tb.group(g, kP);
    const acc_t* Mg = static_cast<const acc_t*>(a.M) + tb.group(g, kOffset);
    for_each_segment(tb, g, u, [&](Segment s) {
      const scalar_t* w = weight_rows<scalar_t>(tb, s.tensor);
      scalar_t* dw = grad_rows<scalar_t>(tb, s.tensor);
      for (int64_t e = s.begin * P + threadIdx.x; e < s.end * P; e += blockDim.x) {
        const int64_t r = e / P, j = e % P;
        Element<scalar_t>::store(dw + e, row_times_column<scalar_t, acc_t>(w + r * P, Mg, P, j));
      }
    });
  });
}

// One block per work item, up to 2^20 blocks (the loop covers the rest).
unsigned grid(const Tables& tb) { return unsigned(std::min<int64_t>(tb.splits * tb.num_groups, int64_t(1) << 20)); }

}  // namespace

template <>
void weight_gram<Device::CUDA>(const WeightGramArgs& args) {
  cuda::on_device(args.stream, "vkd weight gram", [&](cudaStream_t stream) {
    VKD_DISPATCH_DTYPE(args.dtype, [&] { gram_kernel<scalar_t><<<grid(args.tables), kThreads, 0, stream>>>(args); });
  });
}

template <>
void weight_gram_backward<Device::CUDA>(const WeightGramArgs& args) {
  cuda::on_device(args.stream, "vkd weight gram backward", [&](cudaStream_t stream) {
    VKD_DISPATCH_DTYPE(args.dtype, [&] {
      gram_backward_kernel<scalar_t><<<grid(args.tables), kThreads, 0, stream>>>(args);
    });
  });
}

}  // namespace vkd
