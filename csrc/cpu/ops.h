// Declarations of the CPU kernels bound into panning._C (see csrc/bindings.cpp).
// Arguments arrive validated by panning.ops (contiguous, documented shapes and dtypes; see
// panning/ops/reference.py for each kernel's contract); the checks here only guard against misuse from C++.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

namespace panning {

// at::empty, but a large output lands on huge pages faulted in by one call (csrc/cpu/output.cpp).
at::Tensor empty_output(at::IntArrayRef sizes, const at::TensorOptions& options);

at::Tensor product_score(const at::Tensor& weight, const at::Tensor& grad, bool absolute);

// scores (N,), offsets (S+1,) int64, k (S,) int64 -> bool (N,): the k[s] largest of every segment.
// Raises c10::ValueError "scores: contains NaN".
at::Tensor topk_mask(const at::Tensor& scores, const at::Tensor& offsets, const at::Tensor& k);
// The same mask and, per segment, bool tied[s]: whether its k-th and (k+1)-th largest are equal.
std::tuple<at::Tensor, at::Tensor> topk_mask_ties(const at::Tensor& scores, const at::Tensor& offsets,
                                                  const at::Tensor& k);

at::Tensor saliency(const at::Tensor& indices, const at::Tensor& weights);
// mask: bool or the weight's floating dtype (kept where mask != 0). Returns (y, W_eff); the backward takes W_eff
// back (or recomputes it when absent).
std::tuple<at::Tensor, at::Tensor> masked_linear_fwd(const at::Tensor& x, const at::Tensor& weight,
                                                     const at::Tensor& mask, const std::optional<at::Tensor>& bias);
std::tuple<std::optional<at::Tensor>, std::optional<at::Tensor>, std::optional<at::Tensor>> masked_linear_bwd(
    const at::Tensor& dy, const at::Tensor& x, const at::Tensor& weight, const at::Tensor& mask,
    const std::optional<at::Tensor>& w_eff, bool need_dx, bool need_dw, bool need_dscore);
std::tuple<at::Tensor, at::Tensor, at::Tensor> to_sparse(const at::Tensor& weight, const at::Tensor& mask);
at::Tensor sparse_linear_fwd(const at::Tensor& x, const at::Tensor& crow, const at::Tensor& col,
                             const at::Tensor& values, int64_t in_features, const std::optional<at::Tensor>& bias);
std::tuple<std::optional<at::Tensor>, std::optional<at::Tensor>> sparse_linear_bwd(
    const at::Tensor& dy, const at::Tensor& x, const at::Tensor& crow, const at::Tensor& col,
    const at::Tensor& values, int64_t in_features, bool need_dx, bool need_dvalues);

// Compressed 2-D convolution (groups 1): x (B, C, H, W), the weight (O, C * KH * KW) in CSR; kernel, stride,
// padding and dilation are pairs. float32 and float64. With keep_layout the forward also returns x in the
// kernels' padded batch-last layout, which the backward takes back (x_layout) instead of building it again.
// path: 0 chooses between the batch-last and the direct (NCHW) kernels from the geometry, the same way
// in the forward and the backward; 1 and 2 force one (the tests run both on the same shapes).
std::tuple<at::Tensor, std::optional<at::Tensor>> sparse_conv_fwd(
    const at::Tensor& x, const at::Tensor& crow, const at::Tensor& col, const at::Tensor& values,
    at::IntArrayRef kernel, at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,
    const std::optional<at::Tensor>& bias, bool keep_layout, int64_t path);
std::tuple<std::optional<at::Tensor>, std::optional<at::Tensor>> sparse_conv_bwd(
    const at::Tensor& dy, const at::Tensor& x, const at::Tensor& crow, const at::Tensor& col,
    const at::Tensor& values, at::IntArrayRef kernel, at::IntArrayRef stride, at::IntArrayRef padding,
    at::IntArrayRef dilation, bool need_dx, bool need_dvalues, const std::optional<at::Tensor>& x_layout,
    int64_t path);
// Whether sparse_conv_fwd / _bwd with path 0 run a call of this geometry on the direct (NCHW) kernels rather than
// the batch-last ones (x's sizes (B, C, H, W) and dtype, nnz kept entries): the cost model of panning.nn asks.
bool sparse_conv_direct(at::IntArrayRef x_sizes, at::ScalarType dtype, int64_t out_channels, int64_t nnz,
                        at::IntArrayRef kernel, at::IntArrayRef stride, at::IntArrayRef padding,
                        at::IntArrayRef dilation);

}  // namespace panning
