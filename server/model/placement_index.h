// PlacementIndex: which nodes have free, assignable, whole IOMMU groups that
// match a device selector, kept up to date as devices and holders change, so
// that placing a container costs O(log nodes) plus the devices of the nodes
// it looks at, never a walk over the fleet.
//
// A group qualifies for a selector when every member matches it (vendor 0 or
// device 0 match anything), is assignable and is held by no container. Each
// qualifying group adds its size to the node's free count under every
// selector key it matches: (vendor, device), (vendor, 0), (0, device) and
// (0, 0), the first three only when all members agree. Only nodes marked
// eligible (live, reconciled, uncordoned: runtime facts the caller owns) are
// ranked.
//
// Pure data structure: no I/O, no locking (the owner serializes access).
#ifndef SERVER_MODEL_PLACEMENT_INDEX_H_
#define SERVER_MODEL_PLACEMENT_INDEX_H_

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "proto/types.pb.h"

namespace iommu {
namespace model {

struct SelectorKey {
  uint32_t vendor_id = 0;  // 0: any.
  uint32_t device_id = 0;  // 0: any.
  friend bool operator<(const SelectorKey& a, const SelectorKey& b) {
    return std::make_pair(a.vendor_id, a.device_id) < std::make_pair(b.vendor_id, b.device_id);
  }
  friend bool operator==(const SelectorKey& a, const SelectorKey& b) {
    return a.vendor_id == b.vendor_id && a.device_id == b.device_id;
  }
};

// Whether `d` matches `key` (0 fields match anything).
bool Matches(const SelectorKey& key, const v1::Device& d);

// The selector keys a group of devices qualifies for by matching alone (the
// caller checks assignability and holders).
std::vector<SelectorKey> GroupKeys(const std::vector<const v1::Device*>& members);

// Picks `count` devices from whole IOMMU groups of `devices` whose every
// member matches `key`, is assignable and is not `taken` (held by a
// container, or promised to a change not yet committed), taking groups in
// group order while they fit. Sorted addresses, or nullopt when the groups
// do not add up to exactly `count`.
std::optional<std::vector<std::string>> PickWholeGroups(
    const std::vector<v1::Device>& devices, const SelectorKey& key, uint32_t count,
    const std::function<bool(const std::string& address)>& taken);

class PlacementIndex {
 public:
  // Is `address` on `node` held by a container?
  using HeldFn = std::function<bool(const std::string& node, const std::string& address)>;

  // Recomputes `node`'s contribution from its devices. Call after its devices
  // or any of its devices' holders changed; O(devices of the node).
  void UpdateNode(const std::string& node, const std::vector<v1::Device>& devices,
                  const HeldFn& held);
  void RemoveNode(const std::string& node);

  // Eligible nodes are ranked; others are kept but never returned.
  void SetEligible(const std::string& node, bool eligible);
  bool eligible(const std::string& node) const { return eligible_.count(node) > 0; }

  // Free devices on `node` matching `key` in qualifying groups (0 if none).
  int64_t FreeCount(const std::string& node, const SelectorKey& key) const;

  // Calls `visit` with eligible nodes that have at least `min_free` matching
  // free devices, most free first, ties by name; stops when it returns false.
  void VisitBest(const SelectorKey& key, int64_t min_free,
                 const std::function<bool(const std::string& node, int64_t free)>& visit) const;

 private:
  void Rank(const std::string& node, bool add);

  // node -> key -> free count (only non-zero counts).
  std::map<std::string, std::map<SelectorKey, int64_t>> free_;
  // key -> (-free, node) for eligible nodes: begin() is the best.
  std::map<SelectorKey, std::set<std::pair<int64_t, std::string>>> ranked_;
  std::set<std::string> eligible_;
};

}  // namespace model
}  // namespace iommu

#endif  // SERVER_MODEL_PLACEMENT_INDEX_H_
