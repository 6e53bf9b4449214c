// Elementwise raw saliency scores fused into one pass: w * g or |w * g| (SNIP, GraSP, SynFlow).
#include <cmath>

#include <ATen/OpMathType.h>

#include "ops.h"

namespace panning {

at::Tensor product_score(const at::Tensor& weight, const at::Tensor& grad, bool absolute) {
  TORCH_CHECK(weight.device().is_cpu() && grad.device().is_cpu(), "product_score: CPU tensors expected");
  TORCH_CHECK(weight.sizes() == grad.sizes(), "product_score: weight and grad shapes differ");
  TORCH_CHECK(weight.scalar_type() == grad.scalar_type(), "product_score: weight and grad dtypes differ");
  auto w = weight.contiguous();
  auto g = grad.contiguous();
  auto out = at::empty_like(w);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, w.scalar_type(), "product_score", [&] {
    const scalar_t* pw = w.const_data_ptr<scalar_t>();
    const scalar_t* pg = g.const_data_ptr<scalar_t>();
    scalar_t* po = out.mutable_data_ptr<scalar_t>();
    at::parallel_for(0, w.numel(), 1 << 15, [&](int64_t begin, int64_t end) {
      using acc_t = at::opmath_type<scalar_t>;
      for (int64_t i = begin; i < end; ++i) {
        const acc_t v = static_cast<acc_t>(pw[i]) * static_cast<acc_t>(pg[i]);
        po[i] = static_cast<scalar_t>(absolute ? std::abs(v) : v);
      }
    });
  });
  return out;
}

}  // namespace panning
