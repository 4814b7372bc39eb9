// Attention transfer on the CPU, math from common/attention.h. The raw map: OpenMP over
// tiles of L consecutive positions of one sample, all channels in one split (K = 1: the
// threads already have a tile each). The finish: OpenMP over samples, one lane each. Each
// tile reads its C row segments of L positions once (forward) and writes them once
// (backward). L = 4096 positions (a 16 KB float accumulator, in L1): a sample of up to
// 4096 positions (8 x 14 x 14 = 1568) is one tile, so its C x P block streams through in
// memory order; L = 1024 split such rows in two and ran 1.4x slower, 64 thrashed the TLB
// (2-3x slower) at C = 1024, P = 1568.
#include <algorithm>
#include "../kernels.h"
#include "clones.h"

// No fused multiply-adds in the AVX2 / AVX-512 clones: each lane then computes what the
// baseline build computes, in the same order, so the maps and gradients are bitwise the
// same on every x86-64 CPU (and the trainer's at / gkd runs with them).
#pragma GCC optimize("fp-contract=off")

namespace vkd {
using namespace attention;

namespace {

constexpr int L = 4096;

// The finish is map-sized: below ~2^13 map elements a parallel region costs more than
// the pass (and far more on a loaded machine, where a region waits for a descheduled thread).
// (8, 8, 14, 14) against (8, 4, 7, 7), 14 112 elements, pooled: backward 0.25 -> 0.14 ms on
// 2 threads; 2^16 had kept it serial.
bool parallel_finish(const TransferGeometry& g) { return g.N > 1 && g.N * (g.s.P + g.t.P) > (int64_t(1) << 13); }

int64_t tiles_per_sample(const MapProblem& pr) { return (pr.P + L - 1) / L; }

// Tile i of the N tiles_per_sample: sample i / tiles_per_sample, positions from (i % tiles_per_sample) L.
template <Power kPower, typename scalar_t>
VKD_CPU_CLONES void forward_tile(const AttentionMapArgs& a, int64_t i) {
  const MapProblem& pr = a.problem;
  const int64_t per = tiles_per_sample(pr), p0 = (i % per) * L;
  map_tile<L, kPower>(pr, static_cast<const scalar_t*>(a.x), a.x_strides, a.map, a.map_strides, i / per, p0,
                      int(std::min<int64_t>(L, pr.P - p0)));
}

template <Power kPower, typename scalar_t>
VKD_CPU_CLONES void backward_tile(const AttentionMapArgs& a, int64_t i) {
  const MapProblem& pr = a.problem;
  const int64_t per = tiles_per_sample(pr), p0 = (i % per) * L;
  map_grad_tile<L, kPower>(pr, static_cast<const scalar_t*>(a.x), a.x_strides, a.map, a.map_strides,
                           static_cast<scalar_t*>(a.grad_x), a.grad_x_strides, i / per, p0,
                           int(std::min<int64_t>(L, pr.P - p0)));
}

template <Power kPower, typename scalar_t>
void forward(const AttentionMapArgs& a) {
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < a.problem.N * tiles_per_sample(a.problem); ++i) forward_tile<kPower, scalar_t>(a, i);
}

template <Power kPower, typename scalar_t>
void backward(const AttentionMapArgs& a) {
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < a.problem.N * tiles_per_sample(a.problem); ++i) backward_tile<kPower, scalar_t>(a, i);
}

template <typename acc_t>
void finish_forward(const TransferArgs& a) {
  const TransferGeometry& g = a.geometry;
#pragma omp parallel for schedule(static) if (parallel_finish(g))
  for (int64_t n = 0; n < g.N; ++n)
    transfer_forward_sample(g, static_cast<acc_t*>(a.parts_s), static_cast<acc_t*>(a.parts_t),
                            static_cast<acc_t*>(a.out), n, SerialBlock{});
}

template <typename acc_t>
void finish_backward(const TransferArgs& a) {
  const TransferGeometry& g = a.geometry;
#pragma omp parallel for schedule(static) if (parallel_finish(g))
  for (int64_t n = 0; n < g.N; ++n)
    transfer_backward_sample(g, static_cast<const acc_t*>(a.parts_s), static_cast<const acc_t*>(a.parts_t),
                             static_cast<const acc_t*>(a.grad), a.g_sn, a.g_so, static_cast<acc_t*>(a.da_s),
                             static_cast<acc_t*>(a.da_t), static_cast<acc_t*>(a.scratch_s),
                             static_cast<acc_t*>(a.scratch_t), n, SerialBlock{});
}

}  // namespace

template <>
int64_t attention_map_splits<Device::CPU>(int64_t, int64_t, int64_t) { return 1; }

template <>
void attention_transfer_forward<Device::CPU>(const TransferArgs& args) {
  args.fp64 ? finish_forward<double>(args) : finish_forward<float>(args);
}

template <>
void attention_transfer_backward<Device::CPU>(const TransferArgs& args) {
  args.fp64 ? finish_backward<double>(args) : finish_backward<float>(args);
}

template <>
void attention_map_forward<Device::CPU>(const AttentionMapArgs& args) {
  VKD_DISPATCH_DTYPE(args.dtype, [&] { VKD_DISPATCH_POWER(args.problem.q, [&] { forward<kPower, scalar_t>(args); }); });
}

template <>
void attention_map_backward<Device::CPU>(const AttentionMapArgs& args) {
  VKD_DISPATCH_DTYPE(args.dtype, [&] { VKD_DISPATCH_POWER(args.problem.q, [&] { backward<kPower, scalar_t>(args); }); });
}

}  // namespace vkd
