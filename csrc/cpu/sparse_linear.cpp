// Compressed (CSR) linear layer for a fixed mask: y = x W^T, dx = dy W, dvalues = (dy^T x) at the kept entries.
//
// Layout: the batch dimension is made the contiguous one (xt = x^T, dyt = dy^T, shape (features, Mp), the batch
// rounded up to whole vectors with zeros for float and double), so every kept entry turns into whole-vector AXPYs
// or a dot product over the batch. The forward holds one output row's panel of the batch in registers; a narrow
// panel (a small batch) deals its entries round-robin into several partial sums, so that enough independent FMA
// chains are in flight. Outputs are built a block of features at a time and written back transposed. The layout
// copies move floats as 16 x 16 blocks transposed in registers where the CPU has AVX-512.
//
// Backward: at a batch of up to one full register panel (8 vectors: 128 floats with AVX-512) one pass over the CSR
// rows holds dyt[r] in registers and, for every kept (r, c), adds values * dyt[r] into dxt[c] and takes the dot
// product of dyt[r] with xt[c] for dvalues (dxt mostly stays in cache at such batches; at batch 128 this measured
// 1.1-1.8x faster than the blocked path). A larger batch computes dx one block of input features at a time (the CSR
// entries regrouped by column on the fly) like the forward, and dvalues as a sampled dense-dense product.
// Every output element is summed in a fixed order (the entries in increasing CSR position, dealt into the panel's
// partial sums; dx in increasing row), so results do not depend on the number of threads.
#include <algorithm>
#include <cstring>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#if defined(__AVX__) || defined(__AVX512F__)
#include <immintrin.h>
#endif

#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>

#include "ops.h"
#include "vec.h"

namespace panning {
namespace {

constexpr int64_t kRowBlock = 16;   // output features per forward block (one 64-byte line of fp32 y per batch row)
constexpr int64_t kColBlock = 64;   // input features per dx block
constexpr int64_t kMTile = 256;     // batch rows per tile
constexpr int64_t kColGrain = 512;  // input features per thread at least, in the small-batch backward

void check_structure(const at::Tensor& crow, const at::Tensor& col, const at::Tensor& values, int64_t rows) {
  TORCH_CHECK(crow.scalar_type() == at::kLong && col.scalar_type() == at::kLong,
              "sparse_linear: crow_indices and col_indices must be int64");
  TORCH_CHECK(crow.is_contiguous() && col.is_contiguous() && values.is_contiguous(),
              "sparse_linear: the sparse structure must be contiguous");
  TORCH_CHECK(crow.dim() == 1 && crow.numel() == rows + 1, "sparse_linear: crow_indices must have rows+1 entries");
  TORCH_CHECK(col.numel() == values.numel(), "sparse_linear: col_indices and values differ in length");
}

constexpr int kMaxRegs = 8;  // vectors of the widest panel

// float and double run in vector registers; half and bfloat16 accumulate in float through memory.
template <typename T>
constexpr bool kRegisters = std::is_same_v<T, float> || std::is_same_v<T, double>;

// The batch rounded up to whole vectors where the kernels use registers.
template <typename T>
int64_t padded_batch(int64_t M) {
  if constexpr (kRegisters<T>) return (M + Vec<T>::kLanes - 1) / Vec<T>::kLanes * Vec<T>::kLanes;
  return M;
}

#if defined(__AVX512F__)
// The 16 x 16 block of floats in r[0..16) transposed in place: pairs of rows interleaved, then pairs of pairs, then
// the 128-bit lanes exchanged twice.
inline void transpose_block(__m512 r[16]) {
  __m512 t[16];
  for (int i = 0; i < 16; i += 2) {
    t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
  }
  for (int i = 0; i < 16; i += 4) {
    r[i] = _mm512_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(1, 0, 1, 0));
    r[i + 1] = _mm512_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(3, 2, 3, 2));
    r[i + 2] = _mm512_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(1, 0, 1, 0));
    r[i + 3] = _mm512_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(3, 2, 3, 2));
  }
  for (int i = 0; i < 4; ++i) {
    t[i] = _mm512_shuffle_f32x4(r[i], r[i + 4], 0x88);
    t[i + 4] = _mm512_shuffle_f32x4(r[i], r[i + 4], 0xdd);
    t[i + 8] = _mm512_shuffle_f32x4(r[i + 8], r[i + 12], 0x88);
    t[i + 12] = _mm512_shuffle_f32x4(r[i + 8], r[i + 12], 0xdd);
  }
  for (int i = 0; i < 8; ++i) {
    r[i] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0x88);
    r[i + 8] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0xdd);
  }
}
#endif

