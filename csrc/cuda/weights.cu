// Weight-spectrum distance on CUDA (math and tables: common/weights.h).
//
// gram: one block per item (a row chunk x a 32 x 32 block (i0, j0) of the group's Gram
//   matrix). Rows are staged kRows at a time in shared memory with coalesced loads (a
//   warp reads 32 consecutive elements of a row); each of the 16 x 16 threads keeps a
//   2 x 2 register block of G (acc_t acc[2][2], unrolled: no local memory). The block of
//   G then goes to shared memory and the threads share the epilogue's bins.
// gram_backward: one block per item (a row chunk x 32 columns of dW): W and M tiles in
//   shared memory, a 2 x 2 register block of dW per thread, coalesced stores.
// finish / finish_backward: one block per pair, a thread team summing in shared memory
//   in a fixed tree order (deterministic).
#include <algorithm>
#include "launch.h"

namespace vkd {
using namespace weights;

namespace {

constexpr int kSide = 16;               // threads per side of the 16 x 16 thread grid
constexpr int kThreads = kSide * kSide;
constexpr int kRows = 32;               // rows staged per step
static_assert(2 * kSide == kTile, "each thread owns a 2 x 2 block of a kTile x kTile tile");
// Gram passes: __launch_bounds__(kThreads, kMinBlocks). Two blocks per SM (the grids give
// every SM several) lets ptxas use up to 128 registers; without the minimum it aimed at
// 32-40 and put the float64 accumulators on an 8-16 B stack (ptxas -v, sm_80 and sm_90).
// With it: 74-96 registers, no stack (test_cuda_build.py checks).
constexpr int kMinBlocks = 2;

template <typename T>
using Tile = T[kRows][kTile + 1];  // +1: rows start in different banks

// tile[l][c] = x[(r0 + l) * ld + c0 + c] for rows r0 + l < rows and columns c0 + c < cols,
// else 0. Consecutive threads read consecutive columns (coalesced).
template <typename scalar_t, typename acc_t>
__device__ void stage(Tile<acc_t>& tile, const scalar_t* x, int64_t ld, int64_t r0, int64_t rows, int64_t c0,
                      int64_t cols) {
  for (int f = threadIdx.x; f < kRows * kTile; f += kThreads) {
    const int l = f / kTile, c = f % kTile;
    const int64_t r = r0 + l, col = c0 + c;
    tile[l][c] = r < rows && col < cols ? Element<scalar_t>::load(x + r * ld + col) : acc_t(0);
  }
}

// acc[a][b] += sum_l xi[l][ty + 16a] xj[l][tx + 16b]
template <typename acc_t>
__device__ void gram_step(const Tile<acc_t>& xi, const Tile<acc_t>& xj, int ty, int tx, acc_t (&acc)[2][2]) {
#pragma unroll
  for (int l = 0; l < kRows; ++l) {
    const acc_t a0 = xi[l][ty], a1 = xi[l][ty + kSide], b0 = xj[l][tx], b1 = xj[l][tx + kSide];
    acc[0][0] += a0 * b0;
    acc[0][1] += a0 * b1;
    acc[1][0] += a1 * b0;
    acc[1][1] += a1 * b1;
  }
}

template <typename scalar_t>
__global__ void __launch_bounds__(kThreads, kMinBlocks) gram_kernel(WeightArgs a) {
  using acc_t = typename Element<scalar_t>::acc_t;
  __shared__ Tile<acc_t> xi, xj;
  const int64_t* item = a.tables.items + int64_t(blockIdx.x) * kGramFields;
  const int64_t P = item[kItemP], end = item[kRowEnd], i0 = item[kColI], j0 = item[kColJ];
  const scalar_t* w = address<const scalar_t>(item[kWeight]);
  const bool diagonal = i0 == j0;
  const int ty = threadIdx.x / kSide, tx = threadIdx.x % kSide;
  acc_t acc[2][2] = {{acc_t(0), acc_t(0)}, {acc_t(0), acc_t(0)}};
  for (int64_t r0 = item[kRowBegin]; r0 < end; r0 += kRows) {
    stage(xi, w, P, r0, end, i0, P);
    if (!diagonal) stage(xj, w, P, r0, end, j0, P);
    __syncthreads();
    if (diagonal)
      gram_step(xi, xi, ty, tx, acc);
    else
      gram_step(xi, xj, ty, tx, acc);
    __syncthreads();
  }
  Tile<acc_t>& g = xi;  // the G block (kTile x kTile)
  g[ty][tx] = acc[0][0];
  g[ty][tx + kSide] = acc[0][1];
  g[ty + kSide][tx] = acc[1][0];
  g[ty + kSide][tx + kSide] = acc[1][1];
  __syncthreads();
  const acc_t* B = static_cast<const acc_t*>(a.basis) + item[kItemBasis];
  acc_t* out = static_cast<acc_t*>(a.partials) + item[kOut];
  const int64_t ni = P - i0 < kTile ? P - i0 : kTile, nj = P - j0 < kTile ? P - j0 : kTile;
  const acc_t twice = diagonal ? acc_t(1) : acc_t(2);  // the mirrored block adds the same
  for (int64_t b = threadIdx.x; b < P; b += kThreads) {
    acc_t e = acc_t(0);
    for (int part = 0; part < a.parts; ++part) e += block_energy(B + (part * P + b) * P, &g[0][0], kTile + 1, i0, ni, j0, nj);
    out[b] = e * twice;
  }
}

template <typename scalar_t>
__global__ void __launch_bounds__(kThreads, kMinBlocks) gram_backward_kernel(WeightArgs a) {
  using acc_t = typename Element<scalar_t>::acc_t;
  __shared__ Tile<acc_t> x, m;
  const int64_t* item = a.tables.items + int64_t(blockIdx.x) * kBackwardFields;
  const int64_t P = item[kBackP], end = item[kBackRowEnd], j0 = item[kBackColJ];
  const scalar_t* w = address<const scalar_t>(item[kBackWeight]);
  const acc_t* M = static_cast<const acc_t*>(a.M) + item[kBackM];
  scalar_t* dw = static_cast<scalar_t*>(a.grad_w) + item[kBackGrad];
  const int ty = threadIdx.x / kSide, tx = threadIdx.x % kSide;
  for (int64_t r0 = item[kBackRowBegin]; r0 < end; r0 += kRows) {
    acc_t acc[2][2] = {{acc_t(0), acc_t(0)}, {acc_t(0), acc_t(0)}};
    for (int64_t c0 = 0; c0 < P; c0 += kTile) {
      stage(x, w, P, r0, end, c0, P);  // x[l][c] = W[r0 + l, c0 + c]
      stage(m, M, P, c0, P, j0, P);    // m[l][c] = M[c0 + l, j0 + c]
      __syncthreads();
#pragma unroll
      for (int l = 0; l < kTile; ++l) {
        const acc_t x0 = x[ty][l], x1 = x[ty + kSide][l], m0 = m[l][tx], m1 = m[l][tx + kSide];
        acc[0][0] += x0 * m0;
        acc[0][1] += x0 * m1;
        acc[1][0] += x1 * m0;
        acc[1][1] += x1 * m1;
      }
      __syncthreads();
    }
#pragma unroll
    for (int u = 0; u < 2; ++u)
#pragma unroll
      for (int v = 0; v < 2; ++v) {
        const int64_t r = r0 + ty + u * kSide, c = j0 + tx + v * kSide;
        if (r < end && c < P) Element<scalar_t>::store(dw + r * P + c, acc[u][v]);
      }
  }
}

// The block as a team (common/weights.h): sums through shared memory in a fixed tree.
template <typename T>
struct BlockTeam {
  int rank, size;
  T* scratch;  // kThreads values in shared memory

