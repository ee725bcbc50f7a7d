#include "server/model/fleet_state.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "common/validation.h"

namespace iommu {
namespace model {
namespace {

// Owners before what they own: a change's puts apply in this order and its
// deletes in the reverse, so one change can create a container with its
// windows or delete both.
int KindRank(const std::string& kind) {
  if (kind == kTenantKind) return 0;
  if (kind == kNodeKind) return 1;
  if (kind == kDevicesKind) return 2;
  if (kind == kNodeKeyKind) return 3;
  if (kind == kContainerKind) return 4;
  if (kind == kWindowKind) return 5;
  return -1;
}

absl::Status Unparsable(const std::string& kind, const std::string& id) {
  return absl::DataLossError(absl::StrCat("record ", kind, "/", id, " does not parse"));
}

template <typename M>
absl::Status ParseRecord(const StoreRecord& r, M* out) {
  if (!out->ParseFromString(r.value)) return Unparsable(r.kind, r.id);
  return absl::OkStatus();
}

absl::StatusOr<WindowAllocator> AllocatorFor(const v1::Container& c) {
  absl::StatusOr<WindowAllocator> a = ContainerAllocator(c);
  if (!a.ok()) return absl::FailedPreconditionError(a.status().message());
  return a;
}

bool SameGeometry(const v1::Container& a, const v1::Container& b) {
  return a.geometry().SerializeAsString() == b.geometry().SerializeAsString();
}

std::vector<std::string> Page(const std::set<std::pair<std::string, std::string>>& index,
                              const std::string& owner, const std::string& after, size_t limit) {
  std::vector<std::string> out;
  for (auto it = index.upper_bound({owner, after}); it != index.end() && it->first == owner; ++it) {
    if (limit != 0 && out.size() >= limit) break;
    out.push_back(it->second);
  }
  return out;
}

}  // namespace

absl::StatusOr<WindowAllocator> ContainerAllocator(const v1::Container& c) {
  const uint64_t page = MinPageSize(c.geometry().page_size_bitmap());
  if (page == 0) {
    return absl::InvalidArgumentError(absl::StrCat("container ", c.id(), " on node ", c.node(),
                                                   ": geometry: no IOMMU page size"));
  }
  std::vector<IovaInterval> usable;
  for (const auto& r : c.geometry().usable_ranges()) usable.push_back({r.start(), r.last()});
  absl::StatusOr<WindowAllocator> a = WindowAllocator::Create(std::move(usable), page);
  if (!a.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("container ", c.id(), ": geometry: ", a.status().message()));
  }
  return a;
}

std::string RecordKey(const std::string& kind, const std::string& id) {
  return absl::StrCat("/", kind, "/", id);
}

absl::StatusOr<std::pair<std::string, std::string>> ParseRecordKey(const std::string& key) {
  const size_t slash = key.find('/', 1);
  if (key.empty() || key[0] != '/' || slash == std::string::npos || slash == 1 ||
      slash + 1 == key.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("key: \"", key, "\" is not of the form /<kind>/<id>"));
  }
  return std::make_pair(key.substr(1, slash - 1), key.substr(slash + 1));
}

// ------------------------------------------------------------------ reads

const v1::Tenant* FleetState::FindTenant(const std::string& id) const {
  auto it = tenants_.find(id);
  return it == tenants_.end() ? nullptr : &it->second;
}

const NodeState* FleetState::FindNode(const std::string& name) const {
  auto it = nodes_.find(name);
  return it == nodes_.end() ? nullptr : &it->second;
}

const ContainerState* FleetState::FindContainer(const std::string& id) const {
  auto it = containers_.find(id);
  return it == containers_.end() ? nullptr : &it->second;
}

const v1::Window* FleetState::FindWindow(const std::string& id) const {
  auto it = windows_.find(id);
  return it == windows_.end() ? nullptr : &it->second;
}

const std::string* FleetState::DeviceHolder(const std::string& node,
                                            const std::string& address) const {
  auto it = device_holder_.find({node, address});
  return it == device_holder_.end() ? nullptr : &it->second;
}

