// Exact segmented top-k mask by radix select (CUDA). Contract: panning.ops.reference.topk_mask.
//
// The same algorithm as the Triton kernel (kernels/topk.py), with what CUDA makes cheaper:
// - every score maps to an order-preserving unsigned key of its own width (zeros made +0, negative
//   values bit-flipped, others with the sign bit set): comparing keys compares scores;
// - radix select, most significant digit first, with up to 11-bit digits (3 passes over float32
//   scores where the 2048-bin histograms fit the workspace): a block histograms its tile in shared
//   memory and adds the non-zero bins to the segment's global histogram; one block per segment
//   then picks the digit of the k-th largest key and how many keys below that digit are wanted;
// - the mask pass keeps keys above the threshold, and the first `remaining` keys equal to it in
//   index order: per-tile counts of equal keys, an exclusive scan over tiles, and a block scan
//   inside the tile rank them. Segments that keep all their equal keys skip the counting pass.
// Tiles never straddle segments; each block finds its segment by binary search over the tile
// layout, which is itself computed on the device: no synchronization, no copy of the scores, and
// workspace O(segments * bins + tiles). Deterministic: no floating-point atomics.
//
// Performance is unmeasured: this file was compile-checked with nvcc only, never run on a GPU.
#include "topk.cuh"

#include <vector>

