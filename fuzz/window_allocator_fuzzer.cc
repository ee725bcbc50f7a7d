// Fuzz target: op sequences on server/window_allocator.h's WindowAllocator.
// The input builds an allocator (page size and usable ranges, structured or
// raw) and then a sequence of Allocate / AllocateAt / Release / copy ops.
// After every op the documented invariants are checked against the public
// view (Windows(), FreeRanges(), usable_ranges(), the byte counters):
//  * windows are sorted, disjoint, page-aligned and inside one usable range;
//  * free extents are sorted, coalesced, disjoint from the windows, and free
//    extents + windows tile the usable ranges exactly;
//  * allocated_bytes() + free_bytes() == the usable bytes (2^64 saturates);
//  * Allocate honours size and alignment, and fails with RESOURCE_EXHAUSTED
//    only when no aligned fit exists in the free extents;
//  * AllocateAt succeeds or fails exactly as a reference model of its
//    documented checks predicts, with the documented code and field;
//  * Release succeeds exactly for a window's base;
//  * a failed call changes nothing.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/numeric/int128.h"
#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "fuzz/fuzz_input.h"
#include "common/validation.h"
#include "server/window_allocator.h"

namespace iommu {
namespace fuzz {
namespace {

using absl::StatusCode;

std::string Str(const std::vector<IovaInterval>& v) {
  std::string s;
  for (const IovaInterval& r : v) absl::StrAppend(&s, "[0x", absl::Hex(r.start), ",0x", absl::Hex(r.last), "]");
  return s;
}

absl::uint128 Bytes(const IovaInterval& r) { return absl::uint128(r.last - r.start) + 1; }

void CheckInvariants(const WindowAllocator& a) {
  const uint64_t page = a.page_size();
  const std::vector<IovaInterval>& usable = a.usable_ranges();
  const std::vector<IovaInterval> windows = a.Windows();
  const std::vector<IovaInterval> free = a.FreeRanges();

  absl::uint128 usable_bytes = 0;
  for (size_t i = 0; i < usable.size(); ++i) {
    FUZZ_CHECK(usable[i].start <= usable[i].last, Str(usable));
    FUZZ_CHECK(usable[i].start % page == 0 && (usable[i].last + 1) % page == 0, Str(usable));
    if (i > 0) FUZZ_CHECK(usable[i - 1].last < usable[i].start - 1, "usable not merged " + Str(usable));
    usable_bytes += Bytes(usable[i]);
  }

  absl::uint128 window_bytes = 0;
  for (size_t i = 0; i < windows.size(); ++i) {
    const IovaInterval& w = windows[i];
    FUZZ_CHECK(w.start <= w.last, Str(windows));
    FUZZ_CHECK(w.start % page == 0 && (w.last + 1) % page == 0, "unaligned window " + Str(windows));
    if (i > 0) FUZZ_CHECK(windows[i - 1].last < w.start, "windows overlap " + Str(windows));
    const bool inside = std::any_of(usable.begin(), usable.end(), [&](const IovaInterval& u) {
      return u.start <= w.start && w.last <= u.last;
    });
    FUZZ_CHECK(inside, "window outside usable ranges " + Str(windows) + " usable " + Str(usable));
    window_bytes += Bytes(w);
  }
  FUZZ_CHECK(windows.size() == a.window_count(), "window_count");
  FUZZ_CHECK(window_bytes == a.allocated_bytes(), "allocated_bytes");

  absl::uint128 free_bytes = 0;
  for (size_t i = 0; i < free.size(); ++i) {
    FUZZ_CHECK(free[i].start <= free[i].last, Str(free));
    if (i > 0) {
      FUZZ_CHECK(free[i - 1].last < free[i].start, "free extents overlap " + Str(free));
      FUZZ_CHECK(free[i - 1].last + 1 != free[i].start, "free extents not coalesced " + Str(free));
    }
    free_bytes += Bytes(free[i]);
  }
  const uint64_t reported_free = a.free_bytes();
  const absl::uint128 max64 = absl::uint128(UINT64_MAX);
  FUZZ_CHECK(reported_free == (free_bytes > max64 ? UINT64_MAX : static_cast<uint64_t>(free_bytes)),
             "free_bytes");
  FUZZ_CHECK(free_bytes + window_bytes == usable_bytes, "free + allocated != usable");

  // Free extents and windows tile the usable ranges exactly.
  std::vector<IovaInterval> all = windows;
  all.insert(all.end(), free.begin(), free.end());
  std::sort(all.begin(), all.end(),
            [](const IovaInterval& x, const IovaInterval& y) { return x.start < y.start; });
  std::vector<IovaInterval> merged;
  for (const IovaInterval& r : all) {
    if (!merged.empty()) {
      FUZZ_CHECK(merged.back().last < r.start, "free extent overlaps a window");
      if (merged.back().last + 1 == r.start) {
        merged.back().last = r.last;
        continue;
      }
    }
    merged.push_back(r);
  }
  FUZZ_CHECK(merged == usable, "free + windows " + Str(merged) + " != usable " + Str(usable));
}

// Some aligned [s, s + size) inside a free extent?
bool AlignedFitExists(const std::vector<IovaInterval>& free, uint64_t size, uint64_t align) {
  for (const IovaInterval& f : free) {
    const absl::uint128 s = (absl::uint128(f.start) + align - 1) / align * align;
    if (s + size - 1 <= f.last) return true;
  }
  return false;
}

struct Snapshot {
  std::vector<IovaInterval> windows, free;
  bool operator==(const Snapshot& o) const { return windows == o.windows && free == o.free; }
};
Snapshot Take(const WindowAllocator& a) { return {a.Windows(), a.FreeRanges()}; }

// Sizes and addresses mostly in pages near the interesting places, sometimes raw.
uint64_t PickSize(FuzzInput& in, uint64_t page) {
  switch (in.U8() % 4) {
    case 0: return in.U64();
    case 1: return page * (1 + in.UInt(1) % 16);
    case 2: return page * in.UInt(3);
    default: return page * (uint64_t{1} << (in.U8() % 64));
  }
}

uint64_t PickAddress(FuzzInput& in, const WindowAllocator& a) {
  const uint64_t page = a.page_size();
  const std::vector<IovaInterval>& usable = a.usable_ranges();
  const std::vector<IovaInterval> windows = a.Windows();
  switch (in.U8() % 5) {
    case 0: return in.U64();
    case 1:
      if (!windows.empty()) return windows[in.U8() % windows.size()].start;
      return 0;
    case 2:
      if (!windows.empty()) return windows[in.U8() % windows.size()].last + 1;
      return 0;
    case 3:
      if (!usable.empty()) {
        const IovaInterval& u = usable[in.U8() % usable.size()];
        return u.start + page * in.UInt(2);
      }
      return 0;
    default: return page * in.UInt(3);
  }
}

}  // namespace
}  // namespace fuzz
}  // namespace iommu

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace iommu;        // NOLINT: a fuzz target, not library code.
  using namespace iommu::fuzz;  // NOLINT
  FuzzInput in(data, size);

  // Page size: usually 4K-2M; raw (maybe not a power of two) when bit 7 set.
  const uint8_t ps = in.U8();
  const uint64_t page_size = (ps & 0x80) ? in.UInt(ps & 7 ? 2 : 8) : (uint64_t{1} << (12 + ps % 10));

  std::vector<IovaInterval> usable;
  const uint8_t nranges = in.U8() % 9;
  if (in.Bool()) {
    // Raw ranges: may overlap or be inverted, which Create must refuse.
    for (int i = 0; i < nranges; ++i) usable.push_back({in.U64(), in.U64()});
  } else {
    // Structured: ascending, disjoint, with gaps (0 = adjacent, merged) and
    // unaligned ends; optionally reaching the top of the address space.
    uint64_t cursor = in.UInt(3) << 8;
    for (int i = 0; i < nranges; ++i) {
      const uint64_t len = 1 + (in.UInt(3) << (in.U8() % 16));
      if (len - 1 > UINT64_MAX - cursor) break;
      usable.push_back({cursor, cursor + len - 1});
      const uint64_t next = cursor + len - 1;
      if (next == UINT64_MAX) break;
      const uint64_t gap = in.UInt(2) << (in.U8() % 16);
      if (gap > UINT64_MAX - next - 1) break;
      cursor = next + 1 + gap;
    }
    if (in.Bool()) {
      const uint64_t start = UINT64_MAX - (in.UInt(3) << 12);
      if (usable.empty() || start > usable.back().last + 1) usable.push_back({start, UINT64_MAX});
    }
    // Any order: Create sorts.
    if (in.Bool()) std::reverse(usable.begin(), usable.end());
  }

  absl::StatusOr<WindowAllocator> created = WindowAllocator::Create(usable, page_size);
  if (!created.ok()) {
    const absl::Status& s = created.status();
    FUZZ_CHECK(s.code() == absl::StatusCode::kInvalidArgument, s.ToString());
    FUZZ_CHECK(absl::StartsWith(s.message(), "page_size: ") || absl::StartsWith(s.message(), "usable: "),
               s.ToString());
    return 0;
  }
  FUZZ_CHECK(IsPowerOfTwo(page_size), "Create accepted a page size that is not a power of two");
  WindowAllocator alloc = *std::move(created);
  CheckInvariants(alloc);

  int ops = 0;
  while (!in.empty() && ops++ < 512) {
    const Snapshot before = Take(alloc);
    const uint64_t page = alloc.page_size();
    switch (in.U8() % 4) {
      case 0: {  // Allocate
        const uint64_t sz = PickSize(in, page);
        const uint64_t align = in.Bool() ? in.U64() : page << (in.U8() % 20);
        absl::StatusOr<uint64_t> base = alloc.Allocate(sz, align);
        const bool args_ok = sz > 0 && sz % page == 0 && IsPowerOfTwo(align) && align >= page;
        if (base.ok()) {
          FUZZ_CHECK(args_ok, "Allocate accepted bad size/alignment");
          FUZZ_CHECK(*base % align == 0, absl::StrCat("base 0x", absl::Hex(*base), " not aligned to 0x", absl::Hex(align)));
          const std::vector<IovaInterval> w = alloc.Windows();
          FUZZ_CHECK(std::find(w.begin(), w.end(), IovaInterval{*base, *base + sz - 1}) != w.end(),
                     "allocated window not recorded with its size");
          FUZZ_CHECK(w.size() == before.windows.size() + 1, "window count");
        } else {
          const absl::Status& s = base.status();
          FUZZ_CHECK(Take(alloc) == before, "failed Allocate changed state");
          if (!args_ok) {
            FUZZ_CHECK(s.code() == absl::StatusCode::kInvalidArgument, s.ToString());
            FUZZ_CHECK(absl::StartsWith(s.message(), "size: ") || absl::StartsWith(s.message(), "alignment: "),
                       s.ToString());
          } else {
            FUZZ_CHECK(s.code() == absl::StatusCode::kResourceExhausted, s.ToString());
            FUZZ_CHECK(absl::StartsWith(s.message(), "size: "), s.ToString());
            FUZZ_CHECK(!AlignedFitExists(before.free, sz, align),
                       absl::StrCat("Allocate(0x", absl::Hex(sz), ", 0x", absl::Hex(align),
                                    ") failed though an aligned fit exists in ", Str(before.free)));
          }
        }
        break;
      }
      case 1: {  // AllocateAt
        const uint64_t base = PickAddress(in, alloc);
        const uint64_t sz = PickSize(in, page);
        const absl::Status s = alloc.AllocateAt(base, sz);
        // Reference model, in the documented order.
        StatusCode want = StatusCode::kOk;
        const char* field = "";
        if (sz == 0 || sz % page != 0) {
          want = StatusCode::kInvalidArgument, field = "size: ";
        } else if (base % page != 0 || sz - 1 > UINT64_MAX - base) {
          want = StatusCode::kInvalidArgument, field = "base: ";
        } else {
          const uint64_t last = base + sz - 1;
          const bool inside = std::any_of(
              alloc.usable_ranges().begin(), alloc.usable_ranges().end(),
              [&](const IovaInterval& u) { return u.start <= base && last <= u.last; });
          const bool overlaps = std::any_of(
              before.windows.begin(), before.windows.end(),
              [&](const IovaInterval& w) { return w.start <= last && base <= w.last; });
          if (!inside) {
            want = StatusCode::kFailedPrecondition, field = "base: ";
          } else if (overlaps) {
            want = StatusCode::kAlreadyExists, field = "base: ";
          }
        }
        FUZZ_CHECK(s.code() == want, absl::StrCat("AllocateAt(0x", absl::Hex(base), ", 0x", absl::Hex(sz),
                                                  ") = ", s.ToString(), ", model says ",
                                                  absl::StatusCodeToString(want)));
        if (!s.ok()) {
          FUZZ_CHECK(absl::StartsWith(s.message(), field), s.ToString());
          FUZZ_CHECK(Take(alloc) == before, "failed AllocateAt changed state");
        }
        break;
      }
      case 2: {  // Release
        const uint64_t base = PickAddress(in, alloc);
        const bool is_window = std::any_of(before.windows.begin(), before.windows.end(),
                                           [&](const IovaInterval& w) { return w.start == base; });
        const absl::Status s = alloc.Release(base);
        if (is_window) {
          FUZZ_CHECK(s.ok(), s.ToString());
          FUZZ_CHECK(alloc.window_count() == before.windows.size() - 1, "window count");
        } else {
          FUZZ_CHECK(s.code() == StatusCode::kNotFound && absl::StartsWith(s.message(), "base: "),
                     s.ToString());
          FUZZ_CHECK(Take(alloc) == before, "failed Release changed state");
        }
        break;
      }
      case 3: {  // Copy (the broker stages changes on a copy and rolls back).
        WindowAllocator copy = alloc;
        CheckInvariants(copy);
        FUZZ_CHECK(Take(copy) == before, "copy differs");
        if (in.Bool()) alloc = std::move(copy);
        break;
      }
    }
    CheckInvariants(alloc);
  }
  return 0;
}
