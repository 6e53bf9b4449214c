// Exact top-k masks: keep the k largest scores of every segment, exactly k, ties to the lower index,
// -0.0 == +0.0, NaN rejected.
//
// Scores map to unsigned keys whose integer order is the float order; the threshold (the k-th largest key)
// is found by radix select inside a sampled bracket, never by sorting:
//   1. bracket: order statistics of a strided sample give a range [lo, hi] that holds the threshold with high
//      probability (a small segment is its own sample, which makes lo == hi the threshold itself);
//   2. one pass over the scores writes 1 above hi and 0 below lo (a vectorized loop of float compares),
//      counts both, rejects NaN, and for the few elements inside the bracket histograms the first radix
//      digit of (key - lo) and writes the digit's top bits into their mask byte (a "coarse code");
//   3. the histogram names the digit that holds the threshold; one vectorized pass over the mask bytes
//      ("settle") decides every bracketed element whose coarse code differs from the threshold's, without
//      reading its score again. If the threshold was outside the bracket after all (a sampling miss), the
//      side that holds it becomes undecided instead: still exact, only slower;
//   4. more radix digits over the remaining undecided elements (found through the mask) narrow the range to
//      the threshold itself, deciding the elements that fall outside;
//   5. the elements equal to the threshold are counted per chunk; a prefix sum of the counts says how many
//      each chunk keeps, so that ties go to the lower index.
// The kept set is unique, so any schedule that computes it exactly gives the same mask: the result does not
// depend on the thread count, the sample or the bracket.
//
// Extra memory beyond the mask: per thread a histogram of at most 2^16 bins and a sample of at most 2^16 keys,
// plus 16 bytes per 4096 scores of bookkeeping; the scores are never copied.
// All positions, sizes and counts are int64, so segments and arenas may hold more than 2^31 elements; only
// the per-part histograms count in uint32, and a part holds fewer than 2^31 elements (kPartLimit).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <tuple>
#include <vector>

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

#include "ops.h"