std::vector<std::string> FleetState::ContainersOfNode(const std::string& node,
                                                      const std::string& after,
                                                      size_t limit) const {
  return Page(node_containers_, node, after, limit);
}

std::vector<std::string> FleetState::ContainersOfTenant(const std::string& tenant,
                                                        const std::string& after,
                                                        size_t limit) const {
  return Page(tenant_containers_, tenant, after, limit);
}

int64_t FleetState::ContainerCountOfNode(const std::string& node) const {
  auto it = node_container_count_.find(node);
  return it == node_container_count_.end() ? 0 : it->second;
}

TenantTotals FleetState::Totals(const std::string& tenant) const {
  auto it = totals_.find(tenant);
  return it == totals_.end() ? TenantTotals() : it->second;
}

std::optional<std::vector<std::string>> FleetState::PickDevices(
    const std::string& node, const SelectorKey& key, uint32_t count,
    const std::function<bool(const std::string& address)>& busy) const {
  const NodeState* n = FindNode(node);
  if (n == nullptr) return std::nullopt;
  return PickWholeGroups(n->devices, key, count, [&](const std::string& address) {
    return DeviceHolder(node, address) != nullptr || busy(address);
  });
}

// ------------------------------------------------------------------ apply

absl::Status FleetState::Apply(const WriteBatch& change) {
  std::vector<const StoreRecord*> puts;
  for (const StoreRecord& r : change.puts) {
    if (KindRank(r.kind) < 0) {
      return absl::DataLossError(absl::StrCat("record ", r.kind, "/", r.id, ": unknown kind"));
    }
    puts.push_back(&r);
  }
  std::vector<const std::pair<std::string, std::string>*> deletes;
  for (const auto& d : change.deletes) {
    if (KindRank(d.first) < 0) {
      return absl::DataLossError(absl::StrCat("delete ", d.first, "/", d.second, ": unknown kind"));
    }
    deletes.push_back(&d);
  }
  std::stable_sort(puts.begin(), puts.end(), [](const StoreRecord* a, const StoreRecord* b) {
    return KindRank(a->kind) < KindRank(b->kind);
  });
  std::stable_sort(deletes.begin(), deletes.end(), [](const auto* a, const auto* b) {
    return KindRank(a->first) > KindRank(b->first);
  });

  std::vector<Undo> undo;
  std::set<std::string> dirty;  // Nodes whose free devices may have changed.
  absl::Status s;
  for (const StoreRecord* r : puts) {
    s = PutRecord(*r, &undo, &dirty);
    if (!s.ok()) break;
  }
  for (size_t i = 0; s.ok() && i < deletes.size(); ++i) {
    s = DeleteRecord(deletes[i]->first, deletes[i]->second, &undo, &dirty);
  }
  if (s.ok()) s = CheckReferences(change);
  if (!s.ok()) {
    for (auto it = undo.rbegin(); it != undo.rend(); ++it) (*it)();
    return s;
  }
  Reindex(dirty);
  ++version_;
  return absl::OkStatus();
}

absl::Status FleetState::PutRecord(const StoreRecord& r, std::vector<Undo>* undo,
                                   std::set<std::string>* dirty) {
  if (r.kind == kTenantKind) {
    v1::Tenant t;
    RETURN_IF_ERROR(ParseRecord(r, &t));
    if (t.id() != r.id) return Unparsable(r.kind, r.id);
    auto old = tenants_.find(t.id());
    if (old == tenants_.end()) {
      ++counts_.tenants;
      undo->push_back([this, id = t.id()] {
        tenants_.erase(id);
        --counts_.tenants;
      });
    } else {
      undo->push_back([this, prev = old->second] { tenants_[prev.id()] = prev; });
    }
    tenants_[t.id()] = std::move(t);
    return absl::OkStatus();
  }
  if (r.kind == kNodeKind) {
    v1::Node n;
    RETURN_IF_ERROR(ParseRecord(r, &n));
    if (n.name() != r.id) return Unparsable(r.kind, r.id);
    SetNodePart(r.id, [&n](NodeState* ns) { ns->node = n; }, undo, dirty);
    return absl::OkStatus();
  }
  if (r.kind == kDevicesKind) {
    v1::ListDevicesResponse d;
    RETURN_IF_ERROR(ParseRecord(r, &d));
    SetNodePart(r.id, [&d](NodeState* ns) { ns->devices.assign(d.devices().begin(), d.devices().end()); },
                undo, dirty);
    return absl::OkStatus();
  }
  if (r.kind == kNodeKeyKind) {
    SetNodePart(r.id, [&r](NodeState* ns) { ns->grant_key = r.value; }, undo, dirty);
    return absl::OkStatus();
  }
  if (r.kind == kContainerKind) {
    v1::Container c;
    RETURN_IF_ERROR(ParseRecord(r, &c));
    if (c.id() != r.id) return Unparsable(r.kind, r.id);
    return PutContainer(std::move(c), undo, dirty);
  }
  v1::Window w;
  RETURN_IF_ERROR(ParseRecord(r, &w));
  if (w.id() != r.id) return Unparsable(r.kind, r.id);
  return PutWindow(std::move(w), undo);
}

