// Per-container IOVA window allocator: hands out page-aligned, non-overlapping
// windows inside a container's usable IOVA ranges, either at an address it
// picks (best fit) or at one the caller names. Pure logic: no I/O, no gRPC.
//
// Thread-safety: NOT thread-safe. One WindowAllocator per container; the
// broker serializes access under its own lock. Distinct instances share
// nothing and may be used from different threads.
//
// Invariants kept after every call, successful or not (DESIGN.md #1, #8):
//  * windows never overlap each other;
//  * windows lie inside the usable ranges (after page trimming), so they never
//    touch reserved ranges such as the x86 MSI window 0xfee00000-0xfeefffff;
//  * windows start and end on page boundaries, and Allocate() honours the
//    requested alignment;
//  * FreeRanges() and Windows() together cover the usable ranges exactly;
//  * a call that returns an error changes nothing.
#ifndef SERVER_WINDOW_ALLOCATOR_H_
#define SERVER_WINDOW_ALLOCATOR_H_

#include <cstddef>
#include <cstdint>
#include <utility>
#include <vector>

#include "absl/container/btree_map.h"
#include "absl/container/btree_set.h"
#include "absl/numeric/int128.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace iommu {

// A range of IO virtual addresses, both ends inclusive, like the kernel's
// IOVA ranges (IOMMU_IOAS_IOVA_RANGES, VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE).
// Inclusive ends let a range reach 0xffffffffffffffff without overflow.
struct IovaInterval {
  uint64_t start;
  uint64_t last;

  friend bool operator==(const IovaInterval& a, const IovaInterval& b) {
    return a.start == b.start && a.last == b.last;
  }
  friend bool operator!=(const IovaInterval& a, const IovaInterval& b) { return !(a == b); }
};

class WindowAllocator final {
 public:
  // Builds an allocator whose free space is `usable`.
  //
  // `usable`: the container's usable IOVA ranges, inclusive, in any order.
  // They must be disjoint and each must have start <= last. Adjacent ranges
  // are merged. Parts that are not whole pages are trimmed away (so
  // [0x0,0xfedfffff] with 4K pages is kept as is); a range smaller than a page
  // vanishes. An empty result is allowed: every Allocate() then fails with
  // RESOURCE_EXHAUSTED.
  // `page_size`: the IOMMU page size, a power of two.
  //
  // Errors: INVALID_ARGUMENT naming "page_size" or "usable".
  static absl::StatusOr<WindowAllocator> Create(std::vector<IovaInterval> usable,
                                                uint64_t page_size);

  // Copyable and movable: the state is plain values, and a copy is a cheap
  // way for a caller to stage changes and roll back.
  WindowAllocator(const WindowAllocator&) = default;
  WindowAllocator& operator=(const WindowAllocator&) = default;
  WindowAllocator(WindowAllocator&&) = default;
  WindowAllocator& operator=(WindowAllocator&&) = default;

  // Picks a base for a new window of `size` bytes aligned to `alignment`,
  // records the window and returns its base.
  //
  // Policy: best fit. Among the free extents that can hold an aligned range,
  // prefer the smallest, then the lowest address; inside it take the lowest
  // aligned address. To stay O(log n), only the few smallest candidates are
  // tried for an exact best fit; if none of them can honour the alignment,
  // the smallest extent of at least size + alignment - page_size bytes (which
  // always fits, extents being page-aligned) is used. Only when no such extent
  // exists are the remaining candidates scanned, so Allocate() never fails
  // while some aligned fit exists.
  //
  // Errors (nothing changes):
  //  * INVALID_ARGUMENT "size: ..." unless size > 0 and a multiple of
  //    page_size(); "alignment: ..." unless a power of two >= page_size();
  //  * RESOURCE_EXHAUSTED "size: no free IOVA range of 0x... bytes aligned to
  //    0x... (largest free range 0x...)" when no aligned fit exists.
  absl::StatusOr<uint64_t> Allocate(uint64_t size, uint64_t alignment);

