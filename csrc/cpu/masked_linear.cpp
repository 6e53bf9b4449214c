// Masked linear y = x @ (W*M)^T + b while the mask changes every step.
//
// Choice: W*M is materialized once per call into a scratch buffer by one parallel fused pass (O(OI), against
// the O(MOI) matmul), and the GEMMs run in ATen's BLAS (at::mm / at::addmm). The backward epilogues
// dW_eff*M and dW_eff*W are computed together in one pass over dW_eff, W and M.
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>

#include "ops.h"

namespace panning {
namespace {

constexpr int64_t kGrain = 1 << 15;

void check_cpu(const at::Tensor& t, const char* what) {
  TORCH_CHECK(t.device().is_cpu(), "masked_linear: ", what, " must be a CPU tensor");
  TORCH_CHECK(t.is_contiguous(), "masked_linear: ", what, " must be contiguous");
}

// A bool mask read as bytes 0/1, so that it converts to 0/1 weights without a branch.
const uint8_t* mask_bytes(const at::Tensor& mask) {
  return reinterpret_cast<const uint8_t*>(mask.const_data_ptr<bool>());
}

// Branch-free multiply by the mask (as the reference does: NaN * 0 stays NaN), so the loop vectorizes.
template <typename scalar_t>
void mask_impl(const scalar_t* pw, const uint8_t* pm, scalar_t* po, int64_t n) {
  at::parallel_for(0, n, kGrain, [&](int64_t begin, int64_t end) {
#pragma omp simd
    for (int64_t i = begin; i < end; ++i) po[i] = pw[i] * static_cast<scalar_t>(pm[i]);
  });
}

// g <- g * M (when need_dw) and s <- g * W (when s is not null), in one pass over g.
template <typename scalar_t>
void epilogue_impl(scalar_t* g, const scalar_t* pw, const uint8_t* pm, scalar_t* ps, bool need_dw, int64_t n) {
  at::parallel_for(0, n, kGrain, [&](int64_t begin, int64_t end) {
    if (ps != nullptr) {
#pragma omp simd
      for (int64_t i = begin; i < end; ++i) ps[i] = g[i] * pw[i];
    }
    if (need_dw) {
#pragma omp simd
      for (int64_t i = begin; i < end; ++i) g[i] = g[i] * static_cast<scalar_t>(pm[i]);
    }
  });
}

// weight * mask, where the mask is bool.
at::Tensor apply_mask(const at::Tensor& weight, const at::Tensor& mask) {
  check_cpu(weight, "weight");
  check_cpu(mask, "mask");
  TORCH_CHECK(mask.scalar_type() == at::kBool && mask.sizes() == weight.sizes(),
              "masked_linear: mask must be bool with the weight's shape");
  auto out = at::empty_like(weight);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, weight.scalar_type(), "masked_linear_mask", [&] {
    mask_impl(weight.const_data_ptr<scalar_t>(), mask_bytes(mask), out.mutable_data_ptr<scalar_t>(),
              weight.numel());
  });
  return out;
}

}  // namespace

at::Tensor masked_linear_fwd(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& mask,
                             const std::optional<at::Tensor>& bias) {
  check_cpu(x, "x");
  TORCH_CHECK(x.dim() == 2 && weight.dim() == 2 && x.size(1) == weight.size(1),
              "masked_linear: expected x (M, I) and weight (O, I)");
  const auto w_eff = apply_mask(weight, mask);
  if (bias.has_value()) return at::addmm(*bias, x, w_eff.t());
  return at::mm(x, w_eff.t());
}

std::tuple<std::optional<at::Tensor>, std::optional<at::Tensor>, std::optional<at::Tensor>> masked_linear_bwd(
    const at::Tensor& dy, const at::Tensor& x, const at::Tensor& weight, const at::Tensor& mask, bool need_dx,
    bool need_dw, bool need_dscore) {
  check_cpu(dy, "dy");
  check_cpu(x, "x");
  std::optional<at::Tensor> dx, dw, dscore;
  if (need_dx) dx = at::mm(dy, apply_mask(weight, mask));
  if (!need_dw && !need_dscore) return {dx, dw, dscore};
  check_cpu(weight, "weight");
  check_cpu(mask, "mask");
  TORCH_CHECK(mask.scalar_type() == at::kBool && mask.sizes() == weight.sizes() && dy.size(1) == weight.size(0),
              "masked_linear: expected a bool mask of the weight's shape and dy (M, O)");
  auto dw_eff = at::mm(dy.t(), x);
  // Epilogue: one pass writes dW_eff*M and/or dW_eff*W (the first reuses dW_eff's storage).
  at::Tensor score = need_dscore ? at::empty_like(dw_eff) : at::Tensor();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dw_eff.scalar_type(), "masked_linear_bwd", [&] {
    epilogue_impl(dw_eff.mutable_data_ptr<scalar_t>(), weight.const_data_ptr<scalar_t>(), mask_bytes(mask),
                  need_dscore ? score.mutable_data_ptr<scalar_t>() : nullptr, need_dw, dw_eff.numel());
  });
  if (need_dw) dw = dw_eff;
  if (need_dscore) dscore = score;
  return {dx, dw, dscore};
}

}  // namespace panning
