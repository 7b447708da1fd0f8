// Large scratch arrays kept for the next call.
//
// The CRF's per-image arrays (tens of MB each for a 500x375 image) would be fresh memory
// on every call: the first touch of each 4 KiB page is a fault that zeroes it, which
// costs as much as the work done on it (the -unary transpose took 13 ms, 4 of them
// work).  Blocks of at least 1 MiB are therefore kept, when freed, in a per-thread
// cache of at most kCacheBytes (the oldest blocks leave first) and handed out again to
// a request they fit, so that the next image of a similar size runs on memory already
// mapped.  A block goes only to a request it exceeds by at most a quarter: with a looser fit
// a small request takes the block a larger one needs later in the same call, and that
// one then gets fresh memory on every call.  Larger images than the cache holds simply
// allocate as before.
#pragma once

#include <cstddef>
#include <cstdlib>
#include <memory>
#include <new>
#include <vector>

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace deeplab {

constexpr std::size_t kCacheMin = std::size_t{1} << 20;
constexpr std::size_t kCacheBytes = std::size_t{256} << 20;

// The freed blocks of one thread, with their sizes; returned to the system at thread exit.
class BlockCache {
 public:
  ~BlockCache() {
    for (const Block& b : free_) std::free(b.ptr);
  }
  void* take(std::size_t bytes) {
    std::size_t best = free_.size();
    for (std::size_t i = 0; i < free_.size(); ++i)
      if (free_[i].size >= bytes && free_[i].size - bytes <= bytes / 4 &&
          (best == free_.size() || free_[i].size < free_[best].size))
        best = i;
    if (best == free_.size()) return nullptr;
    void* p = free_[best].ptr;
    held_ -= free_[best].size;
    free_.erase(free_.begin() + static_cast<std::ptrdiff_t>(best));
    return p;
  }
  // Keeps the block, making room by freeing the oldest ones; false for a block larger
  // than the whole cache.
  bool keep(void* p, std::size_t bytes) {
    if (bytes > kCacheBytes) return false;
    std::size_t drop = 0;
    while (held_ + bytes > kCacheBytes) held_ -= free_[drop++].size;
    for (std::size_t i = 0; i < drop; ++i) std::free(free_[i].ptr);
    free_.erase(free_.begin(), free_.begin() + static_cast<std::ptrdiff_t>(drop));
    free_.push_back(Block{p, bytes});
    held_ += bytes;
    return true;
  }

 private:
  struct Block {
    void* ptr;
    std::size_t size;
  };
  std::vector<Block> free_;
  std::size_t held_ = 0;
};

inline BlockCache& block_cache() {
  thread_local BlockCache cache;
  return cache;
}

constexpr std::size_t kHugePage = std::size_t{2} << 20;

// 64-byte aligned, uninitialised.  Blocks of a huge page or more are aligned to one
// and asked to be backed by huge pages (on Linux, where transparent huge pages are
// enabled "always" or "madvise"): the CRF reaches its arrays at random, and with
// 4 KiB pages most of those reaches also miss the TLB.
inline void* big_alloc(std::size_t bytes) {
  if (bytes >= kCacheMin)
    if (void* p = block_cache().take(bytes)) return p;
  void* p = nullptr;
  const bool huge = bytes >= kHugePage;
  if (posix_memalign(&p, huge ? kHugePage : 64, bytes ? bytes : 1) != 0) throw std::bad_alloc();
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  if (huge) madvise(p, bytes / kHugePage * kHugePage, MADV_HUGEPAGE);  // advice only: failure changes nothing
#endif
  return p;
}

inline void big_free(void* p, std::size_t bytes) noexcept {
  if (!p) return;
  if (bytes >= kCacheMin && block_cache().keep(p, bytes)) return;
  std::free(p);
}

// std::allocator over big_alloc, for the lattice's arrays.
template <typename T>
struct BigAllocator {
  using value_type = T;
  BigAllocator() noexcept = default;
  template <typename U>
  BigAllocator(const BigAllocator<U>&) noexcept {}
  T* allocate(std::size_t n) { return static_cast<T*>(big_alloc(n * sizeof(T))); }
  void deallocate(T* p, std::size_t n) noexcept { big_free(p, n * sizeof(T)); }
  template <typename U>
  bool operator==(const BigAllocator<U>&) const noexcept { return true; }
  template <typename U>
  bool operator!=(const BigAllocator<U>&) const noexcept { return false; }
};

template <typename T>
using big_vector = std::vector<T, BigAllocator<T>>;

// An uninitialised array of ``count`` T from big_alloc.
template <typename T>
class BigArray {
 public:
  BigArray() = default;
  explicit BigArray(std::size_t count) : ptr_(static_cast<T*>(big_alloc(count * sizeof(T)))), bytes_(count * sizeof(T)) {}
  BigArray(BigArray&& o) noexcept : ptr_(o.ptr_), bytes_(o.bytes_) { o.ptr_ = nullptr; }
  BigArray& operator=(BigArray&& o) noexcept {
    std::swap(ptr_, o.ptr_);
    std::swap(bytes_, o.bytes_);
    return *this;
  }
  BigArray(const BigArray&) = delete;
  BigArray& operator=(const BigArray&) = delete;
  ~BigArray() { big_free(ptr_, bytes_); }
  T* get() const { return ptr_; }
  T& operator[](std::size_t i) const { return ptr_[i]; }

 private:
  T* ptr_ = nullptr;
  std::size_t bytes_ = 0;
};

template <typename T>
BigArray<T> big_array(std::size_t count) {
  return BigArray<T>(count);
}

}  // namespace deeplab
