// The Broker's derived indexes (containers by node and tenant, per-tenant
// totals, device holders), kept in step with every add and erase.
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "server/broker.h"
#include "server/broker_internal.h"

namespace iommu {

// ------------------------------------------------------------ indexes

namespace {

template <typename Totals>
void Subtract(std::map<std::string, Totals>* m, const std::string& tenant, uint64_t budget,
              uint64_t window) {
  auto it = m->find(tenant);
  if (it == m->end()) return;
  it->second.budget_bytes -= budget;
  it->second.window_bytes -= window;
  if (it->second.budget_bytes == 0 && it->second.window_bytes == 0) m->erase(it);
}

template <typename Totals>
void Add(std::map<std::string, Totals>* m, const std::string& tenant, uint64_t budget,
         uint64_t window) {
  if (budget == 0 && window == 0) return;
  Totals& t = (*m)[tenant];
  t.budget_bytes += budget;
  t.window_bytes += window;
}

void EraseFromSet(std::map<std::string, std::set<std::string>>* m, const std::string& key,
                  const std::string& id) {
  auto it = m->find(key);
  if (it == m->end()) return;
  it->second.erase(id);
  if (it->second.empty()) m->erase(it);
}

}  // namespace

void Broker::AddContainerLocked(ContainerEntry entry) {
  entry.changed_seq = ApplyingSeqLocked();
  const v1::Container& c = entry.container;
  MarkAppliedLocked(v1::OBJECT_KIND_CONTAINER, c.id());
  MarkAppliedLocked(v1::OBJECT_KIND_NODE, c.node());
  for (const std::string& d : c.devices()) device_holder_[{c.node(), d}] = c.id();
  MarkPlacementStaleLocked(c.node());
  HeartbeatAnswerStaleLocked(c.node());
  if (!c.name().empty()) container_names_[{c.name(), c.tenant_id()}] = c.id();
  index_.tenant_containers[c.tenant_id()].insert(c.id());
  index_.node_containers[c.node()].insert(c.id());
  if (c.deleting()) index_.node_deleting[c.node()].insert(c.id());
  Add(&index_.tenants, c.tenant_id(), c.pin_budget_bytes(), 0);
  const std::string id = c.id();
  containers_.emplace(id, std::move(entry));
}

void Broker::EraseContainerLocked(const std::string& id) {
  auto it = containers_.find(id);
  if (it == containers_.end()) return;
  const v1::Container& c = it->second.container;
  MarkGoneLocked(v1::OBJECT_KIND_CONTAINER, id, *CurrentLocked(v1::OBJECT_KIND_CONTAINER, id));
  MarkAppliedLocked(v1::OBJECT_KIND_NODE, c.node());
  for (const std::string& w : it->second.window_ids) {
    auto wit = windows_.find(w);
    if (wit == windows_.end()) continue;
    MarkGoneLocked(v1::OBJECT_KIND_WINDOW, w, *CurrentLocked(v1::OBJECT_KIND_WINDOW, w));
    Subtract(&index_.tenants, wit->second.tenant_id(), 0, wit->second.size());
    windows_.erase(wit);
  }
  for (const std::string& d : c.devices()) device_holder_.erase({c.node(), d});
  MarkPlacementStaleLocked(c.node());
  HeartbeatAnswerStaleLocked(c.node());
  if (!c.name().empty()) container_names_.erase({c.name(), c.tenant_id()});
  EraseFromSet(&index_.tenant_containers, c.tenant_id(), id);
  EraseFromSet(&index_.node_containers, c.node(), id);
  EraseFromSet(&index_.node_deleting, c.node(), id);
  Subtract(&index_.tenants, c.tenant_id(), c.pin_budget_bytes(), 0);
  containers_.erase(it);
  push_order_.erase(id);  // A push in flight keeps its own reference.
}

void Broker::SetBudgetLocked(ContainerEntry* c, uint64_t budget) {
  c->changed_seq = ApplyingSeqLocked();
  MarkAppliedLocked(v1::OBJECT_KIND_CONTAINER, c->container.id());
  Subtract(&index_.tenants, c->container.tenant_id(), c->container.pin_budget_bytes(), 0);
  c->container.set_pin_budget_bytes(budget);
  HeartbeatAnswerStaleLocked(c->container.node());
  Add(&index_.tenants, c->container.tenant_id(), budget, 0);
}

void Broker::MarkDeletingLocked(ContainerEntry* c) {
  c->changed_seq = ApplyingSeqLocked();
  MarkAppliedLocked(v1::OBJECT_KIND_CONTAINER, c->container.id());
  c->container.set_deleting(true);
  index_.node_deleting[c->container.node()].insert(c->container.id());
}

void Broker::AddWindowLocked(ContainerEntry* c, const v1::Window& w) {
  c->changed_seq = ApplyingSeqLocked();
  MarkAppliedLocked(v1::OBJECT_KIND_CONTAINER, c->container.id());
  MarkAppliedLocked(v1::OBJECT_KIND_WINDOW, w.id());
  c->window_ids.insert(w.id());
  windows_[w.id()] = w;
  HeartbeatAnswerStaleLocked(c->container.node());
  Add(&index_.tenants, w.tenant_id(), 0, w.size());
}

void Broker::EraseWindowLocked(ContainerEntry* c, const std::string& id) {
  c->changed_seq = ApplyingSeqLocked();
  MarkAppliedLocked(v1::OBJECT_KIND_CONTAINER, c->container.id());
  c->window_ids.erase(id);
  HeartbeatAnswerStaleLocked(c->container.node());
  auto it = windows_.find(id);
  if (it == windows_.end()) return;
  MarkGoneLocked(v1::OBJECT_KIND_WINDOW, id, *CurrentLocked(v1::OBJECT_KIND_WINDOW, id));
  Subtract(&index_.tenants, it->second.tenant_id(), 0, it->second.size());
  windows_.erase(it);
}

Broker::Indexes Broker::RecountLocked() const {
  Indexes x;
  for (const auto& [id, c] : containers_) {
    x.tenant_containers[c.container.tenant_id()].insert(id);
    x.node_containers[c.container.node()].insert(id);
    if (c.container.deleting()) x.node_deleting[c.container.node()].insert(id);
    Add(&x.tenants, c.container.tenant_id(), c.container.pin_budget_bytes(), 0);
  }
  for (const auto& [id, w] : windows_) Add(&x.tenants, w.tenant_id(), 0, w.size());
  for (const auto& [name, n] : nodes_) {
    for (const auto& [tenant, u] : n.usage) x.usage_nodes[tenant].insert(name);
  }
  return x;
}

void Broker::SetNodeUsageLocked(const std::string& name, NodeEntry* n,
                                std::map<std::string, v1::PinUsage> usage) {
  for (const auto& [tenant, u] : n->usage) {
    if (!usage.count(tenant)) EraseFromSet(&index_.usage_nodes, tenant, name);
  }
  for (const auto& [tenant, u] : usage) index_.usage_nodes[tenant].insert(name);
  n->usage = std::move(usage);
}

const std::set<std::string>& Broker::NodeContainersLocked(const std::string& node) const {
  static const std::set<std::string>* const kNone = new std::set<std::string>();
  auto it = index_.node_containers.find(node);
  return it == index_.node_containers.end() ? *kNone : it->second;
}

const std::set<std::string>& Broker::TenantContainersLocked(const std::string& tenant) const {
  static const std::set<std::string>* const kNone = new std::set<std::string>();
  auto it = index_.tenant_containers.find(tenant);
  return it == index_.tenant_containers.end() ? *kNone : it->second;
}

model::PlacementIndex::HeldFn Broker::HeldFnLocked() const {
  return [this](const std::string& node, const std::string& address) {
    mu_.AssertHeld();  // Called by PlacementIndex::UpdateNode, under mu_.
    return device_holder_.count({node, address}) > 0;
  };
}

model::PlacementIndex Broker::BuildPlacementLocked() const {
  model::PlacementIndex index;
  const model::PlacementIndex::HeldFn held = HeldFnLocked();
  for (const auto& [name, n] : nodes_) {
    index.UpdateNode(name, n.devices, held);
    index.SetEligible(name, NodePlaceableLocked(n));
  }
  return index;
}

void Broker::RefreshPlacementLocked() {
  const model::PlacementIndex::HeldFn held = HeldFnLocked();
  for (const std::string& name : placement_stale_) {
    auto n = nodes_.find(name);
    if (n == nodes_.end()) {
      placement_.RemoveNode(name);
      continue;
    }
    placement_.UpdateNode(name, n->second.devices, held);
    placement_.SetEligible(name, NodePlaceableLocked(n->second));
  }
  placement_stale_.clear();
}

}  // namespace iommu
