// Large kernel outputs on transparent huge pages, faulted in by one call and reused once freed.
//
// A fresh output of tens of MB (a top-k mask of 20M scores, a saliency row of 20M floats, a 4096 x 4096 weight
// gradient) is usually new memory to the process: the C allocator maps it from the OS (glibc maps every block
// of 32 MB or more afresh, and often smaller ones), and the kernel's first write to every 4 KiB page then
// traps into the OS to have it zeroed. Measured on the 2-core development machine: ~12 ms for 20 MB (about
// 2.4 us a page), as much as the top-k kernel itself. Here a large output is
//   - mapped on 2 MiB pages and populated by one madvise call (~1.5 ms for 20 MB), and
//   - when its tensor is freed, kept for the next output of the same size (a loop that calls an op every step
//     then pays no fault at all): at most kCachedRegions regions and kCachedBytes in all, the oldest unmapped
//     first.
// Where the OS refuses the advice (THP off, an older kernel) the memory is ordinary anonymous memory.
#include <sys/mman.h>

#include <cstdint>
#include <deque>
#include <mutex>
#include <utility>

#include "ops.h"

namespace panning {
namespace {

constexpr int64_t kHugePage = int64_t{1} << 21;
// Smaller outputs: the C allocator keeps freed blocks of a few MB and hands them out again already faulted in
// (measured: no faults at 4 MB), which fresh huge pages would only make slower.
constexpr int64_t kMinHuge = int64_t{8} << 20;
constexpr size_t kCachedRegions = 4;
constexpr int64_t kCachedBytes = int64_t{512} << 20;

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23  // Linux 5.14; older kernels answer EINVAL and the pages fault one by one
#endif

// Freed regions (address, length), newest last. Never destroyed: a tensor may be freed during exit.
class Regions {
 public:
  void* take(int64_t length) {
    std::lock_guard<std::mutex> lock(mutex_);
    for (auto it = free_.rbegin(); it != free_.rend(); ++it)
      if (it->second == length) {
        void* p = it->first;
        bytes_ -= length;
        free_.erase(std::next(it).base());
        return p;
      }
    return nullptr;
  }

  void give(void* p, int64_t length) {
    std::deque<std::pair<void*, int64_t>> evicted;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      free_.emplace_back(p, length);
      bytes_ += length;
      while (free_.size() > kCachedRegions || bytes_ > kCachedBytes) {
        evicted.push_back(free_.front());
        bytes_ -= free_.front().second;
        free_.pop_front();
      }
    }
    for (const auto& [q, n] : evicted) munmap(q, n);
  }

 private:
  std::mutex mutex_;
  std::deque<std::pair<void*, int64_t>> free_;
  int64_t bytes_ = 0;
};

Regions& regions() {
  static Regions* cache = new Regions();  // leaked on purpose (see the class comment)
  return *cache;
}

void* map_huge(int64_t length) {
  // Over-map by one huge page and trim, so that the region starts on a 2 MiB boundary.
  void* raw = mmap(nullptr, length + kHugePage, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (raw == MAP_FAILED) return nullptr;
  const auto start = reinterpret_cast<uintptr_t>(raw);
  const uintptr_t aligned = (start + kHugePage - 1) & ~static_cast<uintptr_t>(kHugePage - 1);
  if (aligned > start) munmap(raw, aligned - start);
  const uintptr_t tail = start + kHugePage - aligned;  // what lies past the aligned region
  if (tail > 0) munmap(reinterpret_cast<void*>(aligned + length), tail);
  void* data = reinterpret_cast<void*>(aligned);
  madvise(data, length, MADV_HUGEPAGE);
  madvise(data, length, MADV_POPULATE_WRITE);
  return data;
}

}  // namespace

at::Tensor empty_output(at::IntArrayRef sizes, const at::TensorOptions& options) {
  int64_t numel = 1;
  for (const int64_t s : sizes) numel *= s;
  const int64_t nbytes = numel * static_cast<int64_t>(c10::elementSize(c10::typeMetaToScalarType(options.dtype())));
  if (nbytes < kMinHuge) return at::empty(sizes, options);
  const int64_t length = (nbytes + kHugePage - 1) / kHugePage * kHugePage;
  void* data = regions().take(length);
  if (data == nullptr) data = map_huge(length);
  if (data == nullptr) return at::empty(sizes, options);
  return at::from_blob(data, sizes, [length](void* p) { regions().give(p, length); }, options);
}

}  // namespace panning
