#include "agent/ledger.h"

#include <algorithm>
#include <iterator>
#include <limits>

#include "absl/base/internal/raw_logging.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "common/validation.h"

namespace iommu {
namespace agent {

namespace {

constexpr uint64_t kMaxU64 = std::numeric_limits<uint64_t>::max();

std::string ObjectName(ObjectKey key) {
  return absl::StrCat("object ", key.DebugString());
}

}  // namespace

std::string ObjectKey::DebugString() const { return absl::StrCat(dev, ":", ino); }

absl::StatusOr<std::string> Ledger::Register(ObjectKey key, uint64_t size,
                                             const std::string& tenant) {
  if (size == 0) return absl::InvalidArgumentError("size: must be > 0");
  if (size % kPageSize != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("size: ", Hex(size), " is not a multiple of the page size ",
                     Hex(kPageSize)));
  }
  if (tenant.empty()) {
    return absl::InvalidArgumentError("tenant: must not be empty");
  }
  auto it = objects_.find(key);
  if (it != objects_.end()) {
    Object& object = it->second;
    if (object.size != size) {
      return absl::FailedPreconditionError(absl::StrCat(
          "size: ", ObjectName(key), " is ", Hex(size),
          " bytes, registered before as ", Hex(object.size)));
    }
    ++object.references;
    return object.owner;
  }
  Object& object = objects_[key];
  object.size = size;
  object.owner = tenant;
  object.references = 1;
  object.usage = &usage_[tenant];
  ++object.usage->objects;
  return tenant;
}

absl::Status Ledger::Unregister(ObjectKey key) {
  auto it = objects_.find(key);
  if (it == objects_.end()) {
    return absl::NotFoundError(
        absl::StrCat("key: ", ObjectName(key), " is not registered"));
  }
  if (it->second.references == 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        "key: ", ObjectName(key), " has no registered reference left (",
        it->second.live_count, " live mapping(s) still pin it)"));
  }
  --it->second.references;
  MaybeForget(it);
  return absl::OkStatus();
}

absl::StatusOr<Ledger::PageRange> Ledger::CheckRange(ObjectKey key,
                                                     const Object* object,
                                                     uint64_t offset,
                                                     uint64_t length) {
  // Shape first: these are wrong whatever object is named.
  if (offset % kPageSize != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("offset: ", Hex(offset),
                     " is not a multiple of the page size ", Hex(kPageSize)));
  }
  if (length == 0) return absl::InvalidArgumentError("length: must be > 0");
  if (length % kPageSize != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("length: ", Hex(length),
                     " is not a multiple of the page size ", Hex(kPageSize)));
  }
  if (length > kMaxU64 - offset) {
    return absl::InvalidArgumentError(
        absl::StrCat("length: offset ", Hex(offset), " + length ", Hex(length),
                     " overflows 64 bits"));
  }
  if (object == nullptr) {
    return absl::NotFoundError(
        absl::StrCat("key: ", ObjectName(key), " is not registered"));
  }
  const uint64_t size = object->size;
  if (offset >= size) {
    return absl::InvalidArgumentError(
        absl::StrCat("offset: ", Hex(offset), " is at or past the end of ",
                     ObjectName(key), " (", Hex(size), " bytes)"));
  }
  if (offset + length > size) {
    return absl::InvalidArgumentError(absl::StrCat(
        "length: range [", Hex(offset), ", ", Hex(offset + length),
        ") runs past the end of ", ObjectName(key), " (", Hex(size),
        " bytes)"));
  }
  return PageRange{offset / kPageSize, (offset + length) / kPageSize};
}

absl::StatusOr<uint64_t> Ledger::NewlyBilledIfMapped(ObjectKey key,
                                                     uint64_t offset,
                                                     uint64_t length) const {
  auto it = objects_.find(key);
  const Object* object = it == objects_.end() ? nullptr : &it->second;
  ASSIGN_OR_RETURN(PageRange range, CheckRange(key, object, offset, length));
  return CountUnpinned(object->pins, range) * kPageSize;
}

