// Compressed (CSR) 2-D convolution for a fixed mask, groups = 1: y = conv2d(x, W), dx, and dvalues = dW at the
// kept entries. W is (O, C * KH * KW) in CSR; column c of a row is (ic, kh, kw) = (c / (KH KW), c / KW % KH, c % KW).
//
// Layout: the batch is made the innermost dimension ("batch-last": [channel][row][column][Bp], Bp = the batch
// rounded up to a whole number of vectors), so that every kept weight multiplies whole vectors of one spatial
// position across the batch: no gather, any stride, padding and dilation. x is copied once into such a buffer with
// its zero padding materialized, so no bounds are checked in the inner loops.
//
// Each kernel holds a tile of outputs (up to 8 vectors) in registers and sums the kept entries of one output
// channel (forward) or one input channel (dx) into it: one load and one FMA per entry and vector. The outer loops
// run over tiles in row-major order with the channels inside, so the few input rows a tile reads stay in cache
// while all channels use them; a tile may span rows, so that small planes (2x2, 4x4) fill whole tiles too. dx gathers from dy padded so that every read is in bounds: the entries of an input channel
// are grouped by stride phase ((kh dh) mod sh, (kw dw) mod sw), and a tile holds positions of one phase, which
// read consecutive dy columns. dW is a sampled dense-dense product: the dot product of dy[oc] with the shifted
// x[ic] over (row, column, batch), four entries of a row sharing each load of dy.
// Every output element is summed in a fixed order, so the results do not depend on the number of threads.
// The layout copies transpose 16 x 16 blocks in registers (AVX-512, float); they and the outputs come from
// empty_output (csrc/cpu/output.cpp): large fresh buffers would otherwise fault in every page at every call.
//
// Very sparse layers of column stride 1 or 2 with rows of a vector or more take the direct path instead (further
// below): no layout copy, vectors along the output row of NCHW, lane masks at the plane's edges.
#include <algorithm>
#include <cstring>
#include <type_traits>
#include <vector>

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

#include <ATen/Parallel.h>

#include "ops.h"
#include "vec.h"

namespace panning {
namespace {

constexpr int64_t kTile = 8;  // vectors of a register tile

struct Geometry {
  int64_t B, C, H, W, O, KH, KW, sh, sw, ph, pw, dh, dw, OH, OW, Bp;

  Geometry(at::IntArrayRef x, int64_t out, at::IntArrayRef kernel, at::IntArrayRef stride,
           at::IntArrayRef padding, at::IntArrayRef dilation, int64_t lanes)
      : B(x[0]), C(x[1]), H(x[2]), W(x[3]), O(out), KH(kernel[0]), KW(kernel[1]),
        sh(stride[0]), sw(stride[1]), ph(padding[0]), pw(padding[1]), dh(dilation[0]), dw(dilation[1]) {
    OH = (H + 2 * ph - dh * (KH - 1) - 1) / sh + 1;
    OW = (W + 2 * pw - dw * (KW - 1) - 1) / sw + 1;
    Bp = (B + lanes - 1) / lanes * lanes;
  }
};

#if defined(__AVX512F__)
// r[k] <- column k of the 16 x 16 matrix whose rows are r[0..16).
inline void transpose16(__m512 r[16]) {
  __m512 t[16];
  for (int i = 0; i < 8; ++i) {
    t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
  }
  for (int i = 0; i < 4; ++i) {
    r[4 * i] = _mm512_shuffle_ps(t[4 * i], t[4 * i + 2], _MM_SHUFFLE(1, 0, 1, 0));
    r[4 * i + 1] = _mm512_shuffle_ps(t[4 * i], t[4 * i + 2], _MM_SHUFFLE(3, 2, 3, 2));
    r[4 * i + 2] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], _MM_SHUFFLE(1, 0, 1, 0));
    r[4 * i + 3] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], _MM_SHUFFLE(3, 2, 3, 2));
  }
  for (int i = 0; i < 2; ++i) {
    for (int j = 0; j < 4; ++j) {
      t[8 * i + j] = _mm512_shuffle_f32x4(r[8 * i + j], r[8 * i + j + 4], 0x88);
      t[8 * i + j + 4] = _mm512_shuffle_f32x4(r[8 * i + j], r[8 * i + j + 4], 0xdd);
    }
  }
  for (int j = 0; j < 8; ++j) {
    r[j] = _mm512_shuffle_f32x4(t[j], t[j + 8], 0x88);
    r[j + 8] = _mm512_shuffle_f32x4(t[j], t[j + 8], 0xdd);
  }
}
#endif

// Copy one channel between NCHW (plane[b * bstride + j], j = h W + w over the H W positions) and batch-last
// (at(j)[b]): 16 x 16 blocks transposed in registers where the CPU has AVX-512 (float), the rest element by element.
template <typename T, bool ToBatchLast, typename At>
void copy_channel(T* plane, int64_t bstride, int64_t B, int64_t HW, At at) {
  int64_t jfull = 0, bfull = 0;
#if defined(__AVX512F__)
  if constexpr (std::is_same_v<T, float>) {
    jfull = HW / 16 * 16, bfull = B / 16 * 16;
    __m512 r[16];
    for (int64_t j0 = 0; j0 < jfull; j0 += 16) {
      for (int64_t b0 = 0; b0 < bfull; b0 += 16) {
        if constexpr (ToBatchLast) {
          for (int i = 0; i < 16; ++i) r[i] = _mm512_loadu_ps(plane + (b0 + i) * bstride + j0);
          transpose16(r);
          for (int k = 0; k < 16; ++k) _mm512_storeu_ps(at(j0 + k) + b0, r[k]);
        } else {
          for (int k = 0; k < 16; ++k) r[k] = _mm512_loadu_ps(at(j0 + k) + b0);
          transpose16(r);
          for (int i = 0; i < 16; ++i) _mm512_storeu_ps(plane + (b0 + i) * bstride + j0, r[i]);
        }
      }
    }
  }
#endif
  for (int64_t j = 0; j < HW; ++j) {
    T* d = at(j);
    for (int64_t b = j < jfull ? bfull : 0; b < B; ++b) {
      if constexpr (ToBatchLast)
        d[b] = plane[b * bstride + j];
      else
        plane[b * bstride + j] = d[b];
    }
  }
}

