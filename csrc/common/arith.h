// 1/x and sqrt(x) for the per-sample and per-group kernels, shared by the CPU and CUDA code.
//
// On the GPU an IEEE division or sqrt (float or double) compiles to an inline fast path plus
// a CALL to a slow-path subroutine for rare operands; in a kernel with many live values each
// call costs a stack frame and spills around it. Here both come from the rsqrt unit and
// Newton steps instead, as the Triton kernels' _triton_jit.reciprocal / sqrt:
//   y ~ 1/sqrt(x)  (rsqrt.approx: relative error ~2^-22 in float, ~2^-20 from the f64 seed)
//   y <- y (3 - x y^2) / 2          once for float, twice for double (error squared each step)
//   1/x = r + r (1 - x r), r = y^2  sqrt(x) = s + y (x - s^2) / 2, s = x y
// within 1 ulp of the correctly rounded value. The host computes both exactly. Domain: finite
// x > 0 (sqrt: x >= 0, and 0 at 0), the only operands these kernels pass (counts >= 1,
// norms clamped to >= 1e-12, sums of squares); denormal x flushes to 0 on the GPU.
#pragma once
#include <cmath>
#include "dtypes.h"

namespace vkd {

#if defined(__CUDA_ARCH__)
__device__ __forceinline__ float rsqrt_seed(float x) {
  float y;
  asm("rsqrt.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}
__device__ __forceinline__ double rsqrt_seed(double x) {
  double y;
  asm("rsqrt.approx.ftz.f64 %0, %1;" : "=d"(y) : "d"(x));
  return y;
}

template <typename T>
__device__ __forceinline__ T rsqrt_newton(T x) {
  T y = rsqrt_seed(x);
  constexpr int kSteps = sizeof(T) == 8 ? 2 : 1;
  for (int i = 0; i < kSteps; ++i) y = y * (T(1.5) - T(0.5) * x * y * y);
  return y;
}
#endif

// 1 / x for finite x > 0.
template <typename T>
VKD_HD T reciprocal(T x) {
#if defined(__CUDA_ARCH__)
  const T y = rsqrt_newton(x);
  const T r = y * y;
  return fma(r, fma(-x, r, T(1)), r);
#else
  return T(1) / x;
#endif
}

// a / b for finite b > 0 (the host: the IEEE quotient).
template <typename T>
VKD_HD T divide(T a, T b) {
#if defined(__CUDA_ARCH__)
  return a * reciprocal(b);
#else
  return a / b;
#endif
}

// sqrt(x) for finite x >= 0.
template <typename T>
VKD_HD T root(T x) {
#if defined(__CUDA_ARCH__)
  if (!(x > T(0))) return T(0);
  const T y = rsqrt_newton(x);
  const T s = x * y;
  return fma(T(0.5) * y, fma(-s, s, x), s);
#else
  return std::sqrt(x);
#endif
}

}  // namespace vkd
