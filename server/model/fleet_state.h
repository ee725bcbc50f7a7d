// FleetState: the broker's durable state in memory (tenants, nodes and their
// devices, containers, windows) with the indexes every read and planner
// needs, changed only by applying a committed change.
//
// The records are the store's (kind, id, serialized proto), so the same
// change that was made durable is what moves the model: there is no second,
// hand-written copy of a mutation to keep in sync. Apply is atomic: a change
// that would break an invariant (a window outside its container's usable
// ranges or overlapping another, a device held by two containers, a window
// or container whose owner is gone) is refused as a whole and changes
// nothing.
//
// Costs do not grow with the fleet: lookups and index reads are O(log n) (+
// the page read); applying a change costs O(records in it) plus, for a
// change that touches a node's devices or holders, O(devices of that node).
//
// Pure: no I/O, no clock, no locking (the owner serializes access).
#ifndef SERVER_MODEL_FLEET_STATE_H_
#define SERVER_MODEL_FLEET_STATE_H_

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "proto/broker.pb.h"
#include "proto/types.pb.h"
#include "server/model/placement_index.h"
#include "server/store.h"
#include "server/window_allocator.h"

namespace iommu {
namespace model {

// Record kinds, as the store names them.
inline constexpr char kTenantKind[] = "tenant";
inline constexpr char kNodeKind[] = "node";
inline constexpr char kDevicesKind[] = "devices";  // v1::ListDevicesResponse, id = node.
inline constexpr char kNodeKeyKind[] = "nodekey";  // Raw grant-signing key, id = node.
inline constexpr char kContainerKind[] = "container";
inline constexpr char kWindowKind[] = "window";

struct NodeState {
  std::optional<v1::Node> node;  // Persisted fields only.
  std::vector<v1::Device> devices;
  std::string grant_key;
};

struct ContainerState {
  v1::Container container;
  WindowAllocator allocator;
  std::set<std::string> window_ids;
};

// Sums kept per tenant.
struct TenantTotals {
  int64_t containers = 0;
  int64_t windows = 0;
  uint64_t budget_bytes = 0;  // Sum of its containers' pin budgets.
  uint64_t window_bytes = 0;  // Sum of its windows' sizes.
  friend bool operator==(const TenantTotals& a, const TenantTotals& b) {
    return a.containers == b.containers && a.windows == b.windows &&
           a.budget_bytes == b.budget_bytes && a.window_bytes == b.window_bytes;
  }
};

// Fleet-wide counts, maintained (a metrics scrape reads them in O(1)).
struct FleetCounts {
  int64_t tenants = 0;
  int64_t nodes = 0;
  int64_t containers = 0;
  int64_t windows = 0;
  std::map<v1::ContainerState, int64_t> containers_by_state;
  friend bool operator==(const FleetCounts& a, const FleetCounts& b) {
    return a.tenants == b.tenants && a.nodes == b.nodes && a.containers == b.containers &&
           a.windows == b.windows && a.containers_by_state == b.containers_by_state;
  }
};

// The allocator of container `c`'s windows: its usable ranges, at its
// smallest IOMMU page size. INVALID_ARGUMENT naming the container when its
// geometry has no page size or its ranges do not make an allocator.
absl::StatusOr<WindowAllocator> ContainerAllocator(const v1::Container& c);

class FleetState {
 public:
  FleetState() = default;
  // One model per broker; a copy would be a second, diverging state.
  FleetState(const FleetState&) = delete;
  FleetState& operator=(const FleetState&) = delete;
  FleetState(FleetState&&) = default;
  FleetState& operator=(FleetState&&) = default;

  // Applies `change`'s puts, then its deletes (the store's order), as one
  // atomic step. A record that does not parse or an unknown kind is
  // DATA_LOSS; a change that breaks an invariant is FAILED_PRECONDITION
  // naming it. On error the state is exactly as before.
  absl::Status Apply(const WriteBatch& change);

  // Monotonic count of applied changes (0: empty model).
  uint64_t version() const { return version_; }