// NCHW src (B, C, H, W) -> batch-last [C][rows][cols][Bp] with src at (top, left) and zeros elsewhere.
template <typename T>
at::Tensor to_batch_last(const at::Tensor& src, int64_t rows, int64_t cols, int64_t top, int64_t left, int64_t Bp) {
  const int64_t B = src.size(0), C = src.size(1), H = src.size(2), W = src.size(3);
  auto dst = empty_output({C, rows, cols, Bp}, src.options());
  T* ps = const_cast<T*>(src.const_data_ptr<T>());  // only read: copy_channel<T, true> writes the batch-last side
  T* pd = dst.mutable_data_ptr<T>();
  at::parallel_for(0, C, 1, [&](int64_t begin, int64_t end) {
    for (int64_t c = begin; c < end; ++c) {
      T* base = pd + c * rows * cols * Bp;
      for (int64_t h = 0; h < rows; ++h) {  // zeros where the copy does not write
        T* d = base + h * cols * Bp;
        if (h < top || h >= top + H) {
          std::fill(d, d + cols * Bp, T(0));
          continue;
        }
        std::fill(d, d + left * Bp, T(0));
        std::fill(d + (left + W) * Bp, d + cols * Bp, T(0));
        for (int64_t w = left; w < left + W; ++w) std::fill(d + w * Bp + B, d + (w + 1) * Bp, T(0));
      }
      copy_channel<T, true>(ps + c * H * W, C * H * W, B, H * W,
                            [&](int64_t j) { return base + ((j / W + top) * cols + left + j % W) * Bp; });
    }
  });
  return dst;
}

// batch-last [C][H][W][Bp] -> NCHW (B, C, H, W).
template <typename T>
at::Tensor from_batch_last(const at::Tensor& src, int64_t B) {
  const int64_t C = src.size(0), HW = src.size(1) * src.size(2), Bp = src.size(3);
  auto dst = empty_output({B, C, src.size(1), src.size(2)}, src.options());
  T* ps = const_cast<T*>(src.const_data_ptr<T>());  // only read: copy_channel<T, false> writes the NCHW side
  T* pd = dst.mutable_data_ptr<T>();
  at::parallel_for(0, C, 1, [&](int64_t begin, int64_t end) {
    for (int64_t c = begin; c < end; ++c)
      copy_channel<T, false>(pd + c * HW, C * HW, B, HW, [&](int64_t j) { return ps + (c * HW + j) * Bp; });
  });
  return dst;
}

// out[r] = init + sum_p vals[p] * in[r][off[p]] for the R vectors r of a tile, accumulated in registers.
template <typename T, int R>
inline void gather_tile(const T* const* in, T* const* out, const int64_t* off, const T* vals, int64_t n, T init) {
  using V = Vec<T>;
  typename V::type acc[R];
  for (int r = 0; r < R; ++r) acc[r] = typename V::type{} + init;
  for (int64_t p = 0; p < n; ++p) {
    const int64_t o = off[p];
    const typename V::type v = typename V::type{} + vals[p];
    for (int r = 0; r < R; ++r) acc[r] += v * V::load(in[r] + o);
  }
  for (int r = 0; r < R; ++r) V::store(out[r], acc[r]);
}

// gather_tile over nv <= kTile vectors.
template <typename T>
inline void gather(const T* const* in, T* const* out, int64_t nv, const int64_t* off, const T* vals, int64_t n,
                   T init) {
  switch (nv) {
    case 8: return gather_tile<T, 8>(in, out, off, vals, n, init);
    case 7: return gather_tile<T, 7>(in, out, off, vals, n, init);
    case 6: return gather_tile<T, 6>(in, out, off, vals, n, init);
    case 5: return gather_tile<T, 5>(in, out, off, vals, n, init);
    case 4: return gather_tile<T, 4>(in, out, off, vals, n, init);
    case 3: return gather_tile<T, 3>(in, out, off, vals, n, init);
    case 2: return gather_tile<T, 2>(in, out, off, vals, n, init);
    default: return gather_tile<T, 1>(in, out, off, vals, n, init);
  }
}

// (ic, kh, kw) of every weight column (ic KH + kh) KW + kw, built without a division: decomposing every entry's
// column would cost three, which the 100K+ entries of a wide layer notice.
struct Columns {
  std::vector<int64_t> ic, kh, kw;
  explicit Columns(const Geometry& g) : ic(g.C * g.KH * g.KW), kh(ic.size()), kw(ic.size()) {
    for (int64_t c = 0, j = 0; c < g.C; ++c)
      for (int64_t h = 0; h < g.KH; ++h)
        for (int64_t w = 0; w < g.KW; ++w, ++j) ic[j] = c, kh[j] = h, kw[j] = w;
  }
};

// The offset of every CSR entry into the padded batch-last x: ic * plane + kh dh * row + kw dw * Bp.
std::vector<int64_t> x_offsets(const Geometry& g, const int64_t* col, int64_t nnz, int64_t Hp, int64_t Wp) {
  const Columns t(g);
  std::vector<int64_t> off(nnz);
  for (int64_t p = 0; p < nnz; ++p) {
    const int64_t c = col[p];
    off[p] = ((t.ic[c] * Hp + t.kh[c] * g.dh) * Wp + t.kw[c] * g.dw) * g.Bp;
  }
  return off;
}

