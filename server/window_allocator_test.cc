#include "server/window_allocator.h"

#include <algorithm>
#include <cstdint>
#include <limits>
#include <optional>
#include <ostream>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/validation.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace iommu {

// So that failing comparisons print ranges readably.
std::ostream& operator<<(std::ostream& os, const IovaInterval& r) {
  return os << "[" << Hex(r.start) << "," << Hex(r.last) << "]";
}

namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

constexpr uint64_t k4K = 0x1000;
constexpr uint64_t k2M = 0x200000;
constexpr uint64_t k1G = 0x40000000;
constexpr uint64_t kMax = std::numeric_limits<uint64_t>::max();

// x86: everything below the 512 GiB guest-physical limit except the
// interrupt-remapping (MSI) window 0xfee00000-0xfeefffff.
constexpr uint64_t kMsiStart = 0xfee00000;
constexpr uint64_t kMsiLast = 0xfeefffff;
const std::vector<IovaInterval>& X86Usable() {
  static const auto* const usable =
      new std::vector<IovaInterval>{{0x0, 0xfedfffff}, {0xfef00000, 0x7fffffffff}};
  return *usable;
}

bool Overlaps(const IovaInterval& a, const IovaInterval& b) {
  return a.start <= b.last && b.start <= a.last;
}

// Snapshot of everything observable, to prove that a failed call changed
// nothing.
struct State {
  std::vector<IovaInterval> free;
  std::vector<IovaInterval> windows;
  uint64_t allocated_bytes;
  uint64_t free_bytes;

  bool operator==(const State& o) const {
    return free == o.free && windows == o.windows && allocated_bytes == o.allocated_bytes &&
           free_bytes == o.free_bytes;
  }
};

State Snapshot(const WindowAllocator& a) {
  return {a.FreeRanges(), a.Windows(), a.allocated_bytes(), a.free_bytes()};
}

class WindowAllocatorTest : public ::testing::Test {
 protected:
  WindowAllocator X86() {
    absl::StatusOr<WindowAllocator> a = WindowAllocator::Create(X86Usable(), k4K);
    EXPECT_TRUE(a.ok()) << a.status();
    return *std::move(a);
  }
};

// --- Create -------------------------------------------------------------------

TEST_F(WindowAllocatorTest, X86GeometryIsKeptAsIs) {
  WindowAllocator a = X86();
  EXPECT_EQ(a.FreeRanges(), X86Usable());
  EXPECT_EQ(a.usable_ranges(), X86Usable());
  EXPECT_EQ(a.page_size(), k4K);
  EXPECT_EQ(a.window_count(), 0u);
  EXPECT_EQ(a.allocated_bytes(), 0u);
  EXPECT_EQ(a.free_bytes(), 0x8000000000u - 0x100000u);
}

TEST_F(WindowAllocatorTest, CreateRejectsPageSizeThatIsNotAPowerOfTwo) {
  for (uint64_t page : {uint64_t{0}, uint64_t{0x1800}, uint64_t{0x3000}}) {
    absl::StatusOr<WindowAllocator> a = WindowAllocator::Create(X86Usable(), page);
    EXPECT_EQ(a.status().code(), absl::StatusCode::kInvalidArgument) << Hex(page);
    EXPECT_THAT(a.status().message(), HasSubstr("page_size: must be a power of two")) << Hex(page);
  }
}