  const v1::Tenant* FindTenant(const std::string& id) const;
  const NodeState* FindNode(const std::string& name) const;
  const ContainerState* FindContainer(const std::string& id) const;
  const v1::Window* FindWindow(const std::string& id) const;
  // The container holding `address` on `node`, or nullptr.
  const std::string* DeviceHolder(const std::string& node, const std::string& address) const;

  // Ids in order, starting after `after` ("" = from the start), at most
  // `limit` (0 = all). O(log n + limit).
  std::vector<std::string> ContainersOfNode(const std::string& node, const std::string& after,
                                            size_t limit) const;
  std::vector<std::string> ContainersOfTenant(const std::string& tenant, const std::string& after,
                                              size_t limit) const;
  int64_t ContainerCountOfNode(const std::string& node) const;

  TenantTotals Totals(const std::string& tenant) const;
  const FleetCounts& counts() const { return counts_; }

  const std::map<std::string, v1::Tenant>& tenants() const { return tenants_; }
  const std::map<std::string, NodeState>& nodes() const { return nodes_; }
  const std::map<std::string, ContainerState>& containers() const { return containers_; }
  const std::map<std::string, v1::Window>& windows() const { return windows_; }

  // Free whole groups by selector, for placement. Eligibility (live,
  // reconciled, uncordoned) is the caller's runtime knowledge.
  const PlacementIndex& placement() const { return placement_; }
  void SetPlacementEligible(const std::string& node, bool eligible) {
    placement_.SetEligible(node, eligible);
  }

  // Picks `count` devices on `node` from whole free groups matching `key`, in
  // group order, skipping devices for which `busy` is true (e.g. promised to
  // a change not yet committed). Sorted addresses, or nullopt if the node
  // cannot supply exactly `count`.
  std::optional<std::vector<std::string>> PickDevices(
      const std::string& node, const SelectorKey& key, uint32_t count,
      const std::function<bool(const std::string& address)>& busy) const;

 private:
  using Undo = std::function<void()>;

  absl::Status PutRecord(const StoreRecord& r, std::vector<Undo>* undo, std::set<std::string>* dirty);
  absl::Status DeleteRecord(const std::string& kind, const std::string& id, std::vector<Undo>* undo,
                            std::set<std::string>* dirty);
  absl::Status PutContainer(v1::Container c, std::vector<Undo>* undo, std::set<std::string>* dirty);
  absl::Status PutWindow(v1::Window w, std::vector<Undo>* undo);
  void EraseWindow(const std::string& id);
  void EraseContainer(const std::string& id, std::set<std::string>* dirty);
  void InsertContainer(ContainerState cs, std::set<std::string>* dirty);
  bool HasNodeRecord(const std::string& name) const;
  void SetNodePart(const std::string& name, const std::function<void(NodeState*)>& set,
                   std::vector<Undo>* undo, std::set<std::string>* dirty);
  absl::Status CheckReferences(const WriteBatch& change) const;
  void Reindex(const std::set<std::string>& dirty_nodes);

  std::map<std::string, v1::Tenant> tenants_;
  std::map<std::string, NodeState> nodes_;
  std::map<std::string, ContainerState> containers_;
  std::map<std::string, v1::Window> windows_;
  std::map<std::pair<std::string, std::string>, std::string> device_holder_;
  std::set<std::pair<std::string, std::string>> node_containers_;    // (node, id).
  std::set<std::pair<std::string, std::string>> tenant_containers_;  // (tenant, id).
  std::map<std::string, int64_t> node_container_count_;
  std::map<std::string, TenantTotals> totals_;
  FleetCounts counts_;
  PlacementIndex placement_;
  uint64_t version_ = 0;
};

// The key of a record in a key-value store: "/<kind>/<id>".
std::string RecordKey(const std::string& kind, const std::string& id);
// The inverse; INVALID_ARGUMENT for a key not of that form.
absl::StatusOr<std::pair<std::string, std::string>> ParseRecordKey(const std::string& key);

}  // namespace model
}  // namespace iommu

#endif  // SERVER_MODEL_FLEET_STATE_H_