// The offset of vector v of an output row (position v L / Bp, batch lanes v L % Bp) into a batch-last row read
// with column stride `step`.
std::vector<int64_t> row_offsets(int64_t nv, int64_t lanes, int64_t Bp, int64_t step) {
  std::vector<int64_t> off(nv);
  for (int64_t v = 0; v < nv; ++v) off[v] = (v * lanes / Bp) * step * Bp + v * lanes % Bp;
  return off;
}

template <typename T>
void fwd_impl(const Geometry& g, const at::Tensor& xt, const int64_t* crow, const std::vector<int64_t>& off,
              const T* vals, const T* bias, at::Tensor& yt) {
  constexpr int64_t L = Vec<T>::kLanes;
  // Tiles over the vectors of the whole output plane in row-major order: a tile may span rows, so that small
  // planes (2x2, 4x4) fill whole tiles too.
  const int64_t Wp = xt.size(2), nv = g.OW * g.Bp / L, total = g.OH * nv, tiles = (total + kTile - 1) / kTile;
  const auto voff = row_offsets(nv, L, g.Bp, g.sw);
  const T* px = xt.const_data_ptr<T>();
  T* py = yt.mutable_data_ptr<T>();
  at::parallel_for(0, tiles, 1, [&](int64_t begin, int64_t end) {
    const T* in[kTile];
    T* out[kTile];
    for (int64_t item = begin; item < end; ++item) {
      const int64_t u0 = item * kTile, n = std::min(kTile, total - u0);
      for (int64_t r = 0; r < n; ++r) in[r] = px + (u0 + r) / nv * g.sh * Wp * g.Bp + voff[(u0 + r) % nv];
      for (int64_t oc = 0; oc < g.O; ++oc) {
        T* yrow = py + oc * total * L + u0 * L;
        for (int64_t r = 0; r < n; ++r) out[r] = yrow + r * L;
        gather(in, out, n, off.data() + crow[oc], vals + crow[oc], crow[oc + 1] - crow[oc],
               bias ? bias[oc] : T(0));
      }
    }
  });
}

// dx: the entries regrouped by input channel and stride phase; dyt is dy in batch-last layout padded by
// (top, left) so that oh = yh / sh - (kh dh) / sh reads row oh + top for every kept kh of the phase.
template <typename T>
void dx_impl(const Geometry& g, const at::Tensor& dyt, int64_t top, int64_t left, const int64_t* crow,
             const int64_t* col, const T* values, at::Tensor& dxt) {
  constexpr int64_t L = Vec<T>::kLanes;
  const int64_t Hq = dyt.size(1), Wq = dyt.size(2), phases = g.sh * g.sw;
  const int64_t groups = g.C * phases, nnz = crow[g.O];
  // Counting sort of the entries into (ic, phase h, phase w) groups, stable in CSR order; per column its group
  // and its offset into dy (less oc's plane), from tables.
  const Columns t(g);
  std::vector<int64_t> col_key(t.ic.size()), col_off(t.ic.size());
  for (size_t c = 0; c < t.ic.size(); ++c) {
    col_key[c] = (t.ic[c] * g.sh + t.kh[c] * g.dh % g.sh) * g.sw + t.kw[c] * g.dw % g.sw;
    col_off[c] = (-(t.kh[c] * g.dh / g.sh) * Wq - t.kw[c] * g.dw / g.sw) * g.Bp;
  }
  std::vector<int64_t> start(groups + 1, 0), off(nnz);
  std::vector<T> vals(nnz);
  for (int64_t p = 0; p < nnz; ++p) ++start[col_key[col[p]] + 1];
  for (int64_t k = 0; k < groups; ++k) start[k + 1] += start[k];
  std::vector<int64_t> fill(start.begin(), start.end() - 1);
  for (int64_t oc = 0; oc < g.O; ++oc) {
    for (int64_t p = crow[oc]; p < crow[oc + 1]; ++p) {
      const int64_t q = fill[col_key[col[p]]]++;
      off[q] = oc * Hq * Wq * g.Bp + col_off[col[p]];
      vals[q] = values[p];
    }
  }
  // Work items: (block of input rows, column phase, tile of the block's vectors of that phase). At row stride 1
  // every row has the same phase, and a block is the whole plane, so that a tile may span rows (small planes
  // fill whole tiles too); otherwise a block is one row.
  const int64_t span = g.sh == 1 ? g.H : 1, blocks = g.H / span, vb = g.Bp / L;
  const int64_t per_phase = (g.W + g.sw - 1) / g.sw * vb, tiles = (span * per_phase + kTile - 1) / kTile;
  const T* pdy = dyt.const_data_ptr<T>();
  T* pdx = dxt.mutable_data_ptr<T>();
  at::parallel_for(0, blocks * g.sw * tiles, 1, [&](int64_t begin, int64_t end) {
    const T* in[kTile];
    T* out[kTile];
    for (int64_t item = begin; item < end; ++item) {
      const int64_t h0 = item / (g.sw * tiles) * span, rho = item / tiles % g.sw, u0 = item % tiles * kTile;
      // Padded columns xw = iw + pw of phase rho, in increasing order: the first is the least >= pw.
      const int64_t first = g.pw + ((rho - g.pw) % g.sw + g.sw) % g.sw;
      const int64_t count = first < g.pw + g.W ? (g.pw + g.W - first + g.sw - 1) / g.sw * vb : 0;
      const int64_t n = std::min(kTile, span * count - u0);
      if (n <= 0) continue;
      int64_t at[kTile];  // where vector r of the tile lands in a plane of dx
      for (int64_t r = 0; r < n; ++r) {
        const int64_t ih = h0 + (u0 + r) / count, v = (u0 + r) % count;
        const int64_t k = v / vb, lane = v % vb * L, xw = first + k * g.sw;
        in[r] = pdy + ((ih + g.ph) / g.sh + top) * Wq * g.Bp + (xw / g.sw + left) * g.Bp + lane;
        at[r] = (ih * g.W + xw - g.pw) * g.Bp + lane;
      }
      const int64_t phase_h = (h0 + g.ph) % g.sh;
      for (int64_t ic = 0; ic < g.C; ++ic) {
        T* plane = pdx + ic * g.H * g.W * g.Bp;
        for (int64_t r = 0; r < n; ++r) out[r] = plane + at[r];
        const int64_t grp = (ic * g.sh + phase_h) * g.sw + rho;
        gather(in, out, n, off.data() + start[grp], vals.data() + start[grp], start[grp + 1] - start[grp], T(0));
      }
    }
  });
}