namespace panning {
namespace {

// ---------------------------------------------------------------------------------------------------
// Order-preserving keys. Half and BFloat16 widen exactly to float, so they share float's keys and compare
// as floats.

template <typename scalar_t>
struct Keys {
  using key_t = uint32_t;
  using value_t = float;
  static inline key_t key(scalar_t v) {
    const float f = static_cast<float>(v);
    uint32_t u;
    std::memcpy(&u, &f, sizeof u);
    u = (u << 1) ? u : 0u;  // -0.0 -> +0.0 (an integer test: immune to flush-denormal modes)
    // Negative: flip all bits (a larger magnitude gives a smaller key); positive: set the sign bit.
    return u ^ (static_cast<uint32_t>(static_cast<int32_t>(u) >> 31) | 0x80000000u);
  }
  static inline value_t value(key_t key) {  // the inverse of key(), for keys of non-NaN values
    const uint32_t u = (key & 0x80000000u) ? key ^ 0x80000000u : ~key;
    float f;
    std::memcpy(&f, &u, sizeof f);
    return f;
  }
};

template <>
struct Keys<double> {
  using key_t = uint64_t;
  using value_t = double;
  static inline key_t key(double v) {
    uint64_t u;
    std::memcpy(&u, &v, sizeof u);
    u = (u << 1) ? u : 0u;
    return u ^ (static_cast<uint64_t>(static_cast<int64_t>(u) >> 63) | 0x8000000000000000ull);
  }
  static inline value_t value(key_t key) {
    const uint64_t u = (key & 0x8000000000000000ull) ? key ^ 0x8000000000000000ull : ~key;
    double d;
    std::memcpy(&d, &u, sizeof d);
    return d;
  }
};

template <typename key_t>
inline int bit_width(key_t v) {  // bits needed to write v: 0 for 0
  int bits = 0;
  for (; v; v >>= 1) ++bits;
  return bits;
}

template <typename scalar_t>
bool any_nan(const scalar_t* __restrict x, int64_t n) {
  int nan = 0;  // an int, not a bool: GCC vectorizes only the former reduction
  for (int64_t i = 0; i < n; ++i) {
    const auto v = static_cast<typename Keys<scalar_t>::value_t>(x[i]);
    nan |= v != v;
  }
  return nan;
}

// ---------------------------------------------------------------------------------------------------
// Mask bytes while the threshold is not known: 0 dropped, 1 kept, kUndecided not decided yet. Between the
// bracket pass and the settle pass a bracketed element's byte holds kCodeBase + its coarse code instead (the
// bracket pass writes kUndecided first, and kCodeBase directly where the key equals lo). The mask is a bool
// tensor: every byte is 0 or 1 again before the kernel returns.
constexpr uint8_t kUndecided = 2;
constexpr uint8_t kCodeBase = 4;
constexpr int kCoarseBits = 7;  // codes kCodeBase .. kCodeBase + 127 fit a byte

// Calls f(i) for every i in [begin, end) with mask[i] == kUndecided, in increasing order. It runs only where
// the bytes are 0, 1, kUndecided or kCodeBase, so bit 1 of a byte is set exactly where it is kUndecided:
// the mask is read 32 bytes at a time and the set bits enumerated. The undecided are sparse and f reads x[i]: positions are gathered a window at a time and
// their scores prefetched, so that the cache misses overlap instead of queueing.
// With `dense` set (many undecided expected) the positions are gathered by a branch-free byte loop instead:
// mispredicted branches then cost more than looking at every byte.
template <typename scalar_t, typename F>
inline void for_each_undecided(const uint8_t* mask, int64_t begin, int64_t end, const scalar_t* x, F&& f,
                               bool dense = false) {
  static_assert(kUndecided == 2 && (kCodeBase & 2) == 0, "the word test looks for bit 1");
  static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "byte j of a word is bits 8j..8j+7");
  constexpr uint64_t kBit1 = 0x0202020202020202ull;
  constexpr int64_t kWindow = 4096;
  int32_t found[kWindow];
  for (int64_t w = begin; w < end; w += kWindow) {
    const int64_t w_end = std::min(w + kWindow, end);
    int64_t count = 0, i = w;
    if (dense)
      for (; i < w_end; ++i) {
        found[count] = static_cast<int32_t>(i - w);
        count += mask[i] == kUndecided;
      }
    for (; i + 32 <= w_end; i += 32) {  // 32 bytes at a time: most groups hold no undecided byte
      uint64_t words[4];  // four word loads: one 32-byte copy would be reloaded through a stalled store
      for (int q = 0; q < 4; ++q) std::memcpy(&words[q], mask + i + 8 * q, 8);
      if (!((words[0] | words[1] | words[2] | words[3]) & kBit1)) continue;
      for (int q = 0; q < 4; ++q)
        for (uint64_t bits = words[q] & kBit1; bits; bits &= bits - 1)
          found[count++] = static_cast<int32_t>(i + 8 * q - w + (__builtin_ctzll(bits) >> 3));
    }
    for (; i < w_end; ++i)
      if (mask[i] == kUndecided) found[count++] = static_cast<int32_t>(i - w);
    for (int64_t j = 0; j < count; ++j) __builtin_prefetch(x + w + found[j]);
    for (int64_t j = 0; j < count; ++j) f(w + found[j]);
  }
}

// A radix digit over a key range starting at lo: bin = (key - lo) >> shift, bins a power of two.
struct Digit {
  int shift;
  int64_t bins;
  int coarse_shift;  // coarse code = bin >> coarse_shift
};

template <typename scalar_t>
struct Bracket {
  using key_t = typename Keys<scalar_t>::key_t;
  using value_t = typename Keys<scalar_t>::value_t;
  key_t lo, hi;
  value_t lo_value, hi_value;
  Digit digit;
};

struct BracketCounts {
  int64_t above = 0, within = 0;
  bool nan = false;
};

// The bracket pass over x[0:n): mask = 1 above the bracket, 0 below it, and a coarse code inside it, with
// the first digit of the bracketed elements counted into hist. Elements equal to lo (bin 0, code kCodeBase;
// e.g. the many exact zeros of pruned weights, or every element when lo == hi) are handled by the vectorized
// loop; the others are visited one by one while their block is in L1. Blocks of 512 keep the counters in
// int32, so that the loop vectorizes.
template <typename scalar_t>
BracketCounts bracket_pass(const scalar_t* __restrict x, uint8_t* __restrict mask, int64_t n,
                           const Bracket<scalar_t>& bracket, uint32_t* __restrict hist) {
  using K = Keys<scalar_t>;
  using value_t = typename K::value_t;
  constexpr int64_t kBlock = 512;
  const value_t lo = bracket.lo_value, hi = bracket.hi_value;
  const auto key_lo = bracket.lo;
  const int shift = bracket.digit.shift, coarse_shift = bracket.digit.coarse_shift;
  BracketCounts counts;
  int64_t at_lo = 0;
  int nan = 0;
  for (int64_t b = 0; b < n; b += kBlock) {
    const int len = static_cast<int>(std::min(kBlock, n - b));
    const scalar_t* __restrict xb = x + b;
    uint8_t* __restrict mb = mask + b;
    int32_t above = 0, inside = 0, equal = 0;
    for (int i = 0; i < len; ++i) {
      // Float compares give the key order (-0.0 == +0.0 included); NaN compares false everywhere.
      const value_t v = static_cast<value_t>(xb[i]);
      const int32_t is_above = v > hi;
      const int32_t is_equal = v == lo;
      const int32_t is_inside = (v > lo) & !is_above;
      nan |= v != v;
      mb[i] = static_cast<uint8_t>(is_above | (is_inside * kUndecided) | (is_equal * kCodeBase));
      above += is_above;
      inside += is_inside;
      equal += is_equal;
    }
    if (inside > 0)
      for_each_undecided(
          mask, b, b + len, x,
          [&](int64_t i) {
            const int64_t bin = (K::key(x[i]) - key_lo) >> shift;
            ++hist[bin];
            mask[i] = static_cast<uint8_t>(kCodeBase + (bin >> coarse_shift));
          },
          /*dense=*/inside * 32 > len);
    counts.above += above;
    counts.within += inside + equal;
    at_lo += equal;
  }
  hist[0] += static_cast<uint32_t>(at_lo);
  counts.nan = nan;
  return counts;
}

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__)
// The float bracket pass in AVX-512: the same bytes, counts and histogram as the generic pass, but the lanes
// inside the bracket are compressed into a list of positions as the vector loop finds them (register
// compress, then a plain store: the memory form of vpcompressd is microcoded on some cores), so that the
// bracketed elements are visited without scanning the block's mask bytes again.
template <>
BracketCounts bracket_pass<float>(const float* __restrict x, uint8_t* __restrict mask, int64_t n,
                                  const Bracket<float>& bracket, uint32_t* __restrict hist) {
  using K = Keys<float>;
  constexpr int64_t kBlock = 512;
  alignas(64) int32_t found[kBlock + 16];
  const __m512 lo = _mm512_set1_ps(bracket.lo_value), hi = _mm512_set1_ps(bracket.hi_value);
  const __m512i lanes = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  const __m128i one = _mm_set1_epi8(1), code_base = _mm_set1_epi8(static_cast<char>(kCodeBase));
  const auto key_lo = bracket.lo;
  const int shift = bracket.digit.shift, coarse_shift = bracket.digit.coarse_shift;
  BracketCounts counts;
  int64_t at_lo = 0;
  __mmask16 nan = 0;
  for (int64_t b = 0; b < n; b += kBlock) {
    const int64_t len = std::min(kBlock, n - b);
    int64_t count = 0;
    for (int64_t i = 0; i < len; i += 16) {
      const __mmask16 valid = len - i >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << (len - i)) - 1);
      const __m512 v = _mm512_maskz_loadu_ps(valid, x + b + i);
      const __mmask16 above = _mm512_mask_cmp_ps_mask(valid, v, hi, _CMP_GT_OQ);
      const __mmask16 equal = _mm512_mask_cmp_ps_mask(valid, v, lo, _CMP_EQ_OQ);
      const __mmask16 inside = _mm512_mask_cmp_ps_mask(valid, v, lo, _CMP_GT_OQ) & ~above;
      nan |= _mm512_mask_cmp_ps_mask(valid, v, v, _CMP_UNORD_Q);
      // Inside lanes get their code below; 0 until then.
      const __m128i bytes = _mm_or_si128(_mm_maskz_mov_epi8(above, one), _mm_maskz_mov_epi8(equal, code_base));
      _mm_mask_storeu_epi8(mask + b + i, valid, bytes);
      const __m512i at = _mm512_add_epi32(lanes, _mm512_set1_epi32(static_cast<int32_t>(i)));
      _mm512_storeu_si512(found + count, _mm512_maskz_compress_epi32(inside, at));
      count += __builtin_popcount(inside);
      counts.above += __builtin_popcount(above);
      at_lo += __builtin_popcount(equal);
    }
    for (int64_t j = 0; j < count; ++j) {
      const int64_t i = b + found[j];
      const int64_t bin = (K::key(x[i]) - key_lo) >> shift;
      ++hist[bin];
      mask[i] = static_cast<uint8_t>(kCodeBase + (bin >> coarse_shift));
    }
    counts.within += count;
  }
  counts.within += at_lo;
  hist[0] += static_cast<uint32_t>(at_lo);
  counts.nan = nan != 0;
  return counts;
}
#endif

