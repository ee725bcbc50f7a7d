#include "agent/ledger.h"

#include <algorithm>
#include <iterator>
#include <limits>

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
                                                     uint64_t offset,
                                                     uint64_t length) const {
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
  auto it = objects_.find(key);
  if (it == objects_.end()) {
    return absl::NotFoundError(
        absl::StrCat("key: ", ObjectName(key), " is not registered"));
  }
  const uint64_t size = it->second.size;
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
  ASSIGN_OR_RETURN(PageRange range, CheckRange(key, offset, length));
  return CountUnpinned(objects_.find(key)->second.pins, range) * kPageSize;
}

absl::StatusOr<uint64_t> Ledger::Map(ObjectKey key, uint64_t offset,
                                     uint64_t length) {
  ASSIGN_OR_RETURN(PageRange range, CheckRange(key, offset, length));
  Object& object = objects_.find(key)->second;
  // Billed never exceeds mapped, so checking mapped covers both totals. An
  // entry created here has mapped 0, which no length overflows, so the error
  // path never leaves an empty entry behind.
  Usage& usage = usage_[object.owner];
  if (length > kMaxU64 - usage.mapped) {
    return absl::OutOfRangeError(absl::StrCat(
        "length: mapping ", Hex(length), " more bytes of ", ObjectName(key),
        " would overflow the mapped total of tenant ", object.owner, " (",
        Hex(usage.mapped), ")"));
  }
  // Nothing below can fail.
  const uint64_t added = Pin(object.pins, range) * kPageSize;
  ++object.live[{offset, length}];
  ++object.live_count;
  ++live_mapping_count_;
  usage.billed += added;
  usage.mapped += length;
  return added;
}

absl::StatusOr<uint64_t> Ledger::Unmap(ObjectKey key, uint64_t offset,
                                       uint64_t length) {
  ASSIGN_OR_RETURN(PageRange range, CheckRange(key, offset, length));
  auto object_it = objects_.find(key);
  Object& object = object_it->second;
  auto live_it = object.live.find({offset, length});
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
  const uint64_t released = Unpin(object.pins, range) * kPageSize;
  // The owner's entry exists: its mapped total includes this mapping.
  auto usage_it = usage_.find(object.owner);
  usage_it->second.billed -= released;
  usage_it->second.mapped -= length;
  if (usage_it->second.billed == 0 && usage_it->second.mapped == 0) {
    usage_.erase(usage_it);
  }
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
  for (const auto& [tenant, usage] : usage_) out.push_back(tenant);
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

Ledger::PinRuns::iterator Ledger::SplitAt(PinRuns& pins, uint64_t page) {
  auto it = pins.lower_bound(page);
  if (it != pins.begin()) {
    auto prev = std::prev(it);
    if (prev->second.end_page > page) {
      it = SplitRun(pins, prev, page);
      ++it;
    }
  }
  return it;
}

Ledger::PinRuns::iterator Ledger::SplitRun(PinRuns& pins,
                                           PinRuns::iterator run,
                                           uint64_t page) {
  // Shrink first, then insert: an insertion invalidates every btree
  // iterator, so `run` is found again from the one emplace_hint returns.
  const PinRun tail{run->second.end_page, run->second.count};
  run->second.end_page = page;
  return std::prev(pins.emplace_hint(std::next(run), page, tail));
}

void Ledger::MergeAround(PinRuns& pins, PageRange range) {
  auto it = pins.lower_bound(range.first);
  if (it != pins.begin()) {
    auto prev = std::prev(it);
    if (prev->second.end_page == range.first) it = prev;
  }
  // Runs starting at or after range.end were untouched and already maximal
  // among themselves; only the run starting at range.end may join the run
  // before it.
  while (it != pins.end() && it->first < range.end) {
    auto next = std::next(it);
    if (next != pins.end() && next->first == it->second.end_page &&
        next->second.count == it->second.count) {
      it->second.end_page = next->second.end_page;
      // erase returns the run after `next`; the merged run is just before.
      it = std::prev(pins.erase(next));
    } else {
      it = next;
    }
  }
}

uint64_t Ledger::Pin(PinRuns& pins, PageRange range) {
  uint64_t newly_pinned = 0;
  uint64_t page = range.first;
  auto it = SplitAt(pins, range.first);
  while (page < range.end) {
    if (it != pins.end() && it->first == page) {
      if (it->second.end_page > range.end) it = SplitRun(pins, it, range.end);
      ++it->second.count;
      page = it->second.end_page;
      ++it;
    } else {
      // A gap of unpinned pages up to the next run or the range's end.
      const uint64_t gap_end =
          it == pins.end() ? range.end : std::min(it->first, range.end);
      it = std::next(pins.emplace_hint(it, page, PinRun{gap_end, 1}));
      newly_pinned += gap_end - page;
      page = gap_end;
    }
  }
  MergeAround(pins, range);
  return newly_pinned;
}

uint64_t Ledger::Unpin(PinRuns& pins, PageRange range) {
  uint64_t released = 0;
  auto it = SplitAt(pins, range.first);
  while (it != pins.end() && it->first < range.end) {
    if (it->second.end_page > range.end) it = SplitRun(pins, it, range.end);
    if (--it->second.count == 0) {
      released += it->second.end_page - it->first;
      it = pins.erase(it);
    } else {
      ++it;
    }
  }
  MergeAround(pins, range);
  return released;
}

}  // namespace agent
}  // namespace iommu
