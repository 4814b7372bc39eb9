// pybind11 module vkd_kernels._C: torch-free entry points taking the device ("cpu",
// "cuda" or "cuda:N"), data pointers (ints), shapes, strides and a stream handle of that
// device. vkd_kernels/_ext.py builds the arguments; one dispatch template routes every
// entry point to its CPU or CUDA launcher.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>
#include <array>
#include <type_traits>
#include "kernels.h"
#ifdef _OPENMP
#include <omp.h>
#endif

namespace py = pybind11;
using vkd::spectrum::Strides3;

namespace {

Strides3 strides3(const std::array<int64_t, 3>& s) { return {s[0], s[1], s[2]}; }

template <typename T>
T* ptr(uintptr_t address) { return reinterpret_cast<T*>(address); }

vkd::spectrum::Problem spectrum_problem(py::dict p) {
  vkd::spectrum::Problem pr;
  pr.B = p["B"].cast<int64_t>();
  pr.T = p["T"].cast<int64_t>();
  pr.S = p["S"].cast<int64_t>();
  pr.P = p["P"].cast<int64_t>();
  pr.mode = p["mode"].cast<int>();
  pr.eps = p["eps"].cast<double>();
  pr.weights = ptr<const void>(p["weights"].cast<uintptr_t>());
  if (pr.T < 2 || pr.T > vkd::spectrum::kMaxT)
    throw std::invalid_argument("vkd: T must be in [2, " + std::to_string(vkd::spectrum::kMaxT) + "]");
  if (pr.P < 1 || pr.S % pr.P != 0) throw std::invalid_argument("vkd: P must divide S");
  return pr;
}

// The device a call runs on: "cpu", "cuda" (the current CUDA device) or "cuda:N".
struct Target {
  bool cuda;
  int index;  // CUDA device index, -1 for the current one
  vkd::Stream stream(uintptr_t handle) const { return {handle, index}; }
};

Target target(const std::string& device) {
  if (device == "cpu") return {false, -1};
  if (device.rfind("cuda", 0) == 0) {
#ifndef VKD_WITH_CUDA
    throw std::invalid_argument("vkd: this build of vkd_kernels._C has no CUDA kernels");
#endif
    if (device.size() == 4) return {true, -1};
    const std::string index = device.substr(5);
    if (device[4] == ':' && !index.empty() && index.size() < 6 &&
        index.find_first_not_of("0123456789") == std::string::npos)
      return {true, std::stoi(index)};
  }
  throw std::invalid_argument("vkd: device must be 'cpu', 'cuda' or 'cuda:N', got '" + device + "'");
}

using CPU = std::integral_constant<vkd::Device, vkd::Device::CPU>;
using CUDA = std::integral_constant<vkd::Device, vkd::Device::CUDA>;

// Runs launch(device tag) (CPU{} or CUDA{}, whose ::value picks the launcher
// specialisation) for `t` with the GIL released. The CUDA launchers make t.index
// current around the launch (csrc/cuda/launch.h).
template <typename Launch>
auto dispatch(const Target& t, Launch&& launch) {
  py::gil_scoped_release release;
#ifdef VKD_WITH_CUDA
  if (t.cuda) return launch(CUDA{});
#endif
  return launch(CPU{});
}

vkd::attention::MapProblem attention_problem(int64_t N, int64_t C, int64_t P, double q) {
  if (N < 1 || C < 1 || P < 1) throw std::invalid_argument("vkd: attention map sizes must be >= 1");
  if (!(q > 0) || !std::isfinite(q)) throw std::invalid_argument("vkd: the exponent p must be > 0 and finite");
  return {N, C, P, q, 1};
}

// The attention-transfer finish's geometry (common/attention.h TransferGeometry) from
// vkd_kernels/attention/layout.py Geometry.launch_args, whose index_limit the caller checked
// first: sizes in [1, 2^31), (in + 1)(out + 1) < 2^31 per axis of a pooled side.
vkd::attention::TransferGeometry transfer_geometry(int64_t N, std::array<int64_t, 20> v, bool l2, bool none) {
  for (int64_t x : v)
    if (x < 1 || x > INT32_MAX) throw std::invalid_argument("vkd: attention transfer sizes must be in [1, 2^31)");
  const auto i32 = [&v](int i) { return int32_t(v[i]); };
  vkd::attention::TransferGeometry g{N, {{i32(4), i32(5), i32(6)}, {i32(13), i32(14), i32(15)}, i32(0), i32(2)},
                                     {{i32(7), i32(8), i32(9)}, {i32(16), i32(17), i32(18)}, i32(1), i32(3)},
                                     {i32(10), i32(11), i32(12)}, i32(19), 0.0, l2, none};
  if (int64_t(g.out[0]) * g.out[1] * g.out[2] > INT32_MAX || g.Q() % g.frames != 0)
    throw std::invalid_argument("vkd: attention transfer frames must divide a pooled map of < 2^31 elements");
  for (const auto* side : {&g.s, &g.t})
    for (int x = 0; side->pooled() && x < 3; ++x)
      if ((int64_t(side->in[x]) + 1) * (g.out[x] + 1) > INT32_MAX)
        throw std::invalid_argument("vkd: attention transfer pooling needs (in + 1)(out + 1) < 2^31 per axis");
  return g;
}

// The weight-spectrum call of `args` (keys as in vkd_kernels/weights/native.py; pointers
// as ints, 0 for null).
vkd::WeightArgs weight_args(int dtype, py::dict args, vkd::Stream stream) {
  const auto value = [&args](const char* key) { return args[key].cast<int64_t>(); };
  const auto address = [&args](const char* key) { return ptr<void>(args[key].cast<uintptr_t>()); };
  vkd::weights::Tables tables{ptr<const int64_t>(args["items"].cast<uintptr_t>()), value("num_items"),
                              ptr<const int64_t>(args["groups"].cast<uintptr_t>()), value("num_groups"),
                              ptr<const int64_t>(args["pairs"].cast<uintptr_t>()), value("num_pairs"),
                              ptr<const int64_t>(args["dists"].cast<uintptr_t>()), value("Pmax")};
  if (tables.num_groups < 1 || tables.num_pairs < 1 || tables.num_items < 0 || tables.Pmax < 2 ||
      tables.Pmax > vkd::weights::kMaxP)
    throw std::invalid_argument("vkd: a weight-spectrum call needs groups, pairs and 2 <= Pmax <= 512");
  const int parts = int(value("parts")), distance = int(value("distance"));
  if (parts < 1 || parts > 2 || distance < 0 || distance > 3)
    throw std::invalid_argument("vkd: weight-spectrum parts must be 1 or 2 and distance 0..3");
  return vkd::WeightArgs{tables, vkd::DType(dtype), address("basis"), address("partials"), address("p"),
                         address("S"), address("d"), address("grad"), address("dist_grad"), address("M"),
                         address("grad_w"), distance, int(value("drop_dc")), parts, args["eps"].cast<double>(),
                         args["grad_scale"].cast<double>(), stream};
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "vkd-kernels fused CPU/CUDA kernels (raw pointers, no torch dependency)";

  m.def("build_info", [] {
    py::dict info;
#ifdef VKD_WITH_CUDA
    info["cuda"] = true;
    info["cuda_architectures"] = VKD_CUDA_ARCHITECTURES;
#else
    info["cuda"] = false;
#endif
#ifdef _OPENMP
    info["openmp_threads"] = omp_get_max_threads();
#else
    info["openmp_threads"] = 1;
#endif
    return info;
  });

  // Why the CUDA kernels cannot run here ("" when they can): asks the CUDA runtime
  // (driver version against the runtime linked in, device count).
  m.def("cuda_unavailable", []() -> std::string {
#ifdef VKD_WITH_CUDA
    return vkd::cuda_unavailable();
#else
    return "this build of vkd_kernels._C has no CUDA kernels";
#endif
  });

  m.def("spectrum_num_partials", [](const std::string& device, py::dict problem, int dtype) {
    const vkd::spectrum::Problem pr = spectrum_problem(problem);
    return dispatch(target(device), [&](auto d) {
      return vkd::spectrum_num_partials<decltype(d)::value>(pr, vkd::DType(dtype));
    });
  }, py::arg("device"), py::arg("problem"), py::arg("dtype"));

  m.def("spectrum_forward",
        [](const std::string& device, py::dict problem, int dtype, double scale, uintptr_t student,
           std::array<int64_t, 3> student_strides, uintptr_t teacher,
           std::array<int64_t, 3> teacher_strides, uintptr_t d, std::array<int64_t, 3> d_strides,
           uintptr_t partials, int64_t num_partials, double partial_scale, uintptr_t stream) {
          const Target t = target(device);
          vkd::SpectrumForwardArgs a{spectrum_problem(problem), vkd::DType(dtype), scale,
                                     ptr<const void>(student), strides3(student_strides),
                                     ptr<const void>(teacher), strides3(teacher_strides),
                                     ptr<void>(d), strides3(d_strides),
                                     ptr<void>(partials), num_partials, partial_scale, t.stream(stream)};
          dispatch(t, [&](auto d) {
            constexpr vkd::Device D = decltype(d)::value;
            vkd::spectrum_forward<D>(a);
          });
        },
        py::arg("device"), py::arg("problem"), py::arg("dtype"), py::arg("scale"),
        py::arg("student"), py::arg("student_strides"), py::arg("teacher"),
        py::arg("teacher_strides"), py::arg("d"), py::arg("d_strides"), py::arg("partials"),
        py::arg("num_partials"), py::arg("partial_scale"), py::arg("stream"));

  m.def("spectrum_backward",
        [](const std::string& device, py::dict problem, int dtype, double scale, uintptr_t student,
           std::array<int64_t, 3> student_strides, uintptr_t teacher,
           std::array<int64_t, 3> teacher_strides, uintptr_t grad_d,
           std::array<int64_t, 3> grad_strides, double grad_scale, uintptr_t grad_student,
           std::array<int64_t, 3> grad_student_strides, uintptr_t grad_teacher,
           std::array<int64_t, 3> grad_teacher_strides, uintptr_t stream) {
          const Target t = target(device);
          vkd::SpectrumBackwardArgs a{spectrum_problem(problem), vkd::DType(dtype), scale,
                                      ptr<const void>(student), strides3(student_strides),
                                      ptr<const void>(teacher), strides3(teacher_strides),
                                      ptr<const void>(grad_d), strides3(grad_strides), grad_scale,
                                      ptr<void>(grad_student), strides3(grad_student_strides),
                                      ptr<void>(grad_teacher), strides3(grad_teacher_strides),
                                      t.stream(stream)};
          dispatch(t, [&](auto d) {
            constexpr vkd::Device D = decltype(d)::value;
            vkd::spectrum_backward<D>(a);
          });
        },
        py::arg("device"), py::arg("problem"), py::arg("dtype"), py::arg("scale"),
        py::arg("student"), py::arg("student_strides"), py::arg("teacher"),
        py::arg("teacher_strides"), py::arg("grad_d"), py::arg("grad_strides"),
        py::arg("grad_scale"), py::arg("grad_student"), py::arg("grad_student_strides"),
        py::arg("grad_teacher"), py::arg("grad_teacher_strides"), py::arg("stream"));

  // Attention-transfer raw map: x (N, C, P) with strides (n, c, p), map (N, P) with strides (n, p).
  m.def("attention_map_forward",
        [](const std::string& device, int64_t N, int64_t C, int64_t P, double q, int dtype, uintptr_t x,
           std::array<int64_t, 3> x_strides, uintptr_t map, std::array<int64_t, 2> map_strides, uintptr_t stream) {
          const Target t = target(device);
          vkd::AttentionMapArgs a{attention_problem(N, C, P, q), vkd::DType(dtype), ptr<const void>(x),
                                  {x_strides[0], x_strides[1], x_strides[2]}, ptr<void>(map),
                                  {map_strides[0], map_strides[1]}, nullptr, {0, 0, 0}, t.stream(stream)};
          dispatch(t, [&](auto d) {
            constexpr vkd::Device D = decltype(d)::value;
            a.problem.K = vkd::attention_map_splits<D>(N, C, P);
            vkd::attention_map_forward<D>(a);
          });
        },
        py::arg("device"), py::arg("N"), py::arg("C"), py::arg("P"), py::arg("q"), py::arg("dtype"), py::arg("x"),
        py::arg("x_strides"), py::arg("map"), py::arg("map_strides"), py::arg("stream"));

  m.def("attention_map_backward",
        [](const std::string& device, int64_t N, int64_t C, int64_t P, double q, int dtype, uintptr_t x,
           std::array<int64_t, 3> x_strides, uintptr_t grad_map, std::array<int64_t, 2> grad_map_strides,
           uintptr_t grad_x, std::array<int64_t, 3> grad_x_strides, uintptr_t stream) {
          const Target t = target(device);
          vkd::AttentionMapArgs a{attention_problem(N, C, P, q), vkd::DType(dtype), ptr<const void>(x),
                                  {x_strides[0], x_strides[1], x_strides[2]}, ptr<void>(grad_map),
                                  {grad_map_strides[0], grad_map_strides[1]}, ptr<void>(grad_x),
                                  {grad_x_strides[0], grad_x_strides[1], grad_x_strides[2]}, t.stream(stream)};
          dispatch(t, [&](auto d) {
            constexpr vkd::Device D = decltype(d)::value;
            a.problem.K = vkd::attention_map_splits<D>(N, C, P);
            vkd::attention_map_backward<D>(a);
          });
        },
        py::arg("device"), py::arg("N"), py::arg("C"), py::arg("P"), py::arg("q"), py::arg("dtype"), py::arg("x"),
        py::arg("x_strides"), py::arg("grad_map"), py::arg("grad_map_strides"), py::arg("grad_x"),
        py::arg("grad_x_strides"), py::arg("stream"));

  m.def("attention_map_splits",
        [](const std::string& device, int64_t N, int64_t C, int64_t P) {
          const Target t = target(device);
          return dispatch(t, [&](auto d) { return vkd::attention_map_splits<decltype(d)::value>(N, C, P); });
        },
        py::arg("device"), py::arg("N"), py::arg("C"), py::arg("P"));

  // Attention-transfer finish (kernels.h TransferArgs); `sizes` as layout.Geometry.launch_args
  // without its scale; pointers 0 for null.
  m.def("attention_transfer",
        [](const std::string& device, bool backward, int64_t N, std::array<int64_t, 20> sizes, double scale, bool l2,
           bool none, bool fp64, uintptr_t parts_s, uintptr_t parts_t, uintptr_t out, uintptr_t grad, int64_t g_sn,
           int64_t g_so, uintptr_t da_s, uintptr_t da_t, uintptr_t scratch_s, uintptr_t scratch_t, uintptr_t stream) {
          const Target t = target(device);
          vkd::TransferArgs a{transfer_geometry(N, sizes, l2, none), fp64, ptr<void>(parts_s), ptr<void>(parts_t),
                              ptr<void>(out), ptr<const void>(grad), g_sn, g_so, ptr<void>(da_s), ptr<void>(da_t),
                              ptr<void>(scratch_s), ptr<void>(scratch_t), t.stream(stream)};
          a.geometry.scale = scale;
          dispatch(t, [&](auto d) {
            constexpr vkd::Device D = decltype(d)::value;
            backward ? vkd::attention_transfer_backward<D>(a) : vkd::attention_transfer_forward<D>(a);
          });
        },
        py::arg("device"), py::arg("backward"), py::arg("N"), py::arg("sizes"), py::arg("scale"), py::arg("l2"),
        py::arg("none"), py::arg("fp64"), py::arg("parts_s"), py::arg("parts_t"), py::arg("out"), py::arg("grad"),
        py::arg("g_sn"), py::arg("g_so"), py::arg("da_s"), py::arg("da_t"), py::arg("scratch_s"),
        py::arg("scratch_t"), py::arg("stream"));

  // GKD head tail kernels (kernels.h HeadNormArgs); pass 0 forward norm, 1 output, 2 backward;
  // pointers 0 for null.
  m.def("head_tail",
        [](const std::string& device, int pass, int64_t N, int64_t J, int64_t C, int64_t G, int64_t TP, double M,
           double eps, int dtype, uintptr_t Z, uintptr_t w, uintptr_t bias, uintptr_t gamma, uintptr_t beta,
           uintptr_t H, uintptr_t stats, uintptr_t out, uintptr_t lin_bias, uintptr_t lam, uintptr_t dlam,
           std::array<int64_t, 3> dlam_strides, uintptr_t A, uintptr_t dout, uintptr_t dZ, uintptr_t dgamma,
           uintptr_t dbeta, uintptr_t dbias, uintptr_t stream) {
          if (N < 1 || J < 1 || C < 1 || G < 1 || TP < 1 || C % G != 0 || !(M > 0) || !(eps > 0) || pass < 0 ||
              pass > 2)
            throw std::invalid_argument("vkd: head_tail needs positive sizes, G dividing C, M > 0, eps > 0, pass 0-2");
          if ((J + 1) * C > INT32_MAX || TP * C > INT32_MAX)  // common/head.h: 32-bit indices within a group
            throw std::invalid_argument("vkd: head_tail needs (J + 1) C and T' C < 2^31");
          const Target t = target(device);
          vkd::HeadNormArgs a{{N, J, C, G, M, eps, TP}, vkd::DType(dtype), ptr<const void>(Z), ptr<const void>(w),
                              ptr<const void>(bias), ptr<const void>(gamma), ptr<const void>(beta), ptr<void>(H),
                              ptr<void>(stats), ptr<const void>(out), ptr<const void>(lin_bias), ptr<void>(lam),
                              ptr<const void>(dlam), {dlam_strides[0], dlam_strides[1], dlam_strides[2]},
                              ptr<const void>(A), ptr<void>(dout), ptr<void>(dZ), ptr<void>(dgamma), ptr<void>(dbeta),
                              ptr<void>(dbias), t.stream(stream)};
          dispatch(t, [&](auto d) {
            constexpr vkd::Device D = decltype(d)::value;
            pass == 0 ? vkd::head_norm_forward<D>(a) : pass == 1 ? vkd::head_output<D>(a) : vkd::head_norm_backward<D>(a);
          });
        },
        py::arg("device"), py::arg("pass_"), py::arg("N"), py::arg("J"), py::arg("C"), py::arg("G"), py::arg("TP"),
        py::arg("M"), py::arg("eps"), py::arg("dtype"), py::arg("Z"), py::arg("w"), py::arg("bias"),
        py::arg("gamma"), py::arg("beta"), py::arg("H"), py::arg("stats"), py::arg("out"), py::arg("lin_bias"),
        py::arg("lam"), py::arg("dlam"), py::arg("dlam_strides"), py::arg("A"), py::arg("dout"), py::arg("dZ"),
        py::arg("dgamma"), py::arg("dbeta"), py::arg("dbias"), py::arg("stream"));
  // Weight-spectrum distance (kernels.h WeightArgs): the four passes take one dict of
  // tables, buffers and options (vkd_kernels/weights/native.py); everything on `device`.
  const auto bind_weight_op = [&m](const char* name, auto launcher) {
    m.def(name,
          [launcher](const std::string& device, int dtype, py::dict args, uintptr_t stream) {
            const Target t = target(device);
            const auto a = weight_args(dtype, args, t.stream(stream));
            dispatch(t, [&](auto d) { launcher(d, a); });
          },
          py::arg("device"), py::arg("dtype"), py::arg("args"), py::arg("stream"));
  };
  bind_weight_op("weight_gram", [](auto d, const vkd::WeightArgs& a) { vkd::weight_gram<decltype(d)::value>(a); });
  bind_weight_op("weight_finish",
                 [](auto d, const vkd::WeightArgs& a) { vkd::weight_finish<decltype(d)::value>(a); });
  bind_weight_op("weight_finish_backward",
                 [](auto d, const vkd::WeightArgs& a) { vkd::weight_finish_backward<decltype(d)::value>(a); });
  bind_weight_op("weight_gram_backward",
                 [](auto d, const vkd::WeightArgs& a) { vkd::weight_gram_backward<decltype(d)::value>(a); });

  // attention_apply passes (kernels.h ApplyArgs): rows (N, C, T, S) with 4 strides each;
  // pass 0 reduces x (times y) into rows, 1 sums rows per group into sums (B, 2), 2 writes
  // out (and dlam when bsums is given). Pointers 0 for null.
  m.def("apply_rows",
        [](const std::string& device, int pass, int64_t N, int64_t C, int64_t T, int64_t S, int64_t B, int dtype,
           uintptr_t x, std::array<int64_t, 4> xs, uintptr_t y, std::array<int64_t, 4> ys, uintptr_t rows,
           uintptr_t lam, uintptr_t sums, uintptr_t bsums, uintptr_t m, uintptr_t q, uintptr_t dlam, uintptr_t out,
           std::array<int64_t, 4> os, double scale, uintptr_t stream) {
          if (N < 1 || C < 1 || T < 1 || S < 1 || B < 1 || (N * C * T) % B != 0)
            throw std::invalid_argument("vkd: attention_apply sizes must be >= 1 and B must divide the rows");
          const bool missing = pass == 0 ? rows == 0 : pass == 1 ? (rows == 0 || lam == 0 || sums == 0)
                             : pass == 2 ? (lam == 0 || sums == 0 || (bsums == 0 && out == 0) ||
                                            (bsums != 0 && (m == 0 || q == 0 || dlam == 0)))
                                         : true;
          if (missing) throw std::invalid_argument("vkd: apply_rows is missing a buffer of its pass (or a bad pass)");
          const Target t = target(device);
          vkd::ApplyArgs args{{N, C, T, S, B}, vkd::DType(dtype), ptr<const void>(x), {xs[0], xs[1], xs[2], xs[3]},
                              ptr<const void>(y), {ys[0], ys[1], ys[2], ys[3]}, ptr<void>(rows), ptr<const void>(lam),
                              ptr<void>(sums), ptr<const void>(bsums), ptr<const void>(m), ptr<const void>(q),
                              ptr<void>(dlam), ptr<void>(out), {os[0], os[1], os[2], os[3]}, scale, t.stream(stream)};
          dispatch(t, [&](auto d) {
            constexpr vkd::Device D = decltype(d)::value;
            pass == 0 ? vkd::apply_reduce<D>(args) : pass == 1 ? vkd::apply_finish<D>(args) : vkd::apply_affine<D>(args);
          });
        },
        py::arg("device"), py::arg("pass_"), py::arg("N"), py::arg("C"), py::arg("T"), py::arg("S"), py::arg("B"),
        py::arg("dtype"), py::arg("x"), py::arg("x_strides"), py::arg("y"), py::arg("y_strides"), py::arg("rows"),
        py::arg("lam"), py::arg("sums"), py::arg("bsums"), py::arg("m"), py::arg("q"), py::arg("dlam"),
        py::arg("out"), py::arg("out_strides"), py::arg("scale"), py::arg("stream"));
}
