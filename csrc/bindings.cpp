// pybind11 module panning._C: the CPU kernels.
#include <torch/extension.h>

#include "cpu/ops.h"

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "panning CPU kernels (C++/OpenMP)";
  m.def("product_score", &panning::product_score, "w * g, or |w * g| when absolute", pybind11::arg("weight"),
        pybind11::arg("grad"), pybind11::arg("absolute"));
  m.def("topk_mask", &panning::topk_mask, "exact top-k mask of every segment", pybind11::arg("scores"),
        pybind11::arg("offsets"), pybind11::arg("k"));
  m.def("num_threads", [] { return at::get_num_threads(); }, "threads at::parallel_for uses");
}
