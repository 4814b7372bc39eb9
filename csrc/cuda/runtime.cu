// Whether the CUDA kernels can run in this process. The CUDA runtime is linked in
// statically (CMakeLists.txt), so the driver must support that runtime's major version:
// asking the runtime here is the only way to know (build_info only says what was built).
#include <string>
#include "launch.h"

namespace vkd {

namespace {

// The oldest Linux driver branch of a CUDA major version (CUDA's minor version
// compatibility: any driver of that branch runs every minor release), 0 if unknown.
int minimum_driver(int cuda_major) {
  switch (cuda_major) {
    case 11: return 450;
    case 12: return 525;
    case 13: return 580;
    default: return 0;
  }
}

std::string version(int v) { return std::to_string(v / 1000) + "." + std::to_string(v % 1000 / 10); }

}  // namespace

std::string cuda_unavailable() {
  int driver = 0;
  if (cudaDriverGetVersion(&driver) != cudaSuccess || driver == 0)
    return "no CUDA driver is installed (libcuda could not be loaded)";
  if (driver / 1000 < CUDART_VERSION / 1000) {
    std::string why = "the CUDA driver supports CUDA " + version(driver) + ", older than the " +
                      version(CUDART_VERSION) + " runtime vkd_kernels._C was built with";
    if (const int needed = minimum_driver(CUDART_VERSION / 1000)) why += " (needs driver >= " + std::to_string(needed) + ")";
    return why;
  }
  int count = 0;
  const cudaError_t error = cudaGetDeviceCount(&count);
  if (error != cudaSuccess) return std::string("the CUDA runtime cannot list devices: ") + cudaGetErrorString(error);
  if (count == 0) return "no CUDA device is visible";
  return "";
}

}  // namespace vkd