// dst[j * ds + i] = src[i * ss + j] for i < rows, j < cols. Floats with AVX-512 move as 16 x 16 blocks transposed
// in registers (ATen's strided copy moves a (32, 4096) float matrix at about 5 GB/s here), the rest one by one.
template <typename T>
void transpose(const T* src, int64_t ss, int64_t rows, int64_t cols, T* dst, int64_t ds) {
  int64_t i0 = 0;
#if defined(__AVX512F__)
  if constexpr (std::is_same_v<T, float>) {
    for (; i0 + 16 <= rows; i0 += 16) {
      int64_t j0 = 0;
      for (; j0 + 16 <= cols; j0 += 16) {
        __m512 r[16];
        for (int i = 0; i < 16; ++i) r[i] = _mm512_loadu_ps(src + (i0 + i) * ss + j0);
        transpose_block(r);
        for (int j = 0; j < 16; ++j) _mm512_storeu_ps(dst + (j0 + j) * ds + i0, r[j]);
      }
      for (; j0 < cols; ++j0)
        for (int64_t i = i0; i < i0 + 16; ++i) dst[j0 * ds + i] = src[i * ss + j0];
    }
  }
#endif
  for (; i0 < rows; ++i0)
    for (int64_t j = 0; j < cols; ++j) dst[j * ds + i0] = src[i0 * ss + j];
}

// a (M, F) -> (F, Mp): a transposed, the columns past M zero.
template <typename T>
at::Tensor padded_transpose(const at::Tensor& strided, int64_t Mp) {
  const auto a = strided.contiguous();
  const int64_t M = a.size(0), F = a.size(1);
  auto out = at::empty({F, Mp}, a.options());
  const T* src = a.const_data_ptr<T>();
  T* dst = out.mutable_data_ptr<T>();
  at::parallel_for(0, F, 256, [=](int64_t begin, int64_t end) {
    transpose(src + begin, F, M, end - begin, dst + begin * Mp, Mp);
    for (int64_t f = begin; f < end; ++f) std::fill(dst + f * Mp + M, dst + (f + 1) * Mp, T(0));
  });
  return out;
}

// The sum of a vector's lanes in a fixed order: the AVX-512 / AVX reduction sequences where the CPU has them.
template <typename V>
inline auto hsum(V v) {
  using E = std::remove_cv_t<std::remove_reference_t<decltype(v[0])>>;
#if defined(__AVX512F__)
  if constexpr (sizeof(V) == 64 && std::is_same_v<E, float>) return _mm512_reduce_add_ps(reinterpret_cast<__m512>(v));
  if constexpr (sizeof(V) == 64 && std::is_same_v<E, double>) return _mm512_reduce_add_pd(reinterpret_cast<__m512d>(v));
#endif
#if defined(__AVX__)
  if constexpr (sizeof(V) == 32 && std::is_same_v<E, float>) {
    const __m256 x = reinterpret_cast<__m256>(v);
    __m128 t = _mm_add_ps(_mm256_castps256_ps128(x), _mm256_extractf128_ps(x, 1));
    t = _mm_add_ps(t, _mm_movehl_ps(t, t));
    return _mm_cvtss_f32(_mm_add_ss(t, _mm_movehdup_ps(t)));
  }
  if constexpr (sizeof(V) == 32 && std::is_same_v<E, double>) {
    const __m256d x = reinterpret_cast<__m256d>(v);
    const __m128d t = _mm_add_pd(_mm256_castpd256_pd128(x), _mm256_extractf128_pd(x, 1));
    return _mm_cvtsd_f64(_mm_add_sd(t, _mm_unpackhi_pd(t, t)));
  }
#endif
  E t = 0;
  for (size_t l = 0; l < sizeof(V) / sizeof(E); ++l) t += v[l];
  return t;
}