  VKD_HD T sum(T v) {
#ifdef __CUDA_ARCH__
    scratch[rank] = v;
    __syncthreads();
    for (int half = size / 2; half > 0; half /= 2) {
      if (rank < half) scratch[rank] += scratch[rank + half];
      __syncthreads();
    }
    const T total = scratch[0];
    __syncthreads();
    return total;
#else
    return v;
#endif
  }
  VKD_HD void sync() {
#ifdef __CUDA_ARCH__
    __syncthreads();
#endif
  }
};

template <typename acc_t>
__global__ void __launch_bounds__(kThreads) finish_kernel(WeightArgs args) {
  __shared__ acc_t e_s[kMaxP], e_t[kMaxP], scratch[kThreads];
  BlockTeam<acc_t> team{int(threadIdx.x), kThreads, scratch};
  finish_pair(finish_args<acc_t>(args), blockIdx.x, e_s, e_t, team);
}

template <typename acc_t>
__global__ void __launch_bounds__(kThreads) finish_backward_kernel(WeightArgs args) {
  __shared__ acc_t ge[kMaxP], scratch[kThreads];
  BlockTeam<acc_t> team{int(threadIdx.x), kThreads, scratch};
  finish_pair_backward(finish_args<acc_t>(args), blockIdx.x, ge, team);
}

// One block per item or pair: x allows 2^31 - 1 blocks, more than any table holds.
unsigned blocks(int64_t count) { return unsigned(count); }

}  // namespace

template <>
void weight_gram<Device::CUDA>(const WeightArgs& args) {
  if (args.tables.num_items == 0) return;
  cuda::on_device(args.stream, "vkd weight gram", [&](cudaStream_t stream) {
    VKD_DISPATCH_DTYPE(args.dtype, [&] {
      gram_kernel<scalar_t><<<blocks(args.tables.num_items), kThreads, 0, stream>>>(args);
    });
  });
}

template <>
void weight_gram_backward<Device::CUDA>(const WeightArgs& args) {
  if (args.tables.num_items == 0) return;
  cuda::on_device(args.stream, "vkd weight gram backward", [&](cudaStream_t stream) {
    VKD_DISPATCH_DTYPE(args.dtype, [&] {
      gram_backward_kernel<scalar_t><<<blocks(args.tables.num_items), kThreads, 0, stream>>>(args);
    });
  });
}

template <>
void weight_finish<Device::CUDA>(const WeightArgs& args) {
  cuda::on_device(args.stream, "vkd weight finish", [&](cudaStream_t stream) {
    VKD_DISPATCH_ACC(args.dtype, [&] {
      finish_kernel<acc_t><<<blocks(args.tables.num_pairs), kThreads, 0, stream>>>(args);
    });
  });
}

template <>
void weight_finish_backward<Device::CUDA>(const WeightArgs& args) {
  cuda::on_device(args.stream, "vkd weight finish backward", [&](cudaStream_t stream) {
    VKD_DISPATCH_ACC(args.dtype, [&] {
      finish_backward_kernel<acc_t><<<blocks(args.tables.num_pairs), kThreads, 0, stream>>>(args);
    });
  });
}

}  // namespace vkd
