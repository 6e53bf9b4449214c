// The vector type of the compressed kernels (sparse_linear.cpp, sparse_conv.cpp): GCC vector extensions of one
// register's width, 64 bytes where AVX-512 gives 32 such registers, else 32 (sparse_linear's 64-byte register
// panels measured 1.1-1.6x faster than 32-byte ones, docs/benchmarks.md).
#pragma once

#include <cstdint>
#include <cstring>

namespace panning {

#if defined(__AVX512F__)
constexpr int kVecBytes = 64;
#else
constexpr int kVecBytes = 32;
#endif

template <typename T>
struct Vec {
  typedef T type __attribute__((vector_size(kVecBytes)));
  static constexpr int64_t kLanes = kVecBytes / sizeof(T);
  static type load(const T* p) {
    type v;
    std::memcpy(&v, p, sizeof(v));
    return v;
  }
  static void store(T* p, type v) { std::memcpy(p, &v, sizeof(v)); }
};

}  // namespace panning