// Calls f(std::integral_constant<int, R>) for R = regs, 1 <= regs <= kMaxRegs.
template <int R = 1, typename F>
void with_regs(int regs, F&& f) {
  if constexpr (R <= kMaxRegs) {
    if (regs == R) return f(std::integral_constant<int, R>{});
    with_regs<R + 1>(regs, std::forward<F>(f));
  }
}

template <typename T>
inline void prefetch_panel(const T* p, int regs) {
  for (int64_t line = 0; line < regs * kVecBytes; line += 64)
    __builtin_prefetch(reinterpret_cast<const char*>(p) + line);
}

// One panel of an output row held in registers: out[0..R vectors) = init + sum_p vals[p] * src[cols[p], m0 ..).
// Keeping the accumulator in registers leaves one load per FMA. The entries are dealt round-robin into S partial
// sums, added in order at the end, so that R * S >= 8 independent FMA chains hide the FMA latency.
template <typename T, int R>
struct Panel {
  using V = Vec<T>;
  static constexpr int S = R >= 8 ? 1 : R >= 4 ? 2 : 4;
  static constexpr int64_t kAhead = 8;  // prefetch distance in entries

  static void run(const int64_t* cols, const T* vals, int64_t n, const T* src, int64_t stride, int64_t m0, T init,
                  T* out) {
    typename V::type acc[S][R];
    for (int s = 0; s < S; ++s)
      for (int r = 0; r < R; ++r) acc[s][r] = typename V::type{} + (s == 0 ? init : T(0));
    auto step = [&](int s, int64_t p) {
      if (p + kAhead < n) prefetch_panel(src + cols[p + kAhead] * stride + m0, R);  // the rows are scattered
      const T* xs = src + cols[p] * stride + m0;
      const typename V::type v = typename V::type{} + vals[p];
      for (int r = 0; r < R; ++r) acc[s][r] += v * V::load(xs + r * V::kLanes);
    };
    int64_t p = 0;
    for (; p + S <= n; p += S)
      for (int s = 0; s < S; ++s) step(s, p + s);
    for (int s = 0; p < n; ++p, ++s) step(s, p);
    for (int s = 1; s < S; ++s)
      for (int r = 0; r < R; ++r) acc[0][r] += acc[s][r];
    for (int r = 0; r < R; ++r) V::store(out + r * V::kLanes, acc[0][r]);
  }
};

template <typename scalar_t, typename acc_t>
inline void axpy(acc_t* acc, acc_t v, const scalar_t* x, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) acc[i] += v * static_cast<acc_t>(x[i]);
}

// acc[0..nm) = init + sum_p vals[p] * src[idx[p], m0 .. m0+nm): register panels for float and double (nm is then
// a whole number of vectors), through memory for half and bfloat16.
template <typename scalar_t, typename acc_t>
void gather_axpys(const int64_t* idx, const scalar_t* vals, int64_t n, const scalar_t* src, int64_t stride,
                  int64_t m0, int64_t nm, acc_t init, acc_t* acc) {
  if constexpr (kRegisters<scalar_t>) {
    constexpr int64_t L = Vec<scalar_t>::kLanes;
    int64_t i = 0;
    for (; i + kMaxRegs * L <= nm; i += kMaxRegs * L)
      Panel<scalar_t, kMaxRegs>::run(idx, vals, n, src, stride, m0 + i, init, acc + i);
    if (i < nm)
      with_regs(static_cast<int>((nm - i) / L), [&](auto regs) {
        Panel<scalar_t, decltype(regs)::value>::run(idx, vals, n, src, stride, m0 + i, init, acc + i);
      });
  } else {
    std::fill(acc, acc + nm, init);
    for (int64_t p = 0; p < n; ++p) axpy(acc, static_cast<acc_t>(vals[p]), src + idx[p] * stride + m0, nm);
  }
}

// out (M, F) = transpose of the buffer block buf[f * stride + i] for features [f0, f0+nf) and rows [m0, m0+nm).
template <typename scalar_t, typename acc_t>
void write_transposed(scalar_t* out, int64_t F, const acc_t* buf, int64_t stride, int64_t f0, int64_t nf, int64_t m0,
                      int64_t nm) {
  if constexpr (std::is_same_v<scalar_t, acc_t>) {
    transpose(buf, stride, nf, nm, out + m0 * F + f0, F);
  } else {
    for (int64_t i = 0; i < nm; ++i) {
      scalar_t* o = out + (m0 + i) * F + f0;
      for (int64_t f = 0; f < nf; ++f) o[f] = static_cast<scalar_t>(buf[f * stride + i]);
    }
  }
}

