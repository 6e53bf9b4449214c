// Masked linear y = x @ (W*M)^T + b while the mask changes every step.
//
// Choice (measured, docs/benchmarks.md): the GEMMs run in ATen's BLAS (at::mm / at::addmm), which no
// hand-written CPU GEMM here beats; what this file saves is passes over the (O, I) weight around them.
// - The mask is read as it comes, bool or floating 0/1 (a straight-through view of the scores), so no bool
//   copy of a float mask is made; a weight is kept where mask != 0 (a select, as the reference: a pruned inf
//   or NaN weight stays pruned).
// - Forward writes W_eff = select(M, W, 0) once, runs the GEMM on it and returns it, so that the backward
//   reuses it for dx instead of masking again (autograd's x @ (W*M).T keeps the same tensor alive).
// - Backward: dW_eff = dy^T x in one GEMM, then one pass writes dW_eff*M (in place) and/or dW_eff*W.
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

void check_mask(const at::Tensor& mask, const at::Tensor& weight) {
  check_cpu(mask, "mask");
  check_cpu(weight, "weight");
  TORCH_CHECK(mask.sizes() == weight.sizes(), "masked_linear: mask must have the weight's shape");
  TORCH_CHECK(mask.scalar_type() == at::kBool || mask.scalar_type() == weight.scalar_type(),
              "masked_linear: mask must be bool or of the weight's dtype");
}

// Calls fn(const m_t* mask) with the mask read as bytes (bool) or as the weight's type (floating).
template <typename scalar_t, typename Fn>
void with_mask(const at::Tensor& mask, Fn fn) {
  if (mask.scalar_type() == at::kBool)
    fn(reinterpret_cast<const uint8_t*>(mask.const_data_ptr<bool>()));
  else
    fn(mask.const_data_ptr<scalar_t>());
}

// select(mask != 0, v, 0) on values already loaded: the compiler turns it into a blend. (A conditional load,
// `m ? src[i] : 0`, compiles to a branch, and a random mask mispredicts it every other element: about 10x
// slower, which is what torch.where costs on such masks.)
template <typename scalar_t, typename m_t>
inline scalar_t keep(m_t m, scalar_t v) {
  return m != m_t(0) ? v : scalar_t(0);
}

// out = select(mask != 0, src, 0).
template <typename scalar_t, typename m_t>
void select_impl(const scalar_t* src, const m_t* pm, scalar_t* out, int64_t n) {
  at::parallel_for(0, n, kGrain, [&](int64_t begin, int64_t end) {
#pragma omp simd
    for (int64_t i = begin; i < end; ++i) {
      const scalar_t v = src[i];
      out[i] = keep(pm[i], v);
    }
  });
}

// s <- g * W (when s is not null) and g <- select(M, g, 0) (when need_dw), in one pass over g.
template <typename scalar_t, typename m_t>
void epilogue_impl(scalar_t* g, const scalar_t* pw, const m_t* pm, scalar_t* ps, bool need_dw, int64_t n) {
  at::parallel_for(0, n, kGrain, [&](int64_t begin, int64_t end) {
    if (ps != nullptr && need_dw) {
#pragma omp simd
      for (int64_t i = begin; i < end; ++i) {
        const scalar_t v = g[i];
        ps[i] = v * pw[i];
        g[i] = keep(pm[i], v);
      }
    } else if (ps != nullptr) {
#pragma omp simd
      for (int64_t i = begin; i < end; ++i) ps[i] = g[i] * pw[i];
    } else if (need_dw) {
#pragma omp simd
      for (int64_t i = begin; i < end; ++i) {
        const scalar_t v = g[i];
        g[i] = keep(pm[i], v);
      }
    }
  });
}

at::Tensor apply_mask(const at::Tensor& weight, const at::Tensor& mask) {
  check_mask(mask, weight);
  auto out = at::empty_like(weight);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, weight.scalar_type(), "masked_linear_mask", [&] {
    with_mask<scalar_t>(mask, [&](const auto* pm) {
      select_impl(weight.const_data_ptr<scalar_t>(), pm, out.mutable_data_ptr<scalar_t>(), weight.numel());
    });
  });
  return out;
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> masked_linear_fwd(const at::Tensor& x, const at::Tensor& weight,
                                                     const at::Tensor& mask, const std::optional<at::Tensor>& bias) {
  check_cpu(x, "x");
  TORCH_CHECK(x.dim() == 2 && weight.dim() == 2 && x.size(1) == weight.size(1),
              "masked_linear: expected x (M, I) and weight (O, I)");
  auto w_eff = apply_mask(weight, mask);
  auto y = bias.has_value() ? at::addmm(*bias, x, w_eff.t()) : at::mm(x, w_eff.t());
  return {y, w_eff};
}

std::tuple<std::optional<at::Tensor>, std::optional<at::Tensor>, std::optional<at::Tensor>> masked_linear_bwd(
    const at::Tensor& dy, const at::Tensor& x, const at::Tensor& weight, const at::Tensor& mask,
    const std::optional<at::Tensor>& w_eff, bool need_dx, bool need_dw, bool need_dscore) {
  check_cpu(dy, "dy");
  check_cpu(x, "x");
  check_mask(mask, weight);
  TORCH_CHECK(dy.dim() == 2 && x.dim() == 2 && dy.size(0) == x.size(0) && dy.size(1) == weight.size(0) &&
                  x.size(1) == weight.size(1),
              "masked_linear: expected dy (M, O) and x (M, I) for a weight (O, I)");
  std::optional<at::Tensor> dx, dw, dscore;
  if (need_dx) {
    const bool reuse = w_eff.has_value() && w_eff->sizes() == weight.sizes();
    dx = at::mm(dy, reuse ? *w_eff : apply_mask(weight, mask));
  }
  if (!need_dw && !need_dscore) return {dx, dw, dscore};
  auto dw_eff = at::mm(dy.t(), x);
  at::Tensor score = need_dscore ? at::empty_like(dw_eff) : at::Tensor();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dw_eff.scalar_type(), "masked_linear_bwd", [&] {
    with_mask<scalar_t>(mask, [&](const auto* pm) {
      epilogue_impl(dw_eff.mutable_data_ptr<scalar_t>(), weight.const_data_ptr<scalar_t>(), pm,
                    need_dscore ? score.mutable_data_ptr<scalar_t>() : nullptr, need_dw, dw_eff.numel());
    });
  });
  if (need_dw) dw = dw_eff;
  if (need_dscore) dscore = score;
  return {dx, dw, dscore};
}

}  // namespace panning