// G dot products sum_v dy[dyo[v]] * x[xo[v] + off[p + j]] over nv vectors, added to acc[p + j]; with Unit, both are
// read contiguously (dyo[v] = xo[v] = v L: one row at column stride 1).
template <typename T, int G, bool Unit>
inline void dots(const T* dy, const int64_t* dyo, const T* xrow, const int64_t* xo, int64_t nv, const int64_t* off,
                 typename Vec<T>::type* acc) {
  using V = Vec<T>;
  typename V::type s[2][G];  // two sums per entry over alternate vectors: twice the FMAs in flight
  const T* xs[G];
  for (int j = 0; j < G; ++j) s[0][j] = acc[j], s[1][j] = typename V::type{}, xs[j] = xrow + off[j];
  int64_t v = 0;
  for (; v + 2 <= nv; v += 2) {
    for (int u = 0; u < 2; ++u) {
      const typename V::type d = V::load(dy + (Unit ? (v + u) * V::kLanes : dyo[v + u]));
      const int64_t o = Unit ? (v + u) * V::kLanes : xo[v + u];
      for (int j = 0; j < G; ++j) s[u][j] += d * V::load(xs[j] + o);
    }
  }
  for (; v < nv; ++v) {
    const typename V::type d = V::load(dy + (Unit ? v * V::kLanes : dyo[v]));
    const int64_t o = Unit ? v * V::kLanes : xo[v];
    for (int j = 0; j < G; ++j) s[0][j] += d * V::load(xs[j] + o);
  }
  for (int j = 0; j < G; ++j) acc[j] = s[0][j] + s[1][j];
}

template <typename T, bool Unit>
inline void row_dots(const T* dy, const int64_t* dyo, const T* xrow, const int64_t* xo, int64_t nv,
                     const int64_t* off, int64_t n, typename Vec<T>::type* acc) {
  int64_t p = 0;
  for (; p + 4 <= n; p += 4) dots<T, 4, Unit>(dy, dyo, xrow, xo, nv, off + p, acc + p);
  for (; p < n; ++p) dots<T, 1, Unit>(dy, dyo, xrow, xo, nv, off + p, acc + p);
}

template <typename T>
void dw_impl(const Geometry& g, const at::Tensor& xt, const at::Tensor& dyt, int64_t top, int64_t left,
             const int64_t* crow, const std::vector<int64_t>& off, T* dvalues) {
  using V = Vec<T>;
  constexpr int64_t L = V::kLanes;
  const int64_t Wp = xt.size(2), Hq = dyt.size(1), Wq = dyt.size(2), nv = g.OW * g.Bp / L;
  // Blocks of output rows with about 32 vectors or more: a small plane (2x2, 4x4) is one block, so that its few
  // vectors per row do not each pay a pass over the entries.
  const int64_t span = std::clamp<int64_t>((32 + nv - 1) / nv, 1, g.OH), blocks = (g.OH + span - 1) / span;
  const bool unit = span == 1 && g.sw == 1;
  const auto voff = row_offsets(nv, L, g.Bp, g.sw);
  std::vector<int64_t> dyo(span * nv), xo(span * nv);  // offsets of the vectors of a block from its first row
  for (int64_t r = 0; r < span; ++r) {
    for (int64_t v = 0; v < nv; ++v) {
      dyo[r * nv + v] = r * Wq * g.Bp + v * L;
      xo[r * nv + v] = r * g.sh * Wp * g.Bp + voff[v];
    }
  }
  const T* px = xt.const_data_ptr<T>();
  const T* pdy = dyt.const_data_ptr<T>();
  at::parallel_for(0, g.O, 1, [&](int64_t begin, int64_t end) {
    const int64_t lo = crow[begin], n = crow[end] - lo;
    std::vector<typename V::type> acc(n, typename V::type{});
    for (int64_t blk = 0; blk < blocks; ++blk) {
      const int64_t oh = blk * span, count = std::min(span, g.OH - oh) * nv;
      const T* xrow = px + oh * g.sh * Wp * g.Bp;
      for (int64_t oc = begin; oc < end; ++oc) {
        const T* dy = pdy + ((oc * Hq + oh + top) * Wq + left) * g.Bp;
        const int64_t p = crow[oc], n_oc = crow[oc + 1] - p;
        if (unit)
          row_dots<T, true>(dy, dyo.data(), xrow, xo.data(), count, off.data() + p, n_oc, &acc[p - lo]);
        else
          row_dots<T, false>(dy, dyo.data(), xrow, xo.data(), count, off.data() + p, n_oc, &acc[p - lo]);
      }
    }
    for (int64_t q = 0; q < n; ++q) {
      T s = 0;
      for (int64_t l = 0; l < L; ++l) s += acc[q][l];
      dvalues[lo + q] = s;
    }
  });
}

// ---- The direct path: NCHW as it comes, vectors along the output width ----
// out[b][o][r][c] = init[o] + sum_e vals[e] in[b][ch[e]][r sh + rs[e]][c sw + cs[e]] over the entries e of o, with in
// read as zero outside its plane. No layout copy: x, y, dy and dx are read and written where they are, and a vector
// that reaches over an edge of the plane is loaded with a lane mask. Where the work per element is small (very
// sparse layers on large planes) the batch-last copies cost more than the convolution itself.

