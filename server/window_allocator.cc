#include "server/window_allocator.h"

#include <algorithm>
#include <iterator>
#include <limits>
#include <optional>
#include <string>

#include "absl/base/internal/raw_logging.h"
#include "absl/strings/str_cat.h"
#include "common/validation.h"

namespace iommu {
namespace {

constexpr uint64_t kMaxIova = std::numeric_limits<uint64_t>::max();

// How many of the smallest big-enough extents Allocate() tries for an exact
// best fit before falling back to an extent that fits whatever its alignment.
// Bounded so that Allocate() stays O(log n).
constexpr int kBestFitProbes = 8;

// The lowest multiple of `alignment` (a power of two) >= v, or nullopt when
// that would not fit in 64 bits.
std::optional<uint64_t> AlignUp(uint64_t v, uint64_t alignment) {
  const uint64_t rem = v & (alignment - 1);
  if (rem == 0) return v;
  const uint64_t add = alignment - rem;
  if (v > kMaxIova - add) return std::nullopt;
  return v + add;
}

// The lowest base in [start, last] aligned to `alignment` with room for
// `size` bytes (size >= 1) before `last`, or nullopt.
std::optional<uint64_t> AlignedFit(uint64_t start, uint64_t last, uint64_t size,
                                   uint64_t alignment) {
  const std::optional<uint64_t> base = AlignUp(start, alignment);
  if (!base.has_value() || *base > last || last - *base < size - 1) return std::nullopt;
  return base;
}

// Formats a length given as length - 1, which may be 2^64 - 1 (a whole
// 64-bit space), for messages.
std::string HexLength(uint64_t length_minus_one) {
  if (length_minus_one == kMaxIova) return "0x10000000000000000";
  return Hex(length_minus_one + 1);
}

std::string HexRange(uint64_t start, uint64_t last) {
  return absl::StrCat(Hex(start), "-", Hex(last));
}

}  // namespace

absl::StatusOr<WindowAllocator> WindowAllocator::Create(std::vector<IovaInterval> usable,
                                                        uint64_t page_size) {
  if (!IsPowerOfTwo(page_size)) {
    return absl::InvalidArgumentError(
        absl::StrCat("page_size: must be a power of two, got ", Hex(page_size)));
  }
  for (const IovaInterval& r : usable) {
    if (r.start > r.last) {
      return absl::InvalidArgumentError(absl::StrCat("usable: range start ", Hex(r.start),
                                                     " is after its last byte ", Hex(r.last)));
    }
  }
  std::sort(usable.begin(), usable.end(),
            [](const IovaInterval& a, const IovaInterval& b) { return a.start < b.start; });
  for (size_t i = 1; i < usable.size(); ++i) {
    if (usable[i].start <= usable[i - 1].last) {
      return absl::InvalidArgumentError(
          absl::StrCat("usable: ranges ", HexRange(usable[i - 1].start, usable[i - 1].last),
                       " and ", HexRange(usable[i].start, usable[i].last), " overlap"));
    }
  }

  // Merge adjacent ranges first: a page split between two adjacent ranges is
  // wholly usable, and merged ranges keep usable_ and the (coalesced) free
  // extents in agreement about where boundaries are.
  std::vector<IovaInterval> merged;
  for (const IovaInterval& r : usable) {
    if (!merged.empty() && merged.back().last + 1 == r.start) {  // back().last < r.start
      merged.back().last = r.last;
    } else {
      merged.push_back(r);
    }
  }

  // Keep whole pages only: the IOMMU cannot map part of a page, so a partial
  // page at either end of a range is as good as reserved.
  const uint64_t page_mask = page_size - 1;
  std::vector<IovaInterval> trimmed;
  for (const IovaInterval& r : merged) {
    const std::optional<uint64_t> start = AlignUp(r.start, page_size);
    uint64_t last = r.last;
    if ((last & page_mask) != page_mask) {
      const uint64_t end = last & ~page_mask;  // first byte of the partial page
      if (end == 0) continue;
      last = end - 1;
    }
    if (!start.has_value() || *start > last) continue;
    trimmed.push_back({*start, last});
  }
  return WindowAllocator(std::move(trimmed), page_size);
}

WindowAllocator::WindowAllocator(std::vector<IovaInterval> usable, uint64_t page_size)
    : page_size_(page_size), usable_(std::move(usable)) {
  for (const IovaInterval& r : usable_) InsertFree(r.start, r.last);
}

absl::Status WindowAllocator::ValidateSize(uint64_t size) const {
  if (size == 0) return absl::InvalidArgumentError("size: must be greater than 0");
  if ((size & (page_size_ - 1)) != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "size: must be a multiple of the IOMMU page size ", Hex(page_size_), ", got ", Hex(size)));
  }
  return absl::OkStatus();
}

