#include "agent/real_backend_util.h"

#include "agent/log.h"

#include <algorithm>
#include <cerrno>
#include <iterator>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/errno_status.h"
#include "common/validation.h"

namespace iommu {
namespace agent {

absl::StatusOr<std::map<uint32_t, std::vector<std::string>>> ResolveGroups(
    absl::string_view context, const std::vector<BackendDevice>& scanned,
    const std::vector<std::string>& addresses,
    const absl::flat_hash_map<std::string, ContainerHandle>& holder) {
  if (addresses.empty()) return ErrnoStatus(EINVAL, context, "no devices");
  absl::flat_hash_set<std::string> listed;
  std::vector<const BackendDevice*> found;
  for (const std::string& address : addresses) {
    if (!listed.insert(address).second) {
      return ErrnoStatus(EINVAL, context, absl::StrCat(address, " listed twice"));
    }
    auto it = std::find_if(scanned.begin(), scanned.end(),
                           [&](const BackendDevice& d) { return d.address == address; });
    if (it == scanned.end()) {
      return ErrnoStatus(ENODEV, context,
                         absl::StrCat("no device ", address, " on the --devices allowlist"));
    }
    found.push_back(&*it);
  }
  std::map<uint32_t, std::vector<std::string>> groups;
  for (const BackendDevice* d : found) {
    if (!d->assignable) {
      return ErrnoStatus(EBUSY, context, absl::StrCat(d->address, " is not assignable: ",
                                                      d->unassignable_reason));
    }
    if (auto held = holder.find(d->address); held != holder.end()) {
      return ErrnoStatus(EBUSY, context, absl::StrCat(d->address, " is held by container ",
                                                      held->second));
    }
    groups[d->iommu_group].push_back(d->address);
  }
  for (const BackendDevice& other : scanned) {
    if (groups.count(other.iommu_group) && other.assignable &&
        !listed.contains(other.address)) {
      return ErrnoStatus(EINVAL, context,
                         absl::StrCat("group ", other.iommu_group, " also holds ",
                                      other.address, "; assign the whole group"));
    }
  }
  return groups;
}

std::vector<IovaRange> TrimRanges(std::vector<IovaRange> ranges, uint64_t granule) {
  std::vector<IovaRange> out;
  for (const IovaRange& r : ranges) {
    if (r.last < r.start) continue;
    const uint64_t head = r.start % granule;
    const uint64_t start = head == 0 ? r.start : r.start + (granule - head);
    if (start < r.start) continue;  // Rounding up passed 2^64.
    // The last byte of the last whole page: (last + 1) % granule == 0. For a
    // range ending at 2^64 - 1, last + 1 wraps to 0, which is aligned.
    const uint64_t tail = (r.last + 1) % granule;
    if (tail > r.last) continue;  // Less than one page below r.last.
    const uint64_t last = r.last - tail;
    if (last < start) continue;
    out.push_back(IovaRange{start, last});
  }
  std::sort(out.begin(), out.end(),
            [](const IovaRange& a, const IovaRange& b) { return a.start < b.start; });
  return out;
}

uint64_t MappingTable::EraseRange(uint64_t iova, uint64_t size) {
  if (size == 0) return 0;
  const uint64_t last = iova + (size - 1);
  uint64_t bytes = 0;
  for (auto it = by_iova_.lower_bound(iova);
       it != by_iova_.end() && it->first <= last;) {
    if (it->first + (it->second.size - 1) <= last) {
      bytes += it->second.size;
      it = by_iova_.erase(it);
    } else {
      ++it;
    }
  }
  return bytes;
}

const BackendMapping* MappingTable::FindCut(uint64_t iova, uint64_t size) const {
  if (size == 0) return nullptr;
  const uint64_t last = iova + (size - 1);
  auto it = by_iova_.lower_bound(iova);
  if (it != by_iova_.begin()) {
    auto prev = std::prev(it);
    if (prev->first + (prev->second.size - 1) >= iova) return &prev->second;
  }
  for (; it != by_iova_.end() && it->first <= last; ++it) {
    if (it->first + (it->second.size - 1) > last) return &it->second;
  }
  return nullptr;
}

std::vector<BackendMapping> MappingTable::List() const {
  std::vector<BackendMapping> out;
  out.reserve(by_iova_.size());
  for (const auto& [iova, m] : by_iova_) out.push_back(m);
  return out;
}

std::string DeviceFdName(absl::string_view address) {
  std::string out = absl::StrCat("device.", address);
  std::replace(out.begin(), out.end(), ':', '_');
  return out;
}

std::string GroupFdName(uint32_t group) { return absl::StrCat("group.", group); }

absl::Status AdoptedFds::CheckNames(absl::string_view context,
                                    const std::vector<std::string>& expected) const {
  for (const std::string& name : expected) {
    auto it = fds_.find(name);
    if (it == fds_.end() || !it->second.valid()) {
      return absl::FailedPreconditionError(
          absl::StrCat(context, ": fd ", name, ": missing (the fd store lost it)"));
    }
  }
  std::vector<std::string> extra;
  for (const auto& [name, fd] : fds_) {
    if (std::find(expected.begin(), expected.end(), name) == expected.end()) {
      // Names come from outside: escape them, and cap how many are quoted.
      if (extra.size() < 8) extra.push_back(absl::CEscape(name.substr(0, 64)));
    }
  }
  if (!extra.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        context, ": unknown fds [", absl::StrJoin(extra, ","), "] (expected [",
        absl::StrJoin(expected, ","), "])"));
  }
  return absl::OkStatus();
}

