// The GKD head's tail around its GEMMs on the CPU, math from common/head.h: OpenMP over
// the N G groups (forward), the output rows (sample, channel), and the G groups (backward).
#include "../kernels.h"

namespace vkd {
namespace {

template <typename T>
const T* in(const void* p) { return static_cast<const T*>(p); }
template <typename T>
T* out(void* p) { return static_cast<T*>(p); }

template <typename scalar_t>
void forward(const HeadNormArgs& a) {
  const auto& pr = a.problem;
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < pr.N * pr.G; ++i)
    head::group_norm_relu_forward(pr, in<scalar_t>(a.Z), in<scalar_t>(a.w), in<scalar_t>(a.bias),
                                  in<scalar_t>(a.gamma), in<scalar_t>(a.beta), out<scalar_t>(a.H), a.stats, i / pr.G,
                                  i % pr.G, SerialBlock{});
}

template <typename scalar_t>
void output(const HeadNormArgs& a) {
  const auto& pr = a.problem;
#pragma omp parallel for schedule(static)
  for (int64_t nc = 0; nc < pr.N * pr.C; ++nc)
    for (int32_t t = 0; t < pr.TP; ++t)
      head::head_output(pr, in<scalar_t>(a.out), in<scalar_t>(a.lin_bias), out<scalar_t>(a.lam), nc, t);
}

template <typename scalar_t>
void backward(const HeadNormArgs& a) {
  const auto& pr = a.problem;
#pragma omp parallel for schedule(static)
  for (int64_t g = 0; g < pr.G; ++g)
    head::group_norm_relu_backward(pr, in<scalar_t>(a.Z), in<scalar_t>(a.w), in<scalar_t>(a.bias),
                                   in<scalar_t>(a.gamma), in<scalar_t>(a.beta), a.stats, in<scalar_t>(a.lam),
                                   in<scalar_t>(a.dlam), a.dlam_strides, in<scalar_t>(a.A), out<scalar_t>(a.dout),
                                   out<scalar_t>(a.dZ), out<scalar_t>(a.dgamma), out<scalar_t>(a.dbeta),
                                   out<scalar_t>(a.dbias), g, SerialBlock{});
}

}  // namespace

template <>
void head_norm_forward<Device::CPU>(const HeadNormArgs& args) {
  VKD_DISPATCH_DTYPE(args.dtype, [&] { forward<scalar_t>(args); });
}

template <>
void head_output<Device::CPU>(const HeadNormArgs& args) {
  VKD_DISPATCH_DTYPE(args.dtype, [&] { output<scalar_t>(args); });
}

template <>
void head_norm_backward<Device::CPU>(const HeadNormArgs& args) {
  VKD_DISPATCH_DTYPE(args.dtype, [&] { backward<scalar_t>(args); });
}

}  // namespace vkd