absl::Status WindowAllocator::ValidateAlignment(uint64_t alignment) const {
  if (!IsPowerOfTwo(alignment)) {
    return absl::InvalidArgumentError(
        absl::StrCat("alignment: must be a power of two, got ", Hex(alignment)));
  }
  if (alignment < page_size_) {
    return absl::InvalidArgumentError(
        absl::StrCat("alignment: must be at least the IOMMU page size ", Hex(page_size_), ", got ",
                     Hex(alignment)));
  }
  return absl::OkStatus();
}

absl::StatusOr<uint64_t> WindowAllocator::Allocate(uint64_t size, uint64_t alignment) {
  if (absl::Status s = ValidateSize(size); !s.ok()) return s;
  if (absl::Status s = ValidateAlignment(alignment); !s.ok()) return s;

  // Takes the aligned fit at `base` in the extent `extent` points to.
  auto take = [this, size](SizeIndex::iterator extent, uint64_t base) {
    const uint64_t last = base + (size - 1);
    CarveFree(extent, base, last);
    windows_.emplace(base, last);
    allocated_bytes_ += size;
    return base;
  };

  // 1. Exact best fit among the few smallest extents that are long enough.
  auto it = free_by_size_.lower_bound({size - 1, 0});
  for (int probes = 0; probes < kBestFitProbes && it != free_by_size_.end(); ++probes, ++it) {
    const uint64_t start = it->second;
    if (auto base = AlignedFit(start, start + it->first, size, alignment))
      return take(it, *base);
  }

  // 2. An extent of at least size + alignment - page_size bytes fits whatever
  // its start: extents start on a page, so aligning up wastes at most
  // alignment - page_size bytes. If that length overflows, no extent has it.
  auto guaranteed = free_by_size_.end();
  const uint64_t slack = alignment - page_size_;
  if (size - 1 <= kMaxIova - slack) {
    guaranteed = free_by_size_.lower_bound({size - 1 + slack, 0});
    if (guaranteed != free_by_size_.end()) {
      const uint64_t start = guaranteed->second;
      const auto base = AlignedFit(start, start + guaranteed->first, size, alignment);
      ABSL_RAW_CHECK(base.has_value(), "an extent with alignment slack did not fit");
      return take(guaranteed, *base);
    }
  }

  // 3. No extent is long enough to fit regardless of alignment; the rest of
  // the candidates might still fit by luck of their start. Scanning them
  // (only on this path) keeps the promise that failure means no fit exists.
  for (; it != free_by_size_.end(); ++it) {
    const uint64_t start = it->second;
    if (auto base = AlignedFit(start, start + it->first, size, alignment))
      return take(it, *base);
  }

  const std::string largest =
      free_by_size_.empty() ? "0x0" : HexLength(free_by_size_.rbegin()->first);
  return absl::ResourceExhaustedError(absl::StrCat("size: no free IOVA range of ", Hex(size),
                                                   " bytes aligned to ", Hex(alignment),
                                                   " (largest free range ", largest, ")"));
}

absl::Status WindowAllocator::AllocateAt(uint64_t base, uint64_t size) {
  if (absl::Status s = ValidateSize(size); !s.ok()) return s;
  if ((base & (page_size_ - 1)) != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "base: must be a multiple of the IOMMU page size ", Hex(page_size_), ", got ", Hex(base)));
  }
  if (size - 1 > kMaxIova - base) {
    return absl::InvalidArgumentError(
        absl::StrCat("base: ", Hex(base), " + size ", Hex(size), " overflows 64 bits"));
  }
  const uint64_t last = base + (size - 1);

  if (!IsUsable(base, last)) {
    return absl::FailedPreconditionError(absl::StrCat(
        "base: range ", HexRange(base, last), " is outside the container's usable IOVA ranges"));
  }

  // The lowest window that overlaps: the one starting at or before `base` if
  // it reaches `base`, else the first one starting inside the range.
  const auto next = windows_.upper_bound(base);
  auto w = next;
  if (w != windows_.begin() && std::prev(w)->second >= base) --w;
  if (w != windows_.end() && w->first <= last) {
    return absl::AlreadyExistsError(absl::StrCat("base: range ", HexRange(base, last),
                                                 " overlaps window at ",
                                                 HexRange(w->first, w->second)));
  }

  // Usable and touching no window, so one free extent holds all of it: the
  // gap between the window before (if it is in the same usable range) and
  // `next` (likewise), inside the usable range.
  const IovaInterval* usable = UsableRangeAt(base);
  uint64_t extent_start = usable->start;
  uint64_t extent_last = usable->last;
  if (next != windows_.begin() && std::prev(next)->second >= extent_start) {
    extent_start = std::prev(next)->second + 1;  // < base, so no overflow
  }
  if (next != windows_.end() && next->first <= extent_last) extent_last = next->first - 1;
  const auto extent = free_by_size_.find({extent_last - extent_start, extent_start});
  ABSL_RAW_CHECK(extent != free_by_size_.end(), "a gap between windows is not indexed as free");
  CarveFree(extent, base, last);
  // Only free_by_size_ changed, so `next` is still valid and the right hint.
  windows_.emplace_hint(next, base, last);
  allocated_bytes_ += last - base + 1;
  return absl::OkStatus();
}