// Lanes [lo, hi) of the vector at p, zeros elsewhere; lanes outside [lo, hi) are not read.
template <typename T>
inline typename Vec<T>::type load_part(const T* p, int64_t lo, int64_t hi) {
  using V = Vec<T>;
  typename V::type v;
#if defined(__AVX512F__)
  const auto bits = static_cast<uint32_t>(((uint64_t{1} << hi) - 1) & ~((uint64_t{1} << lo) - 1));
  if constexpr (std::is_same_v<T, float>) {
    const __m512 r = _mm512_maskz_loadu_ps(static_cast<__mmask16>(bits), p);
    std::memcpy(&v, &r, sizeof(v));
  } else {
    const __m512d r = _mm512_maskz_loadu_pd(static_cast<__mmask8>(bits), p);
    std::memcpy(&v, &r, sizeof(v));
  }
#else
  if (lo == 0 && hi == V::kLanes) return V::load(p);
  v = typename V::type{};
  for (int64_t l = lo; l < hi; ++l) v[l] = p[l];
#endif
  return v;
}

// Lanes [0, n) of v stored at p.
template <typename T>
inline void store_part(T* p, typename Vec<T>::type v, int64_t n) {
  if (n == Vec<T>::kLanes) return Vec<T>::store(p, v);
  for (int64_t l = 0; l < n; ++l) p[l] = v[l];
}

// Lanes l < n of the vector row[j0 + 2 l], zeros where the column j0 + 2 l is outside [0, W) (not read there): the
// columns a vector of outputs reads at column stride 2.
template <typename T>
inline typename Vec<T>::type load_even(const T* row, int64_t j0, int64_t W, int64_t n) {
  using V = Vec<T>;
  constexpr int64_t L = V::kLanes;
  typename V::type v;
#if defined(__AVX512F__)
  if constexpr (std::is_same_v<T, float>) {
    // the 2 L columns from j0 in two masked loads, their even lanes gathered by one permutation
    const auto part = [&](int64_t k0) {  // lanes k of row[k0 + k] with 0 <= k0 + k < W
      const int64_t lo = std::clamp<int64_t>(-k0, 0, L), hi = std::clamp<int64_t>(W - k0, 0, L);
      const auto bits = hi > lo ? ((uint32_t{1} << hi) - 1) & ~((uint32_t{1} << lo) - 1) : 0u;
      return _mm512_maskz_loadu_ps(static_cast<__mmask16>(bits), row + k0);
    };
    const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    const __m512 r = _mm512_maskz_permutex2var_ps(static_cast<__mmask16>((uint32_t{1} << n) - 1), part(j0), even,
                                                  part(j0 + L));
    std::memcpy(&v, &r, sizeof(v));
    return v;
  }
#endif
  v = typename V::type{};
  for (int64_t l = 0; l < n; ++l) {
    const int64_t j = j0 + 2 * l;
    if (j >= 0 && j < W) v[l] = row[j];
  }
  return v;
}

// The entries of a direct product grouped by output channel: start (groups + 1), and per entry the input
// channel, row and column shifts and the value.
template <typename T>
struct Taps {
  std::vector<int64_t> start, ch, rs, cs;
  std::vector<T> vals;
};

// The forward's taps: the CSR rows as they are, rs = kh dh - ph, cs = kw dw - pw.
template <typename T>
Taps<T> forward_taps(const Geometry& g, const int64_t* crow, const int64_t* col, const T* values) {
  const int64_t nnz = crow[g.O];
  const Columns c(g);
  Taps<T> t{std::vector<int64_t>(crow, crow + g.O + 1), std::vector<int64_t>(nnz), std::vector<int64_t>(nnz),
            std::vector<int64_t>(nnz), std::vector<T>(values, values + nnz)};
  for (int64_t p = 0; p < nnz; ++p) {
    const int64_t j = col[p];
    t.ch[p] = c.ic[j], t.rs[p] = c.kh[j] * g.dh - g.ph, t.cs[p] = c.kw[j] * g.dw - g.pw;
  }
  return t;
}

// dx's taps: the entries regrouped by input channel (stable in CSR order), reading dy at the opposite shifts.
template <typename T>
Taps<T> input_taps(const Geometry& g, const int64_t* crow, const int64_t* col, const T* values) {
  const auto f = forward_taps<T>(g, crow, col, values);
  const int64_t nnz = crow[g.O];
  Taps<T> t{std::vector<int64_t>(g.C + 1, 0), std::vector<int64_t>(nnz), std::vector<int64_t>(nnz),
            std::vector<int64_t>(nnz), std::vector<T>(nnz)};
  for (int64_t p = 0; p < nnz; ++p) ++t.start[f.ch[p] + 1];
  for (int64_t c = 0; c < g.C; ++c) t.start[c + 1] += t.start[c];
  std::vector<int64_t> fill(t.start.begin(), t.start.end() - 1);
  for (int64_t oc = 0; oc < g.O; ++oc) {
    for (int64_t p = crow[oc]; p < crow[oc + 1]; ++p) {
      const int64_t q = fill[f.ch[p]]++;
      t.ch[q] = oc, t.rs[q] = -f.rs[p], t.cs[q] = -f.cs[p], t.vals[q] = values[p];
    }
  }
  return t;
}

