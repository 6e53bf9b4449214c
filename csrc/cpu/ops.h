// Declarations of the CPU kernels bound into panning._C (see csrc/bindings.cpp).
// Arguments arrive validated by panning.ops (contiguous, documented shapes and dtypes; see
// panning/ops/reference.py for each kernel's contract); the checks here only guard against misuse from C++.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

namespace panning {

at::Tensor product_score(const at::Tensor& weight, const at::Tensor& grad, bool absolute);

// scores (N,), offsets (S+1,) int64, k (S,) int64 -> bool (N,): the k[s] largest of every segment.
// Raises c10::ValueError "scores: contains NaN".
at::Tensor topk_mask(const at::Tensor& scores, const at::Tensor& offsets, const at::Tensor& k);

}  // namespace panning
