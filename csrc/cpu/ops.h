// Declarations of the CPU kernels bound into panning._C (see csrc/bindings.cpp).
// Arguments arrive validated by panning.ops; the checks here only guard against misuse from C++.
#pragma once

#include <torch/extension.h>

namespace panning {

at::Tensor product_score(const at::Tensor& weight, const at::Tensor& grad, bool absolute);

}  // namespace panning