// How a byte pass rewrites mask bytes: 0, 1, and other values below, equal to and above `code`.
struct ByteMap {
  uint8_t zero, one, below, equal, above, code;
};

// Rewrites mask[begin:end) through map and returns how many bytes become kUndecided. The map's fields are
// copied to locals (a uint8_t store may alias anything the loop reads through a pointer), and the count is
// kept in a uint8_t per 224 bytes, so that the loop vectorizes on bytes without widening.
int64_t remap(uint8_t* __restrict mask, int64_t begin, int64_t end, ByteMap map) {
  const uint8_t zero = map.zero, one = map.one, below = map.below, equal = map.equal, above = map.above;
  const uint8_t code = map.code;
  constexpr int64_t kStep = 224;
  int64_t undecided = 0;
  for (int64_t s = begin; s < end; s += kStep) {
    const int len = static_cast<int>(std::min(kStep, end - s));
    uint8_t* __restrict m = mask + s;
    uint8_t count = 0;
    for (int i = 0; i < len; ++i) {
      const uint8_t v = m[i];
      uint8_t r = v > code ? above : below;
      r = v == code ? equal : r;
      r = v == 1 ? one : r;
      r = v == 0 ? zero : r;
      m[i] = r;
      count += r == kUndecided;
    }
    undecided += count;
  }
  return undecided;
}

