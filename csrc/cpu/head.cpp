// The GKD head's weighted GroupNorm + ReLU on the CPU: OpenMP over the N G groups, math
// from common/head.h.
#include "../kernels.h"

namespace vkd {
namespace {

template <typename scalar_t>
void head_forward(const HeadNormArgs& a) {
  const auto& pr = a.problem;
  const auto* Z = static_cast<const scalar_t*>(a.Z);
  const auto* w = static_cast<const scalar_t*>(a.w);
  const auto* gamma = static_cast<const scalar_t*>(a.gamma);
  const auto* beta = static_cast<const scalar_t*>(a.beta);
  auto* H = static_cast<scalar_t*>(a.H);
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < pr.N * pr.G; ++i)
    head::group_norm_relu_forward(pr, Z, w, gamma, beta, H, a.stats, i / pr.G, i % pr.G);
}

template <typename scalar_t>
void head_backward(const HeadNormArgs& a) {
  const auto& pr = a.problem;
  const auto* Z = static_cast<const scalar_t*>(a.Z);
  const auto* w = static_cast<const scalar_t*>(a.w);
  const auto* gamma = static_cast<const scalar_t*>(a.gamma);
  const auto* beta = static_cast<const scalar_t*>(a.beta);
  const auto* dH = static_cast<const scalar_t*>(a.dH);
  auto* dZ = static_cast<scalar_t*>(a.dZ);
  auto* dgamma = static_cast<scalar_t*>(a.dgamma);
  auto* dbeta = static_cast<scalar_t*>(a.dbeta);
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < pr.N * pr.G; ++i)
    head::group_norm_relu_backward(pr, Z, w, gamma, beta, a.stats, dH, dZ, dgamma, dbeta, i / pr.G, i % pr.G);
}

}  // namespace

template <>
void head_norm_forward<Device::CPU>(const HeadNormArgs& args) {
  VKD_DISPATCH_DTYPE(args.dtype, [&] { head_forward<scalar_t>(args); });
}

template <>
void head_norm_backward<Device::CPU>(const HeadNormArgs& args) {
  VKD_DISPATCH_DTYPE(args.dtype, [&] { head_backward<scalar_t>(args); });
}

}  // namespace vkd