// One tile of R rows x NV vectors of out[b][o] starting at (r0, c0) in registers; the input is read at row stride
// sh and column stride S (1, or 2 with load_even).
template <typename T, int NV, int S>
void direct_tile(const T* in, int64_t Hin, int64_t Win, const Taps<T>& t, int64_t o, T init, T* out, int64_t Hout,
                 int64_t Wout, int64_t r0, int64_t c0, int64_t sh) {
  using V = Vec<T>;
  constexpr int64_t L = V::kLanes;
  constexpr int R = NV >= kTile ? 1 : static_cast<int>(kTile / NV);
  typename V::type acc[R][NV];
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < NV; ++c) acc[r][c] = typename V::type{} + init;
  for (int64_t e = t.start[o]; e < t.start[o + 1]; ++e) {
    const T* plane = in + t.ch[e] * Hin * Win;
    const typename V::type v = typename V::type{} + t.vals[e];
    const int64_t rs = t.rs[e];
    for (int c = 0; c < NV; ++c) {
      const int64_t w0 = (c0 + c * L) * S + t.cs[e];
      const int64_t lo = std::clamp<int64_t>(-w0, 0, L), hi = std::clamp<int64_t>(Win - w0, 0, L);
      if (S == 1 && hi <= lo) continue;
      for (int r = 0; r < R; ++r) {
        const int64_t ih = (r0 + r) * sh + rs;
        if (ih < 0 || ih >= Hin) continue;
        if constexpr (S == 1)
          acc[r][c] += v * load_part(plane + ih * Win + w0, lo, hi);
        else
          acc[r][c] += v * load_even(plane + ih * Win, w0, Win, L);
      }
    }
  }
  for (int r = 0; r < R && r0 + r < Hout; ++r)
    for (int c = 0; c < NV && c0 + c * L < Wout; ++c)
      store_part(out + (r0 + r) * Wout + c0 + c * L, acc[r][c], std::min<int64_t>(L, Wout - c0 - c * L));
}

// out (B, groups, Hout, Wout) from in (B, channels, Hin, Win) through the taps; items (b, o, row block, column
// block) with b outermost, so that one sample's input stays in cache while every group reads it.
template <typename T, int NV, int S>
void direct_product(const T* in, int64_t channels, int64_t Hin, int64_t Win, const Taps<T>& t, const T* bias,
                    T* out, int64_t B, int64_t Hout, int64_t Wout, int64_t sh) {
  constexpr int64_t L = Vec<T>::kLanes;
  constexpr int64_t R = NV >= kTile ? 1 : kTile / NV;
  const int64_t groups = static_cast<int64_t>(t.start.size()) - 1, nvw = (Wout + L - 1) / L;
  const int64_t rblocks = (Hout + R - 1) / R, cblocks = (nvw + NV - 1) / NV, per_group = rblocks * cblocks;
  at::parallel_for(0, B * groups * per_group, 1, [&](int64_t begin, int64_t end) {
    for (int64_t item = begin; item < end; ++item) {
      const int64_t bo = item / per_group, b = bo / groups, o = bo % groups, k = item % per_group;
      direct_tile<T, NV, S>(in + b * channels * Hin * Win, Hin, Win, t, o, bias ? bias[o] : T(0),
                            out + bo * Hout * Wout, Hout, Wout, k / cblocks * R, k % cblocks * NV * L, sh);
    }
  });
}

// out = the direct product at row stride sh and column stride sw (1 or 2).
template <typename T>
void direct(const T* in, int64_t channels, int64_t Hin, int64_t Win, const Taps<T>& t, const T* bias, T* out,
            int64_t B, int64_t Hout, int64_t Wout, int64_t sh, int64_t sw) {
  constexpr int64_t L = Vec<T>::kLanes;
  const int64_t nv = std::min<int64_t>((Wout + L - 1) / L, kTile);
  const auto run = [&](auto nv_tag, auto s_tag) {
    direct_product<T, decltype(nv_tag)::value, decltype(s_tag)::value>(in, channels, Hin, Win, t, bias, out, B,
                                                                       Hout, Wout, sh);
  };
  const auto with_stride = [&](auto nv_tag) {
    if (sw == 1) return run(nv_tag, std::integral_constant<int, 1>{});
    run(nv_tag, std::integral_constant<int, 2>{});
  };
  switch (nv) {
    case 1: return with_stride(std::integral_constant<int, 1>{});
    case 2: return with_stride(std::integral_constant<int, 2>{});
    case 3: return with_stride(std::integral_constant<int, 3>{});
    case 4: return with_stride(std::integral_constant<int, 4>{});
    default: return with_stride(std::integral_constant<int, 8>{});
  }
}

// dvalues[e] = sum over (b, r, c) of dy[b][oc][r][c] x[b][ic][r sh + rs][c sw + cs]: per output channel, b
// outermost (one sample's x stays in cache), one vector sum per entry, reduced over its lanes at the end.
template <typename T>
void direct_dw(const Geometry& g, const T* x, const T* dy, const Taps<T>& t, T* dvalues) {
  using V = Vec<T>;
  constexpr int64_t L = V::kLanes;
  const int64_t nvw = (g.OW + L - 1) / L;
  at::parallel_for(0, g.O, 1, [&](int64_t begin, int64_t end) {
    const int64_t lo_e = t.start[begin], n = t.start[end] - lo_e;
    std::vector<typename V::type> acc(n, typename V::type{});
    for (int64_t b = 0; b < g.B; ++b) {
      for (int64_t oc = begin; oc < end; ++oc) {
        const T* dyp = dy + (b * g.O + oc) * g.OH * g.OW;
        for (int64_t e = t.start[oc]; e < t.start[oc + 1]; ++e) {
          const T* xp = x + (b * g.C + t.ch[e]) * g.H * g.W;
          // the output rows r whose input row r sh + rs is inside the plane
          const int64_t rs = t.rs[e], r_lo = std::max<int64_t>(0, (-rs + g.sh - 1) / g.sh);
          const int64_t r_hi = g.H - 1 - rs < 0 ? 0 : std::min(g.OH, (g.H - 1 - rs) / g.sh + 1);
          typename V::type s0{}, s1{};
          for (int64_t c = 0; c < nvw; ++c) {
            const int64_t n_out = std::min(L, g.OW - c * L);  // lanes of output columns < OW
            if (g.sw == 1) {
              // lanes whose input column is inside the plane
              const int64_t w0 = c * L + t.cs[e];
              const int64_t lo = std::clamp<int64_t>(-w0, 0, L);
              const int64_t hi = std::min(std::clamp<int64_t>(g.W - w0, 0, L), n_out);
              if (hi <= lo) continue;
              int64_t r = r_lo;
              for (; r + 2 <= r_hi; r += 2) {
                s0 += load_part(dyp + r * g.OW + c * L, lo, hi) * load_part(xp + (r * g.sh + rs) * g.W + w0, lo, hi);
                s1 += load_part(dyp + (r + 1) * g.OW + c * L, lo, hi) *
                      load_part(xp + ((r + 1) * g.sh + rs) * g.W + w0, lo, hi);
              }
              if (r < r_hi)
                s0 += load_part(dyp + r * g.OW + c * L, lo, hi) * load_part(xp + (r * g.sh + rs) * g.W + w0, lo, hi);
            } else {
              const int64_t w0 = c * L * 2 + t.cs[e];
              for (int64_t r = r_lo; r < r_hi; ++r)
                s0 += load_part(dyp + r * g.OW + c * L, 0, n_out) * load_even(xp + (r * g.sh + rs) * g.W, w0, g.W, n_out);
            }
          }
          acc[e - lo_e] += s0 + s1;
        }
      }
    }
    for (int64_t q = 0; q < n; ++q) {
      T s = 0;
      for (int64_t l = 0; l < L; ++l) s += acc[q][l];
      dvalues[lo_e + q] = s;
    }
  });
}