// The rank-th largest (1-based) of keys[0:count), by radix select: histogram a digit, move the keys of the
// bin that holds the rank to the front, and repeat on the next digit with those only. Reorders keys; hist
// has room for 2^kSampleDigit bins.
constexpr int kSampleDigit = 11;

template <typename key_t>
key_t kth_largest(key_t* __restrict keys, int64_t count, int64_t rank, uint32_t* __restrict hist) {
  constexpr int kBits = 8 * sizeof(key_t);
  for (int known = 0; known < kBits && count > 1;) {
    // About as many bins as keys: clearing a larger histogram would cost more than the keys.
    const int digit = std::min(std::clamp(bit_width<uint64_t>(count), 4, kSampleDigit), kBits - known);
    const int shift = kBits - known - digit;
    const key_t digit_mask = (key_t{1} << digit) - 1;
    std::fill(hist, hist + (int64_t{1} << digit), 0);
    for (int64_t i = 0; i < count; ++i) ++hist[(keys[i] >> shift) & digit_mask];
    key_t bin = digit_mask;
    for (; hist[bin] < rank; --bin) rank -= hist[bin];  // stops: the counts sum to count >= rank
    int64_t kept = 0;
    for (int64_t i = 0; i < count; ++i) {
      const key_t key = keys[i];
      keys[kept] = key;
      kept += ((key >> shift) & digit_mask) == bin;
    }
    count = kept;
    known += digit;
  }
  return keys[0];  // the only key left, or all keys left are equal
}

// ---------------------------------------------------------------------------------------------------
// One selection, run either by all threads (a large segment) or by the calling thread (one of many
// segments). The object keeps its buffers from one segment to the next.

constexpr int64_t kChunk = int64_t{1} << 12;      // granularity of the undecided bookkeeping: passes skip the
                                                  // chunks without undecided elements