namespace panning {
namespace cuda {
namespace {

constexpr int kThreads = 256;                   // threads of the tile and pick kernels
constexpr int kScanThreads = 1024;              // threads of the single-block scan kernel
constexpr std::int64_t kTile = kThreads * 64;   // scores per tile
constexpr int kMaxDigitBits = 11;               // at most 2048 bins: 8 KiB of shared memory
constexpr std::int64_t kWideDigitSegments = 64; // more segments than this use 8-bit digits (workspace)

using i64 = long long;
using u64 = unsigned long long;

// ------------------------------------------------------------------------------------ keys

template <typename U>
__device__ __forceinline__ U order_key(U bits) {
  constexpr U kSign = U(U(1) << (8 * sizeof(U) - 1));
  if ((bits & U(~kSign)) == 0) bits = 0;  // -0.0 == +0.0
  return (bits & kSign) ? U(~bits) : U(bits | kSign);
}

template <typename U>
__device__ __forceinline__ bool is_nan(U bits, U infinity) {
  constexpr U kSign = U(U(1) << (8 * sizeof(U) - 1));
  return U(bits & U(~kSign)) > infinity;
}

// ------------------------------------------------------------------------------------ block helpers

// Exclusive prefix sum over the threads of a block of THREADS threads (all must call it);
// *total receives the sum over the block.
template <int THREADS>
__device__ i64 block_exclusive_sum(i64 value, i64* total) {
  constexpr int kWarps = THREADS / 32;
  __shared__ i64 warp_sums[kWarps];
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  i64 inclusive = value;
  for (int delta = 1; delta < 32; delta <<= 1) {
    const i64 up = __shfl_up_sync(0xffffffffu, inclusive, delta);
    if (lane >= delta) inclusive += up;
  }
  if (lane == 31) warp_sums[warp] = inclusive;
  __syncthreads();
  if (warp == 0) {
    i64 sums = lane < kWarps ? warp_sums[lane] : 0;
    for (int delta = 1; delta < 32; delta <<= 1) {
      const i64 up = __shfl_up_sync(0xffffffffu, sums, delta);
      if (lane >= delta) sums += up;
    }
    if (lane < kWarps) warp_sums[lane] = sums;
  }
  __syncthreads();
  const i64 before = (warp == 0 ? 0 : warp_sums[warp - 1]) + inclusive - value;
  *total = warp_sums[kWarps - 1];
  __syncthreads();  // warp_sums is reused by the next call
  return before;
}

struct Tile {
  i64 segment, start, end;
  bool live;
};

// The tile of this block: the last segment whose first tile is <= blockIdx.x (so never an empty
// one), and the tile's score range. Blocks past the real tiles (the grid is an upper bound) are dead.
__device__ Tile locate_tile(const i64* offsets, const i64* tile_first, i64 num_segments) {
  __shared__ i64 found;
  const i64 tile = blockIdx.x;
  if (threadIdx.x == 0) {
    i64 lo = 0, hi = num_segments;
    while (lo < hi) {
      const i64 mid = (lo + hi + 1) / 2;
      if (tile_first[mid] <= tile) lo = mid; else hi = mid - 1;
    }
    found = lo;
  }
  __syncthreads();
  Tile t{found, 0, 0, found < num_segments};
  if (t.live) {
    t.start = offsets[t.segment] + (tile - tile_first[t.segment]) * kTile;
    t.end = min(t.start + kTile, offsets[t.segment + 1]);
  }
  return t;
}

// ------------------------------------------------------------------------------------ kernels

// out[i] = sum of value(j) for j < i, for i in [0, n]; one block of kScanThreads threads.
template <typename Value>
__global__ void exclusive_scan_kernel(Value value, i64 n, i64* out) {
  i64 carry = 0;
  for (i64 base = 0; base < n; base += kScanThreads) {
    const i64 i = base + threadIdx.x;
    const i64 v = i < n ? value(i) : 0;
    i64 total;
    const i64 before = block_exclusive_sum<kScanThreads>(v, &total);
    if (i < n) out[i + 1] = carry + before + v;
    carry += total;
  }
  if (threadIdx.x == 0) out[0] = 0;
}

struct TilesOfSegment {  // tiles of segment s
  const i64* offsets;
  __device__ i64 operator()(i64 s) const { return (offsets[s + 1] - offsets[s] + kTile - 1) / kTile; }
};

struct TileTies {  // equal keys counted in tile i
  const i64* counts;
  __device__ i64 operator()(i64 i) const { return counts[i]; }
};

// Histogram of key bits [lo, lo + width) over the keys of one tile that match the prefix above them.
template <typename U>
__global__ void __launch_bounds__(kThreads)
histogram_kernel(const U* scores, const i64* offsets, const i64* tile_first, i64 num_segments, const u64* prefix,
                 u64* hist, int stride, int lo, int width, U infinity, unsigned int* nan_count) {
  __shared__ unsigned int bins[1 << kMaxDigitBits];
  const Tile t = locate_tile(offsets, tile_first, num_segments);
  if (!t.live) return;
  const int radix = 1 << width;
  const int hi = lo + width;
  const bool first_round = hi == int(8 * sizeof(U));
  for (int b = threadIdx.x; b < radix; b += kThreads) bins[b] = 0;
  __syncthreads();
  const U wanted = U(prefix[t.segment]);
  unsigned int nans = 0;
  for (i64 i = t.start + threadIdx.x; i < t.end; i += kThreads) {
    const U bits = scores[i];
    const U key = order_key(bits);
    if (first_round) {
      nans += is_nan(bits, infinity);
    } else if (U(key >> hi) != U(wanted >> hi)) {
      continue;
    }
    atomicAdd(&bins[(key >> lo) & (radix - 1)], 1u);
  }
  __syncthreads();
  u64* global = hist + t.segment * stride;
  for (int b = threadIdx.x; b < radix; b += kThreads) {
    if (bins[b]) atomicAdd(&global[b], u64(bins[b]));
  }
  if (first_round) {
    for (int delta = 16; delta > 0; delta >>= 1) nans += __shfl_down_sync(0xffffffffu, nans, delta);
    if ((threadIdx.x & 31) == 0 && nans) atomicAdd(nan_count, nans);
  }
}

// One block per segment: the digit d holding the k-th largest key is the largest with at least
// `remaining` keys at or above it. Updates prefix and remaining, and clears the histogram.
__global__ void __launch_bounds__(kThreads)
pick_kernel(u64* hist, u64* prefix, i64* remaining, i64* equal, int stride, int lo, int width, bool last_round) {
  const i64 segment = blockIdx.x;
  u64* counts = hist + segment * stride;
  const int radix = 1 << width;
  const int per_thread = (radix + kThreads - 1) / kThreads;
  // Thread 0 owns the top bins, so an exclusive scan over threads counts the keys above a thread's bins.
  const int top = radix - int(threadIdx.x) * per_thread;  // exclusive
  const int bottom = max(top - per_thread, 0);
  // Read before the block scan's barriers: afterwards the winning thread overwrites it.
  const i64 want = remaining[segment];
  i64 mine = 0;
  for (int b = bottom; b < top; ++b) mine += i64(counts[b]);
  i64 total;
  i64 above = block_exclusive_sum<kThreads>(mine, &total);
  for (int b = top - 1; b >= bottom; --b) {
    const i64 at_least = above + i64(counts[b]);
    if (at_least >= want && (b == radix - 1 || above < want)) {  // remaining == 0 picks the top bin
      prefix[segment] |= u64(b) << lo;
      remaining[segment] = want - above;
      if (last_round) equal[segment] = i64(counts[b]);
    }
    above = at_least;
  }
  __syncthreads();
  for (int b = threadIdx.x; b < radix; b += kThreads) counts[b] = 0;
}

// Keys equal to the threshold in one tile, where the segment keeps only some of them.
template <typename U>
__global__ void __launch_bounds__(kThreads)
tie_count_kernel(const U* scores, const i64* offsets, const i64* tile_first, i64 num_segments, const u64* prefix,
                 const i64* remaining, const i64* equal, i64* tile_ties) {
  const Tile t = locate_tile(offsets, tile_first, num_segments);
  if (!t.live || remaining[t.segment] == equal[t.segment]) return;
  const U threshold = U(prefix[t.segment]);
  i64 ties = 0;
  for (i64 i = t.start + threadIdx.x; i < t.end; i += kThreads) ties += order_key(scores[i]) == threshold;
  i64 total;
  block_exclusive_sum<kThreads>(ties, &total);
  if (threadIdx.x == 0) tile_ties[blockIdx.x] = total;
}

// One tile of the mask: keys above the threshold, and the equal keys ranked below `remaining`.
template <typename U>
__global__ void __launch_bounds__(kThreads)
write_kernel(const U* scores, const i64* offsets, const i64* tile_first, i64 num_segments, const u64* prefix,
             const i64* remaining, const i64* equal, const i64* ties_before, bool* mask) {
  const Tile t = locate_tile(offsets, tile_first, num_segments);
  if (!t.live) return;
  const U threshold = U(prefix[t.segment]);
  const i64 want = remaining[t.segment];
  if (want == equal[t.segment]) {  // every equal key is kept (or there is none)
    for (i64 i = t.start + threadIdx.x; i < t.end; i += kThreads) {
      const U key = order_key(scores[i]);
      mask[i] = key > threshold || (key == threshold && want > 0);
    }
    return;
  }
  i64 rank = ties_before[blockIdx.x] - ties_before[tile_first[t.segment]];
  for (i64 base = t.start; base < t.end; base += kThreads) {
    const i64 i = base + threadIdx.x;
    const bool inside = i < t.end;
    const U key = inside ? order_key(scores[i]) : U(0);
    const bool tie = inside && key == threshold;
    i64 total;
    const i64 before = block_exclusive_sum<kThreads>(tie, &total);
    if (inside) mask[i] = key > threshold || (tie && rank + before < want);
    rank += total;
  }
}

// ------------------------------------------------------------------------------------ host side

int digit_bits(i64 num_segments) { return num_segments <= kWideDigitSegments ? kMaxDigitBits : 8; }

// Digit widths, most significant first: as even as possible, none wider than `bits_per_digit`.
std::vector<int> digit_plan(int key_bits, int bits_per_digit) {
  const int rounds = (key_bits + bits_per_digit - 1) / bits_per_digit;
  std::vector<int> widths;
  for (int r = 0; r < rounds; ++r) widths.push_back(key_bits / rounds + (r < key_bits % rounds));
  return widths;
}

i64 max_tiles(i64 total, i64 num_segments) { return (total + kTile - 1) / kTile + num_segments; }

struct Workspace {
  i64* tile_first;   // num_segments + 1
  u64* hist;         // num_segments * stride
  u64* prefix;       // num_segments
  i64* remaining;    // num_segments
  i64* equal;        // num_segments
  i64* tile_ties;    // tiles
  i64* ties_before;  // tiles + 1
};

// The workspace in 8-byte words, in the order carve() lays it out.
std::size_t workspace_words(i64 total, i64 num_segments) {
  const i64 stride = i64(1) << digit_bits(num_segments);
  const i64 tiles = max_tiles(total, num_segments);
  return std::size_t((num_segments + 1) + num_segments * stride + 3 * num_segments + tiles + (tiles + 1));
}

Workspace carve(void* base, i64 total, i64 num_segments) {
  const i64 stride = i64(1) << digit_bits(num_segments);
  const i64 tiles = max_tiles(total, num_segments);
  auto* p = static_cast<i64*>(base);
  Workspace w{};
  w.tile_first = p;
  w.hist = reinterpret_cast<u64*>(w.tile_first + num_segments + 1);
  w.prefix = w.hist + num_segments * stride;
  w.remaining = reinterpret_cast<i64*>(w.prefix + num_segments);
  w.equal = w.remaining + num_segments;
  w.tile_ties = w.equal + num_segments;
  w.ties_before = w.tile_ties + tiles;
  return w;
}

template <typename U>
cudaError_t run(const U* scores, U infinity, i64 total, const i64* offsets, const i64* k, i64 num_segments,
                bool* mask, void* workspace, unsigned int* nan_count, cudaStream_t stream) {
  const Workspace w = carve(workspace, total, num_segments);
  const int stride = 1 << digit_bits(num_segments);
  const dim3 tiles{unsigned(max_tiles(total, num_segments))};
  const dim3 segments{unsigned(num_segments)};
  cudaError_t error = cudaMemsetAsync(w.hist, 0, sizeof(u64) * num_segments * stride, stream);
  if (error == cudaSuccess) error = cudaMemsetAsync(w.prefix, 0, sizeof(u64) * num_segments, stream);
  if (error == cudaSuccess) error = cudaMemsetAsync(w.tile_ties, 0, sizeof(i64) * tiles.x, stream);
  if (error == cudaSuccess) error = cudaMemsetAsync(nan_count, 0, sizeof(unsigned int), stream);
  if (error == cudaSuccess) {
    error = cudaMemcpyAsync(w.remaining, k, sizeof(i64) * num_segments, cudaMemcpyDeviceToDevice, stream);
  }
  if (error != cudaSuccess) return error;

  exclusive_scan_kernel<<<1, kScanThreads, 0, stream>>>(TilesOfSegment{offsets}, num_segments, w.tile_first);
  const std::vector<int> widths = digit_plan(int(8 * sizeof(U)), digit_bits(num_segments));
  int hi = int(8 * sizeof(U));
  for (std::size_t r = 0; r < widths.size(); ++r) {
    const int lo = hi - widths[r];
    histogram_kernel<U><<<tiles, kThreads, 0, stream>>>(scores, offsets, w.tile_first, num_segments, w.prefix,
                                                        w.hist, stride, lo, widths[r], infinity, nan_count);
    pick_kernel<<<segments, kThreads, 0, stream>>>(w.hist, w.prefix, w.remaining, w.equal, stride, lo, widths[r],
                                                       r + 1 == widths.size());
    hi = lo;
  }
  tie_count_kernel<U><<<tiles, kThreads, 0, stream>>>(scores, offsets, w.tile_first, num_segments, w.prefix,
                                                      w.remaining, w.equal, w.tile_ties);
  exclusive_scan_kernel<<<1, kScanThreads, 0, stream>>>(TileTies{w.tile_ties}, i64(tiles.x), w.ties_before);
  write_kernel<U><<<tiles, kThreads, 0, stream>>>(scores, offsets, w.tile_first, num_segments, w.prefix,
                                                  w.remaining, w.equal, w.ties_before, mask);
  return cudaGetLastError();
}

}  // namespace

std::size_t topk_workspace_bytes(std::int64_t total, std::int64_t num_segments) {
  return sizeof(i64) * workspace_words(total, num_segments);
}

cudaError_t topk_mask(const void* scores, ScoreType type, std::int64_t total, const std::int64_t* offsets,
                      const std::int64_t* k, std::int64_t num_segments, bool* mask, void* workspace,
                      unsigned int* nan_count, cudaStream_t stream) {
  if (total == 0 || num_segments == 0) return cudaSuccess;
  const auto* bounds = reinterpret_cast<const i64*>(offsets);
  const auto* counts = reinterpret_cast<const i64*>(k);
  switch (type) {
    case ScoreType::Float16:
      return run(static_cast<const std::uint16_t*>(scores), std::uint16_t(0x7C00), total, bounds, counts,
                 num_segments, mask, workspace, nan_count, stream);
    case ScoreType::BFloat16:
      return run(static_cast<const std::uint16_t*>(scores), std::uint16_t(0x7F80), total, bounds, counts,
                 num_segments, mask, workspace, nan_count, stream);
    case ScoreType::Float32:
      return run(static_cast<const std::uint32_t*>(scores), std::uint32_t(0x7F800000u), total, bounds, counts,
                 num_segments, mask, workspace, nan_count, stream);
    case ScoreType::Float64:
      return run(static_cast<const std::uint64_t*>(scores), std::uint64_t(0x7FF0000000000000ull), total, bounds,
                 counts, num_segments, mask, workspace, nan_count, stream);
  }
  return cudaErrorInvalidValue;
}

}  // namespace cuda
}  // namespace panning