bool FleetState::HasNodeRecord(const std::string& name) const {
  auto it = nodes_.find(name);
  return it != nodes_.end() && it->second.node.has_value();
}

void FleetState::SetNodePart(const std::string& name, const std::function<void(NodeState*)>& set,
                             std::vector<Undo>* undo, std::set<std::string>* dirty) {
  std::optional<NodeState> prev;
  if (auto it = nodes_.find(name); it != nodes_.end()) prev = it->second;
  undo->push_back([this, name, prev] {
    counts_.nodes -= HasNodeRecord(name) ? 1 : 0;
    if (prev.has_value()) {
      nodes_[name] = *prev;
    } else {
      nodes_.erase(name);
    }
    counts_.nodes += HasNodeRecord(name) ? 1 : 0;
  });
  counts_.nodes -= HasNodeRecord(name) ? 1 : 0;
  NodeState& ns = nodes_[name];
  set(&ns);
  if (!ns.node.has_value() && ns.devices.empty() && ns.grant_key.empty()) nodes_.erase(name);
  counts_.nodes += HasNodeRecord(name) ? 1 : 0;
  dirty->insert(name);
}

absl::Status FleetState::PutContainer(v1::Container c, std::vector<Undo>* undo,
                                      std::set<std::string>* dirty) {
  for (const std::string& d : c.devices()) {
    const std::string* holder = DeviceHolder(c.node(), d);
    if (holder != nullptr && *holder != c.id()) {
      return absl::FailedPreconditionError(absl::StrCat("container ", c.id(), ": device ", c.node(),
                                                        "/", d, " is held by container ", *holder));
    }
  }
  auto old = containers_.find(c.id());
  std::optional<ContainerState> prev;
  if (old != containers_.end()) prev = old->second;
  if (prev.has_value() && prev->container.tenant_id() != c.tenant_id() &&
      !prev->window_ids.empty()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "container ", c.id(), ": moves to tenant ", c.tenant_id(), " while it holds window ",
        *prev->window_ids.begin(), " of tenant ", prev->container.tenant_id()));
  }
  const bool same_geometry = prev.has_value() && SameGeometry(prev->container, c);
  std::optional<WindowAllocator> allocator;
  if (same_geometry) {
    allocator = prev->allocator;
  } else {
    ASSIGN_OR_RETURN(allocator, AllocatorFor(c));
  }
  ContainerState next{c, std::move(*allocator), {}};
  if (prev.has_value()) {
    next.window_ids = prev->window_ids;
    if (!same_geometry) {
      for (const std::string& wid : next.window_ids) {
        const v1::Window& w = windows_.at(wid);
        absl::Status fit = next.allocator.AllocateAt(w.base(), w.size());
        if (!fit.ok()) {
          return absl::FailedPreconditionError(absl::StrCat(
              "container ", c.id(), ": window ", wid, " does not fit the new geometry: ",
              fit.message()));
        }
      }
    }
    EraseContainer(c.id(), dirty);
  }
  InsertContainer(std::move(next), dirty);
  undo->push_back([this, id = c.id(), prev = std::move(prev), dirty] {
    EraseContainer(id, dirty);
    if (prev.has_value()) InsertContainer(*prev, dirty);
  });
  return absl::OkStatus();
}