constexpr int64_t kPartLimit = int64_t{1} << 31;  // a part's uint32 histogram cannot overflow
constexpr int64_t kMaxSample = int64_t{1} << 16;
constexpr int64_t kExactSample = int64_t{1} << 12;  // segments up to this size are their own sample
constexpr int kMaxDigit = 16;
// The bracket pass updates its histogram for about one element in a hundred, scattered through the scores:
// a histogram that stays in L1 keeps those updates cheap.
constexpr int kBracketDigit = 12;

template <typename scalar_t>
class Select {
  using K = Keys<scalar_t>;
  using key_t = typename K::key_t;
  using value_t = typename K::value_t;

  // The threshold lies in [lo, hi], and `need` elements are still to pick among the undecided in that range.
  struct Range {
    key_t lo, hi;
    int64_t need;
  };

 public:
  explicit Select(bool parallel) : parallel_(parallel) {}

  // Writes mask[0:n) for the top k of x[0:n); returns false (mask unspecified) if x holds a NaN. After a
  // successful run, tied() says whether the k-th and (k+1)-th largest are equal (some element equal to the
  // threshold was dropped).
  bool run(const scalar_t* x, uint8_t* mask, int64_t n, int64_t k) {
    tied_ = false;
    x_ = x;
    mask_ = mask;
    n_ = n;
    chunks_ = (n + kChunk - 1) / kChunk;
    const int64_t min_parts = parallel_ ? at::get_num_threads() : 1;
    parts_ = std::min(chunks_, std::max(min_parts, n / kPartLimit + 1));
    if (k == 0 || k == n) return fill(k == n);

    const Bracket<scalar_t> bracket = make_bracket(k);
    part_hist_.assign(parts_ * bracket.digit.bins, 0);
    part_counts_.assign(parts_, BracketCounts{});
    for_parts([&](int64_t p, int64_t begin, int64_t end) {
      part_counts_[p] = bracket_pass(x_ + begin, mask_ + begin, end - begin, bracket,
                                     part_hist_.data() + p * bracket.digit.bins);
    });
    BracketCounts counts;
    for (const BracketCounts& part : part_counts_) {
      counts.above += part.above;
      counts.within += part.within;
      counts.nan |= part.nan;
    }
    if (counts.nan) return false;

    Range range{bracket.lo, bracket.hi, k - counts.above};
    bool single_key = false;  // whether every undecided element is known to equal range.lo
    if (range.need <= 0) {    // sampling miss: the threshold is above the bracket
      settle({0, kUndecided, 0, 0, 0, kCodeBase});
      range = {static_cast<key_t>(bracket.hi + 1), ~key_t{0}, k};
    } else if (range.need > counts.within) {  // sampling miss: the threshold is below the bracket
      settle({kUndecided, 1, 1, 1, 1, kCodeBase});
      range = {0, static_cast<key_t>(bracket.lo - 1), range.need - counts.within};
    } else {
      int64_t bin;
      std::tie(range, bin) = pick(range, bracket.digit);
      settle({0, 1, 0, kUndecided, 1, static_cast<uint8_t>(kCodeBase + (bin >> bracket.digit.coarse_shift))});
      // A code that stands for a single bin of width 1 stands for a single key.
      single_key = bracket.digit.shift == 0 && bracket.digit.coarse_shift == 0;
    }
    if (!single_key) {
      while (range.lo != range.hi) range = narrow(range);
      resolve(range.lo);
    }
    keep_first_ties(range.need);
    int64_t equal = 0;
    for (int64_t c = 0; c < chunks_; ++c) equal += pending_[c];
    tied_ = equal > range.need;
    return true;
  }

  bool tied() const { return tied_; }

 private:
  // f(part, begin, end) over chunk-aligned parts: in parallel, or in order on this thread.
  template <typename F>
  void for_parts(F&& f) {
    auto body = [&](int64_t p0, int64_t p1) {
      for (int64_t p = p0; p < p1; ++p) {
        const int64_t c0 = p * chunks_ / parts_, c1 = (p + 1) * chunks_ / parts_;
        f(p, c0 * kChunk, std::min(c1 * kChunk, n_));
      }
    };
    if (parallel_)
      at::parallel_for(0, parts_, 1, body);
    else
      body(0, parts_);
  }

