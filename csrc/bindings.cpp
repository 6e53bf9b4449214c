// pybind11 module panning._C: the CPU kernels. Each kernel's contract is panning/ops/reference.py.
#include <torch/extension.h>

#include "cpu/ops.h"

namespace py = pybind11;

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "panning CPU kernels (C++/OpenMP)";
  m.def("product_score", &panning::product_score, "w * g, or |w * g| when absolute", py::arg("weight"),
        py::arg("grad"), py::arg("absolute"));
  m.def("saliency", &panning::saliency, "normalize K indices over N and combine them with (B, K) weights",
        py::arg("indices"), py::arg("weights"));
  m.def("topk_mask", &panning::topk_mask, "exact top-k mask of every segment", py::arg("scores"),
        py::arg("offsets"), py::arg("k"));
  m.def("topk_mask_ties", &panning::topk_mask_ties, "(exact top-k mask, per segment: k-th and (k+1)-th equal)",
        py::arg("scores"), py::arg("offsets"), py::arg("k"));
  m.def("masked_linear_fwd", &panning::masked_linear_fwd, "(x @ (W*M)^T + b, W*M)", py::arg("x"),
        py::arg("weight"), py::arg("mask"), py::arg("bias"));
  m.def("masked_linear_bwd", &panning::masked_linear_bwd, "(dx, dW_eff*M, dW_eff*W), None where not needed",
        py::arg("dy"), py::arg("x"), py::arg("weight"), py::arg("mask"), py::arg("w_eff"), py::arg("need_dx"),
        py::arg("need_dw"), py::arg("need_dscore"));
  m.def("to_sparse", &panning::to_sparse, "(crow, col, values) of the masked-in entries, CSR order",
        py::arg("weight"), py::arg("mask"));
  m.def("sparse_linear_fwd", &panning::sparse_linear_fwd, "x @ W^T + b with W in CSR", py::arg("x"),
        py::arg("crow"), py::arg("col"), py::arg("values"), py::arg("in_features"), py::arg("bias"));
  m.def("sparse_linear_bwd", &panning::sparse_linear_bwd, "(dy W, (dy^T x) at the kept entries)", py::arg("dy"),
        py::arg("x"), py::arg("crow"), py::arg("col"), py::arg("values"), py::arg("in_features"),
        py::arg("need_dx"), py::arg("need_dvalues"));
  using Ints = const std::vector<int64_t>&;
  m.def("sparse_conv_fwd",
        [](const at::Tensor& x, const at::Tensor& crow, const at::Tensor& col, const at::Tensor& values,
           Ints kernel, Ints stride, Ints padding, Ints dilation, const std::optional<at::Tensor>& bias,
           bool keep_layout, int64_t path) {
          return panning::sparse_conv_fwd(x, crow, col, values, kernel, stride, padding, dilation, bias,
                                          keep_layout, path);
        },
        "(conv2d(x, W) + b with W (O, C*KH*KW) in CSR, x's kernel layout or None)", py::arg("x"), py::arg("crow"),
        py::arg("col"), py::arg("values"), py::arg("kernel"), py::arg("stride"), py::arg("padding"),
        py::arg("dilation"), py::arg("bias"), py::arg("keep_layout"), py::arg("path") = 0);
  m.def("sparse_conv_bwd",
        [](const at::Tensor& dy, const at::Tensor& x, const at::Tensor& crow, const at::Tensor& col,
           const at::Tensor& values, Ints kernel, Ints stride, Ints padding, Ints dilation, bool need_dx,
           bool need_dvalues, const std::optional<at::Tensor>& x_layout, int64_t path) {
          return panning::sparse_conv_bwd(dy, x, crow, col, values, kernel, stride, padding, dilation, need_dx,
                                          need_dvalues, x_layout, path);
        },
        "(dx, dW at the kept entries) of sparse_conv_fwd", py::arg("dy"), py::arg("x"), py::arg("crow"),
        py::arg("col"), py::arg("values"), py::arg("kernel"), py::arg("stride"), py::arg("padding"),
        py::arg("dilation"), py::arg("need_dx"), py::arg("need_dvalues"), py::arg("x_layout"), py::arg("path") = 0);
  m.def("sparse_conv_direct",
        [](Ints x_sizes, bool is_double, int64_t out_channels, int64_t nnz, Ints kernel, Ints stride, Ints padding,
           Ints dilation) {
          return panning::sparse_conv_direct(x_sizes, is_double ? at::kDouble : at::kFloat, out_channels, nnz,
                                             kernel, stride, padding, dilation);
        },
        "whether sparse_conv_fwd / _bwd (path 0) run this geometry on the direct kernels", py::arg("x_sizes"),
        py::arg("is_double"), py::arg("out_channels"), py::arg("nnz"), py::arg("kernel"), py::arg("stride"),
        py::arg("padding"), py::arg("dilation"));
}
