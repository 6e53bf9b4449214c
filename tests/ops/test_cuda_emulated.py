"""The CUDA top-k kernels of csrc/cuda/topk.cu executed on the CPU, against the reference.

No GPU is needed: the test compiles topk.cu as plain C++ against a small emulation of the CUDA thread
model written below (blocks run one after the other; the threads of a block are real threads, with
barriers for __syncthreads and for the warp shuffles; atomics are CPU atomics). Kernel launches
`k<<<grid, block, shared, stream>>>(args)` are rewritten into calls of that emulation. This checks the
kernels' logic (tile layout, histograms, digit picks, tie ranks, block scans) bit for bit; it cannot
check GPU-only behaviour (memory model, performance): tests/ops/test_cuda_kernels.py does, on a GPU.
"""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from panning.ops import reference

ROOT = Path(__file__).resolve().parents[2]
CXX = shutil.which("g++") or shutil.which("clang++")
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(CXX is None, reason="no C++ compiler (g++ or clang++) to build the CUDA emulation")]

# Stands in for <cuda_runtime_api.h> (found first on the include path) and the CUDA built-ins.
EMULATION = r"""
#pragma once
#include <barrier>
#include <cstdint>
#include <cstring>
#include <memory>
#include <thread>
#include <vector>

struct dim3 {
  unsigned x = 1, y = 1, z = 1;
  dim3() = default;
  dim3(unsigned x_, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
enum cudaError_t { cudaSuccess = 0, cudaErrorInvalidValue = 1 };
enum cudaMemcpyKind { cudaMemcpyDeviceToDevice = 3 };
using cudaStream_t = struct EmulatedStream*;
inline cudaError_t cudaMemsetAsync(void* p, int value, size_t n, cudaStream_t) {
  std::memset(p, value, n);
  return cudaSuccess;
}
inline cudaError_t cudaMemcpyAsync(void* to, const void* from, size_t n, cudaMemcpyKind, cudaStream_t) {
  std::memcpy(to, from, n);
  return cudaSuccess;
}
inline cudaError_t cudaGetLastError() { return cudaSuccess; }

#define __global__
#define __device__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static  // one block runs at a time, so statics are per-block shared memory

inline thread_local dim3 threadIdx, blockIdx;

namespace emulation {
struct Warp {
  std::barrier<> sync{32};
  unsigned long long lanes[32];
};
struct Block {
  explicit Block(unsigned threads) : sync(threads) {
    for (unsigned w = 0; w < threads / 32; ++w) warps.push_back(std::make_unique<Warp>());
  }
  std::barrier<> sync;
  std::vector<std::unique_ptr<Warp>> warps;
};
inline Block* block = nullptr;

// One thread per CUDA thread of a block; the blocks of the grid run one after the other.
template <typename Body>
void launch(dim3 grid, dim3 threads, Body body) {
  Block current(threads.x);
  block = &current;
  std::barrier<> next_block(threads.x);
  std::vector<std::thread> pool;
  for (unsigned t = 0; t < threads.x; ++t) {
    pool.emplace_back([&, t] {
      threadIdx = dim3(t);
      for (unsigned b = 0; b < grid.x; ++b) {
        blockIdx = dim3(b);
        body();
        next_block.arrive_and_wait();
      }
    });
  }
  for (auto& thread : pool) thread.join();
}

template <typename T>
T shuffle(T value, int offset) {  // the value of lane (lane + offset), or our own if outside the warp
  static_assert(sizeof(T) <= sizeof(unsigned long long));
  Warp& warp = *block->warps[threadIdx.x / 32];
  const int lane = int(threadIdx.x % 32);
  std::memcpy(&warp.lanes[lane], &value, sizeof(T));
  warp.sync.arrive_and_wait();
  T result = value;
  if (lane + offset >= 0 && lane + offset < 32) std::memcpy(&result, &warp.lanes[lane + offset], sizeof(T));
  warp.sync.arrive_and_wait();
  return result;
}
}  // namespace emulation

inline void __syncthreads() { emulation::block->sync.arrive_and_wait(); }
template <typename T> T __shfl_up_sync(unsigned, T value, int delta) { return emulation::shuffle(value, -delta); }
template <typename T> T __shfl_down_sync(unsigned, T value, int delta) { return emulation::shuffle(value, delta); }
template <typename T> T atomicAdd(T* address, T value) { return __atomic_fetch_add(address, value, __ATOMIC_RELAXED); }
template <typename T> T min(T a, T b) { return b < a ? b : a; }
template <typename T> T max(T a, T b) { return a < b ? b : a; }
"""

# Reads scores, offsets and k from argv[1], writes the mask and the NaN count to argv[2].
DRIVER = r"""
#include <cstdio>
#include <vector>
#include "topk.cuh"

int main(int, char** argv) {
  FILE* in = std::fopen(argv[1], "rb");
  long long header[4];  // score type, element size, total, segments
  if (std::fread(header, sizeof(header), 1, in) != 1) return 2;
  const long long total = header[2], segments = header[3];
  std::vector<unsigned char> scores(header[1] * total);
  std::vector<long long> offsets(segments + 1), k(segments);
  if (std::fread(scores.data(), 1, scores.size(), in) != scores.size()) return 2;
  if (std::fread(offsets.data(), 8, offsets.size(), in) != offsets.size()) return 2;
  if (std::fread(k.data(), 8, k.size(), in) != k.size()) return 2;
  std::fclose(in);
  std::vector<long long> workspace(panning::cuda::topk_workspace_bytes(total, segments) / 8);
  std::vector<unsigned char> mask(total, 2);
  unsigned int nans = 7;
  const auto error = panning::cuda::topk_mask(scores.data(), panning::cuda::ScoreType(header[0]), total,
                                              reinterpret_cast<const std::int64_t*>(offsets.data()),
                                              reinterpret_cast<const std::int64_t*>(k.data()), segments,
                                              reinterpret_cast<bool*>(mask.data()), workspace.data(), &nans, nullptr);
  if (error != cudaSuccess) return 3;
  FILE* out = std::fopen(argv[2], "wb");
  std::fwrite(&nans, sizeof(nans), 1, out);
  std::fwrite(mask.data(), 1, mask.size(), out);
  std::fclose(out);
  return 0;
}
"""