absl::Status WindowAllocator::Release(uint64_t base) {
  const auto w = windows_.find(base);
  if (w == windows_.end()) {
    return absl::NotFoundError(absl::StrCat("base: no window starts at ", Hex(base)));
  }
  const uint64_t last = w->second;

  // Coalesce with the free extent ending just before and the one starting
  // just after, so that the free extents stay maximal and best fit sees the
  // real extent sizes. They are the gaps to the neighbouring windows, or to
  // the ends of the usable range when no window of that range is there.
  const IovaInterval* usable = UsableRangeAt(base);
  ABSL_RAW_CHECK(usable != nullptr, "a window lies outside the usable ranges");
  uint64_t start = usable->start;
  if (w != windows_.begin() && std::prev(w)->second >= start) {
    start = std::prev(w)->second + 1;  // < base, so no overflow
  }
  uint64_t end = usable->last;
  if (const auto next = std::next(w); next != windows_.end() && next->first <= end) {
    end = next->first - 1;  // > last
  }
  if (start < base) EraseFree(start, base - 1);
  if (last < end) EraseFree(last + 1, end);
  InsertFree(start, end);
  allocated_bytes_ -= last - base + 1;
  windows_.erase(w);
  return absl::OkStatus();
}

uint64_t WindowAllocator::free_bytes() const {
  if (free_bytes_ > kMaxIova) return kMaxIova;
  return absl::Uint128Low64(free_bytes_);
}

std::vector<IovaInterval> WindowAllocator::FreeRanges() const {
  // From the size index itself rather than recomputed from the windows, so
  // that tests comparing FreeRanges() with a model check what best fit uses.
  std::vector<IovaInterval> out;
  out.reserve(free_by_size_.size());
  for (const auto& [length_minus_one, start] : free_by_size_) {
    out.push_back({start, start + length_minus_one});
  }
  std::sort(out.begin(), out.end(),
            [](const IovaInterval& a, const IovaInterval& b) { return a.start < b.start; });
  return out;
}

std::vector<IovaInterval> WindowAllocator::Windows() const {
  std::vector<IovaInterval> out;
  out.reserve(windows_.size());
  for (const auto& [start, last] : windows_) out.push_back({start, last});
  return out;
}

void WindowAllocator::InsertFree(uint64_t start, uint64_t last) {
  free_by_size_.emplace(last - start, start);
  free_bytes_ += absl::uint128(last - start) + 1;
}

void WindowAllocator::EraseFree(uint64_t start, uint64_t last) {
  const size_t erased = free_by_size_.erase({last - start, start});
  ABSL_RAW_CHECK(erased == 1, "a free extent next to a window is not indexed");
  free_bytes_ -= absl::uint128(last - start) + 1;
}

void WindowAllocator::CarveFree(SizeIndex::iterator extent, uint64_t base, uint64_t last) {
  const uint64_t extent_start = extent->second;
  const uint64_t extent_last = extent->second + extent->first;
  free_by_size_.erase(extent);
  free_bytes_ -= absl::uint128(extent_last - extent_start) + 1;
  if (base > extent_start) InsertFree(extent_start, base - 1);
  if (last < extent_last) InsertFree(last + 1, extent_last);
}

const IovaInterval* WindowAllocator::UsableRangeAt(uint64_t iova) const {
  // The usable range with the greatest start <= `iova` is the only one that
  // can hold it, since usable ranges are disjoint and merged.
  auto it = std::upper_bound(usable_.begin(), usable_.end(), iova,
                             [](uint64_t v, const IovaInterval& r) { return v < r.start; });
  if (it == usable_.begin()) return nullptr;
  --it;
  return iova <= it->last ? &*it : nullptr;
}

bool WindowAllocator::IsUsable(uint64_t start, uint64_t last) const {
  const IovaInterval* usable = UsableRangeAt(start);
  return usable != nullptr && usable->last >= last;
}

}  // namespace iommu
