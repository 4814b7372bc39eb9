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
}
