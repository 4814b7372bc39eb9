// The Block a per-group function of csrc/common runs on: `lane` / `step` split the
// elements of a pass among threads, `sum(v)` returns the total of v over the lanes (to
// every lane, in a fixed order) and `sync()` orders global writes before reads at other
// positions. The CPU runs one lane (SerialBlock); CUDA a thread block (cuda/launch.h).
#pragma once
#include <cstdint>
#include "dtypes.h"

namespace vkd {

struct SerialBlock {
  int32_t lane = 0, step = 1;
  template <typename T>
  VKD_HD T sum(T v) const { return v; }
  VKD_HD void sync() const {}
};

}  // namespace vkd
