// Element types shared by the CPU and CUDA kernels, with no dependency on torch
// or on cuda_fp16.h: float16 and bfloat16 are 16-bit patterns converted by bit
// manipulation (round to nearest even), identical on host and device.
#pragma once
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>

#if defined(__CUDACC__)
#define VKD_HD __host__ __device__ __forceinline__
#else
#define VKD_HD inline __attribute__((always_inline))
#endif

// Marks a loop over the lanes of a tile for vectorization by the host compiler.
#if defined(__CUDA_ARCH__) || !defined(_OPENMP)
#define VKD_LANES
#else
#define VKD_LANES _Pragma("omp simd")
#endif

namespace vkd {

// Codes the Python side passes for a tensor's dtype (vkd_kernels/_ext.py).
enum class DType : int { Float32 = 0, Float64 = 1, Float16 = 2, BFloat16 = 3 };

struct Half { uint16_t bits; };
struct BFloat16 { uint16_t bits; };

template <typename To, typename From>
VKD_HD To bit_cast(From from) {
  static_assert(sizeof(To) == sizeof(From), "bit_cast needs equal sizes");
  To to;
  memcpy(&to, &from, sizeof(To));
  return to;
}

VKD_HD float half_to_float(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000u) << 16;
  const uint32_t exponent = (h >> 10) & 0x1fu;
  uint32_t mantissa = h & 0x3ffu;
  if (exponent == 0x1fu)  // inf or NaN
    return bit_cast<float>(sign | 0x7f800000u | (mantissa << 13));
  if (exponent == 0) {
    if (mantissa == 0) return bit_cast<float>(sign);
    // subnormal half: value = mantissa * 2^-24
    float magnitude = float(mantissa) * 5.9604644775390625e-8f;
    return sign ? -magnitude : magnitude;
  }
  return bit_cast<float>(sign | ((exponent + 112u) << 23) | (mantissa << 13));
}

VKD_HD uint16_t float_to_half(float value) {
  const uint32_t f = bit_cast<uint32_t>(value);
  const uint16_t sign = uint16_t((f >> 16) & 0x8000u);
  const uint32_t abs = f & 0x7fffffffu;
  if (abs >= 0x7f800000u)  // inf or NaN (keep NaN quiet)
    return sign | 0x7c00u | (abs > 0x7f800000u ? 0x200u : 0u);
  if (abs >= 0x477ff000u) return sign | 0x7c00u;  // rounds past 65504: inf
  if (abs < 0x38800000u) {  // below the smallest normal half: subnormal or zero
    // round(|value| / 2^-24) to nearest even, done exactly in float arithmetic
    const float scaled = bit_cast<float>(abs) * 16777216.0f;
    uint32_t q = uint32_t(scaled);
    const float rest = scaled - float(q);
    if (rest > 0.5f || (rest == 0.5f && (q & 1u))) ++q;
    return sign | uint16_t(q);
  }
  // normal: rebias the exponent, round the 13 dropped mantissa bits to nearest even
  uint32_t h = ((abs >> 13) - (112u << 10));
  const uint32_t dropped = abs & 0x1fffu;
  if (dropped > 0x1000u || (dropped == 0x1000u && (h & 1u))) ++h;
  return sign | uint16_t(h);
}

VKD_HD float bfloat16_to_float(uint16_t b) { return bit_cast<float>(uint32_t(b) << 16); }

VKD_HD uint16_t float_to_bfloat16(float value) {
  const uint32_t f = bit_cast<uint32_t>(value);
  if ((f & 0x7fffffffu) > 0x7f800000u) return uint16_t((f >> 16) | 0x40u);  // quiet NaN
  return uint16_t((f + 0x7fffu + ((f >> 16) & 1u)) >> 16);
}

// Element access: load converts to the accumulation type, store converts back.
template <typename scalar_t> struct Element;
template <> struct Element<float> {
  using acc_t = float;
  static VKD_HD float load(const float* p) { return *p; }
  static VKD_HD void store(float* p, float v) { *p = v; }
};
template <> struct Element<double> {
  using acc_t = double;
  static VKD_HD double load(const double* p) { return *p; }
  static VKD_HD void store(double* p, double v) { *p = v; }
};
template <> struct Element<Half> {
  using acc_t = float;
  static VKD_HD float load(const Half* p) { return half_to_float(p->bits); }
  static VKD_HD void store(Half* p, float v) { p->bits = float_to_half(v); }
};
template <> struct Element<BFloat16> {
  using acc_t = float;
  static VKD_HD float load(const BFloat16* p) { return bfloat16_to_float(p->bits); }
  static VKD_HD void store(BFloat16* p, float v) { p->bits = float_to_bfloat16(v); }
};

// Runs body with scalar_t bound to the C++ type of `dtype`.
#define VKD_DISPATCH_DTYPE(dtype, ...)                                            \
  [&] {                                                                           \
    switch (dtype) {                                                              \
      case ::vkd::DType::Float32: { using scalar_t = float; return __VA_ARGS__(); }    \
      case ::vkd::DType::Float64: { using scalar_t = double; return __VA_ARGS__(); }   \
      case ::vkd::DType::Float16: { using scalar_t = ::vkd::Half; return __VA_ARGS__(); } \
      case ::vkd::DType::BFloat16: { using scalar_t = ::vkd::BFloat16; return __VA_ARGS__(); } \
    }                                                                             \
    throw std::invalid_argument("vkd: unknown dtype code " + std::to_string(int(dtype))); \
  }()

}  // namespace vkd
