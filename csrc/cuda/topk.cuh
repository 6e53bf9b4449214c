// Exact segmented top-k mask by radix select on the GPU: the host-side interface of topk.cu.
//
// Plain C++ and the CUDA runtime only (no torch), so that `nvcc -c topk.cu` checks the kernels on any
// machine with the toolkit; csrc/cuda/bindings.cpp allocates the buffers with torch and calls in.
#pragma once

#include <cstddef>
#include <cstdint>

#include <cuda_runtime_api.h>

namespace panning {
namespace cuda {

// Floating-point formats of the scores; the kernels only look at their bits.
enum class ScoreType : int { Float16 = 0, BFloat16 = 1, Float32 = 2, Float64 = 3 };

// Bytes of device workspace that topk_mask needs for `total` scores in `num_segments` segments.
std::size_t topk_workspace_bytes(std::int64_t total, std::int64_t num_segments);

// In every segment s, scores[offsets[s]:offsets[s+1]], set mask to true on exactly k[s] elements:
// the largest scores, and among equal scores the lowest indices; -0.0 equals +0.0.
//
// scores: `total` contiguous device values of `type`; offsets: num_segments + 1 nondecreasing int64
// bounds from 0 to total; k: num_segments int64 counts in [0, segment size]; mask: `total` bools;
// workspace: topk_workspace_bytes(total, num_segments) bytes, 8-byte aligned; nan_count: one device
// counter, set to the number of NaN scores (the mask is meaningless when it is not 0).
// Everything is enqueued on `stream`; nothing synchronizes. Returns the first launch error.
cudaError_t topk_mask(const void* scores, ScoreType type, std::int64_t total, const std::int64_t* offsets,
                      const std::int64_t* k, std::int64_t num_segments, bool* mask, void* workspace,
                      unsigned int* nan_count, cudaStream_t stream);

}  // namespace cuda
}  // namespace panning