void FleetState::InsertContainer(ContainerState cs, std::set<std::string>* dirty) {
  const v1::Container& c = cs.container;
  for (const std::string& d : c.devices()) device_holder_[{c.node(), d}] = c.id();
  node_containers_.insert({c.node(), c.id()});
  tenant_containers_.insert({c.tenant_id(), c.id()});
  ++node_container_count_[c.node()];
  TenantTotals& t = totals_[c.tenant_id()];
  ++t.containers;
  t.budget_bytes += c.pin_budget_bytes();
  ++counts_.containers;
  ++counts_.containers_by_state[c.state()];
  dirty->insert(c.node());
  const std::string id = c.id();
  containers_.insert_or_assign(id, std::move(cs));
}

void FleetState::EraseContainer(const std::string& id, std::set<std::string>* dirty) {
  auto it = containers_.find(id);
  if (it == containers_.end()) return;
  const v1::Container& c = it->second.container;
  for (const std::string& d : c.devices()) {
    auto h = device_holder_.find({c.node(), d});
    if (h != device_holder_.end() && h->second == id) device_holder_.erase(h);
  }
  node_containers_.erase({c.node(), id});
  tenant_containers_.erase({c.tenant_id(), id});
  if (--node_container_count_[c.node()] == 0) node_container_count_.erase(c.node());
  TenantTotals& t = totals_[c.tenant_id()];
  --t.containers;
  t.budget_bytes -= c.pin_budget_bytes();
  if (t == TenantTotals()) totals_.erase(c.tenant_id());
  --counts_.containers;
  if (--counts_.containers_by_state[c.state()] == 0) counts_.containers_by_state.erase(c.state());
  dirty->insert(c.node());
  containers_.erase(it);
}

absl::Status FleetState::PutWindow(v1::Window w, std::vector<Undo>* undo) {
  auto c = containers_.find(w.container_id());
  if (c == containers_.end()) {
    return absl::FailedPreconditionError(
        absl::StrCat("window ", w.id(), ": names missing container ", w.container_id()));
  }
  // Its bytes count against its tenant's quota: that must be its container's.
  if (w.tenant_id() != c->second.container.tenant_id()) {
    return absl::FailedPreconditionError(
        absl::StrCat("window ", w.id(), ": of tenant ", w.tenant_id(), " in container ",
                     w.container_id(), " of tenant ", c->second.container.tenant_id()));
  }
  std::optional<v1::Window> prev;
  if (auto old = windows_.find(w.id()); old != windows_.end()) {
    prev = old->second;
    EraseWindow(w.id());
  }
  absl::Status fit = c->second.allocator.AllocateAt(w.base(), w.size());
  if (!fit.ok()) {
    if (prev.has_value()) {
      std::vector<Undo> ignored;  // Restores the state before this put.
      PutWindow(*prev, &ignored).IgnoreError();  // It fitted before.
    }
    return absl::FailedPreconditionError(absl::StrCat("window ", w.id(), ": does not fit container ",
                                                      w.container_id(), ": ", fit.message()));
  }
  c->second.window_ids.insert(w.id());
  TenantTotals& t = totals_[w.tenant_id()];
  ++t.windows;
  t.window_bytes += w.size();
  ++counts_.windows;
  undo->push_back([this, id = w.id(), prev] {
    EraseWindow(id);
    if (prev.has_value()) {
      std::vector<Undo> ignored;
      PutWindow(*prev, &ignored).IgnoreError();  // Restores what fitted before.
    }
  });
  windows_[w.id()] = std::move(w);
  return absl::OkStatus();
}

void FleetState::EraseWindow(const std::string& id) {
  auto it = windows_.find(id);
  if (it == windows_.end()) return;
  const v1::Window& w = it->second;
  auto c = containers_.find(w.container_id());
  if (c != containers_.end()) {
    c->second.allocator.Release(w.base()).IgnoreError();  // Allocated when inserted.
    c->second.window_ids.erase(id);
  }
  TenantTotals& t = totals_[w.tenant_id()];
  --t.windows;
  t.window_bytes -= w.size();
  if (t == TenantTotals()) totals_.erase(w.tenant_id());
  --counts_.windows;
  windows_.erase(it);
}