TEST_F(WindowAllocatorTest, CreateRejectsRangeWithStartAfterLast) {
  absl::StatusOr<WindowAllocator> a = WindowAllocator::Create({{0x2000, 0x1fff}}, k4K);
  EXPECT_EQ(a.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(a.status().message(), HasSubstr("usable: range start 0x2000 is after"));
}

TEST_F(WindowAllocatorTest, CreateRejectsOverlappingRangesInAnyOrder) {
  absl::StatusOr<WindowAllocator> a =
      WindowAllocator::Create({{0x10000, 0x1ffff}, {0x0, 0x10000}}, k4K);
  EXPECT_EQ(a.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(a.status().message(),
              HasSubstr("usable: ranges 0x0-0x10000 and 0x10000-0x1ffff overlap"));
}

TEST_F(WindowAllocatorTest, CreateSortsAndTrimsPartialPages) {
  absl::StatusOr<WindowAllocator> a =
      WindowAllocator::Create({{0x20001, 0x30000}, {0x800, 0x5fff}, {0x40000, 0x40ffe}}, k4K);
  ASSERT_TRUE(a.ok()) << a.status();
  // 0x40000-0x40ffe holds no whole page and vanishes.
  EXPECT_THAT(a->FreeRanges(),
              ElementsAre(IovaInterval{0x1000, 0x5fff}, IovaInterval{0x21000, 0x2ffff}));
  EXPECT_EQ(a->free_bytes(), 0x5000u + 0xf000u);
}

TEST_F(WindowAllocatorTest, CreateMergesAdjacentRangesBeforeTrimming) {
  // The page 0x1000-0x1fff is split across two ranges but wholly usable.
  absl::StatusOr<WindowAllocator> a =
      WindowAllocator::Create({{0x1800, 0x2fff}, {0x0, 0x17ff}}, k4K);
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_THAT(a->FreeRanges(), ElementsAre(IovaInterval{0x0, 0x2fff}));
  EXPECT_TRUE(a->AllocateAt(0x0, 0x3000).ok());
}

TEST_F(WindowAllocatorTest, EmptyUsableSetExhaustsImmediately) {
  absl::StatusOr<WindowAllocator> a = WindowAllocator::Create({{0x1, 0xffe}}, k4K);
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_TRUE(a->FreeRanges().empty());
  absl::StatusOr<uint64_t> base = a->Allocate(k4K, k4K);
  EXPECT_EQ(base.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(base.status().message(), HasSubstr("(largest free range 0x0)"));
}

// --- Allocate -----------------------------------------------------------------

TEST_F(WindowAllocatorTest, AllocationsNeverTouchMsiWindow) {
  WindowAllocator a = X86();
  // 1 GiB windows fill the low range three times; the remainder below the MSI
  // window (0xfee00000 - 0xc0000000 bytes) is too small for a fourth.
  std::vector<uint64_t> bases;
  for (int i = 0; i < 5; ++i) {
    absl::StatusOr<uint64_t> base = a.Allocate(k1G, k4K);
    ASSERT_TRUE(base.ok()) << base.status();
    bases.push_back(*base);
  }
  EXPECT_THAT(bases, ElementsAre(uint64_t{0}, k1G, 2 * k1G, uint64_t{0xfef00000},
                                 uint64_t{0xfef00000} + k1G));
  // The low remainder ends exactly at the MSI window; fill it too.
  absl::StatusOr<uint64_t> rest = a.Allocate(kMsiStart - 3 * k1G, k4K);
  ASSERT_TRUE(rest.ok()) << rest.status();
  EXPECT_EQ(*rest, 3 * k1G);
  for (const IovaInterval& w : a.Windows()) {
    EXPECT_FALSE(Overlaps(w, {kMsiStart, kMsiLast})) << w;
  }
}

TEST_F(WindowAllocatorTest, BestFitPrefersSmallestExtentThenLowestAddress) {
  absl::StatusOr<WindowAllocator> a = WindowAllocator::Create(
      {{0x0, 0xfffff}, {0x200000, 0x203fff}, {0x300000, 0x303fff}, {0x400000, 0x401fff}}, k4K);
  ASSERT_TRUE(a.ok()) << a.status();
  // 0x400000 (8K) is too small; 0x200000 and 0x300000 (16K) tie; lowest wins.
  EXPECT_EQ(a->Allocate(0x3000, k4K).value(), 0x200000u);
  // Now 0x203000 (4K) is the smallest that holds 4K.
  EXPECT_EQ(a->Allocate(k4K, k4K).value(), 0x203000u);
  EXPECT_EQ(a->Allocate(0x2000, k4K).value(), 0x400000u);
}

TEST_F(WindowAllocatorTest, Allocate2MiBAlignmentIsHonoured) {
  WindowAllocator a = X86();
  ASSERT_TRUE(a.AllocateAt(0x0, k4K).ok());
  absl::StatusOr<uint64_t> base = a.Allocate(k2M, k2M);
  ASSERT_TRUE(base.ok()) << base.status();
  EXPECT_EQ(*base, k2M);
  // The unaligned head stays free.
  EXPECT_EQ(a.FreeRanges().front(), (IovaInterval{0x1000, 0x1fffff}));
  // A small, 2 MiB-aligned window skips that head although it fits by size.
  absl::StatusOr<uint64_t> small = a.Allocate(k4K, k2M);
  ASSERT_TRUE(small.ok()) << small.status();
  EXPECT_EQ(*small % k2M, 0u);
}

TEST_F(WindowAllocatorTest, AlignmentOnlyFoundPastTheBestFitProbesStillSucceeds) {
  // Twelve 16K extents, none 16K-aligned except the last, and nothing large
  // enough to fit regardless of alignment: the fit is found by scanning.
  std::vector<IovaInterval> usable;
  for (uint64_t i = 0; i < 11; ++i)
    usable.push_back({0x101000 + i * 0x10000, 0x104fff + i * 0x10000});
  usable.push_back({0x1000000, 0x1003fff});
  absl::StatusOr<WindowAllocator> a = WindowAllocator::Create(usable, k4K);
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->Allocate(0x4000, 0x4000).value(), 0x1000000u);
}

TEST_F(WindowAllocatorTest, AllocateRejectsBadSizeNamingTheField) {
  WindowAllocator a = X86();
  const State before = Snapshot(a);
  absl::StatusOr<uint64_t> zero = a.Allocate(0, k4K);
  EXPECT_EQ(zero.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(zero.status().message(), HasSubstr("size: must be greater than 0"));
  absl::StatusOr<uint64_t> odd = a.Allocate(0x1800, k4K);
  EXPECT_EQ(odd.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(odd.status().message(),
              HasSubstr("size: must be a multiple of the IOMMU page size 0x1000, got 0x1800"));
  EXPECT_EQ(Snapshot(a), before);
}

TEST_F(WindowAllocatorTest, AllocateRejectsBadAlignmentNamingTheField) {
  WindowAllocator a = X86();
  const State before = Snapshot(a);
  for (uint64_t alignment : {uint64_t{0}, uint64_t{0x3000}}) {
    absl::StatusOr<uint64_t> r = a.Allocate(k4K, alignment);
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(r.status().message(), HasSubstr("alignment: must be a power of two"));
  }
  absl::StatusOr<uint64_t> small = a.Allocate(k4K, 0x800);
  EXPECT_EQ(small.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(small.status().message(),
              HasSubstr("alignment: must be at least the IOMMU page size 0x1000, got 0x800"));
  EXPECT_EQ(Snapshot(a), before);
}

TEST_F(WindowAllocatorTest, ExhaustionIsResourceExhaustedAndChangesNothing) {
  WindowAllocator a = X86();
  ASSERT_TRUE(a.Allocate(k2M, k4K).ok());
  const State before = Snapshot(a);
  absl::StatusOr<uint64_t> r = a.Allocate(0x10000000000, k4K);  // 1 TiB
  EXPECT_EQ(r.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(r.status().message(),
              HasSubstr("size: no free IOVA range of 0x10000000000 bytes aligned to 0x1000 "
                        "(largest free range 0x7f01100000)"));
  EXPECT_EQ(Snapshot(a), before);
}

TEST_F(WindowAllocatorTest, AlignmentNoExtentCanHonourIsResourceExhausted) {
  absl::StatusOr<WindowAllocator> a = WindowAllocator::Create({{0x1000, 0x2fff}}, k4K);
  ASSERT_TRUE(a.ok()) << a.status();
  const State before = Snapshot(*a);
  absl::StatusOr<uint64_t> r = a->Allocate(0x2000, 0x2000);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(r.status().message(), HasSubstr("aligned to 0x2000 (largest free range 0x2000)"));
  EXPECT_EQ(Snapshot(*a), before);
}

// --- AllocateAt ---------------------------------------------------------------

TEST_F(WindowAllocatorTest, AllocateAtInsideMsiWindowFailsPrecondition) {
  WindowAllocator a = X86();
  const State before = Snapshot(a);
  absl::Status s = a.AllocateAt(0xfee10000, 0x1000);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(s.message(), HasSubstr("base: range 0xfee10000-0xfee10fff is outside the "
                                     "container's usable IOVA ranges"));
  EXPECT_EQ(Snapshot(a), before);
}

TEST_F(WindowAllocatorTest, AllocateAtStraddlingMsiWindowFailsPrecondition) {
  WindowAllocator a = X86();
  const State before = Snapshot(a);
  // Starts below the MSI window, ends inside it.
  absl::Status low = a.AllocateAt(0xfed00000, 0x200000);
  EXPECT_EQ(low.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(low.message(), HasSubstr("range 0xfed00000-0xfeefffff is outside"));
  // Spans it entirely.
  absl::Status across = a.AllocateAt(0xfe000000, 0x2000000);
  EXPECT_EQ(across.code(), absl::StatusCode::kFailedPrecondition);
  // Starts inside it, ends above it.
  absl::Status high = a.AllocateAt(0xfeeff000, 0x2000);
  EXPECT_EQ(high.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(Snapshot(a), before);
}

TEST_F(WindowAllocatorTest, AllocateAtBeyondTopOfUsableRangesFailsPrecondition) {
  WindowAllocator a = X86();
  absl::Status s = a.AllocateAt(0x7ffffff000, 0x2000);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(s.message(), HasSubstr("range 0x7ffffff000-0x8000000fff is outside"));
  EXPECT_TRUE(a.AllocateAt(0x7ffffff000, 0x1000).ok());
}

TEST_F(WindowAllocatorTest, AllocateAtOverlappingWindowIsAlreadyExists) {
  WindowAllocator a = X86();
  ASSERT_TRUE(a.AllocateAt(0x100000, 0x10000).ok());
  ASSERT_TRUE(a.AllocateAt(0x120000, 0x10000).ok());
  const State before = Snapshot(a);
  // Reaches into the first window from below: names it.
  absl::Status s = a.AllocateAt(0xff000, 0x2000);
  EXPECT_EQ(s.code(), absl::StatusCode::kAlreadyExists);
  EXPECT_THAT(s.message(),
              HasSubstr("base: range 0xff000-0x100fff overlaps window at 0x100000-0x10ffff"));
  // Starts inside the first and covers the second: names the lowest.
  absl::Status both = a.AllocateAt(0x10f000, 0x20000);
  EXPECT_EQ(both.code(), absl::StatusCode::kAlreadyExists);
  EXPECT_THAT(both.message(), HasSubstr("overlaps window at 0x100000-0x10ffff"));
  // Lies in the gap, overlapping the second's first page.
  absl::Status gap = a.AllocateAt(0x110000, 0x11000);
  EXPECT_EQ(gap.code(), absl::StatusCode::kAlreadyExists);
  EXPECT_THAT(gap.message(), HasSubstr("overlaps window at 0x120000-0x12ffff"));
  EXPECT_EQ(Snapshot(a), before);
  // Exactly the gap is fine.
  EXPECT_TRUE(a.AllocateAt(0x110000, 0x10000).ok());
}

TEST_F(WindowAllocatorTest, AllocateAtRejectsUnalignedBaseAndBadSize) {
  WindowAllocator a = X86();
  const State before = Snapshot(a);
  absl::Status base = a.AllocateAt(0x1800, k4K);
  EXPECT_EQ(base.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(base.message(),
              HasSubstr("base: must be a multiple of the IOMMU page size 0x1000, got 0x1800"));
  absl::Status size = a.AllocateAt(0x1000, 0x800);
  EXPECT_EQ(size.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(size.message(), HasSubstr("size: must be a multiple"));
  absl::Status zero = a.AllocateAt(0x1000, 0);
  EXPECT_EQ(zero.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(zero.message(), HasSubstr("size: must be greater than 0"));
  EXPECT_EQ(Snapshot(a), before);
}

// --- Release ------------------------------------------------------------------

TEST_F(WindowAllocatorTest, ReleaseOfUnknownBaseIsNotFound) {
  WindowAllocator a = X86();
  ASSERT_TRUE(a.AllocateAt(0x100000, 0x10000).ok());
  const State before = Snapshot(a);
  absl::Status s = a.Release(0x200000);
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(s.message(), HasSubstr("base: no window starts at 0x200000"));
  // An address inside a window is not its base.
  EXPECT_EQ(a.Release(0x101000).code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(Snapshot(a), before);
  EXPECT_TRUE(a.Release(0x100000).ok());
  EXPECT_EQ(a.Release(0x100000).code(), absl::StatusCode::kNotFound);
}

TEST_F(WindowAllocatorTest, ReleaseCoalescesBackToOriginalFreeRanges) {
  WindowAllocator a = X86();
  std::vector<uint64_t> bases;
  for (uint64_t size : {k2M, k4K, k1G, uint64_t{0x5000}, k2M}) {
    absl::StatusOr<uint64_t> base = a.Allocate(size, k2M);
    ASSERT_TRUE(base.ok()) << base.status();
    bases.push_back(*base);
  }
  ASSERT_TRUE(a.AllocateAt(0xfef00000, k4K).ok());
  bases.push_back(0xfef00000);
  EXPECT_GT(a.FreeRanges().size(), 2u);
  // Release in an order that exercises merging with the left, the right and
  // both neighbours.
  for (size_t i : {1, 3, 0, 5, 2, 4}) {
    ASSERT_TRUE(a.Release(bases[i]).ok()) << Hex(bases[i]);
  }
  EXPECT_EQ(a.FreeRanges(), X86Usable());
  EXPECT_EQ(a.window_count(), 0u);
  EXPECT_EQ(a.allocated_bytes(), 0u);
  EXPECT_EQ(a.free_bytes(), 0x8000000000u - 0x100000u);
}

TEST_F(WindowAllocatorTest, CountersTrackWindows) {
  WindowAllocator a = X86();
  const uint64_t total = a.free_bytes();
  ASSERT_TRUE(a.AllocateAt(0x0, k2M).ok());
  ASSERT_TRUE(a.Allocate(0x3000, k4K).ok());
  EXPECT_EQ(a.window_count(), 2u);
  EXPECT_EQ(a.allocated_bytes(), k2M + 0x3000);
  EXPECT_EQ(a.free_bytes(), total - k2M - 0x3000);
}

// --- Top of the address space -------------------------------------------------

TEST_F(WindowAllocatorTest, RangeEndingAtTopOfAddressSpaceWorksWithoutOverflow) {
  absl::StatusOr<WindowAllocator> a = WindowAllocator::Create({{0xfffffffffff00000, kMax}}, k4K);
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->free_bytes(), 0x100000u);

  // Alignments whose round-up would wrap past 2^64 fail cleanly.
  const State before = Snapshot(*a);
  absl::StatusOr<uint64_t> huge = a->Allocate(k4K, uint64_t{1} << 63);
  EXPECT_EQ(huge.status().code(), absl::StatusCode::kResourceExhausted);
  absl::StatusOr<uint64_t> wide = a->Allocate(0x100000, 0x200000);
  EXPECT_EQ(wide.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(Snapshot(*a), before);

  // The last page, then the rest, then release and coalesce.
  ASSERT_TRUE(a->AllocateAt(0xfffffffffffff000, k4K).ok());
  EXPECT_EQ(a->Windows().back(), (IovaInterval{0xfffffffffffff000, kMax}));
  absl::StatusOr<uint64_t> rest = a->Allocate(0xff000, k4K);
  ASSERT_TRUE(rest.ok()) << rest.status();
  EXPECT_EQ(*rest, 0xfffffffffff00000u);
  EXPECT_EQ(a->free_bytes(), 0u);
  ASSERT_TRUE(a->Release(0xfffffffffffff000).ok());
  ASSERT_TRUE(a->Release(0xfffffffffff00000).ok());
  EXPECT_THAT(a->FreeRanges(), ElementsAre(IovaInterval{0xfffffffffff00000, kMax}));

  // A window ending exactly at 2^64 - 1 is fine; one byte more overflows.
  EXPECT_TRUE(a->AllocateAt(0xffffffffffffe000, 0x2000).ok());
  absl::Status over = a->AllocateAt(0xfffffffffffff000, 0x2000);
  EXPECT_EQ(over.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(over.message(),
              HasSubstr("base: 0xfffffffffffff000 + size 0x2000 overflows 64 bits"));
}

TEST_F(WindowAllocatorTest, WholeAddressSpaceSaturatesFreeBytes) {
  // iommufd reports [0, 2^64 - 1] for an IOAS with no device attached.
  absl::StatusOr<WindowAllocator> a = WindowAllocator::Create({{0, kMax}}, k4K);
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->free_bytes(), kMax);  // 2^64 does not fit
  const uint64_t half = uint64_t{1} << 63;
  EXPECT_EQ(a->Allocate(k4K, half).value(), 0u);
  EXPECT_EQ(a->Allocate(k4K, half).value(), half);
  EXPECT_EQ(a->free_bytes(), kMax - 2 * k4K + 1);
  absl::StatusOr<uint64_t> none = a->Allocate(k4K, half);
  EXPECT_EQ(none.status().code(), absl::StatusCode::kResourceExhausted);
  absl::StatusOr<uint64_t> big = a->Allocate(kMax - k4K + 1, k4K);
  EXPECT_EQ(big.status().code(), absl::StatusCode::kResourceExhausted);
  ASSERT_TRUE(a->Release(0).ok());
  ASSERT_TRUE(a->Release(half).ok());
  EXPECT_THAT(a->FreeRanges(), ElementsAre(IovaInterval{0, kMax}));
  // The largest window a 64-bit size can describe.
  EXPECT_EQ(a->Allocate(kMax - k4K + 1, k4K).value(), 0u);
  EXPECT_EQ(a->free_bytes(), k4K);
}

// --- Randomized comparison against a brute-force model ------------------------

// The reference: usable ranges trimmed independently of the allocator, and a
// plain sorted list of windows with the alignment each was asked for.
class Model {
 public:
  Model(const std::vector<IovaInterval>& raw, uint64_t page) {
    // Page-by-page membership is too slow for big spaces, so trim per merged
    // range: a page is usable iff all its bytes are.
    std::vector<IovaInterval> sorted = raw;
    std::sort(sorted.begin(), sorted.end(),
              [](const IovaInterval& a, const IovaInterval& b) { return a.start < b.start; });
    std::vector<IovaInterval> merged;
    for (const IovaInterval& r : sorted) {
      if (!merged.empty() && merged.back().last + 1 == r.start) {
        merged.back().last = r.last;
      } else {
        merged.push_back(r);
      }
    }
    for (const IovaInterval& r : merged) {
      const unsigned __int128 first_page =
          (static_cast<unsigned __int128>(r.start) + page - 1) / page;
      const unsigned __int128 end_page = (static_cast<unsigned __int128>(r.last) + 1) / page;
      if (first_page >= end_page) continue;
      usable_.push_back(
          {static_cast<uint64_t>(first_page * page), static_cast<uint64_t>(end_page * page - 1)});
    }
  }

  const std::vector<IovaInterval>& usable() const { return usable_; }
  const std::vector<std::pair<IovaInterval, uint64_t>>& windows() const { return windows_; }

  bool InsideUsable(const IovaInterval& r) const {
    for (const IovaInterval& u : usable_) {
      if (u.start <= r.start && r.last <= u.last) return true;
    }
    return false;
  }

  bool OverlapsWindow(const IovaInterval& r) const {
    for (const auto& [w, alignment] : windows_) {
      if (Overlaps(w, r)) return true;
    }
    return false;
  }

  // Usable minus windows, by brute force.
  std::vector<IovaInterval> Free() const {
    std::vector<IovaInterval> out;
    for (const IovaInterval& u : usable_) {
      unsigned __int128 cursor = u.start;
      for (const auto& [w, alignment] : windows_) {
        if (w.last < u.start || w.start > u.last) continue;
        if (w.start > cursor) out.push_back({static_cast<uint64_t>(cursor), w.start - 1});
        cursor = static_cast<unsigned __int128>(w.last) + 1;
      }
      if (cursor <= u.last) out.push_back({static_cast<uint64_t>(cursor), u.last});
    }
    return out;
  }

  // The lowest aligned base in free range `f` that holds `size`, if any.
  static std::optional<uint64_t> FitIn(const IovaInterval& f, uint64_t size, uint64_t alignment) {
    const unsigned __int128 base =
        (static_cast<unsigned __int128>(f.start) + alignment - 1) / alignment * alignment;
    if (base + size - 1 > f.last) return std::nullopt;
    return static_cast<uint64_t>(base);
  }

  bool AnyFit(uint64_t size, uint64_t alignment) const {
    for (const IovaInterval& f : Free()) {
      if (FitIn(f, size, alignment).has_value()) return true;
    }
    return false;
  }

  void Add(const IovaInterval& w, uint64_t alignment) {
    windows_.push_back({w, alignment});
    std::sort(windows_.begin(), windows_.end(),
              [](const auto& a, const auto& b) { return a.first.start < b.first.start; });
  }

  void Remove(size_t i) { windows_.erase(windows_.begin() + i); }

 private:
  std::vector<IovaInterval> usable_;
  std::vector<std::pair<IovaInterval, uint64_t>> windows_;
};

std::vector<IovaInterval> Coalesce(std::vector<IovaInterval> v) {
  std::sort(v.begin(), v.end(),
            [](const IovaInterval& a, const IovaInterval& b) { return a.start < b.start; });
  std::vector<IovaInterval> out;
  for (const IovaInterval& r : v) {
    if (!out.empty() && out.back().last != kMax && out.back().last + 1 == r.start) {
      out.back().last = r.last;
    } else {
      out.push_back(r);
    }
  }
  return out;
}

// Checks every invariant of the allocator against the model; returns a
// description of the first violation, or "".
std::string CheckInvariants(const WindowAllocator& a, const Model& m) {
  const std::vector<IovaInterval> windows = a.Windows();
  const std::vector<IovaInterval> free = a.FreeRanges();
  if (windows.size() != m.windows().size()) return "window count differs from the model";
  if (a.window_count() != windows.size()) return "window_count() disagrees with Windows()";
  unsigned __int128 allocated = 0;
  for (size_t i = 0; i < windows.size(); ++i) {
    const IovaInterval& w = windows[i];
    const auto& [mw, alignment] = m.windows()[i];
    if (w != mw) return absl::StrCat("window ", i, " differs from the model");
    if (w.start % alignment != 0 || w.start % a.page_size() != 0 ||
        (static_cast<unsigned __int128>(w.last) + 1) % a.page_size() != 0) {
      return absl::StrCat("window at ", Hex(w.start), " is misaligned");
    }
    if (i > 0 && windows[i - 1].last >= w.start) return "windows overlap";
    if (!m.InsideUsable(w)) return absl::StrCat("window at ", Hex(w.start), " is not usable");
    allocated += static_cast<unsigned __int128>(w.last - w.start) + 1;
  }
  if (free != m.Free()) return "FreeRanges() differs from usable minus windows";
  for (size_t i = 1; i < free.size(); ++i) {
    if (free[i - 1].last + 1 >= free[i].start) return "free ranges overlap or are not coalesced";
  }
  std::vector<IovaInterval> all = windows;
  all.insert(all.end(), free.begin(), free.end());
  if (Coalesce(all) != m.usable()) return "FreeRanges() and Windows() do not cover usable exactly";
  unsigned __int128 free_bytes = 0;
  for (const IovaInterval& f : free)
    free_bytes += static_cast<unsigned __int128>(f.last - f.start) + 1;
  if (a.allocated_bytes() != allocated) return "allocated_bytes() is wrong";
  const unsigned __int128 reported_free = a.free_bytes();
  if (reported_free != std::min<unsigned __int128>(free_bytes, kMax))
    return "free_bytes() is wrong";
  return "";
}

// Random usable ranges: a few in the low 32 MiB with ragged ends, sometimes
// one more reaching the top of the 64-bit space.
std::vector<IovaInterval> RandomUsable(std::mt19937_64& rng, uint64_t page) {
  std::vector<IovaInterval> out;
  uint64_t cursor = rng() % (4 * page);
  const int n = 1 + rng() % 6;
  for (int i = 0; i < n && cursor < 0x2000000; ++i) {
    const uint64_t len = 1 + rng() % 0x800000;
    out.push_back({cursor, cursor + len - 1});
    // Sometimes adjacent (gap 0), usually a gap of up to 4 MiB.
    cursor += len + (rng() % 4 == 0 ? 0 : 1 + rng() % 0x400000);
  }
  if (rng() % 2 == 0) out.push_back({kMax - (rng() % 0x400000), kMax});
  std::shuffle(out.begin(), out.end(), rng);
  return out;
}

// A base near the usable ranges: inside one, at its edges or a bit outside.
uint64_t RandomBase(std::mt19937_64& rng, const Model& m, uint64_t page) {
  if (m.usable().empty() || rng() % 10 == 0) return (rng() % 0x3000000) & ~(page - 1);
  const IovaInterval& u = m.usable()[rng() % m.usable().size()];
  const uint64_t span = u.last - u.start;
  uint64_t base = u.start + (span == 0 ? 0 : rng() % span);
  if (rng() % 8 == 0) base = u.start - std::min<uint64_t>(u.start, page * (rng() % 4));
  return base & ~(page - 1);
}

void RunRandomized(uint64_t seed) {
  std::mt19937_64 rng(seed);
  const uint64_t page = (seed % 3 == 0) ? 0x10000 : k4K;
  const std::vector<IovaInterval> raw = RandomUsable(rng, page);
  absl::StatusOr<WindowAllocator> created = WindowAllocator::Create(raw, page);
  ASSERT_TRUE(created.ok()) << created.status();
  WindowAllocator a = *std::move(created);
  Model m(raw, page);
  ASSERT_EQ(a.usable_ranges(), m.usable());
  ASSERT_EQ(CheckInvariants(a, m), "");

  int allocated = 0, refused = 0;
  for (int step = 0; step < 3000; ++step) {
    SCOPED_TRACE(absl::StrCat("seed ", seed, " step ", step));
    const State before = Snapshot(a);
    bool failed = false;
    const int op = rng() % 10;
    if (op < 4) {  // Allocate
      // Mostly small windows, sometimes large ones that often do not fit.
      const uint64_t max_pages = rng() % 4 == 0 ? 2048 : 64;
      uint64_t size = page * (1 + rng() % max_pages);
      uint64_t alignment = page << (rng() % 10);
      const bool bad = rng() % 20 == 0;
      if (bad) {
        if (rng() % 2 == 0) {
          size += page / 2;
        } else {
          alignment *= 3;  // never a power of two
        }
      }
      absl::StatusOr<uint64_t> base = a.Allocate(size, alignment);
      if (bad) {
        ASSERT_EQ(base.status().code(), absl::StatusCode::kInvalidArgument);
        failed = true;
      } else if (base.ok()) {
        const IovaInterval w{*base, *base + (size - 1)};
        ASSERT_FALSE(m.OverlapsWindow(w));
        ASSERT_TRUE(m.InsideUsable(w));
        // Within the extent it chose, the lowest aligned address.
        for (const IovaInterval& f : m.Free()) {
          if (f.start <= w.start && w.start <= f.last) {
            ASSERT_EQ(Model::FitIn(f, size, alignment), std::optional<uint64_t>(w.start));
          }
        }
        m.Add(w, alignment);
        ++allocated;
      } else {
        ASSERT_EQ(base.status().code(), absl::StatusCode::kResourceExhausted) << base.status();
        ASSERT_FALSE(m.AnyFit(size, alignment))
            << "refused " << Hex(size) << "/" << Hex(alignment) << " although it fits";
        failed = true;
        ++refused;
      }
    } else if (op < 7) {  // AllocateAt
      const uint64_t base = RandomBase(rng, m, page);
      uint64_t size = page * (1 + rng() % 64);
      if (base > kMax - (size - 1)) size = kMax - base + 1;  // stay representable
      const IovaInterval w{base, base + (size - 1)};
      absl::Status s = a.AllocateAt(base, size);
      if (!m.InsideUsable(w)) {
        ASSERT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
        failed = true;
      } else if (m.OverlapsWindow(w)) {
        ASSERT_EQ(s.code(), absl::StatusCode::kAlreadyExists) << s;
        failed = true;
      } else {
        ASSERT_TRUE(s.ok()) << s;
        m.Add(w, page);
      }
    } else {  // Release: usually a window, sometimes a non-base.
      if (!m.windows().empty() && rng() % 8 != 0) {
        const size_t i = rng() % m.windows().size();
        ASSERT_TRUE(a.Release(m.windows()[i].first.start).ok());
        m.Remove(i);
      } else {
        const uint64_t base = RandomBase(rng, m, page);
        bool is_base = false;
        for (const auto& [w, alignment] : m.windows()) is_base |= w.start == base;
        if (is_base) continue;
        ASSERT_EQ(a.Release(base).code(), absl::StatusCode::kNotFound);
        failed = true;
      }
    }
    if (failed) {
      ASSERT_EQ(Snapshot(a), before) << "a failed call changed state";
    }
    ASSERT_EQ(CheckInvariants(a, m), "");
  }
  // Both outcomes must actually have been exercised.
  EXPECT_GT(allocated, 100);
  EXPECT_GT(refused, 0);
}

TEST(WindowAllocatorRandomizedTest, MatchesBruteForceModelSeed1) { RunRandomized(1); }
TEST(WindowAllocatorRandomizedTest, MatchesBruteForceModelSeed2) { RunRandomized(2); }
TEST(WindowAllocatorRandomizedTest, MatchesBruteForceModelSeed3) { RunRandomized(3); }
TEST(WindowAllocatorRandomizedTest, MatchesBruteForceModelSeed4) { RunRandomized(4); }
TEST(WindowAllocatorRandomizedTest, MatchesBruteForceModelSeed5) { RunRandomized(5); }

}  // namespace
}  // namespace iommu