  // f(chunk, begin, end) over every chunk, or only over those with undecided elements.
  template <typename F>
  void for_chunks(bool pending_only, F&& f) {
    auto body = [&](int64_t c0, int64_t c1) {
      for (int64_t c = c0; c < c1; ++c)
        if (!pending_only || pending_[c] > 0) f(c, c * kChunk, std::min((c + 1) * kChunk, n_));
    };
    if (parallel_)
      at::parallel_for(0, chunks_, 1, body);
    else
      body(0, chunks_);
  }

  bool fill(bool keep) {
    part_counts_.assign(parts_, BracketCounts{});
    for_parts([&](int64_t p, int64_t begin, int64_t end) {
      part_counts_[p].nan = any_nan(x_ + begin, end - begin);
      std::memset(mask_ + begin, keep, end - begin);
    });
    return std::none_of(part_counts_.begin(), part_counts_.end(), [](const BracketCounts& c) { return c.nan; });
  }

  // A key range [lo, hi] that holds the k-th largest key with high probability, and its first digit: the
  // order statistics of a strided sample around the sample rank of k, 4 standard deviations of that rank
  // (plus a margin) apart. Samples and bracketed elements both cost a random access later; a sample of about
  // n^(2/3) keeps their sum low. A segment of up to kExactSample elements is its own sample, which gives the
  // exact threshold.
  Bracket<scalar_t> make_bracket(int64_t k) {
    const int64_t size = n_ <= kExactSample ? n_ : std::min<int64_t>(kMaxSample, 2 * std::cbrt(double(n_) * n_));
    const int64_t stride = n_ / size;
    sample_.resize(size);
    // Each sample is a cache miss: prefetch ahead so that many are in flight. (NaN is detected by the pass.)
    constexpr int64_t kAhead = 16;
    for (int64_t j = 0; j < size; ++j) {
      if (j + kAhead < size) __builtin_prefetch(x_ + (j + kAhead) * stride);
      sample_[j] = K::key(x_[j * stride]);
    }
    const double p = double(k) / double(n_);
    const int64_t rank = std::llround(p * double(size));  // 1-based, from the top
    const int64_t margin = size == n_ ? 0 : int64_t(4 * std::sqrt(double(size) * p * (1 - p))) + 8;
    const int64_t low_rank = rank + margin, high_rank = rank - margin;
    // Without a sample bound, the bracket reaches the infinities (only NaN keys lie beyond).
    key_t lo = K::key(-std::numeric_limits<value_t>::infinity());
    key_t hi = K::key(std::numeric_limits<value_t>::infinity());
    sample_hist_.resize(int64_t{1} << kSampleDigit);
    if (high_rank >= 1 && high_rank <= size) {
      // kth_largest reorders its input: the second order statistic works on a copy.
      sample_copy_.assign(sample_.begin(), sample_.end());
      hi = std::min(hi, kth_largest(sample_copy_.data(), size, high_rank, sample_hist_.data()));
    }
    if (low_rank >= 1 && low_rank <= size)
      lo = std::max(lo, kth_largest(sample_.data(), size, low_rank, sample_hist_.data()));
    hi = std::max(lo, hi);  // a NaN in the sample may disorder the bounds; the pass then reports it
    return {lo, hi, K::value(lo), K::value(hi), digit_for(lo, hi, (2 * margin + 1) * stride, kBracketDigit)};
  }

  // The digit for a range that holds about `count` undecided keys: as many bits as the range spans, but
  // no more than the count warrants (clearing a histogram much larger than its input costs more than
  // another pass) and no more than max_bits.
  static Digit digit_for(key_t lo, key_t hi, int64_t count, int max_bits = kMaxDigit) {
    const int span_bits = bit_width<key_t>(hi - lo);
    const int bits = std::min(span_bits, std::clamp(bit_width<uint64_t>(count), 8, max_bits));
    return {span_bits - bits, int64_t{1} << bits, std::max(0, bits - kCoarseBits)};
  }

