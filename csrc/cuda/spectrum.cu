// Temporal spectrum loss on CUDA, math from common/spectrum.h. Each size class TM of T
// (8, 16, 32, 64) is its own kernel, so the tile arrays have fixed extents and live in
// registers. A line is held by a team of N = TeamSize<TM, acc_t>::value consecutive lanes
// (each holds TM/N of its t, and their partial sums over t are added by warp shuffles),
// the twiddles of TM sit in shared memory.
// - spatial="pixel": the teams of the grid take consecutive lines (b, s), so a warp's
//   loads of one t are runs of consecutive s (coalesced).
// - spatial="mean": a block per group; its teams take the group's lines in turn and add
//   A per bin into their own shared-memory slots, which are summed in a fixed order
//   (deterministic, no atomics) before the loss or dL/dA of the group.
// Reductions are per-block partials (deterministic); the caller sums them.
#include "launch.h"

namespace vkd {
using namespace spectrum;

namespace {

constexpr int kThreads = 128;
// Blocks per SM the register allocation must allow (at most 255 registers a thread):
// with __launch_bounds__(kThreads) alone ptxas held some sm_80 kernels at 64 registers
// and spilled 4-12 bytes (ptxas -v); 2 leaves it room, and no kernel spills.
constexpr int kMinBlocks = 2;
constexpr int64_t kMaxBlocks = 65535;  // grid-stride beyond: also the most forward partials

// N consecutive lanes of a warp: sums across them by xor shuffles (a butterfly, so every
// member gets the same, bitwise, sum). Every lane of the warp must call sum together.
template <int kN>
struct WarpTeam {
  static constexpr int N = kN;
  int member;
  __device__ int rank() const { return member; }
  template <typename T>
  __device__ T sum(T value) const {
    VKD_UNROLL for (int offset = N / 2; offset > 0; offset /= 2) value += __shfl_xor_sync(0xffffffffu, value, offset, N);
    return value;
  }
};

template <int TM, typename acc_t>
struct TeamsPerBlock {
  static constexpr int value = kThreads / TeamSize<TM, acc_t>::value;
};

template <int TM, typename acc_t>
__device__ WarpTeam<TeamSize<TM, acc_t>::value> my_team() {
  return {int(threadIdx.x) % TeamSize<TM, acc_t>::value};
}

template <int TM, typename acc_t>
__device__ Twiddle<acc_t>* load_table(const Problem& pr, double scale, unsigned char* shared) {
  auto* table = reinterpret_cast<Twiddle<acc_t>*>(shared);
  for (int i = threadIdx.x; i < TM * (TM / 2 + 1); i += blockDim.x) twiddle_entry<TM>(pr.T, scale, i, table);
  __syncthreads();
  return table;
}

// Shared memory after the twiddle table (sized by shared_bytes).
template <int TM, typename acc_t>
__device__ acc_t* after_table(unsigned char* shared) {
  return reinterpret_cast<acc_t*>(shared + sizeof(Twiddle<acc_t>) * TM * (TM / 2 + 1));
}

// Deterministic block sum of `value` (kThreads values) into block_sums[0].
template <typename acc_t>
__device__ acc_t block_sum(acc_t value, acc_t* scratch) {
  scratch[threadIdx.x] = value;
  __syncthreads();
  for (int half = kThreads / 2; half > 0; half /= 2) {
    if (threadIdx.x < half) scratch[threadIdx.x] += scratch[threadIdx.x + half];
    __syncthreads();
  }
  return scratch[0];
}

// The lines of the grid's teams, in steps every lane of a warp takes together (a team
// past the end holds no line: n = 0, so it loads and stores nothing, and adds 0).
struct TeamLines {
  int64_t first, warp_first, step;
  template <int N>
  __device__ static TeamLines make(int64_t block, int64_t blocks, int teams) {
    const int64_t team = block * teams + threadIdx.x / N;
    return {team, team - (threadIdx.x % 32) / N, blocks * teams};
  }
};

template <int TM, typename scalar_t>
__global__ void __launch_bounds__(kThreads, kMinBlocks) pixel_forward_kernel(SpectrumForwardArgs a) {
  using acc_t = typename Element<scalar_t>::acc_t;
  constexpr int N = TeamSize<TM, acc_t>::value;
  extern __shared__ __align__(16) unsigned char shared[];
  const Problem& pr = a.problem;
  const Twiddle<acc_t>* table = load_table<TM, acc_t>(pr, a.scale, shared);
  const auto team = my_team<TM, acc_t>();
  const auto* xs = static_cast<const scalar_t*>(a.student);
  const auto* xt = static_cast<const scalar_t*>(a.teacher);
  auto* d = static_cast<scalar_t*>(a.d);
  const int64_t lines = pr.B * pr.S;
  const TeamLines mine = TeamLines::make<N>(blockIdx.x, gridDim.x, TeamsPerBlock<TM, acc_t>::value);
  acc_t total = acc_t(0);
  for (int64_t i = mine.first, w = mine.warp_first; w < lines; i += mine.step, w += mine.step) {
    const int64_t line = i < lines ? i : w;
    total += pixel_forward<TM, WarpTeam<N>, 1>(pr, team, table, xs, a.student_strides, xt, a.teacher_strides,
                                               line / pr.S, line % pr.S, i < lines ? 1 : 0, d, a.d_strides);
  }
  if (d) return;
  const acc_t sum = block_sum(total, after_table<TM, acc_t>(shared));
  if (threadIdx.x == 0) static_cast<acc_t*>(a.partials)[blockIdx.x] = acc_t(sum * a.partial_scale);
}

template <int TM, typename scalar_t>
__global__ void __launch_bounds__(kThreads, kMinBlocks) pixel_backward_kernel(SpectrumBackwardArgs a) {
  using acc_t = typename Element<scalar_t>::acc_t;
  constexpr int N = TeamSize<TM, acc_t>::value;
  extern __shared__ __align__(16) unsigned char shared[];
  const Problem& pr = a.problem;
  const Twiddle<acc_t>* table = load_table<TM, acc_t>(pr, a.scale, shared);
  const auto team = my_team<TM, acc_t>();
  const auto* xs = static_cast<const scalar_t*>(a.student);
  const auto* xt = static_cast<const scalar_t*>(a.teacher);
  const auto* grad = static_cast<const scalar_t*>(a.grad_d);
  auto* ds = static_cast<scalar_t*>(a.grad_student);
  auto* dt = static_cast<scalar_t*>(a.grad_teacher);
  const int64_t lines = pr.B * pr.S;
  const TeamLines mine = TeamLines::make<N>(blockIdx.x, gridDim.x, TeamsPerBlock<TM, acc_t>::value);
  for (int64_t i = mine.first, w = mine.warp_first; w < lines; i += mine.step, w += mine.step) {
    const int64_t line = i < lines ? i : w;
    tile_backward<TM, WarpTeam<N>, 1>(pr, team, table, xs, a.student_strides, xt, a.teacher_strides, static_cast<const acc_t*>(nullptr),
                                      grad, a.grad_strides, acc_t(a.grad_scale), ds, a.grad_student_strides, dt,
                                      a.grad_teacher_strides, line / pr.S, line % pr.S, i < lines ? 1 : 0);
  }
}

// Sums of A over the lines of group (b, g) into sums[0..K) (student) and sums[kMaxK..)
// (teacher): each team adds its lines into its own slots, then thread k adds the slots.
template <int TM, typename scalar_t, typename acc_t>
__device__ void group_sums(const Problem& pr, const Twiddle<acc_t>* table, const scalar_t* xs, Strides3 ss,
                           const scalar_t* xt, Strides3 st, int64_t b, int64_t g, acc_t* slots, acc_t* sums) {
  constexpr int N = TeamSize<TM, acc_t>::value;
  constexpr int kTeams = TeamsPerBlock<TM, acc_t>::value;
  const auto team = my_team<TM, acc_t>();
  const int index = threadIdx.x / N;
  acc_t* slot_s = slots + index * 2 * kMaxK;
  acc_t* slot_t = slot_s + kMaxK;
  for (int64_t k = team.rank(); k < pr.K(); k += N) slot_s[k] = slot_t[k] = acc_t(0);  // the member's bins
  const int warp_first = index - int(threadIdx.x % 32) / N;
  for (int64_t p = index, w = warp_first; w < pr.P; p += kTeams, w += kTeams)
    add_tile_spectra<TM, WarpTeam<N>, 1>(pr, team, table, xs, ss, xt, st, b, g * pr.P + (p < pr.P ? p : w),
                                         p < pr.P ? 1 : 0, slot_s, slot_t);
  __syncthreads();
  if (threadIdx.x < pr.K()) {
    acc_t sum_s = acc_t(0), sum_t = acc_t(0);
    for (int team_index = 0; team_index < kTeams; ++team_index) {
      sum_s += slots[team_index * 2 * kMaxK + threadIdx.x];
      sum_t += slots[team_index * 2 * kMaxK + kMaxK + threadIdx.x];
    }
    sums[threadIdx.x] = sum_s;
    sums[kMaxK + threadIdx.x] = sum_t;
  }
  __syncthreads();
}

template <int TM, typename scalar_t>
__global__ void __launch_bounds__(kThreads, kMinBlocks) group_forward_kernel(SpectrumForwardArgs a) {
  using acc_t = typename Element<scalar_t>::acc_t;
  extern __shared__ __align__(16) unsigned char shared[];
  const Problem& pr = a.problem;
  const Twiddle<acc_t>* table = load_table<TM, acc_t>(pr, a.scale, shared);
  acc_t* sums = after_table<TM, acc_t>(shared);  // [2 kMaxK], then the slots, or the block-sum scratch
  acc_t* slots = sums + 2 * kMaxK;
  auto* d = static_cast<scalar_t*>(a.d);
  acc_t total = acc_t(0);
  for (int64_t group = blockIdx.x; group < pr.groups(); group += gridDim.x) {
    const int64_t b = group / pr.G(), g = group % pr.G();
    group_sums<TM>(pr, table, static_cast<const scalar_t*>(a.student), a.student_strides,
                   static_cast<const scalar_t*>(a.teacher), a.teacher_strides, b, g, slots, sums);
    if (threadIdx.x == 0) total += group_loss<scalar_t>(pr, sums, sums + kMaxK, b, g, d, a.d_strides);
    __syncthreads();  // sums and slots are rewritten by the next group
  }
  if (d) return;
  const acc_t sum = block_sum(threadIdx.x == 0 ? total : acc_t(0), slots);
  if (threadIdx.x == 0) static_cast<acc_t*>(a.partials)[blockIdx.x] = acc_t(sum * a.partial_scale);
}

template <int TM, typename scalar_t>
__global__ void __launch_bounds__(kThreads, kMinBlocks) group_backward_kernel(SpectrumBackwardArgs a) {
  using acc_t = typename Element<scalar_t>::acc_t;
  constexpr int N = TeamSize<TM, acc_t>::value;
  constexpr int kTeams = TeamsPerBlock<TM, acc_t>::value;
  extern __shared__ __align__(16) unsigned char shared[];
  const Problem& pr = a.problem;
  const Twiddle<acc_t>* table = load_table<TM, acc_t>(pr, a.scale, shared);
  acc_t* sums = after_table<TM, acc_t>(shared);  // [2 kMaxK], dL/dA [kMaxK], the slots
  acc_t* grad_a = sums + 2 * kMaxK;
  acc_t* slots = grad_a + kMaxK;
  const auto team = my_team<TM, acc_t>();
  const auto* xs = static_cast<const scalar_t*>(a.student);
  const auto* xt = static_cast<const scalar_t*>(a.teacher);
  const auto* grad = static_cast<const scalar_t*>(a.grad_d);
  auto* ds = static_cast<scalar_t*>(a.grad_student);
  auto* dt = static_cast<scalar_t*>(a.grad_teacher);
  const acc_t grad_scale = acc_t(a.grad_scale);
  const int index = threadIdx.x / N;
  const int warp_first = index - int(threadIdx.x % 32) / N;
  for (int64_t group = blockIdx.x; group < pr.groups(); group += gridDim.x) {
    const int64_t b = group / pr.G(), g = group % pr.G();
    group_sums<TM>(pr, table, xs, a.student_strides, xt, a.teacher_strides, b, g, slots, sums);
    if (threadIdx.x == 0) group_grad<scalar_t>(pr, sums, sums + kMaxK, grad, a.grad_strides, b, g, grad_a);
    __syncthreads();
    for (int64_t p = index, w = warp_first; w < pr.P; p += kTeams, w += kTeams)
      tile_backward<TM, WarpTeam<N>, 1>(pr, team, table, xs, a.student_strides, xt, a.teacher_strides, grad_a, grad,
                                        a.grad_strides, grad_scale, ds, a.grad_student_strides, dt,
                                        a.grad_teacher_strides, b, g * pr.P + (p < pr.P ? p : w), p < pr.P ? 1 : 0);
    __syncthreads();  // grad_a and the slots are rewritten by the next group
  }
}

// Blocks of a launch: a team per line (pixel) or a block per group (mean), grid-stride past kMaxBlocks.
template <int TM, typename acc_t>
int64_t blocks_for(const Problem& pr) {
  const int64_t wanted = pr.P == 1 ? (pr.B * pr.S + TeamsPerBlock<TM, acc_t>::value - 1) / TeamsPerBlock<TM, acc_t>::value
                                   : pr.groups();
  return wanted < kMaxBlocks ? (wanted > 0 ? wanted : 1) : kMaxBlocks;
}

// Dynamic shared memory: the twiddle table, then the block-sum scratch (pixel) or the
// group sums, dL/dA and one slot pair per team (mean).
template <int TM, typename acc_t>
size_t shared_bytes(const Problem& pr) {
  const size_t table = sizeof(Twiddle<acc_t>) * TM * (TM / 2 + 1);
  const size_t rest = pr.P == 1 ? kThreads : 3 * kMaxK + 2 * kMaxK * TeamsPerBlock<TM, acc_t>::value;
  return table + rest * sizeof(acc_t);
}

template <typename Body>
void with_size_class(int64_t T, Body&& body) {
  switch (size_class(T)) {
    case 8: return body(std::integral_constant<int, 8>());
    case 16: return body(std::integral_constant<int, 16>());
    case 32: return body(std::integral_constant<int, 32>());
    default: return body(std::integral_constant<int, 64>());
  }
}

}  // namespace

template <>
void spectrum_forward<Device::CUDA>(const SpectrumForwardArgs& args) {
  cuda::on_device(args.stream, "vkd spectrum forward", [&](cudaStream_t stream) {
    VKD_DISPATCH_DTYPE(args.dtype, [&] {
      using acc_t = typename Element<scalar_t>::acc_t;
      with_size_class(args.problem.T, [&](auto tm) {
        constexpr int TM = decltype(tm)::value;
        const int64_t grid = blocks_for<TM, acc_t>(args.problem);
        if (!args.d && grid != args.num_partials)
          throw std::invalid_argument("vkd spectrum forward: num_partials must be spectrum_num_partials()");
        auto kernel = args.problem.P == 1 ? pixel_forward_kernel<TM, scalar_t> : group_forward_kernel<TM, scalar_t>;
        kernel<<<unsigned(grid), kThreads, shared_bytes<TM, acc_t>(args.problem), stream>>>(args);
      });
    });
  });
}

template <>
void spectrum_backward<Device::CUDA>(const SpectrumBackwardArgs& args) {
  cuda::on_device(args.stream, "vkd spectrum backward", [&](cudaStream_t stream) {
    VKD_DISPATCH_DTYPE(args.dtype, [&] {
      using acc_t = typename Element<scalar_t>::acc_t;
      with_size_class(args.problem.T, [&](auto tm) {
        constexpr int TM = decltype(tm)::value;
        auto kernel = args.problem.P == 1 ? pixel_backward_kernel<TM, scalar_t> : group_backward_kernel<TM, scalar_t>;
        kernel<<<unsigned(blocks_for<TM, acc_t>(args.problem)), kThreads, shared_bytes<TM, acc_t>(args.problem),
                 stream>>>(args);
      });
    });
  });
}

template <>
int64_t spectrum_num_partials<Device::CUDA>(const Problem& pr, DType dtype) {
  int64_t count = 0;
  VKD_DISPATCH_DTYPE(dtype, [&] {
    using acc_t = typename Element<scalar_t>::acc_t;
    with_size_class(pr.T, [&](auto tm) { count = blocks_for<decltype(tm)::value, acc_t>(pr); });
  });
  return count;
}

}  // namespace vkd