template <typename scalar_t>
void fwd_impl(const at::Tensor& xt, const at::Tensor& crow, const at::Tensor& col, const at::Tensor& values,
              const at::Tensor& b, at::Tensor& y, int64_t O, int64_t M, int64_t Mp) {
  using acc_t = at::opmath_type<scalar_t>;
  const scalar_t* px = xt.const_data_ptr<scalar_t>();
  const scalar_t* pv = values.const_data_ptr<scalar_t>();
  const scalar_t* pb = b.defined() ? b.const_data_ptr<scalar_t>() : nullptr;
  const int64_t* pc = crow.const_data_ptr<int64_t>();
  const int64_t* pcol = col.const_data_ptr<int64_t>();
  scalar_t* py = y.mutable_data_ptr<scalar_t>();
  const int64_t blocks = (O + kRowBlock - 1) / kRowBlock;
  const int64_t width = std::min(kMTile, Mp);
  at::parallel_for(0, blocks, 1, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> buf(kRowBlock * width);
    for (int64_t blk = begin; blk < end; ++blk) {
      const int64_t r0 = blk * kRowBlock, nr = std::min(kRowBlock, O - r0);
      for (int64_t m0 = 0; m0 < M; m0 += kMTile) {
        const int64_t nm = std::min(kMTile, M - m0), nmp = std::min(kMTile, Mp - m0);
        for (int64_t rr = 0; rr < nr; ++rr) {
          const int64_t lo = pc[r0 + rr];
          gather_axpys(pcol + lo, pv + lo, pc[r0 + rr + 1] - lo, px, Mp, m0, nmp,
                       pb ? static_cast<acc_t>(pb[r0 + rr]) : acc_t(0), buf.data() + rr * width);
        }
        write_transposed(py, O, buf.data(), width, r0, nr, m0, nm);
      }
    }
  });
}

// G dot products of one row a with rows b[0..G) over n elements, in vector registers (float, double).
template <typename scalar_t, int G>
void dots(const scalar_t* a, const scalar_t* const* b, int64_t n, scalar_t* out) {
  using V = Vec<scalar_t>;
  typename V::type s[G] = {};
  int64_t i = 0;
  for (; i + V::kLanes <= n; i += V::kLanes) {
    const typename V::type va = V::load(a + i);
    for (int g = 0; g < G; ++g) s[g] += va * V::load(b[g] + i);
  }
  for (int g = 0; g < G; ++g) {
    scalar_t t = hsum(s[g]);
    for (int64_t j = i; j < n; ++j) t += a[j] * b[g][j];
    out[g] = t;
  }
}

// SDDMM: dvalues[p] = dot(dyt[r, :], xt[c, :]) over the (padded) batch for every kept (r, c); four entries of a
// row share each load of dyt[r, :] (float, double).
template <typename scalar_t>
void sddmm_impl(const at::Tensor& dyt, const at::Tensor& xt, const at::Tensor& crow, const at::Tensor& col,
                at::Tensor& out, int64_t O, int64_t Mp) {
  using acc_t = at::opmath_type<scalar_t>;
  const scalar_t* pdy = dyt.const_data_ptr<scalar_t>();
  const int64_t* pc = crow.const_data_ptr<int64_t>();
  const int64_t* pcol = col.const_data_ptr<int64_t>();
  const scalar_t* px = xt.const_data_ptr<scalar_t>();
  scalar_t* po = out.mutable_data_ptr<scalar_t>();
  at::parallel_for(0, O, 16, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const scalar_t* a = pdy + r * Mp;
      int64_t p = pc[r];
      if constexpr (kRegisters<scalar_t>) {
        for (; p + 4 <= pc[r + 1]; p += 4) {
          const scalar_t* rows[4] = {px + pcol[p] * Mp, px + pcol[p + 1] * Mp, px + pcol[p + 2] * Mp,
                                     px + pcol[p + 3] * Mp};
          dots<scalar_t, 4>(a, rows, Mp, po + p);
        }
      }
      for (; p < pc[r + 1]; ++p) {
        const scalar_t* bx = px + pcol[p] * Mp;
        acc_t s = 0;
#pragma omp simd reduction(+ : s)
        for (int64_t i = 0; i < Mp; ++i) s += static_cast<acc_t>(a[i]) * static_cast<acc_t>(bx[i]);
        po[p] = static_cast<scalar_t>(s);
      }
    }
  });
}