  // From the part histograms of a digit over `range`: the bin that holds the need-th largest undecided key,
  // the narrower range it stands for, and how many are still to pick inside it.
  std::pair<Range, int64_t> pick(Range range, Digit digit) const {
    int64_t bin = digit.bins - 1;
    for (;; --bin) {
      int64_t count = 0;
      for (int64_t p = 0; p < parts_; ++p) count += part_hist_[p * digit.bins + bin];
      if (count >= range.need || bin == 0) break;
      range.need -= count;
    }
    const key_t lo = range.lo + (static_cast<key_t>(bin) << digit.shift);
    const key_t hi = lo + std::min<key_t>(range.hi - lo, (key_t{1} << digit.shift) - 1);
    return {{lo, hi, range.need}, bin};
  }

  // Rewrites every mask byte through map (to 0, 1 or kUndecided), counting the undecided per chunk.
  void settle(ByteMap map) {
    pending_.resize(chunks_);
    for_chunks(false, [&](int64_t c, int64_t begin, int64_t end) { pending_[c] = remap(mask_, begin, end, map); });
  }

  // One radix digit over the undecided elements: decides those outside the range (left by the previous
  // digit), histograms the others and narrows the range to the bin that holds the threshold.
  Range narrow(Range range) {
    int64_t undecided = 0;
    for (int64_t c = 0; c < chunks_; ++c) undecided += pending_[c];
    const Digit digit = digit_for(range.lo, range.hi, undecided);
    part_hist_.assign(parts_ * digit.bins, 0);
    for_parts([&](int64_t p, int64_t begin, int64_t end) {
      uint32_t* hist = part_hist_.data() + p * digit.bins;
      for (int64_t c = begin; c < end; c += kChunk) {
        int64_t& left = pending_[c / kChunk];
        if (left == 0) continue;
        left = 0;
        for_each_undecided(mask_, c, std::min(c + kChunk, end), x_, [&](int64_t i) {
          const key_t key = K::key(x_[i]);
          if (key < range.lo || key > range.hi) {
            mask_[i] = key > range.hi;
          } else {
            ++hist[(key - range.lo) >> digit.shift];
            ++left;
          }
        });
      }
    });
    return pick(range, digit).first;
  }

  // Decides every undecided element against the threshold; those equal to it stay undecided, and pending_
  // then counts them per chunk.
  void resolve(key_t threshold) {
    for_chunks(true, [&](int64_t c, int64_t begin, int64_t end) {
      int64_t equal = 0;
      for_each_undecided(mask_, begin, end, x_, [&](int64_t i) {
        const key_t key = K::key(x_[i]);
        if (key != threshold)
          mask_[i] = key > threshold;
        else
          ++equal;
      });
      pending_[c] = equal;
    });
  }

  // Keeps the first `need` elements equal to the threshold, in index order. A chunk whose equal elements
  // are all kept, or all dropped, is rewritten by a byte pass; only the chunk where the count runs out is
  // walked element by element.
  void keep_first_ties(int64_t need) {
    ties_kept_.resize(chunks_);
    int64_t before = 0;  // elements equal to the threshold in earlier chunks
    for (int64_t c = 0; c < chunks_; ++c) {
      ties_kept_[c] = std::clamp(need - before, int64_t{0}, pending_[c]);
      before += pending_[c];
    }
    for_chunks(true, [&](int64_t c, int64_t begin, int64_t end) {
      int64_t keep = ties_kept_[c];
      if (keep == 0 || keep == pending_[c]) {
        const uint8_t value = keep > 0;
        remap(mask_, begin, end, {0, 1, 0, value, 0, kUndecided});
        return;
      }
      for_each_undecided(mask_, begin, end, x_, [&](int64_t i) {
        mask_[i] = keep > 0;
        keep -= keep > 0;
      });
    });
  }

  const bool parallel_;
  bool tied_ = false;
  const scalar_t* x_ = nullptr;
  uint8_t* mask_ = nullptr;
  int64_t n_ = 0, chunks_ = 0, parts_ = 0;
  std::vector<key_t> sample_, sample_copy_;
  std::vector<uint32_t> sample_hist_;
  std::vector<uint32_t> part_hist_;  // one histogram per part
  std::vector<BracketCounts> part_counts_;
  std::vector<int64_t> pending_;  // per chunk: undecided elements (after resolve: those equal to the threshold)
  std::vector<int64_t> ties_kept_;  // per chunk: how many elements equal to the threshold it keeps
};