UniqueFd AdoptedFds::Take(const std::string& name) {
  auto it = fds_.find(name);
  if (it == fds_.end()) return UniqueFd();
  UniqueFd out = std::move(it->second);
  fds_.erase(it);
  return out;
}

absl::Status NotAKind(absl::string_view context, absl::string_view name,
                      absl::string_view kind, const absl::Status& why) {
  return absl::FailedPreconditionError(
      absl::StrCat(context, ": fd ", name, ": not a ", kind, " (", why.message(), ")"));
}

absl::StatusOr<MappingTable> MappingTableFrom(
    absl::string_view context, const std::vector<BackendMapping>& mappings) {
  std::vector<BackendMapping> sorted = mappings;
  std::sort(sorted.begin(), sorted.end(),
            [](const BackendMapping& a, const BackendMapping& b) { return a.iova < b.iova; });
  MappingTable table;
  for (size_t i = 0; i < sorted.size(); ++i) {
    const BackendMapping& m = sorted[i];
    if (m.size == 0 || m.iova + (m.size - 1) < m.iova) {
      return absl::InvalidArgumentError(
          absl::StrCat(context, ": mappings: iova=", Hex(m.iova), " size=", Hex(m.size),
                       " is empty or wraps past 2^64"));
    }
    // Sorted by start: m overlaps an earlier one iff it starts by the end of
    // its predecessor (which, checked the same way, ends after all before it).
    if (i > 0 && m.iova <= sorted[i - 1].iova + (sorted[i - 1].size - 1)) {
      return absl::InvalidArgumentError(
          absl::StrCat(context, ": mappings: iova=", Hex(m.iova), " size=", Hex(m.size),
                       " overlaps another mapping"));
    }
    table.Add(m);
  }
  return table;
}

std::string DeviceListText(const std::vector<std::string>& addresses) {
  return absl::StrCat("[", absl::StrJoin(addresses, ","), "]");
}

absl::Status ClaimGroups(SysfsDevices* sysfs,
                         const std::map<uint32_t, std::vector<std::string>>& groups,
                         std::vector<GroupClaim>* claims) {
  if (!sysfs->managed()) return absl::OkStatus();
  for (const auto& [group, unused] : groups) {
    absl::StatusOr<GroupClaim> claim = sysfs->ClaimGroup(group);
    if (!claim.ok()) return claim.status();
    claims->push_back(*std::move(claim));
  }
  return absl::OkStatus();
}

void ReleaseGroupClaims(SysfsDevices* sysfs, const std::vector<GroupClaim>& claims) {
  for (auto it = claims.rbegin(); it != claims.rend(); ++it) {
    if (absl::Status s = sysfs->ReleaseGroup(*it); !s.ok()) {
      LogEvent(LogLevel::kWarning, "group_release_failed",
               {{"group", absl::StrCat(it->group)}, {"error", s.message()}});
    }
  }
}

}  // namespace agent
}  // namespace iommu
