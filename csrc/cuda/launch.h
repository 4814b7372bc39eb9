// Launch helpers shared by the CUDA drivers: the device guard, the stream and the
// error check around every launch.
#pragma once
#include <cuda_runtime.h>
#include <stdexcept>
#include <string>
#include "../kernels.h"

namespace vkd {
namespace cuda {

inline void check(cudaError_t error, const std::string& what) {
  if (error != cudaSuccess) throw std::runtime_error(what + ": " + cudaGetErrorString(error));
}

// Makes `device` current for its lifetime and restores the previously current device
// (device < 0: leaves the current device as it is).
class DeviceGuard {
 public:
  DeviceGuard(int device, const char* what) {
    const std::string failed = std::string(what) + ": cannot make CUDA device " + std::to_string(device) + " current";
    check(cudaGetDevice(&previous_), failed);
    if (device >= 0 && device != previous_) {
      check(cudaSetDevice(device), failed);
      restore_ = true;
    }
  }
  ~DeviceGuard() {
    if (restore_) cudaSetDevice(previous_);
  }
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int previous_ = 0;
  bool restore_ = false;
};

// Runs launch(stream) with stream.device current, then checks the launch error.
template <typename Launch>
void on_device(const Stream& stream, const char* what, Launch&& launch) {
  DeviceGuard guard(stream.device, what);
  launch(reinterpret_cast<cudaStream_t>(stream.handle));
  check(cudaGetLastError(), what);
}

// The Block (common/block.h) of a thread block of kThreads lanes: sums through `shared`
// (kThreads values) in a fixed tree order.
template <typename acc_t, int kThreads>
struct ThreadBlock {
  int32_t lane;
  acc_t* shared;
  static constexpr int32_t step = kThreads;
  __device__ acc_t sum(acc_t v) const {
    __syncthreads();  // the previous sum's readers are done with shared
    shared[lane] = v;
    __syncthreads();
    for (int width = kThreads / 2; width > 0; width /= 2) {
      if (lane < width) shared[lane] += shared[lane + width];
      __syncthreads();
    }
    return shared[0];
  }
  __device__ void sync() const { __syncthreads(); }
};

}  // namespace cuda
}  // namespace vkd
