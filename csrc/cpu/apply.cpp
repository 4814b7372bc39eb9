// attention_apply passes on the CPU: OpenMP over the N C T rows (reduce, affine; each row's
// loop over S vectorized) and over the groups (finish); math in common/apply.h. Deterministic: each row sums in a fixed order.
#include "../kernels.h"

namespace vkd {
using namespace apply;

namespace {

template <typename scalar_t>
void reduce(const ApplyArgs& a) {
  using acc_t = typename Element<scalar_t>::acc_t;
  const RowProblem& pr = a.problem;
  const auto* x = static_cast<const scalar_t*>(a.x);
  const auto* y = static_cast<const scalar_t*>(a.y);
  auto* rows = static_cast<acc_t*>(a.rows);
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < pr.rows(); ++i)
    rows[i] = reduce_row<1>(x + row_offset(pr, a.x_strides, i), a.x_strides.s,
                            y ? y + row_offset(pr, a.y_strides, i) : nullptr, a.y_strides.s, pr.S, 0);
}

template <typename scalar_t>
void finish(const ApplyArgs& a) {
  using acc_t = typename Element<scalar_t>::acc_t;
  const RowProblem& pr = a.problem;
  auto* sums = static_cast<acc_t*>(a.sums);
  // a parallel region costs more than the whole pass below ~2^18 rows (and far more on a
  // loaded machine, where a region waits for a descheduled thread)
#pragma omp parallel for schedule(static) if (pr.rows() > (int64_t(1) << 18) && pr.B > 1)
  for (int64_t g = 0; g < pr.B; ++g)
    group_sums(static_cast<const acc_t*>(a.rows), static_cast<const scalar_t*>(a.lam), g * pr.group_rows(),
               (g + 1) * pr.group_rows(), 0, 1, sums[2 * g], sums[2 * g + 1]);
}

template <typename scalar_t>
void affine(const ApplyArgs& args) {
  using acc_t = typename Element<scalar_t>::acc_t;
  const RowProblem& pr = args.problem;
  const auto* x = static_cast<const scalar_t*>(args.x);
  const auto* lam = static_cast<const scalar_t*>(args.lam);
  const auto* sums = static_cast<const acc_t*>(args.sums);
  const auto* bsums = static_cast<const acc_t*>(args.bsums);
  auto* out = static_cast<scalar_t*>(args.out);
  auto* dlam = static_cast<scalar_t*>(args.dlam);
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < pr.rows(); ++i) {
    acc_t a, b, dl;
    row_factors(pr, sums, bsums, lam, static_cast<const acc_t*>(args.m), static_cast<const acc_t*>(args.q),
                acc_t(args.scale), i, a, b, dl);
    if (bsums) Element<scalar_t>::store(dlam + i, dl);
    if (out)
      affine_row<1>(x + row_offset(pr, args.x_strides, i), args.x_strides.s, a, b,
                    out + row_offset(pr, args.out_strides, i), args.out_strides.s, pr.S, 0);
  }
}

}  // namespace

template <>
void apply_reduce<Device::CPU>(const ApplyArgs& args) { VKD_DISPATCH_DTYPE(args.dtype, [&] { reduce<scalar_t>(args); }); }

template <>
void apply_finish<Device::CPU>(const ApplyArgs& args) { VKD_DISPATCH_DTYPE(args.dtype, [&] { finish<scalar_t>(args); }); }

template <>
void apply_affine<Device::CPU>(const ApplyArgs& args) { VKD_DISPATCH_DTYPE(args.dtype, [&] { affine<scalar_t>(args); }); }

}  // namespace vkd
