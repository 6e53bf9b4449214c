// Masked linear y = x @ (W*M)^T + b while the mask changes every step.
//
// Choice (measured, docs/benchmarks.md): the GEMMs run in ATen's BLAS (at::mm / at::addmm), which no
// hand-written CPU GEMM here beats; what this file saves is passes over the (O, I) weight around them.
// - The mask is read as it comes, bool or floating 0/1 (a straight-through view of the scores), so no bool
//   copy of a float mask is made; a weight is kept where mask != 0 (a select, as the reference: a pruned inf
//   or NaN weight stays pruned).
// - Forward writes W_eff = select(M, W, 0) once, runs the GEMM on it and returns it, so that the backward
//   reuses it for dx instead of masking again (autograd's x @ (W*M).T keeps the same tensor alive).
// - Backward: dW_eff = dy^T x in one GEMM (computed as (x^T dy)^T when I < O, see masked_linear_bwd), then one pass writes dW_eff*M (in place) and/or dW_eff*W (in place
//   when no weight gradient is asked for).
// - The (O, I) outputs come from empty_output: a large one lands on huge pages faulted in by one call.
#include <algorithm>

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

// The same epilogue from g = dW_eff^T (I, O): dw <- select(M, g^T, 0) and/or s <- g^T * W, in 32 x 32 tiles so
// that the transposed reads of g stay in L1.
template <typename scalar_t, typename m_t>
void epilogue_transposed_impl(const scalar_t* g, const scalar_t* pw, const m_t* pm, scalar_t* pdw, scalar_t* ps,
                              int64_t O, int64_t I) {
  constexpr int64_t kTile = 32;
  at::parallel_for(0, (O + kTile - 1) / kTile, 1, [&](int64_t begin, int64_t end) {
    for (int64_t o0 = begin * kTile; o0 < std::min(end * kTile, O); o0 += kTile) {
      const int64_t o1 = std::min(o0 + kTile, O);
      for (int64_t i0 = 0; i0 < I; i0 += kTile) {
        const int64_t i1 = std::min(i0 + kTile, I);
        for (int64_t o = o0; o < o1; ++o) {
          const int64_t row = o * I;
          if (ps != nullptr)
            for (int64_t i = i0; i < i1; ++i) ps[row + i] = g[i * O + o] * pw[row + i];
          if (pdw != nullptr)
            for (int64_t i = i0; i < i1; ++i) pdw[row + i] = keep(pm[row + i], g[i * O + o]);
        }
      }
    }
  });
}

at::Tensor apply_mask(const at::Tensor& weight, const at::Tensor& mask) {
  check_mask(mask, weight);
  auto out = empty_output(weight.sizes(), weight.options());
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
  const int64_t O = weight.size(0), I = weight.size(1);
  if (I < O) {
    // dW_eff^T = x^T dy: for I < O ATen's GEMM runs this shape faster than dy^T x (measured 1.7x at
    // 256 x 40 x 1024, the same at square shapes); the epilogue reads it transposed, tile by tile.
    const auto g = at::mm(x.t(), dy);
    at::Tensor dw_out = need_dw ? empty_output(weight.sizes(), dy.options()) : at::Tensor();
    at::Tensor score = need_dscore ? empty_output(weight.sizes(), dy.options()) : at::Tensor();
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, g.scalar_type(), "masked_linear_bwd", [&] {
      with_mask<scalar_t>(mask, [&](const auto* pm) {
        epilogue_transposed_impl(g.const_data_ptr<scalar_t>(), weight.const_data_ptr<scalar_t>(), pm,
                                 need_dw ? dw_out.mutable_data_ptr<scalar_t>() : nullptr,
                                 need_dscore ? score.mutable_data_ptr<scalar_t>() : nullptr, O, I);
      });
    });
    if (need_dw) dw = dw_out;
    if (need_dscore) dscore = score;
    return {dx, dw, dscore};
  }
  auto dw_eff = empty_output(weight.sizes(), dy.options());
  at::mm_out(dw_eff, dy.t(), x);
  // Without a weight gradient (a mask search: weights frozen) the score gradient overwrites dW_eff in place.
  at::Tensor score = need_dscore ? (need_dw ? empty_output(weight.sizes(), dy.options()) : dw_eff) : at::Tensor();
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
