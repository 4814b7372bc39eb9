// pybind11 module vkd_kernels._C: torch-free entry points taking data pointers
// (ints), shapes, strides and a stream handle. vkd_kernels/_ext.py is its only caller.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>
#include <array>
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
  pr.weights = ptr<const float>(p["weights"].cast<uintptr_t>());
  if (pr.T < 2 || pr.T > vkd::spectrum::kMaxT)
    throw std::invalid_argument("vkd: T must be in [2, " + std::to_string(vkd::spectrum::kMaxT) + "]");
  if (pr.P < 1 || pr.S % pr.P != 0) throw std::invalid_argument("vkd: P must divide S");
  return pr;
}

bool on_cuda(const std::string& device) {
  if (device == "cpu") return false;
  if (device == "cuda") {
#ifdef VKD_WITH_CUDA
    return true;
#else
    throw std::invalid_argument("vkd: this build of vkd_kernels._C has no CUDA kernels");
#endif
  }
  throw std::invalid_argument("vkd: device must be 'cpu' or 'cuda', got '" + device + "'");
}

vkd::attention::MapProblem attention_problem(int64_t N, int64_t C, int64_t P, double q) {
  if (N < 1 || C < 1 || P < 1) throw std::invalid_argument("vkd: attention map sizes must be >= 1");
  if (!(q > 0) || !std::isfinite(q)) throw std::invalid_argument("vkd: the exponent p must be > 0 and finite");
  return {N, C, P, q};
}