absl::StatusOr<uint64_t> Ledger::Map(ObjectKey key, uint64_t offset,
                                     uint64_t length) {
  auto object_it = objects_.find(key);
  ASSIGN_OR_RETURN(PageRange range,
                   CheckRange(key,
                              object_it == objects_.end() ? nullptr
                                                          : &object_it->second,
                              offset, length));
  Object& object = object_it->second;
  const std::pair<uint64_t, uint64_t> live_key{offset, length};
  // Start loading the live table's slot now, so that with many mappings its
  // cache miss overlaps the walk of the pin runs below (see Unmap).
  object.live.prefetch(live_key);
  // Billed never exceeds mapped, so checking mapped covers both totals.
  Usage& usage = *object.usage;
  if (length > kMaxU64 - usage.mapped) {
    return absl::OutOfRangeError(absl::StrCat(
        "length: mapping ", Hex(length), " more bytes of ", ObjectName(key),
        " would overflow the mapped total of tenant ", object.owner, " (",
        Hex(usage.mapped), ")"));
  }
  // Nothing below can fail.
  const uint64_t added =
      AddToRange(object.pins, range, object.pins.lower_bound(range.first), +1) *
      kPageSize;
  ++object.live[live_key];
  ++object.live_count;
  ++live_mapping_count_;
  usage.billed += added;
  usage.mapped += length;
  return added;
}

absl::StatusOr<uint64_t> Ledger::Unmap(ObjectKey key, uint64_t offset,
                                       uint64_t length) {
  auto object_it = objects_.find(key);
  ASSIGN_OR_RETURN(PageRange range,
                   CheckRange(key,
                              object_it == objects_.end() ? nullptr
                                                          : &object_it->second,
                              offset, length));
  Object& object = object_it->second;
  const std::pair<uint64_t, uint64_t> live_key{offset, length};
  // With 1e5-1e6 live mappings the live table and the pin runs are each far
  // bigger than the cache, and finding a random entry costs a miss in each.
  // Taken one after the other they cost two memory latencies; prefetching the
  // table's slot and walking the runs (read-only, reused below) before
  // looking in the table makes them overlap. bench/ledger_bench.cc measures
  // it (BM_LedgerDisjoint/1000000).
  object.live.prefetch(live_key);
  const PinRuns::iterator at = object.pins.lower_bound(range.first);
  auto live_it = object.live.find(live_key);
  if (live_it == object.live.end()) {
    // Every page of a live mapping is pinned, so a range with an unpinned
    // page lands here too; the count tells the caller which mistake it made.
    return absl::FailedPreconditionError(absl::StrCat(
        "unmap: ", ObjectName(key), " has no live mapping at offset ",
        Hex(offset), " length ", Hex(length), " (",
        CountUnpinned(object.pins, range), " of ", range.end - range.first,
        " pages in the range are not pinned); unmap takes whole mappings"));
  }
  if (--live_it->second == 0) object.live.erase(live_it);
  --object.live_count;
  --live_mapping_count_;
  // Only `live` changed since the walk, so `at` is still valid.
  const uint64_t released = AddToRange(object.pins, range, at, -1) * kPageSize;
  object.usage->billed -= released;
  object.usage->mapped -= length;
  MaybeForget(object_it);
  return released;
}

uint64_t Ledger::billed_bytes(const std::string& tenant) const {
  auto it = usage_.find(tenant);
  return it == usage_.end() ? 0 : it->second.billed;
}

uint64_t Ledger::mapped_bytes(const std::string& tenant) const {
  auto it = usage_.find(tenant);
  return it == usage_.end() ? 0 : it->second.mapped;
}

std::vector<std::string> Ledger::tenants() const {
  std::vector<std::string> out;
  out.reserve(usage_.size());
  for (const auto& [tenant, usage] : usage_) {
    if (usage.billed != 0 || usage.mapped != 0) out.push_back(tenant);
  }
  std::sort(out.begin(), out.end());
  return out;
}

std::optional<std::string> Ledger::owner(ObjectKey key) const {
  auto it = objects_.find(key);
  if (it == objects_.end()) return std::nullopt;
  return it->second.owner;
}

size_t Ledger::pin_run_count() const {
  size_t n = 0;
  for (const auto& [key, object] : objects_) n += object.pins.size();
  return n;
}

void Ledger::MaybeForget(absl::flat_hash_map<ObjectKey, Object>::iterator it) {
  if (it->second.references == 0 && it->second.live_count == 0) {
    // The owner's last object takes the owner's entry with it; with no live
    // mapping left anywhere among its objects, its totals are zero.
    if (--it->second.usage->objects == 0) usage_.erase(it->second.owner);
    objects_.erase(it);
  }
}

