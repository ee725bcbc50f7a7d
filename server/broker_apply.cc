// The Broker's memory follows the records it commits: a mutation is written
// once, as the change it commits (a WriteBatch), and ApplyChangeLocked
// applies that change to the maps and indexes, so what is served between
// apply and commit is what a restart would load after it.
#include <algorithm>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "common/validation.h"
#include "server/broker.h"
#include "server/broker_internal.h"
#include "server/model/fleet_state.h"

namespace iommu {

using broker_internal::kContainer;
using broker_internal::kDevices;
using broker_internal::kNode;
using broker_internal::kNodeKey;
using broker_internal::kTenant;
using broker_internal::kWindow;

namespace {

absl::Status Unparsable(const StoreRecord& r) {
  return absl::InternalError(absl::StrCat("change: record ", r.kind, "/", r.id, " does not parse"));
}

}  // namespace

absl::StatusOr<WindowAllocator> Broker::AllocatorFor(const v1::Container& c) {
  absl::StatusOr<WindowAllocator> a = model::ContainerAllocator(c);
  // A geometry comes from an agent or the store, never from the caller.
  if (!a.ok()) return absl::InternalError(a.status().message());
  return a;
}

// What a load refuses (model::ParseStoredRecords) a change may not make
// either: the planners never propose it, and this keeps a planner's mistake
// from reaching memory or the store.
absl::Status Broker::CheckNewContainerLocked(
    const v1::Container& c, const WriteBatch& change,
    const std::map<std::string, WindowAllocator>& created,
    std::set<std::pair<std::string, std::string>>* claimed) const {
  auto refused = [&c](const std::string& why) {
    return absl::InternalError(absl::StrCat("change: new container ", c.id(), ": ", why));
  };
  auto put = [&change](const char* kind, const std::string& id) {
    return std::any_of(change.puts.begin(), change.puts.end(),
                       [&](const StoreRecord& r) { return r.kind == kind && r.id == id; });
  };
  if (created.count(c.id())) return refused("put twice");
  if (!tenants_.count(c.tenant_id()) && !put(kTenant, c.tenant_id())) {
    return refused(absl::StrCat("tenant ", c.tenant_id(), " does not exist"));
  }
  auto n = nodes_.find(c.node());
  if ((n == nodes_.end() || n->second.node.name().empty()) && !put(kNode, c.node())) {
    return refused(absl::StrCat("node ", c.node(), " does not exist"));
  }
  for (const std::string& d : c.devices()) {
    if (auto held = device_holder_.find({c.node(), d}); held != device_holder_.end()) {
      return refused(
          absl::StrCat("device ", c.node(), "/", d, " is held by container ", held->second));
    }
    if (!claimed->insert({c.node(), d}).second) {
      return refused(absl::StrCat("device ", c.node(), "/", d, " is listed twice in the change"));
    }
  }
  if (!c.name().empty()) {
    if (auto named = container_names_.find({c.name(), c.tenant_id()});
        named != container_names_.end()) {
      return refused(absl::StrCat("the name ", c.name(), " is taken by container ", named->second));
    }
  }
  return absl::OkStatus();
}

// Two passes: the first parses every record and makes every check and
// reservation that can fail, undoing its reservations on failure; the
// second cannot fail. So a change either applies whole or not at all.
absl::Status Broker::ApplyChangeLocked(const WriteBatch& change) {
  std::vector<v1::Tenant> tenants;
  std::vector<v1::Node> nodes;
  std::vector<std::pair<std::string, v1::ListDevicesResponse>> devices;
  std::vector<const StoreRecord*> keys;
  std::vector<v1::Container> containers;
  std::map<std::string, WindowAllocator> created;  // New containers' allocators.
  std::set<std::pair<std::string, std::string>> claimed;  // (node, device) of new containers.
  std::vector<v1::Window> windows;
  for (const StoreRecord& r : change.puts) {
    if (r.kind == kTenant) {
      if (!tenants.emplace_back().ParseFromString(r.value)) return Unparsable(r);
    } else if (r.kind == kNode) {
      if (!nodes.emplace_back().ParseFromString(r.value)) return Unparsable(r);
    } else if (r.kind == kDevices) {
      if (!devices.emplace_back(r.id, v1::ListDevicesResponse()).second.ParseFromString(r.value)) {
        return Unparsable(r);
      }
    } else if (r.kind == kNodeKey) {
      keys.push_back(&r);
    } else if (r.kind == kContainer) {
      v1::Container& c = containers.emplace_back();
      if (!c.ParseFromString(r.value)) return Unparsable(r);
      auto it = containers_.find(c.id());
      if (it == containers_.end()) {
        RETURN_IF_ERROR(CheckNewContainerLocked(c, change, created, &claimed));
        ASSIGN_OR_RETURN(WindowAllocator a, AllocatorFor(c));
        created.insert_or_assign(c.id(), std::move(a));
        continue;
      }
      // What a container is made of never changes; only its budget, labels
      // and deleting mark do, and that mark is never taken back.
      const v1::Container& was = it->second.container;
      if (c.node() != was.node() || c.tenant_id() != was.tenant_id() || c.name() != was.name() ||
          (was.deleting() && !c.deleting()) ||
          // Bytes, not fields: no map in it, and this runs under the lock.
          c.geometry().SerializeAsString() != was.geometry().SerializeAsString() ||
          !std::equal(c.devices().begin(), c.devices().end(), was.devices().begin(),
                      was.devices().end())) {
        return absl::InternalError(absl::StrCat("change: container ", c.id(),
                                                " would change its node, tenant, name, devices "
                                                "or geometry, or stop being deleted"));
      }
    } else if (r.kind == kWindow) {
      if (!windows.emplace_back().ParseFromString(r.value)) return Unparsable(r);
    } else {
      return absl::InternalError(absl::StrCat("change: unknown record kind ", r.kind));
    }
  }
  for (const auto& [kind, id] : change.deletes) {
    if (kind != kTenant && kind != kNode && kind != kDevices && kind != kNodeKey &&
        kind != kContainer && kind != kWindow) {
      return absl::InternalError(absl::StrCat("change: unknown record kind ", kind));
    }
  }
  // Windows never change once made: a put reserves its range.
  std::vector<std::pair<WindowAllocator*, uint64_t>> reserved;
  auto unreserve = [&reserved] {
    for (auto& [a, base] : reserved) a->Release(base).IgnoreError();
  };
  for (const v1::Window& w : windows) {
    WindowAllocator* a = nullptr;
    const std::string* tenant = nullptr;  // The container's.
    if (auto c = created.find(w.container_id()); c != created.end()) {
      a = &c->second;
      for (const v1::Container& put : containers) {
        if (put.id() == w.container_id()) tenant = &put.tenant_id();
      }
    } else if (auto c = containers_.find(w.container_id()); c != containers_.end()) {
      a = &c->second.allocator;
      tenant = &c->second.container.tenant_id();
    }
    absl::Status s = a == nullptr             ? absl::NotFoundError("no such container")
                     : windows_.count(w.id()) ? absl::AlreadyExistsError("the window exists")
                     : *tenant != w.tenant_id()
                         ? absl::FailedPreconditionError(
                               absl::StrCat("of tenant ", w.tenant_id(), ", not its container's"))
                         : a->AllocateAt(w.base(), w.size());
    if (!s.ok()) {
      unreserve();
      return absl::InternalError(absl::StrCat("change: window ", w.id(), " in container ",
                                              w.container_id(), ": ", s.message()));
    }
    reserved.push_back({a, w.base()});
  }

  // ---- cannot fail from here on ----
  for (v1::Tenant& t : tenants) {
    MarkAppliedLocked(v1::OBJECT_KIND_TENANT, t.id());
    const std::string id = t.id();
    tenants_[id] = std::move(t);
  }
  for (v1::Node& n : nodes) {
    const std::string name = n.name();
    MarkAppliedLocked(v1::OBJECT_KIND_NODE, name);
    MarkPlacementStaleLocked(name);  // Cordoned or not decides placement.
    nodes_[name].node = std::move(n);
  }
  for (auto& [name, d] : devices) {
    MarkPlacementStaleLocked(name);
    nodes_[name].devices.assign(d.devices().begin(), d.devices().end());
  }
  for (const StoreRecord* r : keys) nodes_[r->id].grant_key = r->value;
  for (v1::Container& c : containers) {
    if (auto a = created.find(c.id()); a != created.end()) {
      AddContainerLocked(ContainerEntry{std::move(c), std::move(a->second), {}});
      continue;
    }
    ContainerEntry* entry = &containers_.at(c.id());
    // Marked before anything changes: the first mark keeps the labels
    // watchers saw (MarkAppliedLocked).
    MarkAppliedLocked(v1::OBJECT_KIND_CONTAINER, c.id());
    entry->changed_seq = ApplyingSeqLocked();
    if (c.pin_budget_bytes() != entry->container.pin_budget_bytes()) {
      SetBudgetLocked(entry, c.pin_budget_bytes());
    }
    if (c.deleting() && !entry->container.deleting()) MarkDeletingLocked(entry);
    entry->container = std::move(c);
  }
  for (const v1::Window& w : windows) {
    auto c = containers_.find(w.container_id());
    AddWindowLocked(&c->second, w);
  }
  for (const auto& [kind, id] : change.deletes) {
    if (kind == kTenant) {
      if (!tenants_.count(id)) continue;
      MarkGoneLocked(v1::OBJECT_KIND_TENANT, id, *CurrentLocked(v1::OBJECT_KIND_TENANT, id));
      tenants_.erase(id);
    } else if (kind == kNode) {
      auto n = nodes_.find(id);
      if (n == nodes_.end()) continue;
      MarkGoneLocked(v1::OBJECT_KIND_NODE, id, *CurrentLocked(v1::OBJECT_KIND_NODE, id));
      SetNodeUsageLocked(id, &n->second, {});
      nodes_.erase(n);
      MarkPlacementStaleLocked(id);
    } else if (kind == kDevices || kind == kNodeKey) {
      // Deleted with the node's record (DeleteNode), which erased the entry.
      auto n = nodes_.find(id);
      if (n == nodes_.end()) continue;
      if (kind == kDevices) {
        n->second.devices.clear();
        MarkPlacementStaleLocked(id);
      } else {
        n->second.grant_key.clear();
      }
    } else if (kind == kContainer) {
      EraseContainerLocked(id);  // And its windows.
    } else if (kind == kWindow) {
      auto w = windows_.find(id);
      if (w == windows_.end()) continue;  // Erased with its container.
      ContainerEntry* c = &containers_.at(w->second.container_id());
      c->allocator.Release(w->second.base()).IgnoreError();  // Reserved when it was put.
      EraseWindowLocked(c, id);
    }
  }
  return absl::OkStatus();
}

absl::Status Broker::ApplyAndCommitLocked(WriteBatch change) {
  RETURN_IF_ERROR(ApplyChangeLocked(change));
  return CommitLocked(std::move(change));
}

absl::Status Broker::ApplyAndCommitForTesting(WriteBatch change) {
  absl::MutexLock l(&mu_);
  return ApplyAndCommitLocked(std::move(change));
}

}  // namespace iommu