LAUNCH = re.compile(r"(\w+(?:<\w+>)?)<<<([^,>]+),\s*([^,>]+),[^>]*>>>\((.*?)\);", re.DOTALL)
SCORE_TYPES = {torch.float16: 0, torch.bfloat16: 1, torch.float32: 2, torch.float64: 3}


@pytest.fixture(scope="module")
def emulated_topk(tmp_path_factory):
    """Path of a CPU executable running csrc/cuda/topk.cu under the emulation."""
    work = tmp_path_factory.mktemp("cuda_emulation")
    source = (ROOT / "csrc" / "cuda" / "topk.cu").read_text()
    rewritten, launches = LAUNCH.subn(r"emulation::launch(\2, \3, [&] { \1(\4); });", source)
    assert launches >= 6 and "<<<" not in rewritten, "could not rewrite the kernel launches of topk.cu"
    (work / "cuda_runtime_api.h").write_text(EMULATION)
    (work / "topk_emulated.cpp").write_text(rewritten)
    (work / "driver.cpp").write_text(DRIVER)
    binary = work / "topk_emulated"
    command = [CXX, "-std=c++20", "-O1", "-pthread", f"-I{work}", f"-I{ROOT / 'csrc' / 'cuda'}",
               str(work / "topk_emulated.cpp"), str(work / "driver.cpp"), "-o", str(binary)]
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0, f"{' '.join(command)}\n{result.stderr}"
    return binary, work


def run(emulated_topk, scores: torch.Tensor, offsets, k) -> tuple[torch.Tensor, int]:
    binary, work = emulated_topk
    offsets, k = torch.as_tensor(offsets, dtype=torch.int64), torch.as_tensor(k, dtype=torch.int64)
    bits = scores.contiguous().view({2: torch.int16, 4: torch.int32, 8: torch.int64}[scores.element_size()])
    header = np.array([SCORE_TYPES[scores.dtype], scores.element_size(), scores.numel(), k.numel()], np.int64)
    with open(work / "input.bin", "wb") as f:
        for array in (header, bits.numpy(), offsets.numpy(), k.numpy()):
            f.write(array.tobytes())
    result = subprocess.run([str(binary), str(work / "input.bin"), str(work / "output.bin")], timeout=300)
    assert result.returncode == 0
    raw = (work / "output.bin").read_bytes()
    mask = np.frombuffer(raw[4:], dtype=np.uint8)
    assert set(np.unique(mask).tolist()) <= {0, 1}, "mask bytes left unwritten"
    return torch.from_numpy(mask.astype(bool)), int(np.frombuffer(raw[:4], dtype=np.uint32)[0])


def check(emulated_topk, scores, offsets, k):
    mask, nans = run(emulated_topk, scores, offsets, k)
    assert nans == 0
    want = reference.topk_mask(scores, torch.as_tensor(offsets), torch.as_tensor(k))
    assert torch.equal(mask, want)


def test_ties_split_across_tiles(emulated_topk):
    scores = torch.randint(0, 4, (40_000,), generator=torch.Generator().manual_seed(0)).float()
    check(emulated_topk, scores, [0, 40_000], [12_345])  # 3 tiles of 16384, the threshold value split
    check(emulated_topk, scores, [0, 1, 20_000, 20_000, 40_000], [1, 0, 0, 20_000])


def test_special_values_every_k(emulated_topk):
    values = torch.tensor([0.0, -0.0, float("inf"), -float("inf"), 0.0, -0.0, 1e-45, -1e-45, 3.4e38, -3.4e38,
                           float("inf"), 0.0, 1.0])
    n = values.numel()
    check(emulated_topk, values.repeat(n + 1), torch.arange(0, (n + 1) * n + 1, n), torch.arange(n + 1))


@pytest.mark.parametrize("dtype,segments", [(torch.float16, 70), (torch.bfloat16, 70), (torch.float64, 20)])
def test_other_dtypes_and_many_segments(emulated_topk, dtype, segments):
    """More than 64 segments switches to 8-bit digits; 16- and 64-bit keys take their own plans."""
    g = torch.Generator().manual_seed(1)
    sizes = torch.randint(0, 60, (segments,), generator=g)
    sizes[[0, segments // 2, segments - 1]] = 0
    offsets = torch.cat([torch.zeros(1, dtype=torch.int64), sizes.cumsum(0)])
    scores = torch.randn(int(offsets[-1]), generator=g).round(decimals=1).to(dtype)
    check(emulated_topk, scores, offsets, (torch.rand(segments, generator=g) * (sizes + 1)).long())


def test_nan_is_counted(emulated_topk):
    scores = torch.randn(1000, generator=torch.Generator().manual_seed(2))
    scores[[3, 999]] = float("nan")
    assert run(emulated_topk, scores, [0, 1000], [10])[1] == 2