// dx^T[c, :] = sum over kept (r, c), in increasing r, of values * dyt[r, :], one block of kColBlock columns at a
// time: the block's entries are collected by walking each CSR row with a cursor that only moves forward (columns
// increase within a row), regrouped by column (a stable counting sort, so rows stay increasing), and then
// accumulated like the forward pass.
template <typename scalar_t>
void dx_impl(const at::Tensor& dyt, const at::Tensor& crow, const at::Tensor& col, const at::Tensor& values,
             at::Tensor& out, int64_t O, int64_t M, int64_t Mp, int64_t I) {
  using acc_t = at::opmath_type<scalar_t>;
  const scalar_t* pdy = dyt.const_data_ptr<scalar_t>();
  const scalar_t* pv = values.const_data_ptr<scalar_t>();
  const int64_t* pc = crow.const_data_ptr<int64_t>();
  const int64_t* pcol = col.const_data_ptr<int64_t>();
  scalar_t* po = out.mutable_data_ptr<scalar_t>();
  const int64_t blocks = (I + kColBlock - 1) / kColBlock;
  at::parallel_for(0, blocks, 1, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> buf(kColBlock * kMTile);
    std::vector<int64_t> cursor(O), start(kColBlock + 1), fill(kColBlock), found, rows;
    std::vector<scalar_t> vals;
    for (int64_t r = 0; r < O; ++r)
      cursor[r] = std::lower_bound(pcol + pc[r], pcol + pc[r + 1], begin * kColBlock) - pcol;
    for (int64_t blk = begin; blk < end; ++blk) {
      const int64_t c0 = blk * kColBlock, nc = std::min(kColBlock, I - c0), c1 = c0 + nc;
      found.clear();
      std::fill(start.begin(), start.end(), 0);
      for (int64_t r = 0; r < O; ++r) {
        int64_t p = cursor[r];
        for (const int64_t stop = pc[r + 1]; p < stop && pcol[p] < c1; ++p) {
          found.push_back(p);
          ++start[pcol[p] - c0 + 1];
        }
        cursor[r] = p;
      }
      for (int64_t cc = 0; cc < nc; ++cc) start[cc + 1] += start[cc];
      rows.resize(found.size());
      vals.resize(found.size());
      std::copy(start.begin(), start.begin() + nc, fill.begin());
      for (int64_t r = 0, e = 0; e < static_cast<int64_t>(found.size()); ++e) {  // found is in increasing row order
        const int64_t p = found[e];
        while (p >= pc[r + 1]) ++r;
        const int64_t q = fill[pcol[p] - c0]++;
        rows[q] = r;
        vals[q] = pv[p];
      }
      for (int64_t m0 = 0; m0 < M; m0 += kMTile) {
        const int64_t nm = std::min(kMTile, M - m0), nmp = std::min(kMTile, Mp - m0);
        for (int64_t cc = 0; cc < nc; ++cc)
          gather_axpys(rows.data() + start[cc], vals.data() + start[cc], start[cc + 1] - start[cc], pdy, Mp, m0, nmp,
                       acc_t(0), buf.data() + cc * kMTile);
        write_transposed(po, I, buf.data(), kMTile, c0, nc, m0, nm);
      }
    }
  });
}

