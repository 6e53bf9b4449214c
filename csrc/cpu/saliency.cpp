// Saliency combine: S[b, i] = sum_k w[b, k] * |x_k[i] - mean_k| / std_k, in two passes over the inputs.
//
// Pass 1 (statistics): the N elements are cut into fixed chunks; each chunk yields the float64 sums of
// (x - p) and (x - p)^2, shifted by a pivot p (the index's first element) so that a large common offset
// does not cancel away the variance. The chunk sums are added in chunk order, so the statistics do not
// depend on how many threads ran the chunks. A NaN or inf element makes its index's sums non-finite, so the
// statistics pass also rejects them (ValueError "indices: row k contains NaN or inf") at no extra cost.
// Pass 2 (combine): elementwise in float64 straight from the inputs to the output, a tile at a time.
#include <algorithm>
#include <cmath>
#include <vector>

#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>

#include "ops.h"

namespace panning {
namespace {

constexpr int64_t kStatChunk = 1 << 14;     // elements per statistics chunk (fixed: determinism)
constexpr int64_t kCombineChunk = 1 << 11;  // elements per combine tile (its float64 rows stay in L1/L2)

template <typename scalar_t>
void chunk_sums(const scalar_t* x, int64_t n, double pivot, double* s1, double* s2) {
  double a = 0.0, b = 0.0;
#pragma omp simd reduction(+ : a, b)
  for (int64_t i = 0; i < n; ++i) {
    const double d = static_cast<double>(x[i]) - pivot;
    a += d;
    b += d * d;
  }
  *s1 = a;
  *s2 = b;
}

// o[i] = sum_k c[k] * |x_k[i] - m[k]| for a compile-time K: one pass from the inputs to the output, the sum in
// float64 registers (k in increasing order, as combine_any).
constexpr int64_t kFusedMaxK = 4;

template <typename scalar_t, int K>
void combine(const scalar_t* const* xs, const double* m, const double* c, scalar_t* o, int64_t n) {
  const scalar_t* x[K];
  double mk[K], ck[K];
  for (int k = 0; k < K; ++k) x[k] = xs[k], mk[k] = m[k], ck[k] = c[k];
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) {
    double a = 0.0;
    for (int k = 0; k < K; ++k) a += ck[k] * std::abs(static_cast<double>(x[k][i]) - mk[k]);
    o[i] = static_cast<scalar_t>(a);
  }
}

// The same for any K, accumulating through a float64 buffer of the tile.
template <typename scalar_t>
void combine_any(const scalar_t* const* xs, int64_t K, const double* m, const double* c, double* acc, scalar_t* o,
                 int64_t n) {
  std::fill(acc, acc + n, 0.0);
  for (int64_t k = 0; k < K; ++k) {
    const scalar_t* x = xs[k];
    const double mk = m[k], ck = c[k];
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) acc[i] += ck * std::abs(static_cast<double>(x[i]) - mk);
  }
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) o[i] = static_cast<scalar_t>(acc[i]);
}

template <typename scalar_t>
void saliency_impl(const at::Tensor& x, const at::Tensor& w, at::Tensor& out) {
  const int64_t K = x.size(0), N = x.size(1), B = w.size(0);
  const scalar_t* px = x.const_data_ptr<scalar_t>();
  scalar_t* po = out.mutable_data_ptr<scalar_t>();
  const double* pw = w.const_data_ptr<double>();

  // Pass 1: per-chunk shifted sums, then an ordered reduction per index.
  const int64_t chunks = (N + kStatChunk - 1) / kStatChunk;
  std::vector<double> pivot(K), part(2 * K * chunks);
  for (int64_t k = 0; k < K; ++k) pivot[k] = static_cast<double>(px[k * N]);
  at::parallel_for(0, K * chunks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const int64_t k = t / chunks, c = t % chunks;
      const int64_t lo = c * kStatChunk, n = std::min(kStatChunk, N - lo);
      chunk_sums(px + k * N + lo, n, pivot[k], &part[2 * t], &part[2 * t + 1]);
    }
  });
  std::vector<double> mean(K), coef(B * K);
  for (int64_t k = 0; k < K; ++k) {
    double s1 = 0.0, s2 = 0.0;
    for (int64_t c = 0; c < chunks; ++c) {
      s1 += part[2 * (k * chunks + c)];
      s2 += part[2 * (k * chunks + c) + 1];
    }
    if (!std::isfinite(s1) || !std::isfinite(s2)) {  // rare: scan the row to tell NaN/inf from overflow
      const scalar_t* row = px + k * N;
      const bool bad = std::any_of(row, row + N, [](scalar_t v) { return !std::isfinite(static_cast<double>(v)); });
      TORCH_CHECK_VALUE(!bad, "indices: row ", k, " contains NaN or inf");
    }
    const double shift = s1 / static_cast<double>(N);
    const double var = std::max(s2 / static_cast<double>(N) - shift * shift, 0.0);
    mean[k] = pivot[k] + shift;
    const double inv = var > 0.0 ? 1.0 / std::sqrt(var) : 0.0;
    for (int64_t b = 0; b < B; ++b) coef[b * K + k] = pw[b * K + k] * inv;
  }

  // Pass 2: a tile of elements at a time (its K input rows stay in L1/L2 while every candidate reads them).
  const int64_t tiles = (N + kCombineChunk - 1) / kCombineChunk;
  at::parallel_for(0, tiles, 1, [&](int64_t begin, int64_t end) {
    std::vector<double> acc(K <= kFusedMaxK ? 0 : kCombineChunk);
    std::vector<const scalar_t*> xs(K);
    for (int64_t t = begin; t < end; ++t) {
      const int64_t lo = t * kCombineChunk, n = std::min(kCombineChunk, N - lo);
      for (int64_t k = 0; k < K; ++k) xs[k] = px + k * N + lo;
      for (int64_t b = 0; b < B; ++b) {
        const double* c = coef.data() + b * K;
        scalar_t* o = po + b * N + lo;
        switch (K) {
          case 1: combine<scalar_t, 1>(xs.data(), mean.data(), c, o, n); break;
          case 2: combine<scalar_t, 2>(xs.data(), mean.data(), c, o, n); break;
          case 3: combine<scalar_t, 3>(xs.data(), mean.data(), c, o, n); break;
          case 4: combine<scalar_t, 4>(xs.data(), mean.data(), c, o, n); break;
          default: combine_any(xs.data(), K, mean.data(), c, acc.data(), o, n);
        }
      }
    }
  });
}

}  // namespace

at::Tensor saliency(const at::Tensor& indices, const at::Tensor& weights) {
  TORCH_CHECK(indices.device().is_cpu() && weights.device().is_cpu(), "saliency: CPU tensors expected");
  TORCH_CHECK(indices.dim() == 2 && weights.dim() == 2 && weights.size(1) == indices.size(0),
              "saliency: expected indices (K, N) and weights (B, K)");
  TORCH_CHECK(indices.is_floating_point(), "saliency: floating indices expected");
  const auto x = indices.contiguous();
  const auto w = weights.to(at::kDouble).contiguous();
  const int64_t K = x.size(0), N = x.size(1), B = w.size(0);
  auto out = empty_output({B, N}, x.options());
  if (N == 0 || B == 0) return out;
  if (K == 0) return out.zero_();

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "saliency",
                                  [&] { saliency_impl<scalar_t>(x, w, out); });
  return out;
}

}  // namespace panning
