#include "server/model/placement_index.h"

#include <algorithm>

namespace iommu {
namespace model {

bool Matches(const SelectorKey& key, const v1::Device& d) {
  return (key.vendor_id == 0 || d.vendor_id() == key.vendor_id) &&
         (key.device_id == 0 || d.device_id() == key.device_id);
}

std::vector<SelectorKey> GroupKeys(const std::vector<const v1::Device*>& members) {
  std::vector<SelectorKey> keys = {SelectorKey{0, 0}};
  if (members.empty()) return keys;
  const uint32_t vendor = members.front()->vendor_id();
  const uint32_t device = members.front()->device_id();
  bool same_vendor = true;
  bool same_device = true;
  for (const v1::Device* d : members) {
    same_vendor = same_vendor && d->vendor_id() == vendor;
    same_device = same_device && d->device_id() == device;
  }
  // A selector field of 0 means "any", so a real id of 0 adds no new key.
  if (same_vendor && vendor != 0) keys.push_back({vendor, 0});
  if (same_device && device != 0) keys.push_back({0, device});
  if (same_vendor && same_device && vendor != 0 && device != 0) keys.push_back({vendor, device});
  return keys;
}

std::optional<std::vector<std::string>> PickWholeGroups(
    const std::vector<v1::Device>& devices, const SelectorKey& key, uint32_t count,
    const std::function<bool(const std::string& address)>& taken) {
  std::map<uint32_t, std::vector<const v1::Device*>> groups;
  for (const v1::Device& d : devices) groups[d.iommu_group()].push_back(&d);
  std::vector<std::string> picked;
  for (const auto& [group, members] : groups) {
    if (picked.size() + members.size() > count) continue;
    bool ok = true;
    for (const v1::Device* d : members) {
      ok = ok && Matches(key, *d) && d->assignable() && !taken(d->address());
    }
    if (!ok) continue;
    for (const v1::Device* d : members) picked.push_back(d->address());
    if (picked.size() == count) break;
  }
  if (picked.size() != count) return std::nullopt;
  std::sort(picked.begin(), picked.end());
  return picked;
}

void PlacementIndex::Rank(const std::string& node, bool add) {
  if (!eligible_.count(node)) return;
  auto it = free_.find(node);
  if (it == free_.end()) return;
  for (const auto& [key, count] : it->second) {
    if (add) {
      ranked_[key].insert({-count, node});
    } else {
      auto r = ranked_.find(key);
      if (r == ranked_.end()) continue;
      r->second.erase({-count, node});
      if (r->second.empty()) ranked_.erase(r);
    }
  }
}

void PlacementIndex::UpdateNode(const std::string& node, const std::vector<v1::Device>& devices,
                                const HeldFn& held) {
  Rank(node, false);
  std::map<uint32_t, std::vector<const v1::Device*>> groups;
  for (const v1::Device& d : devices) groups[d.iommu_group()].push_back(&d);
  std::map<SelectorKey, int64_t> counts;
  for (const auto& [group, members] : groups) {
    bool free = true;
    for (const v1::Device* d : members) free = free && d->assignable() && !held(node, d->address());
    if (!free) continue;
    for (const SelectorKey& k : GroupKeys(members)) counts[k] += static_cast<int64_t>(members.size());
  }
  if (counts.empty()) {
    free_.erase(node);
    return;
  }
  free_[node] = std::move(counts);
  Rank(node, true);
}

void PlacementIndex::RemoveNode(const std::string& node) {
  Rank(node, false);
  free_.erase(node);
  eligible_.erase(node);
}

void PlacementIndex::SetEligible(const std::string& node, bool eligible) {
  if (eligible == (eligible_.count(node) > 0)) return;
  if (eligible) {
    eligible_.insert(node);
    Rank(node, true);
  } else {
    Rank(node, false);
    eligible_.erase(node);
  }
}

int64_t PlacementIndex::FreeCount(const std::string& node, const SelectorKey& key) const {
  auto it = free_.find(node);
  if (it == free_.end()) return 0;
  auto k = it->second.find(key);
  return k == it->second.end() ? 0 : k->second;
}

void PlacementIndex::VisitBest(
    const SelectorKey& key, int64_t min_free,
    const std::function<bool(const std::string& node, int64_t free)>& visit) const {
  auto r = ranked_.find(key);
  if (r == ranked_.end()) return;
  for (const auto& [neg_free, node] : r->second) {
    if (-neg_free < min_free) return;  // Sorted: nothing further has enough.
    if (!visit(node, -neg_free)) return;
  }
}

}  // namespace model
}  // namespace iommu