// The small-batch backward (R vectors of batch, float or double) in one pass over the CSR rows: dyt[r] held in
// registers; for every kept (r, c), dxt[c] += values * dyt[r] (DX) and dvalues = dot(dyt[r], xt[c]) (DV). Each
// thread owns a range of input features and takes, from every row, the entries that fall in it, so every dxt[c]
// is summed in increasing r whatever the number of threads. dxt (I, R vectors) starts at zero.
template <typename T, int R, bool DX, bool DV>
void small_bwd_impl(const T* dyt, const T* xt, const int64_t* pc, const int64_t* pcol, const T* pv, T* dxt, T* dval,
                    int64_t O, int64_t I) {
  using V = Vec<T>;
  constexpr int64_t W = R * V::kLanes;  // the padded batch
  constexpr int64_t kAhead = 8;         // prefetch distance in entries
  at::parallel_for(0, I, kColGrain, [=](int64_t c0, int64_t c1) {  // by value: the stores below may alias a reference
    for (int64_t r = 0; r < O; ++r) {
      int64_t p = pc[r], stop = pc[r + 1];
      if (c0 > 0) p = std::lower_bound(pcol + p, pcol + stop, c0) - pcol;
      if (c1 < I) stop = std::lower_bound(pcol + p, pcol + stop, c1) - pcol;
      if (p == stop) continue;
      typename V::type d[R];
      for (int k = 0; k < R; ++k) d[k] = V::load(dyt + r * W + k * V::kLanes);
      for (; p < stop; ++p) {
        if (p + kAhead < stop) {
          const int64_t ahead = pcol[p + kAhead] * W;
          if constexpr (DX) prefetch_panel(dxt + ahead, R);
          if constexpr (DV) prefetch_panel(xt + ahead, R);
        }
        const int64_t c = pcol[p] * W;
        if constexpr (DX) {
          const typename V::type v = typename V::type{} + pv[p];
          for (int k = 0; k < R; ++k) V::store(dxt + c + k * V::kLanes, V::load(dxt + c + k * V::kLanes) + v * d[k]);
        }
        if constexpr (DV) {
          typename V::type t = d[0] * V::load(xt + c);
          for (int k = 1; k < R; ++k) t += d[k] * V::load(xt + c + k * V::kLanes);
          dval[p] = hsum(t);
        }
      }
    }
  });
}

// The small-batch backward where it applies (float and double, up to one full register panel): fills dx and dvalues
// as asked and returns true; else false.
template <typename T>
bool small_bwd(const at::Tensor& dyt, const at::Tensor& xt, const at::Tensor& crow, const at::Tensor& col,
               const at::Tensor& values, int64_t O, int64_t M, int64_t Mp, int64_t I, at::Tensor& dx,
               at::Tensor& dvalues) {
  if constexpr (kRegisters<T>) {
    if (Mp == 0 || Mp > kMaxRegs * Vec<T>::kLanes) return false;
    at::Tensor dxt = dx.defined() ? at::zeros({I, Mp}, dyt.options()) : at::Tensor();
    const T* pxt = xt.defined() ? xt.const_data_ptr<T>() : nullptr;
    T* pdxt = dxt.defined() ? dxt.mutable_data_ptr<T>() : nullptr;
    T* pdv = dvalues.defined() ? dvalues.mutable_data_ptr<T>() : nullptr;
    with_regs(static_cast<int>(Mp / Vec<T>::kLanes), [&](auto regs) {
      constexpr int R = decltype(regs)::value;
      const auto args = std::make_tuple(dyt.const_data_ptr<T>(), pxt, crow.const_data_ptr<int64_t>(),
                                        col.const_data_ptr<int64_t>(), values.const_data_ptr<T>(), pdxt, pdv, O, I);
      if (dxt.defined() && dvalues.defined()) std::apply(small_bwd_impl<T, R, true, true>, args);
      else if (dxt.defined()) std::apply(small_bwd_impl<T, R, true, false>, args);
      else if (dvalues.defined()) std::apply(small_bwd_impl<T, R, false, true>, args);
    });
    if (dx.defined()) {
      const T* src = dxt.const_data_ptr<T>();
      T* dst = dx.mutable_data_ptr<T>();
      at::parallel_for(0, I, 256, [=](int64_t begin, int64_t end) {
        transpose(src + begin * Mp, Mp, end - begin, M, dst + begin, I);
      });
    }
    return true;
  }
  return false;
}

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor> to_sparse(const at::Tensor& weight, const at::Tensor& mask) {
  TORCH_CHECK(weight.device().is_cpu() && mask.device().is_cpu(), "to_sparse: CPU tensors expected");
  TORCH_CHECK(weight.dim() == 2 && mask.sizes() == weight.sizes() && mask.scalar_type() == at::kBool,
              "to_sparse: expected weight (O, I) and a bool mask of the same shape");
  const auto w = weight.contiguous();
  const auto m = mask.contiguous();
  const int64_t O = w.size(0), I = w.size(1);
  auto crow = at::empty({O + 1}, w.options().dtype(at::kLong));
  int64_t* pc = crow.mutable_data_ptr<int64_t>();
  const bool* pm = m.const_data_ptr<bool>();
  pc[0] = 0;
  at::parallel_for(0, O, 64, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      int64_t n = 0;
      const bool* row = pm + r * I;
#pragma omp simd reduction(+ : n)
      for (int64_t c = 0; c < I; ++c) n += row[c] ? 1 : 0;
      pc[r + 1] = n;
    }
  });
  for (int64_t r = 0; r < O; ++r) pc[r + 1] += pc[r];
  const int64_t nnz = pc[O];
  auto col = at::empty({nnz}, crow.options());
  auto values = at::empty({nnz}, w.options());
  int64_t* pcol = col.mutable_data_ptr<int64_t>();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, w.scalar_type(), "to_sparse", [&] {
    const scalar_t* pw = w.const_data_ptr<scalar_t>();
    scalar_t* pv = values.mutable_data_ptr<scalar_t>();
    at::parallel_for(0, O, 64, [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) {
        int64_t p = pc[r];
        for (int64_t c = 0; c < I; ++c) {
          if (pm[r * I + c]) {
            pcol[p] = c;
            pv[p] = pw[r * I + c];
            ++p;
          }
        }
      }
    });
  });
  return {crow, col, values};
}

