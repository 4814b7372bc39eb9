// Launchers of every fused kernel, one declaration per device. The Python side
// (vkd_kernels/_ext.py) passes raw pointers, shapes, strides and a stream, so this
// library never links against torch. See csrc/common/ for the math.
#pragma once
#include <cstdint>
#include "common/spectrum.h"
#include "common/weights.h"

namespace vkd {

// Temporal spectrum loss forward. Writes d as (B, K, G) at `d` (strides d_strides:
// b, k, g) when d is not null; otherwise writes num_partials partial sums of d
// (accumulation dtype: float64 for float64 inputs, else float32) to `partials`.
struct SpectrumForwardArgs {
  spectrum::Problem problem;
  DType dtype;
  double scale;  // norm scale, folded into the twiddles
  const void* student; spectrum::Strides3 student_strides;
  const void* teacher; spectrum::Strides3 teacher_strides;
  void* d; spectrum::Strides3 d_strides;
  void* partials; int64_t num_partials;
  uintptr_t stream;  // cudaStream_t on CUDA, ignored on CPU
};

// Backward: grad_d holds dL/dd as (B, K, G) with strides grad_strides (all zero for
// a scalar loss), multiplied by grad_scale (1/count for reduction="mean").
// Gradients go to grad_student / grad_teacher where not null.
struct SpectrumBackwardArgs {
  spectrum::Problem problem;
  DType dtype;
  double scale;
  const void* student; spectrum::Strides3 student_strides;
  const void* teacher; spectrum::Strides3 teacher_strides;
  const void* grad_d; spectrum::Strides3 grad_strides; double grad_scale;
  void* grad_student; spectrum::Strides3 grad_student_strides;
  void* grad_teacher; spectrum::Strides3 grad_teacher_strides;
  uintptr_t stream;
};

// How many partial sums the forward writes for `groups` groups (size of `partials`).
int64_t spectrum_num_partials_cpu(int64_t groups);
void spectrum_forward_cpu(const SpectrumForwardArgs& args);
void spectrum_backward_cpu(const SpectrumBackwardArgs& args);
#ifdef VKD_WITH_CUDA
int64_t spectrum_num_partials_cuda(int64_t groups);
void spectrum_forward_cuda(const SpectrumForwardArgs& args);
void spectrum_backward_cuda(const SpectrumBackwardArgs& args);
#endif

}  // namespace vkd

namespace vkd {

// Weight-spectrum distance (common/weights.h). Forward: writes partials
// (splits, flat_size) in the accumulation dtype (float64 for float64 weights, else
// float32). Backward: writes dW = W M for every tensor (at its gradient pointer), M_flat
// (flat_size,) in the accumulation dtype. Tables live on the kernels' device.
struct WeightGramArgs {
  weights::Tables tables;
  DType dtype;
  void* partials;       // forward output
  const void* M;        // backward input
  uintptr_t stream;
};

void weight_gram_cpu(const WeightGramArgs& args);
void weight_gram_backward_cpu(const WeightGramArgs& args);
#ifdef VKD_WITH_CUDA
void weight_gram_cuda(const WeightGramArgs& args);
void weight_gram_backward_cuda(const WeightGramArgs& args);
#endif

}  // namespace vkd