  // Records a window covering exactly [base, base + size).
  //
  // Errors (nothing changes), checked in this order:
  //  * INVALID_ARGUMENT "size: ..." as for Allocate();
  //  * INVALID_ARGUMENT "base: ..." unless base is a multiple of page_size()
  //    and base + size - 1 fits in 64 bits (a window may end at
  //    0xffffffffffffffff);
  //  * FAILED_PRECONDITION "base: range 0x..-0x.. is outside the container's
  //    usable IOVA ranges" if any byte is reserved or not usable;
  //  * ALREADY_EXISTS "base: range 0x..-0x.. overlaps window at 0x..-0x.."
  //    naming the lowest overlapping window.
  absl::Status AllocateAt(uint64_t base, uint64_t size);

  // Frees the window that starts at `base`, merging it with neighbouring free
  // extents. Errors: NOT_FOUND "base: ..." if no window starts at `base`
  // (including an address inside a window); nothing changes.
  absl::Status Release(uint64_t base);

  size_t window_count() const { return windows_.size(); }
  uint64_t allocated_bytes() const { return allocated_bytes_; }
  // Free bytes. Saturates at 0xffffffffffffffff: a container whose whole
  // 64-bit space is usable and empty has 2^64 free bytes, one more than fits.
  uint64_t free_bytes() const;
  uint64_t page_size() const { return page_size_; }

  // The usable ranges after sorting, trimming to pages and merging adjacent
  // ones: what FreeRanges() and Windows() together always cover.
  const std::vector<IovaInterval>& usable_ranges() const { return usable_; }
  // Free extents, sorted by address and coalesced. For tests and debugging.
  std::vector<IovaInterval> FreeRanges() const;
  // Windows, sorted by base.
  std::vector<IovaInterval> Windows() const;

 private:
  // Free extents are keyed by their length minus one, which fits in 64 bits
  // even for an extent covering the whole address space.
  using SizeKey = std::pair<uint64_t /*last - start*/, uint64_t /*start*/>;
  using SizeIndex = absl::btree_set<SizeKey>;
  using WindowMap = absl::btree_map<uint64_t /*base*/, uint64_t /*last*/>;

  WindowAllocator(std::vector<IovaInterval> usable, uint64_t page_size);

  // Both return INVALID_ARGUMENT naming the field, or OK.
  absl::Status ValidateSize(uint64_t size) const;
  absl::Status ValidateAlignment(uint64_t alignment) const;

  // Adds / removes one free extent in the size index, keeping free_bytes_.
  // EraseFree crashes if the extent is not indexed (the index would be
  // corrupt).
  void InsertFree(uint64_t start, uint64_t last);
  void EraseFree(uint64_t start, uint64_t last);

  // Takes [base, last] out of the indexed free extent `extent`, which must
  // hold it; the extent's remainders (at most two) stay free. The caller
  // records the window.
  void CarveFree(SizeIndex::iterator extent, uint64_t base, uint64_t last);

  // The usable range holding `iova`, or nullptr. O(log of the few ranges).
  const IovaInterval* UsableRangeAt(uint64_t iova) const;
  // True when [start, last] lies inside one usable range.
  bool IsUsable(uint64_t start, uint64_t last) const;

  // Constant after construction.
  uint64_t page_size_;
  std::vector<IovaInterval> usable_;  // sorted, page-trimmed, merged

  // Windows by base. The free extents are not stored by address: they are
  // exactly the gaps the windows leave inside each usable range, so the
  // windows on either side of a position (neighbours in this map, usually in
  // the same B-tree node) and the usable range around it give the extent
  // there. That keeps Release and AllocateAt to one walk of this map.
  WindowMap windows_;
  uint64_t allocated_bytes_ = 0;

  // Every free extent, maximal (neighbours coalesced), by (size, start) for
  // best fit.
  SizeIndex free_by_size_;
  absl::uint128 free_bytes_ = 0;  // may be 2^64

  // B-trees rather than std::map/std::set: at 1e6 windows a red-black tree
  // lookup visits ~20 separately allocated nodes, most of them cache misses;
  // a B-tree visits ~5 nodes of 256 bytes, the upper ones cache-resident
  // (bench/allocator_bench.cc has the numbers).
};

}  // namespace iommu

#endif  // SERVER_WINDOW_ALLOCATOR_H_