at::Tensor sparse_linear_fwd(const at::Tensor& x, const at::Tensor& crow, const at::Tensor& col,
                             const at::Tensor& values, int64_t in_features, const std::optional<at::Tensor>& bias) {
  TORCH_CHECK(x.device().is_cpu() && x.dim() == 2 && x.size(1) == in_features,
              "sparse_linear: expected x (M, in_features) on CPU");
  TORCH_CHECK(x.scalar_type() == values.scalar_type(), "sparse_linear: x and values dtypes differ");
  const int64_t O = crow.numel() - 1, M = x.size(0);
  check_structure(crow, col, values, O);
  auto y = at::empty({M, O}, x.options());
  if (M == 0 || O == 0) return y;
  const auto b = bias.has_value() ? bias->contiguous() : at::Tensor();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "sparse_linear_fwd", [&] {
    const int64_t Mp = padded_batch<scalar_t>(M);
    fwd_impl<scalar_t>(padded_transpose<scalar_t>(x, Mp), crow, col, values, b, y, O, M, Mp);
  });
  return y;
}

std::tuple<std::optional<at::Tensor>, std::optional<at::Tensor>> sparse_linear_bwd(
    const at::Tensor& dy, const at::Tensor& x, const at::Tensor& crow, const at::Tensor& col,
    const at::Tensor& values, int64_t in_features, bool need_dx, bool need_dvalues) {
  const int64_t O = crow.numel() - 1, M = x.size(0), I = in_features;
  check_structure(crow, col, values, O);
  TORCH_CHECK(dy.device().is_cpu() && x.device().is_cpu() && dy.dim() == 2 && x.dim() == 2 && dy.size(0) == M &&
                  dy.size(1) == O && x.size(1) == I,
              "sparse_linear: expected dy (M, out_features) and x (M, in_features) on CPU");
  std::optional<at::Tensor> dx, dvalues;
  const int64_t nnz = col.numel();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "sparse_linear_bwd", [&] {
    const int64_t Mp = padded_batch<scalar_t>(M);
    const auto dyt = padded_transpose<scalar_t>(dy, Mp);  // (O, Mp)
    const auto xt = need_dvalues ? padded_transpose<scalar_t>(x, Mp) : at::Tensor();  // (I, Mp)
    at::Tensor dv = need_dvalues ? at::empty({nnz}, values.options()) : at::Tensor();
    at::Tensor out = need_dx ? at::empty({M, I}, x.options()) : at::Tensor();
    if (!small_bwd<scalar_t>(dyt, xt, crow, col, values, O, M, Mp, I, out, dv)) {
      if (need_dvalues) sddmm_impl<scalar_t>(dyt, xt, crow, col, dv, O, Mp);
      if (need_dx && M > 0 && I > 0) dx_impl<scalar_t>(dyt, crow, col, values, out, O, M, Mp, I);
    }
    if (need_dx) dx = out;
    if (need_dvalues) dvalues = dv;
  });
  return {dx, dvalues};
}

}  // namespace panning