// ---------------------------------------------------------------------------------------------------
// Scheduling: a segment that would dominate one thread's share of the work is selected by all threads
// together; the other segments are spread over the threads in contiguous groups of about equal cost.

constexpr int64_t kMinParallelSegment = int64_t{1} << 16;
constexpr int64_t kSegmentOverhead = 64;  // fixed cost of a segment, in elements, when balancing groups

template <typename scalar_t>
void topk_segments(const scalar_t* x, uint8_t* mask, const int64_t* offsets, const int64_t* k, int64_t segments,
                   uint8_t* tied) {
  const int64_t total = offsets[segments];
  const int64_t threads = at::get_num_threads();
  std::vector<int64_t> serial;       // segments selected by one thread each
  std::vector<int64_t> serial_cost;  // running cost up to and including each of them
  int64_t cost = 0;
  Select<scalar_t> parallel(/*parallel=*/true);
  for (int64_t s = 0; s < segments; ++s) {
    const int64_t size = offsets[s + 1] - offsets[s];
    if (size >= kMinParallelSegment && size * 2 * threads >= total) {
      TORCH_CHECK_VALUE(parallel.run(x + offsets[s], mask + offsets[s], size, k[s]), "scores: contains NaN");
      tied[s] = parallel.tied();
    } else {
      cost += size + kSegmentOverhead;
      serial.push_back(s);
      serial_cost.push_back(cost);
    }
  }
  if (serial.empty()) return;
  const int64_t groups = std::min<int64_t>(threads, serial.size());
  std::vector<uint8_t> nan(groups, 0);
  at::parallel_for(0, groups, 1, [&](int64_t g0, int64_t g1) {
    Select<scalar_t> select(/*parallel=*/false);
    for (int64_t g = g0; g < g1; ++g) {
      // Group g takes the segments whose running cost falls in (g, g + 1] * cost / groups.
      const auto first = std::upper_bound(serial_cost.begin(), serial_cost.end(), g * cost / groups);
      const auto last = std::upper_bound(serial_cost.begin(), serial_cost.end(), (g + 1) * cost / groups);
      for (auto it = first; it != last; ++it) {
        const int64_t s = serial[it - serial_cost.begin()];
        const int64_t begin = offsets[s];
        if (!select.run(x + begin, mask + begin, offsets[s + 1] - begin, k[s])) nan[g] = 1;
        tied[s] = select.tied();
      }
    }
  });
  TORCH_CHECK_VALUE(std::none_of(nan.begin(), nan.end(), [](uint8_t v) { return v; }), "scores: contains NaN");
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> topk_mask_ties(const at::Tensor& scores, const at::Tensor& offsets,
                                                  const at::Tensor& k) {
  TORCH_CHECK(scores.device().is_cpu() && scores.dim() == 1 && scores.is_contiguous(),
              "topk_mask: scores must be a contiguous 1-D CPU tensor");
  TORCH_CHECK(offsets.scalar_type() == at::kLong && k.scalar_type() == at::kLong && offsets.is_contiguous() &&
                  k.is_contiguous() && offsets.numel() == k.numel() + 1,
              "topk_mask: offsets (S+1,) and k (S,) must be contiguous int64");
  const int64_t segments = k.numel();
  const int64_t* off = offsets.const_data_ptr<int64_t>();
  TORCH_CHECK(off[0] == 0 && off[segments] == scores.numel(), "topk_mask: offsets must span the scores");
  auto mask = empty_output(scores.sizes(), scores.options().dtype(at::kBool));
  auto tied = at::zeros({segments}, offsets.options().dtype(at::kBool));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, scores.scalar_type(), "topk_mask", [&] {
    topk_segments(scores.const_data_ptr<scalar_t>(), reinterpret_cast<uint8_t*>(mask.mutable_data_ptr<bool>()),
                  off, k.const_data_ptr<int64_t>(), segments,
                  reinterpret_cast<uint8_t*>(tied.mutable_data_ptr<bool>()));
  });
  return {mask, tied};
}

at::Tensor topk_mask(const at::Tensor& scores, const at::Tensor& offsets, const at::Tensor& k) {
  return std::get<0>(topk_mask_ties(scores, offsets, k));
}

}  // namespace panning