// Whether the layer runs on the direct path: path 1 forces batch-last, 2 direct, 0 chooses: column stride 1 or 2,
// output rows of at least one whole vector and at most kDirectTaps kept entries per output channel on average.
// The direct kernels do about half the FMAs per cycle of the batch-last ones (their loads are shifted by the
// kernel columns and cross cache lines), but copy nothing, so they win where the entries per output are few: below
// about 12 per output channel on the 16x16 and 32x32 planes measured (docs/results.md, "issue 22"). At stride 1 dx
// runs directly too; at column stride 2 it runs batch-last (dy would have to be spread over every other lane).
constexpr int64_t kDirectTaps = 12;
bool chosen_direct(const Geometry& g, int64_t lanes, int64_t nnz, int64_t path) {
  TORCH_CHECK(path >= 0 && path <= 2 && (path != 2 || g.sw <= 2),
              "sparse_conv: path is 0 (automatic), 1 (batch-last) or 2 (direct, column stride 1 or 2), got ", path);
  return path == 2 || (path == 0 && g.sw <= 2 && g.OW >= lanes && nnz <= kDirectTaps * g.O);
}

void check(const at::Tensor& x, const at::Tensor& crow, const at::Tensor& col, const at::Tensor& values,
           at::IntArrayRef kernel, at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation) {
  TORCH_CHECK(x.device().is_cpu() && x.dim() == 4 && x.is_contiguous(), "sparse_conv: expected x (B, C, H, W), "
              "contiguous, on CPU");
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble,
              "sparse_conv: the C++ kernel runs float32 and float64, got ", x.scalar_type());
  TORCH_CHECK(x.scalar_type() == values.scalar_type(), "sparse_conv: x and values dtypes differ");
  TORCH_CHECK(kernel.size() == 2 && stride.size() == 2 && padding.size() == 2 && dilation.size() == 2,
              "sparse_conv: expected kernel, stride, padding and dilation as pairs");
  TORCH_CHECK(crow.scalar_type() == at::kLong && col.scalar_type() == at::kLong && crow.is_contiguous() &&
                  col.is_contiguous() && values.is_contiguous() && col.numel() == values.numel(),
              "sparse_conv: expected a contiguous int64 CSR structure");
}

}  // namespace

std::tuple<at::Tensor, std::optional<at::Tensor>> sparse_conv_fwd(
    const at::Tensor& x, const at::Tensor& crow, const at::Tensor& col, const at::Tensor& values,
    at::IntArrayRef kernel, at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,
    const std::optional<at::Tensor>& bias, bool keep_layout, int64_t path) {
  check(x, crow, col, values, kernel, stride, padding, dilation);
  at::Tensor y;
  std::optional<at::Tensor> layout;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "sparse_conv_fwd", [&] {
    const Geometry g(x.sizes(), crow.numel() - 1, kernel, stride, padding, dilation, Vec<scalar_t>::kLanes);
    if (g.B == 0 || g.O == 0) {
      y = at::empty({g.B, g.O, g.OH, g.OW}, x.options());
      return;
    }
    const auto b = bias.has_value() ? bias->contiguous() : at::Tensor();
    const scalar_t* pb = b.defined() ? b.const_data_ptr<scalar_t>() : nullptr;
    if (chosen_direct(g, Vec<scalar_t>::kLanes, col.numel(), path)) {
      const auto t = forward_taps<scalar_t>(g, crow.const_data_ptr<int64_t>(), col.const_data_ptr<int64_t>(),
                                            values.const_data_ptr<scalar_t>());
      y = empty_output({g.B, g.O, g.OH, g.OW}, x.options());
      direct<scalar_t>(x.const_data_ptr<scalar_t>(), g.C, g.H, g.W, t, pb, y.mutable_data_ptr<scalar_t>(), g.B, g.OH,
                       g.OW, g.sh, g.sw);
      return;
    }
    const int64_t Hp = g.H + 2 * g.ph, Wp = g.W + 2 * g.pw;
    const auto xt = to_batch_last<scalar_t>(x, Hp, Wp, g.ph, g.pw, g.Bp);
    const auto off = x_offsets(g, col.const_data_ptr<int64_t>(), col.numel(), Hp, Wp);
    auto yt = empty_output({g.O, g.OH, g.OW, g.Bp}, x.options());
    fwd_impl<scalar_t>(g, xt, crow.const_data_ptr<int64_t>(), off, values.const_data_ptr<scalar_t>(), pb, yt);
    y = from_batch_last<scalar_t>(yt, g.B);
    if (keep_layout) layout = xt;
  });
  return {y, layout};
}

