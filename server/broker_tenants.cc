// The Broker's tenants: create, read, quota, labels, delete, usage, and the
// pushes of pin budgets that a quota change causes.
#include "server/broker.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/label_selector.h"
#include "common/labels.h"
#include "common/log.h"
#include "common/status_macros.h"
#include "common/validation.h"
#include "server/broker_internal.h"

namespace iommu {

using broker_internal::kContainer;
using broker_internal::kNormal;
using broker_internal::kTenant;
using broker_internal::kWarning;
using broker_internal::MaskedQuota;
using broker_internal::NewEvent;
using broker_internal::NodeRef;
using broker_internal::Page;
using broker_internal::PageSubset;
using broker_internal::QuotaText;
using broker_internal::Record;
using broker_internal::TenantRef;

// ------------------------------------------------------------ tenants

absl::Status Broker::CreateTenant(const v1::CreateTenantRequest& req, v1::Tenant* out,
                                  const Identity& caller) {
  return Mutate<v1::CreateTenantRequest, v1::Tenant>(
      "CreateTenant", caller, req, out, [&](v1::Tenant* answer) -> absl::StatusOr<Plan> {
        mu_.AssertHeld();  // Mutate runs this under mu_.
        RETURN_IF_ERROR(ValidateTenantId("tenant_id", req.tenant_id()));
        if (!req.has_quota()) return absl::InvalidArgumentError("quota: required");
        RETURN_IF_ERROR(ValidateQuota(req.quota().pinned_bytes(), req.quota().window_bytes()));
        RETURN_IF_ERROR(ValidateLabels("labels", req.labels()));
        if (tenants_.count(req.tenant_id())) {
          return absl::AlreadyExistsError(absl::StrCat(
              "tenant_id: tenant ", QuoteForMessage(req.tenant_id()), " already exists"));
        }
        answer->set_id(req.tenant_id());
        *answer->mutable_quota() = req.quota();
        answer->set_create_time_ms(Now());
        *answer->mutable_labels() = req.labels();
        Plan plan;
        plan.batch.puts.push_back(Record(kTenant, answer->id(), *answer));
        plan.Log(LogLevel::kInfo, "tenant_created",
                 {{"tenant", req.tenant_id()}, {"request_id", req.request_id()}});
        plan.Record(NewEvent(kNormal, "TenantCreated", TenantRef(req.tenant_id()), req.tenant_id(),
                             req.request_id(), absl::StrCat("quota: ", QuotaText(req.quota()))));
        return plan;
      });
}

absl::Status Broker::GetTenant(const v1::GetTenantRequest& req, v1::Tenant* out,
                               const Identity& caller) {
  RETURN_IF_ERROR(ValidateTenantId("tenant_id", req.tenant_id()));
  absl::MutexLock l(&mu_);
  auto it = tenants_.find(req.tenant_id());
  if (it == tenants_.end()) {
    return absl::NotFoundError(
        absl::StrCat("tenant_id: no tenant ", QuoteForMessage(req.tenant_id())));
  }
  *out = it->second;
  return AwaitDurableLocked();
}

absl::Status Broker::ListTenants(const v1::ListTenantsRequest& req, v1::ListTenantsResponse* out,
                                 const Identity& caller) {
  ASSIGN_OR_RETURN(uint32_t limit, EffectivePageSize("page_size", req.page_size()));
  RETURN_IF_ERROR(ValidatePageToken("page_token", req.page_token()));
  ASSIGN_OR_RETURN(LabelSelector selector,
                   LabelSelector::Parse("label_selector", req.label_selector()));
  absl::MutexLock l(&mu_);
  std::string next;
  Page(
      tenants_, req.page_token(), limit,
      [&](const v1::Tenant& t) { return selector.Matches(t.labels()); },
      [&](const v1::Tenant& t) { *out->add_tenants() = t; }, &next);
  out->set_next_page_token(next);
  out->set_resource_version(watch_.CurrentVersion());
  return AwaitDurableLocked();
}

void Broker::PushBudgets(const std::string& tenant, const std::string& node) {
  std::map<AgentEndpoint, v1::SetPinBudgetsRequest> by_address;
  {
    absl::MutexLock l(&mu_);
    uint64_t changed_seq = 0;
    for (const std::string& id : TenantContainersLocked(tenant)) {
      const ContainerEntry& c = containers_.at(id);
      if (c.container.node() != node) continue;
      changed_seq = std::max(changed_seq, c.changed_seq);
      auto n = nodes_.find(c.container.node());
      if (n == nodes_.end() || !NodeLiveLocked(n->second)) continue;
      v1::ContainerBudget* b = by_address[Endpoint(n->second)].add_budgets();
      b->set_container_id(id);
      b->set_pin_budget_bytes(c.container.pin_budget_bytes());
    }
    // Only durable budgets reach agents: a raise that a failed commit takes
    // back must not have let pins past the quota.
    if (!AwaitDurableLocked(changed_seq).ok()) return;  // The heartbeat answers carry them.
  }
  for (const auto& [address, req] : by_address) {
    absl::Status s = agents_->SetPinBudgets(address, req);
    if (!s.ok()) {
      LogEvent(LogLevel::kWarning, "budget_push_failed",
               {{"node", address.node},
                {"tenant", tenant},
                {"error", s.message()},
                {"note", "heartbeat_will_carry_it"}});
      RecordEvent(NewEvent(kWarning, "BudgetPushFailed", NodeRef(address.node), "", "",
                           absl::StrCat("the agent did not take the budgets of tenant ", tenant,
                                        " (its next heartbeat answer carries them): ", s.message()),
                           {TenantRef(tenant)}));
    }
  }
}

void Broker::QueuePushBudgets(const std::string& tenant) {
  std::set<std::string> nodes;
  {
    absl::MutexLock l(&mu_);
    for (const std::string& id : TenantContainersLocked(tenant)) {
      nodes.insert(containers_.at(id).container.node());
    }
  }
  for (const std::string& node : nodes) {
    pushes_.Enqueue(node, absl::StrCat("budgets/", tenant),
                    [this, tenant, node] { PushBudgets(tenant, node); });
  }
}

void Broker::QueuePushWindows(const std::string& container_id) {
  std::string node;
  {
    absl::MutexLock l(&mu_);
    auto c = containers_.find(container_id);
    if (c == containers_.end()) return;
    node = c->second.container.node();
  }
  pushes_.Enqueue(node, absl::StrCat("windows/", container_id), [this, container_id] {
    PushWindows(container_id, /*required=*/false).IgnoreError();
  });
}

void Broker::WaitForPushes() { pushes_.WaitIdle(); }

absl::Status Broker::SetTenantQuota(const v1::SetTenantQuotaRequest& req, v1::Tenant* out,
                                    const Identity& caller) {
  absl::Status s = SetTenantQuotaInternal(req, out, caller);
  if (s.ok()) QueuePushBudgets(req.tenant_id());
  return s;
}

absl::Status Broker::SetTenantQuotaInternal(const v1::SetTenantQuotaRequest& req, v1::Tenant* out,
                                            const Identity& caller) {
  return Mutate<v1::SetTenantQuotaRequest, v1::Tenant>(
      "SetTenantQuota", caller, req, out, [&](v1::Tenant* answer) -> absl::StatusOr<Plan> {
        mu_.AssertHeld();  // Mutate runs this under mu_.
        RETURN_IF_ERROR(ValidateTenantId("tenant_id", req.tenant_id()));
        if (!req.has_quota()) return absl::InvalidArgumentError("quota: required");
        auto it = tenants_.find(req.tenant_id());
        if (it == tenants_.end()) {
          return absl::NotFoundError(
              absl::StrCat("tenant_id: no tenant ", QuoteForMessage(req.tenant_id())));
        }
        ASSIGN_OR_RETURN(const v1::Quota quota,
                         MaskedQuota(it->second.quota(), req.quota(), req.update_mask()));
        RETURN_IF_ERROR(ValidateQuota(quota.pinned_bytes(), quota.window_bytes()));
        *answer = it->second;
        *answer->mutable_quota() = quota;
        Plan plan;
        plan.batch.puts.push_back(Record(kTenant, answer->id(), *answer));
        // Budgets never sum past the quota: shrink the newest first. Pins
        // already made stay; the agents refuse new ones past the budgets.
        uint64_t budgeted = TenantBudgetLocked(req.tenant_id());
        std::vector<std::pair<std::string, uint64_t>> shrunk;  // id, new budget
        if (budgeted > quota.pinned_bytes()) {
          std::vector<const ContainerEntry*> mine;
          for (const std::string& id : TenantContainersLocked(req.tenant_id())) {
            mine.push_back(&containers_.at(id));
          }
          std::sort(mine.begin(), mine.end(), [](const ContainerEntry* a, const ContainerEntry* b) {
            return std::make_pair(a->container.create_time_ms(), a->container.id()) >
                   std::make_pair(b->container.create_time_ms(), b->container.id());
          });
          for (const ContainerEntry* c : mine) {
            if (budgeted <= quota.pinned_bytes()) break;
            const uint64_t excess = budgeted - quota.pinned_bytes();
            const uint64_t cut = std::min(excess, c->container.pin_budget_bytes());
            if (cut == 0) continue;
            v1::Container changed = c->container;
            changed.set_pin_budget_bytes(changed.pin_budget_bytes() - cut);
            plan.batch.puts.push_back(Record(kContainer, changed.id(), changed));
            shrunk.push_back({changed.id(), changed.pin_budget_bytes()});
            budgeted -= cut;
          }
        }
        plan.Log(LogLevel::kInfo, "tenant_quota_set",
                 {{"tenant", req.tenant_id()},
                  {"pinned_bytes", quota.pinned_bytes()},
                  {"request_id", req.request_id()}});
        plan.Record(NewEvent(
            kNormal, "QuotaChanged", TenantRef(req.tenant_id()), req.tenant_id(), req.request_id(),
            absl::StrCat("quota: ", QuotaText(quota), " (was: ", QuotaText(it->second.quota()), ")",
                         shrunk.empty() ? "" : "; budgets shrunk to fit, newest first: ",
                         absl::StrJoin(shrunk, ", ", [](std::string* o, const auto& c) {
                           absl::StrAppend(o, c.first, " to ", EventBytes(c.second));
                         }))));
        return plan;
      });
}

absl::Status Broker::DeleteTenant(const v1::DeleteTenantRequest& req, v1::DeleteTenantResponse* out,
                                  const Identity& caller) {
  return Mutate<v1::DeleteTenantRequest, v1::DeleteTenantResponse>(
      "DeleteTenant", caller, req, out, [&](v1::DeleteTenantResponse*) -> absl::StatusOr<Plan> {
        mu_.AssertHeld();  // Mutate runs this under mu_.
        RETURN_IF_ERROR(ValidateTenantId("tenant_id", req.tenant_id()));
        if (!tenants_.count(req.tenant_id())) {
          return absl::NotFoundError(
              absl::StrCat("tenant_id: no tenant ", QuoteForMessage(req.tenant_id())));
        }
        const int held = TenantContainerCountLocked(req.tenant_id());
        if (held > 0) {
          return absl::FailedPreconditionError(
              absl::StrCat("tenant_id: tenant ", QuoteForMessage(req.tenant_id()), " still owns ",
                           held, " container(s); delete them first"));
        }
        Plan plan;
        plan.batch.deletes.push_back({kTenant, req.tenant_id()});
        plan.Log(LogLevel::kInfo, "tenant_deleted",
                 {{"tenant", req.tenant_id()}, {"request_id", req.request_id()}});
        plan.Record(NewEvent(kNormal, "TenantDeleted", TenantRef(req.tenant_id()), req.tenant_id(),
                             req.request_id(), "deleted"));
        return plan;
      });
}

absl::Status Broker::SetTenantLabels(const v1::SetTenantLabelsRequest& req, v1::Tenant* out,
                                     const Identity& caller) {
  return Mutate<v1::SetTenantLabelsRequest, v1::Tenant>(
      "SetTenantLabels", caller, req, out, [&](v1::Tenant* answer) -> absl::StatusOr<Plan> {
        mu_.AssertHeld();  // Mutate runs this under mu_.
        RETURN_IF_ERROR(ValidateTenantId("tenant_id", req.tenant_id()));
        auto it = tenants_.find(req.tenant_id());
        if (it == tenants_.end()) {
          return absl::NotFoundError(
              absl::StrCat("tenant_id: no tenant ", QuoteForMessage(req.tenant_id())));
        }
        v1::Tenant changed = it->second;
        RETURN_IF_ERROR(EditLabels(req.labels(), req.remove_keys(), changed.mutable_labels()));
        Plan plan;
        plan.batch.puts.push_back(Record(kTenant, changed.id(), changed));
        *answer = changed;
        const std::string text = LabelsText(changed.labels());
        plan.Log(LogLevel::kInfo, "tenant_labels_set",
                 {{"tenant", changed.id()}, {"labels", text}, {"request_id", req.request_id()}});
        plan.Record(NewEvent(kNormal, "LabelsChanged", TenantRef(changed.id()), changed.id(),
                             req.request_id(), absl::StrCat("labels: ", text)));
        return plan;
      });
}

// ------------------------------------------------------------ usage

absl::Status Broker::GetUsage(const v1::GetUsageRequest& req, v1::GetUsageResponse* out,
                              const Identity& caller) {
  if (!req.tenant_id().empty()) RETURN_IF_ERROR(ValidateTenantId("tenant_id", req.tenant_id()));
  if (!req.node().empty()) RETURN_IF_ERROR(ValidateNodeName("node", req.node()));
  ASSIGN_OR_RETURN(uint32_t limit, EffectivePageSize("page_size", req.page_size()));
  RETURN_IF_ERROR(ValidatePageToken("page_token", req.page_token()));
  absl::MutexLock l(&mu_);
  if (!req.tenant_id().empty() && !tenants_.count(req.tenant_id())) {
    return absl::NotFoundError(
        absl::StrCat("tenant_id: no tenant ", QuoteForMessage(req.tenant_id())));
  }
  // Nodes are the operators' to list: a tenant naming one it has nothing on
  // gets the empty answer whether the node exists or not.
  if (!req.node().empty() && !nodes_.count(req.node()) && caller.role != Role::kTenant) {
    return absl::NotFoundError(absl::StrCat("node: no node ", QuoteForMessage(req.node())));
  }
  std::map<std::pair<std::string, std::string>, v1::NodeUsage> rows;  // (tenant, node)
  auto row = [&](const std::string& tenant, const std::string& node) -> v1::NodeUsage& {
    v1::NodeUsage& r = rows[{tenant, node}];
    r.set_tenant_id(tenant);
    r.set_node(node);
    return r;
  };
  // This page's tenants: the filter, then at most `limit` ids after the token.
  std::set<std::string> page;
  std::string next;
  auto every = [](const v1::Tenant&) { return true; };
  auto take = [&](const v1::Tenant& t) { page.insert(t.id()); };
  if (req.tenant_id().empty()) {
    Page(tenants_, req.page_token(), limit, every, take, &next);
  } else {
    // One tenant: looked up, not searched for among all of them.
    PageSubset({req.tenant_id()}, tenants_, req.page_token(), limit, every, take, &next);
  }
  out->set_next_page_token(next);
  auto wanted = [&](const std::string& tenant, const std::string& node) {
    return page.count(tenant) && (req.node().empty() || node == req.node());
  };
  std::vector<const ContainerEntry*> theirs;  // Only this page's tenants' containers.
  for (const std::string& t : page) {
    for (const std::string& id : TenantContainersLocked(t)) theirs.push_back(&containers_.at(id));
  }
  for (const ContainerEntry* entry : theirs) {
    const ContainerEntry& c = *entry;
    const std::string& t = c.container.tenant_id();
    const std::string& n = c.container.node();
    if (!wanted(t, n)) continue;
    v1::NodeUsage& r = row(t, n);
    r.set_containers(r.containers() + 1);
    r.set_windows(r.windows() + c.window_ids.size());
    r.set_window_bytes(r.window_bytes() + c.allocator.allocated_bytes());
  }
  // What the page's tenants' agents reported, from the nodes that reported
  // it: O(the page's tenants' nodes), not O(the fleet).
  for (const std::string& t : page) {
    auto reported = index_.usage_nodes.find(t);
    if (reported == index_.usage_nodes.end()) continue;
    for (const std::string& name : reported->second) {
      if (!wanted(t, name)) continue;
      auto n = nodes_.find(name);
      if (n == nodes_.end()) continue;  // CheckIndexes reports such a stale entry.
      auto reported_usage = n->second.usage.find(t);
      if (reported_usage == n->second.usage.end()) continue;
      const v1::PinUsage& u = reported_usage->second;
      v1::NodeUsage& r = row(t, name);
      r.set_pinned_bytes(u.billed_bytes());
      r.set_mapped_bytes(u.mapped_bytes());
    }
  }
  std::map<std::string, v1::TenantUsage> totals;
  for (const std::string& id : page) {
    v1::TenantUsage& u = totals[id];
    u.set_tenant_id(id);
    *u.mutable_quota() = tenants_.at(id).quota();
  }
  for (const auto& [key, r] : rows) {
    *out->add_nodes() = r;
    v1::TenantUsage& u = totals[r.tenant_id()];
    u.set_tenant_id(r.tenant_id());
    u.set_containers(u.containers() + r.containers());
    u.set_windows(u.windows() + r.windows());
    u.set_window_bytes(u.window_bytes() + r.window_bytes());
    u.set_pinned_bytes(u.pinned_bytes() + r.pinned_bytes());
    u.set_mapped_bytes(u.mapped_bytes() + r.mapped_bytes());
  }
  for (auto& [id, u] : totals) {
    u.set_dedup_saved_bytes(u.mapped_bytes() > u.pinned_bytes() ? u.mapped_bytes() - u.pinned_bytes()
                                                                 : 0);
    *out->add_tenants() = u;
  }
  return AwaitDurableLocked();
}

}  // namespace iommu
