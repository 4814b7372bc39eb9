// Launchers of every fused kernel, each declared once as a template on the device
// (csrc/cpu defines the Device::CPU specialisations, csrc/cuda the Device::CUDA ones).
// The Python side (vkd_kernels/_ext.py) passes raw pointers, shapes, strides and a
// stream, so this library never links against torch. See csrc/common/ for the math.
#pragma once
#include <cstdint>
#include <string>
#include "common/spectrum.h"
#include "common/attention.h"
#include "common/head.h"
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
// the K = problem.K partial maps (1/C) sum_{c in split k} |x|^q to `map` as (N, K, P)
// (map_strides: n, p; split k at k P p-strides; accumulation dtype: float64 for float64
// inputs, else float32). Backward reads dL/da (N, P) from `map` and writes grad_x.
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
// K: how many channel splits the device's map launches use for (N, C, P) (CPU: 1).
template <Device> int64_t attention_map_splits(int64_t N, int64_t C, int64_t P);

// The finish of the attention-transfer loss (common/attention.h), one sample per block.
// All buffers contiguous, accumulation dtype. Forward: parts (N, K, P) -> raw maps in
// parts[:, 0], out (N,) or (N, Q). Backward: grad with strides (g_sn, g_so) -> da_s
// (N, Ps), da_t (N, Pt) or null; scratch (N, Q) each where that side is pooled.
struct TransferArgs {
  attention::TransferGeometry geometry;
  bool fp64;
  void* parts_s; void* parts_t;
  void* out;                                      // forward
  const void* grad; int64_t g_sn, g_so;           // backward
  void* da_s; void* da_t; void* scratch_s; void* scratch_t;
  Stream stream;
};

template <Device> void attention_transfer_forward(const TransferArgs& args);
template <Device> void attention_transfer_backward(const TransferArgs& args);

// The GKD head's tail around its GEMMs (common/head.h, namespace head). All tensors one
// dtype, contiguous but dlam (strides dlam_strides): Z, dZ (N, J, C); w (J,); bias, gamma,
// beta and their gradients (C,) or null; H (J + 1, N, C); stats (N, G, 2) = (mean, rstd)
// in the accumulation dtype; out (T', N C) = A H; lin_bias (T',) or null; lam, dlam
// (N, C, T'); A (T', J); dout (T', N, C). Forward: Z, w, bias, gamma, beta -> H, stats.
// Output: out, lin_bias -> lam. Backward: -> dout, dZ, dgamma, dbeta, dbias.
struct HeadNormArgs {
  head::GroupNormProblem problem;
  DType dtype;
  const void* Z; const void* w; const void* bias; const void* gamma; const void* beta;
  void* H; void* stats;
  const void* out; const void* lin_bias; void* lam;
  const void* dlam; head::Strides3 dlam_strides; const void* A;
  void* dout; void* dZ; void* dgamma; void* dbeta; void* dbias;
  Stream stream;
};

template <Device> void head_norm_forward(const HeadNormArgs& args);
template <Device> void head_output(const HeadNormArgs& args);
template <Device> void head_norm_backward(const HeadNormArgs& args);

// Weight-spectrum distance (common/weights.h, tables from vkd_kernels/weights/layout.py).
// gram: writes the energy partials of every gram item (dtype: the weights'). finish /
// finish_backward: dtype is the accumulation dtype (float32, float64), buffers as in
// weights::FinishArgs. gram_backward (CUDA; the CPU backward is a BLAS GEMM in
// vkd_kernels/weights/native.py): grad_w[item offsets] = W M. Everything on the device.
struct WeightArgs {
  weights::Tables tables;
  DType dtype;
  const void* basis;
  void* partials;
  void* p;
  void* S;
  void* d;
  const void* grad;
  void* dist_grad;
  void* M;
  void* grad_w;
  int distance, drop_dc, parts;
  double eps, grad_scale;
  Stream stream;
};

template <Device> void weight_gram(const WeightArgs& args);
template <Device> void weight_finish(const WeightArgs& args);
template <Device> void weight_finish_backward(const WeightArgs& args);
template <Device> void weight_gram_backward(const WeightArgs& args);

// The FinishArgs view of WeightArgs in the accumulation type T.
template <typename T>
VKD_HD weights::FinishArgs<T> finish_args(const WeightArgs& a) {
  return {a.tables, static_cast<const T*>(a.basis), static_cast<const T*>(a.partials), static_cast<T*>(a.p),
          static_cast<T*>(a.S), static_cast<T*>(a.d), static_cast<const T*>(a.grad), static_cast<T*>(a.dist_grad),
          static_cast<T*>(a.M), a.distance, a.drop_dc, a.parts, T(a.eps), T(a.grad_scale)};
}

// Runs body with acc_t bound to float or double (the accumulation dtype code).
#define VKD_DISPATCH_ACC(dtype, ...)                                                        \
  [&] {                                                                                     \
    if ((dtype) == ::vkd::DType::Float64) { using acc_t = double; return __VA_ARGS__(); }  \
    if ((dtype) == ::vkd::DType::Float32) { using acc_t = float; return __VA_ARGS__(); }   \
    throw std::invalid_argument("vkd: the accumulation dtype must be float32 or float64"); \
  }()

// attention_apply passes (common/apply.h), rows (N, C, T, S) strided, one dtype for x,
// y, out, lam, dlam (lam, dlam contiguous (N C T,)); row sums and group sums (B, 2) in
// the accumulation dtype, contiguous. Reduce: rows = sum_s x (y null) or sum_s x y.
// Finish: sums[b] = (sum v, sum lam v) over group b's rows of v = rows. Affine: forward
// (bsums null) out = x k lam; backward out = x k lam + (G / s2)(1 - k lam) (out may be
// null) and dlam = k (m - (G / s2) q), k and 1/s2 from sums, G from bsums.
struct ApplyArgs {
  apply::RowProblem problem;
  DType dtype;
  const void* x; apply::RowStrides x_strides;
  const void* y; apply::RowStrides y_strides;   // reduce only, may be null
  void* rows;                                    // reduce output, finish input
  const void* lam;                               // finish, affine
  void* sums;                                    // finish output (B, 2); affine input
  const void* bsums; const void* m; const void* q; void* dlam;  // affine backward only
  void* out; apply::RowStrides out_strides;      // affine output
  double scale;                                  // affine: factor of out and dlam (1; 1 / S for spatial mean)
  Stream stream;
};

template <Device> void apply_reduce(const ApplyArgs& args);
template <Device> void apply_finish(const ApplyArgs& args);
template <Device> void apply_affine(const ApplyArgs& args);

}  // namespace vkd