absl::Status FleetState::DeleteRecord(const std::string& kind, const std::string& id,
                                      std::vector<Undo>* undo, std::set<std::string>* dirty) {
  if (kind == kTenantKind) {
    auto it = tenants_.find(id);
    if (it == tenants_.end()) return absl::OkStatus();  // Absent is fine, as in the store.
    undo->push_back([this, prev = it->second] {
      tenants_[prev.id()] = prev;
      ++counts_.tenants;
    });
    tenants_.erase(it);
    --counts_.tenants;
    return absl::OkStatus();
  }
  if (kind == kNodeKind || kind == kDevicesKind || kind == kNodeKeyKind) {
    if (!nodes_.count(id)) return absl::OkStatus();
    SetNodePart(
        id,
        [&kind](NodeState* ns) {
          if (kind == kNodeKind) ns->node.reset();
          if (kind == kDevicesKind) ns->devices.clear();
          if (kind == kNodeKeyKind) ns->grant_key.clear();
        },
        undo, dirty);
    return absl::OkStatus();
  }
  if (kind == kContainerKind) {
    auto it = containers_.find(id);
    if (it == containers_.end()) return absl::OkStatus();
    if (!it->second.window_ids.empty()) {
      return absl::FailedPreconditionError(absl::StrCat(
          "container ", id, ": deleted while it still has window ", *it->second.window_ids.begin()));
    }
    undo->push_back([this, prev = it->second, dirty] { InsertContainer(prev, dirty); });
    EraseContainer(id, dirty);
    return absl::OkStatus();
  }
  auto it = windows_.find(id);
  if (it == windows_.end()) return absl::OkStatus();
  undo->push_back([this, prev = it->second] {
    std::vector<Undo> ignored;
    PutWindow(prev, &ignored).IgnoreError();  // It fitted before it was erased.
  });
  EraseWindow(id);
  return absl::OkStatus();
}

// Ownership checks that only make sense once the whole change is in: a
// container may arrive with its tenant in the same change, and a tenant may
// leave with its last container.
absl::Status FleetState::CheckReferences(const WriteBatch& change) const {
  for (const StoreRecord& r : change.puts) {
    if (r.kind != kContainerKind) continue;
    const ContainerState* c = FindContainer(r.id);
    if (c == nullptr) continue;  // Deleted later in the same change.
    if (FindTenant(c->container.tenant_id()) == nullptr) {
      return absl::FailedPreconditionError(absl::StrCat("container ", r.id, ": tenant ",
                                                        c->container.tenant_id(), " does not exist"));
    }
    if (FindNode(c->container.node()) == nullptr) {
      return absl::FailedPreconditionError(
          absl::StrCat("container ", r.id, ": node ", c->container.node(), " does not exist"));
    }
  }
  for (const auto& [kind, id] : change.deletes) {
    if (kind == kTenantKind && FindTenant(id) == nullptr) {
      std::vector<std::string> left = ContainersOfTenant(id, "", 1);
      if (!left.empty()) {
        return absl::FailedPreconditionError(
            absl::StrCat("tenant ", id, ": deleted while container ", left[0], " remains"));
      }
    }
    if ((kind == kNodeKind || kind == kDevicesKind || kind == kNodeKeyKind) &&
        FindNode(id) == nullptr) {
      std::vector<std::string> left = ContainersOfNode(id, "", 1);
      if (!left.empty()) {
        return absl::FailedPreconditionError(
            absl::StrCat("node ", id, ": deleted while container ", left[0], " remains"));
      }
    }
  }
  return absl::OkStatus();
}

void FleetState::Reindex(const std::set<std::string>& dirty_nodes) {
  const auto held = [this](const std::string& node, const std::string& address) {
    return DeviceHolder(node, address) != nullptr;
  };
  for (const std::string& name : dirty_nodes) {
    const NodeState* n = FindNode(name);
    if (n == nullptr) {
      placement_.RemoveNode(name);
    } else {
      placement_.UpdateNode(name, n->devices, held);
    }
  }
}

}  // namespace model
}  // namespace iommu