vkd::WeightGramArgs weight_args(int dtype, uintptr_t tensors, uintptr_t groups, int64_t num_tensors,
                                int64_t num_groups, int64_t splits, int64_t flat_size, uintptr_t partials,
                                uintptr_t M, uintptr_t stream) {
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

  m.def("spectrum_num_partials", [](const std::string& device, int64_t groups) {
#ifdef VKD_WITH_CUDA
    if (on_cuda(device)) return vkd::spectrum_num_partials_cuda(groups);
#else
    on_cuda(device);
#endif
    return vkd::spectrum_num_partials_cpu(groups);
  }, py::arg("device"), py::arg("groups"));

  m.def("spectrum_forward",
        [](const std::string& device, py::dict problem, int dtype, double scale, uintptr_t student,
           std::array<int64_t, 3> student_strides, uintptr_t teacher,
           std::array<int64_t, 3> teacher_strides, uintptr_t d, std::array<int64_t, 3> d_strides,
           uintptr_t partials, int64_t num_partials, uintptr_t stream) {
          vkd::SpectrumForwardArgs a{spectrum_problem(problem), vkd::DType(dtype), scale,
                                     ptr<const void>(student), strides3(student_strides),
                                     ptr<const void>(teacher), strides3(teacher_strides),
                                     ptr<void>(d), strides3(d_strides),
                                     ptr<void>(partials), num_partials, stream};
          const bool cuda = on_cuda(device);
          py::gil_scoped_release release;
#ifdef VKD_WITH_CUDA
          if (cuda) return vkd::spectrum_forward_cuda(a);
#endif
          (void)cuda;
          vkd::spectrum_forward_cpu(a);
        },
        py::arg("device"), py::arg("problem"), py::arg("dtype"), py::arg("scale"),
        py::arg("student"), py::arg("student_strides"), py::arg("teacher"),
        py::arg("teacher_strides"), py::arg("d"), py::arg("d_strides"), py::arg("partials"),
        py::arg("num_partials"), py::arg("stream"));

  m.def("spectrum_backward",
        [](const std::string& device, py::dict problem, int dtype, double scale, uintptr_t student,
           std::array<int64_t, 3> student_strides, uintptr_t teacher,
           std::array<int64_t, 3> teacher_strides, uintptr_t grad_d,
           std::array<int64_t, 3> grad_strides, double grad_scale, uintptr_t grad_student,
           std::array<int64_t, 3> grad_student_strides, uintptr_t grad_teacher,
           std::array<int64_t, 3> grad_teacher_strides, uintptr_t stream) {
          vkd::SpectrumBackwardArgs a{spectrum_problem(problem), vkd::DType(dtype), scale,
                                      ptr<const void>(student), strides3(student_strides),
                                      ptr<const void>(teacher), strides3(teacher_strides),
                                      ptr<const void>(grad_d), strides3(grad_strides), grad_scale,
                                      ptr<void>(grad_student), strides3(grad_student_strides),
                                      ptr<void>(grad_teacher), strides3(grad_teacher_strides),
                                      stream};
          const bool cuda = on_cuda(device);
          py::gil_scoped_release release;
#ifdef VKD_WITH_CUDA
          if (cuda) return vkd::spectrum_backward_cuda(a);
#endif
          (void)cuda;
          vkd::spectrum_backward_cpu(a);
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
          vkd::AttentionMapArgs a{attention_problem(N, C, P, q), vkd::DType(dtype), ptr<const void>(x),
                                  {x_strides[0], x_strides[1], x_strides[2]}, ptr<void>(map),
                                  {map_strides[0], map_strides[1]}, nullptr, {0, 0, 0}, stream};
          const bool cuda = on_cuda(device);
          py::gil_scoped_release release;
#ifdef VKD_WITH_CUDA
          if (cuda) return vkd::attention_map_forward_cuda(a);
#endif
          (void)cuda;
          vkd::attention_map_forward_cpu(a);
        },
        py::arg("device"), py::arg("N"), py::arg("C"), py::arg("P"), py::arg("q"), py::arg("dtype"), py::arg("x"),
        py::arg("x_strides"), py::arg("map"), py::arg("map_strides"), py::arg("stream"));

  m.def("attention_map_backward",
        [](const std::string& device, int64_t N, int64_t C, int64_t P, double q, int dtype, uintptr_t x,
           std::array<int64_t, 3> x_strides, uintptr_t grad_map, std::array<int64_t, 2> grad_map_strides,
           uintptr_t grad_x, std::array<int64_t, 3> grad_x_strides, uintptr_t stream) {
          vkd::AttentionMapArgs a{attention_problem(N, C, P, q), vkd::DType(dtype), ptr<const void>(x),
                                  {x_strides[0], x_strides[1], x_strides[2]}, ptr<void>(grad_map),
                                  {grad_map_strides[0], grad_map_strides[1]}, ptr<void>(grad_x),
                                  {grad_x_strides[0], grad_x_strides[1], grad_x_strides[2]}, stream};
          const bool cuda = on_cuda(device);
          py::gil_scoped_release release;
#ifdef VKD_WITH_CUDA
          if (cuda) return vkd::attention_map_backward_cuda(a);
#endif
          (void)cuda;
          vkd::attention_map_backward_cpu(a);
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
          vkd::HeadNormArgs a{{N, J, C, G, M, eps}, vkd::DType(dtype), ptr<const void>(Z), ptr<const void>(w),
                              ptr<const void>(gamma), ptr<const void>(beta), ptr<void>(H), ptr<void>(stats),
                              ptr<const void>(dH), ptr<void>(dZ), ptr<void>(dgamma), ptr<void>(dbeta), stream};
          const bool cuda = on_cuda(device);
          py::gil_scoped_release release;
#ifdef VKD_WITH_CUDA
          if (cuda) return backward ? vkd::head_norm_backward_cuda(a) : vkd::head_norm_forward_cuda(a);
#endif
          (void)cuda;
          backward ? vkd::head_norm_backward_cpu(a) : vkd::head_norm_forward_cpu(a);
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
            const auto a = weight_args(dtype, tensors, groups, num_tensors, num_groups, splits, flat_size,
                                       forward ? buffer : 0, forward ? 0 : buffer, stream);
            const bool cuda = on_cuda(device);
            py::gil_scoped_release release;
#ifdef VKD_WITH_CUDA
            if (cuda) return forward ? vkd::weight_gram_cuda(a) : vkd::weight_gram_backward_cuda(a);
#endif
            (void)cuda;
            forward ? vkd::weight_gram_cpu(a) : vkd::weight_gram_backward_cpu(a);
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
          vkd::ApplyArgs args{{N, C, T, S}, vkd::DType(dtype), ptr<const void>(x), {xs[0], xs[1], xs[2], xs[3]},
                              ptr<const void>(y), {ys[0], ys[1], ys[2], ys[3]}, ptr<void>(rows), ptr<const void>(a),
                              ptr<const void>(b), ptr<void>(out), {os[0], os[1], os[2], os[3]}, stream};
          const bool cuda = on_cuda(device);
          py::gil_scoped_release release;
#ifdef VKD_WITH_CUDA
          if (cuda) return affine ? vkd::apply_affine_cuda(args) : vkd::apply_reduce_cuda(args);
#endif
          (void)cuda;
          affine ? vkd::apply_affine_cpu(args) : vkd::apply_reduce_cpu(args);
        },
        py::arg("device"), py::arg("affine"), py::arg("N"), py::arg("C"), py::arg("T"), py::arg("S"),
        py::arg("dtype"), py::arg("x"), py::arg("x_strides"), py::arg("y"), py::arg("y_strides"), py::arg("rows"),
        py::arg("a"), py::arg("b"), py::arg("out"), py::arg("out_strides"), py::arg("stream"));
}
