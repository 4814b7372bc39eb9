// Launchers of every fused kernel, each declared once as a template on the device
// (csrc/cpu defines the Device::CPU specialisations, csrc/cuda the Device::CUDA ones).
// The Python side (vkd_kernels/_ext.py) passes raw pointers, shapes, strides and a
// stream, so this library never links against torch. See csrc/common/ for the math.
#pragma once
#include <cstdint>
#include <string>
#include "common/spectrum.h"
#include "common/attention.h"
#include "common/weights.h"
#include "common/apply.h"

namespace vkd {

enum class Device : int { CPU = 0, CUDA = 1 };

// Where a launch runs: on CUDA, `handle` is the cudaStream_t of device `device` (the
// launcher makes that device current for the launch and restores the previous one);
// both are ignored on the CPU.
struct Stream {
  uintptr_t handle;
  int device;
};

#ifdef VKD_WITH_CUDA
// Why the CUDA kernels cannot run in this process (no driver, a driver older than the
// CUDA runtime linked in, no device), or "" when they can (csrc/cuda/runtime.cu).
std::string cuda_unavailable();
#endif

// Temporal spectrum loss forward. Writes d as (B, K, G) at `d` (strides d_strides:
// b, k, g) when d is not null; otherwise writes num_partials partial sums of d, each
// times partial_scale (1/count for reduction="mean": their sum is the loss), in the
// accumulation dtype (float64 for float64 inputs, else float32) to `partials`.
struct SpectrumForwardArgs {
  spectrum::Problem problem;
  DType dtype;
  double scale;  // norm scale, folded into the twiddles
  const void* student; spectrum::Strides3 student_strides;
  const void* teacher; spectrum::Strides3 teacher_strides;
  void* d; spectrum::Strides3 d_strides;
  void* partials; int64_t num_partials; double partial_scale;
  Stream stream;
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
  Stream stream;
};

// How many partial sums the forward of `problem` in `dtype` writes (size of `partials`).
template <Device> int64_t spectrum_num_partials(const spectrum::Problem& problem, DType dtype);
template <Device> void spectrum_forward(const SpectrumForwardArgs& args);
template <Device> void spectrum_backward(const SpectrumBackwardArgs& args);

// Attention-transfer raw map (docs/ops.md 3a) of x viewed as (N, C, P). Forward writes
// a[n, p] = mean_c |x|^q to `map` (accumulation dtype: float64 for float64 inputs, else
// float32). Backward reads dL/da from `map` (accumulation dtype) and writes grad_x.
struct AttentionMapArgs {
  attention::MapProblem problem;
  DType dtype;
  const void* x; attention::Strides3 x_strides;
  void* map; attention::Strides2 map_strides;
  void* grad_x; attention::Strides3 grad_x_strides;  // backward only
  Stream stream;
};

template <Device> void attention_map_forward(const AttentionMapArgs& args);
template <Device> void attention_map_backward(const AttentionMapArgs& args);

// Weighted GroupNorm + ReLU of the GKD head's compact tail (common/attention.h, namespace
// head). All tensors contiguous, one dtype: Z, H, dH, dZ (N, J, C); w (J,); gamma, beta
// (C,) or null; stats (N, G, 2) = (mean, rstd) in the accumulation dtype; dgamma, dbeta (N, C) per-sample partial
// sums or null. Forward reads Z, w, gamma, beta and writes H, stats; backward reads
// Z, w, gamma, beta, stats, dH and writes dZ, dgamma, dbeta.
struct HeadNormArgs {
  head::GroupNormProblem problem;
  DType dtype;
  const void* Z; const void* w; const void* gamma; const void* beta;
  void* H; void* stats;
  const void* dH; void* dZ; void* dgamma; void* dbeta;
  Stream stream;
};

template <Device> void head_norm_forward(const HeadNormArgs& args);
template <Device> void head_norm_backward(const HeadNormArgs& args);

// Weight-spectrum distance (common/weights.h). Forward: writes partials
// (splits, flat_size) in the accumulation dtype (float64 for float64 weights, else
// float32). Backward: writes dW = W M for every tensor (at its gradient pointer), M_flat
// (flat_size,) in the accumulation dtype. Tables live on the kernels' device.
struct WeightGramArgs {
  weights::Tables tables;
  DType dtype;
  void* partials;       // forward output
  const void* M;        // backward input
  Stream stream;
};

template <Device> void weight_gram(const WeightGramArgs& args);
template <Device> void weight_gram_backward(const WeightGramArgs& args);

// attention_apply row passes (common/apply.h), rows (N, C, T, S) strided, one dtype for
// x, y, out; a, b and the row results in the accumulation dtype, contiguous (N C T,).
// Reduce: out_rows = sum_s x (y null) or sum_s x y. Affine: out = x a + b (b null: 0).
struct ApplyArgs {
  apply::RowProblem problem;
  DType dtype;
  const void* x; apply::RowStrides x_strides;
  const void* y; apply::RowStrides y_strides;   // reduce only, may be null
  void* rows;                                    // reduce output
  const void* a; const void* b;                  // affine only, b may be null
  void* out; apply::RowStrides out_strides;      // affine output
  Stream stream;
};

template <Device> void apply_reduce(const ApplyArgs& args);
template <Device> void apply_affine(const ApplyArgs& args);

}  // namespace vkd
