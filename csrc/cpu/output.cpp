// Large kernel outputs on transparent huge pages, faulted in by one call.
//
// A fresh output of tens of MB (a top-k mask of 20M scores, a saliency row of 20M floats) is usually new
// memory to the process: the C allocator maps it from the OS, and the kernel's first write to every 4 KiB page
// then traps into the OS to get it zeroed. Measured on the 2-core development machine, that costs ~12 ms for
// 20 MB (about 2.4 us a page) — as much as the top-k kernel itself. On 2 MiB pages, populated by one madvise
// call, the same 20 MB takes ~1.5 ms. Where the OS refuses the advice (THP off, an older kernel) the memory is
// ordinary anonymous memory and behaves as before.
#include <sys/mman.h>

#include <cstdint>

#include "ops.h"

namespace panning {
namespace {

constexpr int64_t kHugePage = int64_t{1} << 21;
// Smaller outputs: the C allocator keeps freed blocks of up to a few MB and hands them out again already faulted
// in (measured: no faults at 4 MB), which populating fresh huge pages would only make slower.
constexpr int64_t kMinHuge = int64_t{8} << 20;

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23  // Linux 5.14; older kernels answer EINVAL and the pages fault one by one
#endif

}  // namespace

at::Tensor empty_output(at::IntArrayRef sizes, const at::TensorOptions& options) {
  int64_t numel = 1;
  for (const int64_t s : sizes) numel *= s;
  const int64_t nbytes = numel * static_cast<int64_t>(c10::elementSize(c10::typeMetaToScalarType(options.dtype())));
  if (nbytes < kMinHuge) return at::empty(sizes, options);
  const int64_t length = (nbytes + kHugePage - 1) / kHugePage * kHugePage;
  // Over-map by one huge page and trim, so that the region starts on a 2 MiB boundary.
  void* raw = mmap(nullptr, length + kHugePage, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (raw == MAP_FAILED) return at::empty(sizes, options);
  const auto start = reinterpret_cast<uintptr_t>(raw);
  const uintptr_t aligned = (start + kHugePage - 1) & ~static_cast<uintptr_t>(kHugePage - 1);
  if (aligned > start) munmap(raw, aligned - start);
  const uintptr_t tail = start + kHugePage - aligned;  // what lies past the aligned region
  if (tail > 0) munmap(reinterpret_cast<void*>(aligned + length), tail);
  void* data = reinterpret_cast<void*>(aligned);
  madvise(data, length, MADV_HUGEPAGE);
  madvise(data, length, MADV_POPULATE_WRITE);
  return at::from_blob(data, sizes, [length](void* p) { munmap(p, length); }, options);
}

}  // namespace panning
