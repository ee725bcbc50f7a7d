// The Broker's self-checks, for tests (CheckIndexes): every index against a
// recount, the placement index and cached heartbeat answers against fresh
// ones, and memory against what the store holds.
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/status_macros.h"
#include "google/protobuf/util/message_differencer.h"
#include "server/broker.h"
#include "server/broker_internal.h"
#include "server/model/fleet_state.h"

namespace iommu {
namespace {

// "kind/id: what differs", for the first difference found.
absl::Status Differs(const std::string& kind, const std::string& id, const std::string& what) {
  return absl::InternalError(
      absl::StrCat("memory differs from the store at ", kind, "/", id, ": ", what));
}

std::string KeyString(const std::string& k) { return k; }
std::string KeyString(const std::pair<std::string, std::string>& k) {
  return absl::StrCat(k.first, "/", k.second);
}

// The keys of `have` and `want` match: names the first key only one holds.
template <typename A, typename B>
absl::Status SameKeys(const std::string& kind, const A& have, const B& want) {
  for (const auto& [k, unused] : have) {
    if (!want.count(k)) return Differs(kind, KeyString(k), "in memory, not in the store");
  }
  for (const auto& [k, unused] : want) {
    if (!have.count(k)) return Differs(kind, KeyString(k), "in the store, not in memory");
  }
  return absl::OkStatus();
}

// Field by field: serialized bytes may order a map's entries differently.
bool SameMessage(const google::protobuf::Message& a, const google::protobuf::Message& b) {
  return google::protobuf::util::MessageDifferencer::Equals(a, b);
}

}  // namespace

absl::Status Broker::CheckMatchesStoreLocked() {
  // The store holds only durable changes; once nothing is pending, memory
  // must be exactly their sum, as a restart would load it.
  RETURN_IF_ERROR(AwaitDurableLocked());
  ASSIGN_OR_RETURN(std::vector<StoreRecord> records, store_->LoadAll());
  model::FleetState model;
  WriteBatch all;
  all.puts = std::move(records);
  if (absl::Status s = model.Apply(all); !s.ok()) {
    return absl::InternalError(
        absl::StrCat("the store's records do not make a valid state: ", s.message()));
  }
  RETURN_IF_ERROR(SameKeys("tenant", tenants_, model.tenants()));
  for (const auto& [id, t] : tenants_) {
    if (!SameMessage(t, model.tenants().at(id))) {
      return Differs("tenant", id, t.ShortDebugString());
    }
  }
  RETURN_IF_ERROR(SameKeys("node", nodes_, model.nodes()));
  for (const auto& [name, n] : nodes_) {
    const model::NodeState& want = model.nodes().at(name);
    if (!want.node.has_value() || !SameMessage(n.node, *want.node)) {
      return Differs("node", name, n.node.ShortDebugString());
    }
    if (n.devices.size() != want.devices.size()) {
      return Differs(
          "devices", name,
          absl::StrCat(n.devices.size(), " devices, the store has ", want.devices.size()));
    }
    for (size_t i = 0; i < n.devices.size(); ++i) {
      if (!SameMessage(n.devices[i], want.devices[i])) {
        return Differs("devices", name, n.devices[i].ShortDebugString());
      }
    }
    if (n.grant_key != want.grant_key) return Differs("nodekey", name, "another key");
  }
  RETURN_IF_ERROR(SameKeys("container", containers_, model.containers()));
  std::map<std::pair<std::string, std::string>, std::string> holders, names;
  for (const auto& [id, c] : containers_) {
    const model::ContainerState& want = model.containers().at(id);
    if (!SameMessage(c.container, want.container)) {
      return Differs("container", id, c.container.ShortDebugString());
    }
    if (c.window_ids != want.window_ids) return Differs("container", id, "another set of windows");
    if (c.allocator.Windows() != want.allocator.Windows() ||
        c.allocator.FreeRanges() != want.allocator.FreeRanges()) {
      return Differs("container", id, "its window allocator has other windows or free ranges");
    }
    for (const std::string& d : c.container.devices()) holders[{c.container.node(), d}] = id;
    if (!c.container.name().empty()) names[{c.container.name(), c.container.tenant_id()}] = id;
  }
  RETURN_IF_ERROR(SameKeys("window", windows_, model.windows()));
  for (const auto& [id, w] : windows_) {
    if (!SameMessage(w, model.windows().at(id))) return Differs("window", id, w.ShortDebugString());
  }
  if (device_holder_ != holders) {
    RETURN_IF_ERROR(SameKeys("device", device_holder_, holders));
    return absl::InternalError("memory differs from the store: a device has another holder");
  }
  if (container_names_ != names) {
    RETURN_IF_ERROR(SameKeys("name", container_names_, names));
    return absl::InternalError("memory differs from the store: a container name has another id");
  }
  for (const auto& [tenant, totals] : index_.tenants) {
    const model::TenantTotals want = model.Totals(tenant);
    if (totals.budget_bytes != want.budget_bytes || totals.window_bytes != want.window_bytes) {
      return Differs("tenant", tenant, "other totals of budgets or windows");
    }
  }
  return absl::OkStatus();
}

absl::Status Broker::CheckPlacementLocked() {
  // A node whose change was never marked stale keeps its old entry through
  // the refresh, and differs from the fresh index below.
  RefreshPlacementLocked();
  const model::PlacementIndex want = BuildPlacementLocked();
  for (const auto& [name, n] : nodes_) {
    if (want.eligible(name) != placement_.eligible(name)) {
      return absl::InternalError(absl::StrCat("placement index: node ", name,
                                              " eligible=", placement_.eligible(name),
                                              ", a rebuild says ", want.eligible(name)));
    }
    std::set<model::SelectorKey> keys = {{0, 0}};
    for (const v1::Device& d : n.devices) {
      keys.insert({{d.vendor_id(), 0}, {0, d.device_id()}, {d.vendor_id(), d.device_id()}});
    }
    for (const model::SelectorKey& k : keys) {
      if (want.FreeCount(name, k) != placement_.FreeCount(name, k)) {
        return absl::InternalError(
            absl::StrFormat("placement index: node %s has %d free devices of vendor_id=0x%04x "
                            "device_id=0x%04x, a rebuild says %d",
                            name, placement_.FreeCount(name, k), k.vendor_id, k.device_id,
                            want.FreeCount(name, k)));
      }
    }
  }
  // And no node the broker no longer knows is offered.
  std::string unknown;
  placement_.VisitBest({0, 0}, 1, [&](const std::string& node, int64_t) {
    mu_.AssertHeld();  // VisitBest calls back synchronously, under mu_.
    if (nodes_.count(node)) return true;
    unknown = node;
    return false;
  });
  if (!unknown.empty()) {
    return absl::InternalError(absl::StrCat("placement index: offers unknown node ", unknown));
  }
  return absl::OkStatus();
}

absl::Status Broker::CheckIndexes() {
  absl::MutexLock l(&mu_);
  RETURN_IF_ERROR(CheckPlacementLocked());
  for (const auto& [name, n] : nodes_) {
    if (n.heartbeat_answer != nullptr && n.heartbeat_answer->SerializeAsString() !=
                                             HeartbeatAnswerLocked(name)->SerializeAsString()) {
      return absl::InternalError(
          absl::StrCat("heartbeat answer of node ", name,
                       " differs from a fresh one: ", n.heartbeat_answer->ShortDebugString()));
    }
  }
  const Indexes want = RecountLocked();
  if (want == index_) return CheckMatchesStoreLocked();
  auto differ = [](const char* what, const auto& want, const auto& have) -> std::string {
    for (const auto& [key, value] : want) {
      auto it = have.find(key);
      if (it == have.end() || !(it->second == value)) return absl::StrCat(what, " of ", key);
    }
    for (const auto& [key, value] : have) {
      if (!want.count(key)) return absl::StrCat(what, " of ", key, " (stale entry)");
    }
    return "";
  };
  std::string where = differ("tenant totals", want.tenants, index_.tenants);
  if (where.empty()) where = differ("containers", want.tenant_containers, index_.tenant_containers);
  if (where.empty())
    where = differ("node containers", want.node_containers, index_.node_containers);
  if (where.empty())
    where = differ("deleting containers", want.node_deleting, index_.node_deleting);
  if (where.empty()) where = differ("usage nodes", want.usage_nodes, index_.usage_nodes);
  return absl::InternalError(absl::StrCat("indexes differ from a recount: ", where));
}

}  // namespace iommu
