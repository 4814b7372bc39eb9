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
  return {N, C, P, q};
}

vkd::WeightGramArgs weight_args(int dtype, uintptr_t tensors, uintptr_t groups, int64_t num_tensors,
                                int64_t num_groups, int64_t splits, int64_t flat_size, uintptr_t partials,
                                uintptr_t M, vkd::Stream stream) {
  if (splits < 1 || num_groups < 1) throw std::invalid_argument("vkd: weight gram needs splits, groups >= 1");
  return vkd::WeightGramArgs{{ptr<const int64_t>(tensors), ptr<const int64_t>(groups), num_tensors, num_groups,
                              splits, flat_size},
                             vkd::DType(dtype), ptr<void>(partials), ptr<const void>(M), stream};
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
            vkd::attention_map_backward<D>(a);
          });
        },
        py::arg("device"), py::arg("N"), py::arg("C"), py::arg("P"), py::arg("q"), py::arg("dtype"), py::arg("x"),
        py::arg("x_strides"), py::arg("grad_map"), py::arg("grad_map_strides"), py::arg("grad_x"),
        py::arg("grad_x_strides"), py::arg("stream"));

  // GKD head weighted GroupNorm + ReLU (kernels.h HeadNormArgs); pointers 0 for null.
  m.def("head_norm",
        [](const std::string& device, bool backward, int64_t N, int64_t J, int64_t C, int64_t G, double M,
           double eps, int dtype, uintptr_t Z, uintptr_t w, uintptr_t gamma, uintptr_t beta, uintptr_t H,
           uintptr_t stats, uintptr_t dH, uintptr_t dZ, uintptr_t dgamma, uintptr_t dbeta, uintptr_t stream) {
          if (N < 1 || J < 1 || C < 1 || G < 1 || C % G != 0 || !(M > 0) || !(eps > 0))
            throw std::invalid_argument("vkd: head_norm needs positive sizes, G dividing C, M > 0, eps > 0");
          const Target t = target(device);
          vkd::HeadNormArgs a{{N, J, C, G, M, eps}, vkd::DType(dtype), ptr<const void>(Z), ptr<const void>(w),
                              ptr<const void>(gamma), ptr<const void>(beta), ptr<void>(H), ptr<void>(stats),
                              ptr<const void>(dH), ptr<void>(dZ), ptr<void>(dgamma), ptr<void>(dbeta), t.stream(stream)};
          dispatch(t, [&](auto d) {
            constexpr vkd::Device D = decltype(d)::value;
            backward ? vkd::head_norm_backward<D>(a) : vkd::head_norm_forward<D>(a);
          });
        },
        py::arg("device"), py::arg("backward"), py::arg("N"), py::arg("J"), py::arg("C"), py::arg("G"),
        py::arg("M"), py::arg("eps"), py::arg("dtype"), py::arg("Z"), py::arg("w"), py::arg("gamma"),
        py::arg("beta"), py::arg("H"), py::arg("stats"), py::arg("dH"), py::arg("dZ"), py::arg("dgamma"),
        py::arg("dbeta"), py::arg("stream"));
  // Weight-spectrum distance (kernels.h WeightGramArgs): forward and backward take the
  // same tables; `buffer` is the partials (forward, written) or M_flat (backward, read).
  // Tables, partials and M live on `device`.
  const auto bind_weight_op = [&m](const char* name, bool forward) {
    m.def(name,
          [forward](const std::string& device, int dtype, uintptr_t tensors, uintptr_t groups, int64_t num_tensors,
                    int64_t num_groups, int64_t splits, int64_t flat_size, uintptr_t buffer, uintptr_t stream) {
            const Target t = target(device);
            const auto a = weight_args(dtype, tensors, groups, num_tensors, num_groups, splits, flat_size,
                                       forward ? buffer : 0, forward ? 0 : buffer, t.stream(stream));
            dispatch(t, [&](auto d) {
              constexpr vkd::Device D = decltype(d)::value;
              forward ? vkd::weight_gram<D>(a) : vkd::weight_gram_backward<D>(a);
            });
          },
          py::arg("device"), py::arg("dtype"), py::arg("tensors"), py::arg("groups"), py::arg("num_tensors"),
          py::arg("num_groups"), py::arg("splits"), py::arg("flat_size"), py::arg("buffer"), py::arg("stream"));
  };
  bind_weight_op("weight_gram", true);
  bind_weight_op("weight_gram_backward", false);

  // attention_apply row passes (kernels.h ApplyArgs): rows (N, C, T, S) with 4 strides each;
  // affine=false reduces x (times y) into rows, affine=true writes out = x a + b. Pointers 0 for null.
  m.def("apply_rows",
        [](const std::string& device, bool affine, int64_t N, int64_t C, int64_t T, int64_t S, int dtype,
           uintptr_t x, std::array<int64_t, 4> xs, uintptr_t y, std::array<int64_t, 4> ys, uintptr_t rows,
           uintptr_t a, uintptr_t b, uintptr_t out, std::array<int64_t, 4> os, uintptr_t stream) {
          if (N < 1 || C < 1 || T < 1 || S < 1) throw std::invalid_argument("vkd: attention_apply sizes must be >= 1");
          if (affine ? (a == 0 || out == 0) : rows == 0)
            throw std::invalid_argument("vkd: apply_rows is missing an output or the row factors");
          const Target t = target(device);
          vkd::ApplyArgs args{{N, C, T, S}, vkd::DType(dtype), ptr<const void>(x), {xs[0], xs[1], xs[2], xs[3]},
                              ptr<const void>(y), {ys[0], ys[1], ys[2], ys[3]}, ptr<void>(rows), ptr<const void>(a),
                              ptr<const void>(b), ptr<void>(out), {os[0], os[1], os[2], os[3]}, t.stream(stream)};
          dispatch(t, [&](auto d) {
            constexpr vkd::Device D = decltype(d)::value;
            affine ? vkd::apply_affine<D>(args) : vkd::apply_reduce<D>(args);
          });
        },
        py::arg("device"), py::arg("affine"), py::arg("N"), py::arg("C"), py::arg("T"), py::arg("S"),
        py::arg("dtype"), py::arg("x"), py::arg("x_strides"), py::arg("y"), py::arg("y_strides"), py::arg("rows"),
        py::arg("a"), py::arg("b"), py::arg("out"), py::arg("out_strides"), py::arg("stream"));
}