uint64_t Ledger::CountUnpinned(const PinRuns& pins, PageRange range) {
  uint64_t pinned = 0;
  auto it = pins.upper_bound(range.first);
  if (it != pins.begin()) {
    auto prev = std::prev(it);
    if (prev->second.end_page > range.first) it = prev;
  }
  for (; it != pins.end() && it->first < range.end; ++it) {
    pinned += std::min(it->second.end_page, range.end) -
              std::max(it->first, range.first);
  }
  return (range.end - range.first) - pinned;
}

uint64_t Ledger::AddToRange(PinRuns& pins, PageRange range,
                            PinRuns::iterator at, int delta) {
  // The pass keeps `cur`, the first run not yet rewritten; every run before
  // it is final except that the one just before it, when `open`, ends at
  // `open_end` with count `open_count` and absorbs a following segment of
  // the same count (that is how adjacent runs get merged). B-tree inserts
  // and erases invalidate every other iterator, so the pass only ever holds
  // `cur` and reaches the open run as std::prev(cur).
  uint64_t changed = 0;
  auto cur = at;
  bool open = false;
  uint64_t open_end = 0;
  uint64_t open_count = 0;

  // Makes [x, y) a run of count c. `reuse`: `cur` is the run starting at x,
  // to be rewritten (or dropped) rather than left in place.
  auto emit = [&](uint64_t x, uint64_t y, uint64_t c, bool reuse) {
    if (c == 0) {  // pages going unpinned: no run
      if (reuse) cur = pins.erase(cur);
      open = false;
      return;
    }
    if (open && open_end == x && open_count == c) {  // merge into the open run
      std::prev(cur)->second.end_page = y;
      if (reuse) cur = pins.erase(cur);
      open_end = y;
      return;
    }
    if (reuse) {
      cur->second = PinRun{y, c};
      ++cur;
    } else {
      cur = std::next(pins.emplace_hint(cur, x, PinRun{y, c}));
    }
    open = true;
    open_end = y;
    open_count = c;
  };

  // The run before `at` either straddles range.first (keep its head in
  // place, treat its tail as the first piece below) or touches it (it may
  // absorb what the range turns into).
  bool have_straddler = false;
  PinRun straddler{0, 0};
  if (cur != pins.begin()) {
    const auto prev = std::prev(cur);
    if (prev->second.end_page >= range.first) {
      open = true;
      open_end = range.first;
      open_count = prev->second.count;
      if (prev->second.end_page > range.first) {
        have_straddler = true;
        straddler = prev->second;
        prev->second.end_page = range.first;
      }
    }
  }

  uint64_t page = range.first;
  while (page < range.end) {
    uint64_t piece_end;
    uint64_t count;
    bool reuse;
    if (have_straddler) {
      have_straddler = false;
      piece_end = straddler.end_page;
      count = straddler.count;
      reuse = false;
    } else if (cur != pins.end() && cur->first == page) {
      piece_end = cur->second.end_page;
      count = cur->second.count;
      reuse = true;
    } else {
      // Unpinned pages up to the next run or the range's end. Unreachable
      // by input when unpinning: Unmap refuses (FAILED_PRECONDITION) any
      // range that is not a live mapping before it gets here, and every page
      // of a live mapping is pinned. Only a ledger bug lands here.
      ABSL_RAW_CHECK(delta > 0, "unpinning a page that is not pinned");
      const uint64_t gap_end =
          cur == pins.end() ? range.end : std::min(cur->first, range.end);
      emit(page, gap_end, 1, false);
      changed += gap_end - page;
      page = gap_end;
      continue;
    }
    const uint64_t new_count = delta > 0 ? count + 1 : count - 1;
    if (new_count == 0) changed += std::min(piece_end, range.end) - page;
    if (piece_end > range.end) {
      // The piece runs past the range: its tail keeps the old count.
      emit(page, range.end, new_count, reuse);
      emit(range.end, piece_end, count, false);
    } else {
      emit(page, piece_end, new_count, reuse);
    }
    page = piece_end;
  }

  // The run starting where the range ends may join the last one written.
  if (open && cur != pins.end() && cur->first == open_end &&
      cur->second.count == open_count) {
    std::prev(cur)->second.end_page = cur->second.end_page;
    pins.erase(cur);
  }
  return changed;
}

}  // namespace agent
}  // namespace iommu