std::tuple<std::optional<at::Tensor>, std::optional<at::Tensor>> sparse_conv_bwd(
    const at::Tensor& dy, const at::Tensor& x, const at::Tensor& crow, const at::Tensor& col,
    const at::Tensor& values, at::IntArrayRef kernel, at::IntArrayRef stride, at::IntArrayRef padding,
    at::IntArrayRef dilation, bool need_dx, bool need_dvalues, const std::optional<at::Tensor>& x_layout, int64_t path) {
  check(x, crow, col, values, kernel, stride, padding, dilation);
  std::optional<at::Tensor> dx, dvalues;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "sparse_conv_bwd", [&] {
    const Geometry g(x.sizes(), crow.numel() - 1, kernel, stride, padding, dilation, Vec<scalar_t>::kLanes);
    TORCH_CHECK(dy.is_contiguous() && dy.scalar_type() == x.scalar_type() &&
                    dy.sizes() == at::IntArrayRef({g.B, g.O, g.OH, g.OW}),
                "sparse_conv: expected dy (B, O, OH, OW), contiguous, of x's dtype");
    if (need_dvalues) dvalues = at::zeros({col.numel()}, values.options());
    if (need_dx && (g.B == 0 || g.O == 0 || g.C == 0 || col.numel() == 0)) dx = at::zeros(x.sizes(), x.options());
    if (g.B == 0 || g.O == 0 || g.C == 0) return;
    const int64_t* pcrow = crow.const_data_ptr<int64_t>();
    const int64_t* pcol = col.const_data_ptr<int64_t>();
    const scalar_t* pvalues = values.const_data_ptr<scalar_t>();
    const bool direct_path = chosen_direct(g, Vec<scalar_t>::kLanes, col.numel(), path);
    if (direct_path && need_dvalues && col.numel() > 0)
      direct_dw<scalar_t>(g, x.const_data_ptr<scalar_t>(), dy.const_data_ptr<scalar_t>(),
                          forward_taps<scalar_t>(g, pcrow, pcol, pvalues), dvalues->mutable_data_ptr<scalar_t>());
    if (direct_path && g.sh == 1 && g.sw == 1) {
      if (need_dx && col.numel() > 0) {
        dx = empty_output(x.sizes(), x.options());  // every element is written
        direct<scalar_t>(dy.const_data_ptr<scalar_t>(), g.O, g.OH, g.OW, input_taps<scalar_t>(g, pcrow, pcol, pvalues),
                         nullptr, dx->mutable_data_ptr<scalar_t>(), g.B, g.H, g.W, 1, 1);
      }
      return;
    }
    if (!need_dx && direct_path) return;
    // dy padded for dx's reads: rows oh = yh / sh - kh dh / sh for yh in [ph, ph + H), so from ph / sh - (KH - 1)
    // dh / sh up to (H - 1 + ph) / sh; likewise columns.
    const int64_t top = std::max<int64_t>(0, (g.KH - 1) * g.dh / g.sh - g.ph / g.sh);
    const int64_t left = std::max<int64_t>(0, (g.KW - 1) * g.dw / g.sw - g.pw / g.sw);
    const int64_t Hq = top + std::max(g.OH, (g.H - 1 + g.ph) / g.sh + 1);
    const int64_t Wq = left + std::max(g.OW, (g.W - 1 + g.pw) / g.sw + 1);
    const auto dyt = to_batch_last<scalar_t>(dy, Hq, Wq, top, left, g.Bp);
    if (need_dvalues && col.numel() > 0 && !direct_path) {
      const int64_t Hp = g.H + 2 * g.ph, Wp = g.W + 2 * g.pw;
      const bool kept = x_layout.has_value() && x_layout->defined();
      TORCH_CHECK(!kept || (x_layout->sizes() == at::IntArrayRef({g.C, Hp, Wp, g.Bp}) && x_layout->is_contiguous() &&
                            x_layout->scalar_type() == x.scalar_type()),
                  "sparse_conv: x_layout is not the forward's layout of this x");
      const auto xt = kept ? *x_layout : to_batch_last<scalar_t>(x, Hp, Wp, g.ph, g.pw, g.Bp);
      const auto off = x_offsets(g, pcol, col.numel(), Hp, Wp);
      dw_impl<scalar_t>(g, xt, dyt, top, left, pcrow, off, dvalues->mutable_data_ptr<scalar_t>());
    }
    if (need_dx && col.numel() > 0) {
      auto dxt = empty_output({g.C, g.H, g.W, g.Bp}, x.options());  // every element is written
      dx_impl<scalar_t>(g, dyt, top, left, pcrow, pcol, pvalues, dxt);
      dx = from_batch_last<scalar_t>(dxt, g.B);
    }
  });
  return {dx, dvalues};
}

bool sparse_conv_direct(at::IntArrayRef x_sizes, at::ScalarType dtype, int64_t out_channels, int64_t nnz,
                        at::IntArrayRef kernel, at::IntArrayRef stride, at::IntArrayRef padding,
                        at::IntArrayRef dilation) {
  TORCH_CHECK(x_sizes.size() == 4 && kernel.size() == 2 && stride.size() == 2 && padding.size() == 2 &&
                  dilation.size() == 2,
              "sparse_conv_direct: expected x's sizes (B, C, H, W) and the geometry as pairs");
  bool chosen = false;
  AT_DISPATCH_FLOATING_TYPES(dtype, "sparse_conv_direct", [&] {
    const Geometry g(x_sizes, out_channels, kernel, stride, padding, dilation, Vec<scalar_t>::kLanes);
    chosen = chosen_direct(g, Vec<scalar_t>::kLanes, nnz, 0);
  });
  return chosen;
}

}  // namespace panning
