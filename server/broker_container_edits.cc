// Changes to existing containers: budget, labels, name resolution, and
// launcher grants.
#include "server/broker.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/grant_token.h"
#include "common/labels.h"
#include "common/log.h"
#include "common/status_macros.h"
#include "server/broker_internal.h"

namespace iommu {

using broker_internal::ContainerRef;
using broker_internal::kContainer;
using broker_internal::kNormal;
using broker_internal::kWarning;
using broker_internal::NewEvent;
using broker_internal::Record;
using broker_internal::TenantRef;

absl::Status Broker::SetContainerBudget(const v1::SetContainerBudgetRequest& req,
                                        v1::Container* out, const Identity& caller) {
  absl::Status s = SetContainerBudgetInternal(req, out, caller);
  if (s.ok()) QueuePushBudgets(out->tenant_id());
  return s;
}

absl::Status Broker::SetContainerBudgetInternal(const v1::SetContainerBudgetRequest& req,
                                                v1::Container* out, const Identity& caller) {
  return Mutate<v1::SetContainerBudgetRequest, v1::Container>(
      "SetContainerBudget", caller, req, out, [&](v1::Container* answer) -> absl::StatusOr<Plan> {
        mu_.AssertHeld();  // Mutate runs this under mu_.
        ASSIGN_OR_RETURN(const std::string id,
                         ResolveContainerLocked(caller, "container_id", req.container_id()));
        ASSIGN_OR_RETURN(ContainerEntry * c, FindContainerLocked(id));
        if (req.pin_budget_bytes() % 4096 != 0) {
          return absl::InvalidArgumentError(
              absl::StrCat("pin_budget_bytes: must be a multiple of 4096 (a host page), got ",
                           req.pin_budget_bytes()));
        }
        const std::string& tenant = c->container.tenant_id();
        const uint64_t quota = tenants_.at(tenant).quota().pinned_bytes();
        const uint64_t others = TenantBudgetLocked(tenant) - c->container.pin_budget_bytes();
        if (req.pin_budget_bytes() > c->container.pin_budget_bytes() &&
            (others > quota || req.pin_budget_bytes() > quota - others)) {
          return RecordRefusal(
              NewEvent(kWarning, "QuotaExceeded", ContainerRef(id), tenant, req.request_id(), "",
                       {TenantRef(tenant)}),
              absl::ResourceExhaustedError(absl::StrCat(
                  "pin_budget_bytes: tenant ", QuoteForMessage(tenant), " has ",
                  Hex(others > quota ? 0 : quota - others),
                  " bytes of its pinned quota available for this container; asked for ",
                  Hex(req.pin_budget_bytes()))));
        }
        v1::Container changed = c->container;
        changed.set_pin_budget_bytes(req.pin_budget_bytes());
        Plan plan;
        plan.batch.puts.push_back(Record(kContainer, changed.id(), changed));
        ContainerEntry view{changed, c->allocator, c->window_ids};
        *answer = ContainerViewLocked(view);
        plan.Log(LogLevel::kInfo, "container_budget_set",
                 {{"container", changed.id()},
                  {"tenant", changed.tenant_id()},
                  {"node", changed.node()},
                  {"pin_budget_bytes", req.pin_budget_bytes()},
                  {"request_id", req.request_id()}});
        plan.Record(
            NewEvent(kNormal, "BudgetChanged", ContainerRef(changed.id()), changed.tenant_id(),
                     req.request_id(),
                     absl::StrCat("pin budget ", EventBytes(req.pin_budget_bytes()), " (was ",
                                  EventBytes(c->container.pin_budget_bytes()), ")")));
        return plan;
      });
}

absl::Status Broker::SetContainerLabels(const v1::SetContainerLabelsRequest& req,
                                        v1::Container* out, const Identity& caller) {
  return Mutate<v1::SetContainerLabelsRequest, v1::Container>(
      "SetContainerLabels", caller, req, out, [&](v1::Container* answer) -> absl::StatusOr<Plan> {
        mu_.AssertHeld();  // Mutate runs this under mu_.
        ASSIGN_OR_RETURN(const std::string id,
                         ResolveContainerLocked(caller, "container_id", req.container_id()));
        ASSIGN_OR_RETURN(ContainerEntry * c, FindContainerLocked(id));
        RETURN_IF_ERROR(NotBeingDeletedLocked(id, *c));
        v1::Container changed = c->container;
        RETURN_IF_ERROR(EditLabels(req.labels(), req.remove_keys(), changed.mutable_labels()));
        Plan plan;
        plan.batch.puts.push_back(Record(kContainer, id, changed));
        *answer = ContainerViewLocked(*c);
        *answer->mutable_labels() = changed.labels();
        const std::string text = LabelsText(changed.labels());
        plan.Log(LogLevel::kInfo, "container_labels_set",
                 {{"container", id},
                  {"tenant", changed.tenant_id()},
                  {"labels", text},
                  {"request_id", req.request_id()}});
        plan.Record(NewEvent(kNormal, "LabelsChanged", ContainerRef(id), changed.tenant_id(),
                             req.request_id(), absl::StrCat("labels: ", text)));
        return plan;
      });
}

absl::StatusOr<std::string> Broker::ResolveContainerLocked(const Identity& caller,
                                                           const std::string& field,
                                                           const std::string& ref) const {
  ASSIGN_OR_RETURN(ParsedContainerRef parsed, ParseContainerRef(field, ref));
  if (!parsed.id.empty()) return parsed.id;
  // A tenant's names are its own: another tenant's TENANT/NAME is answered
  // as a name nobody has, like another tenant's id.
  const bool tenant_caller = caller.role == Role::kTenant;
  std::string tenant = parsed.tenant;
  if (tenant_caller && tenant.empty()) tenant = caller.name;
  const absl::Status none = absl::NotFoundError(
      absl::StrCat(field, ": no container named ", QuoteForMessage(ref),
                   tenant.empty() ? "" : absl::StrCat(" in tenant ", QuoteForMessage(tenant))));
  if (tenant_caller && tenant != caller.name) return none;
  if (!tenant.empty()) {
    auto it = container_names_.find({parsed.name, tenant});
    if (it == container_names_.end()) return none;
    return it->second;
  }
  std::vector<std::string> tenants;
  std::string id;
  for (auto it = container_names_.lower_bound({parsed.name, ""});
       it != container_names_.end() && it->first.first == parsed.name; ++it) {
    tenants.push_back(it->first.second);
    id = it->second;
  }
  if (tenants.empty()) return none;
  if (tenants.size() > 1) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, ": tenants ", absl::StrJoin(tenants, ", "),
                     " each have a container named ", QuoteForMessage(ref), "; write TENANT/NAME"));
  }
  return id;
}

absl::Status Broker::NameFreeLocked(const std::string& tenant, const std::string& name) const {
  if (container_names_.count({name, tenant}) || pending_names_.count({name, tenant})) {
    return absl::AlreadyExistsError(absl::StrCat("name: tenant ", QuoteForMessage(tenant),
                                                 " already has a container named ",
                                                 QuoteForMessage(name)));
  }
  return absl::OkStatus();
}

absl::Status Broker::NotBeingDeletedLocked(const std::string& id,
                                           const ContainerEntry& c) const {
  if (c.container.deleting() || deleting_.count(id)) {
    return absl::FailedPreconditionError(
        absl::StrCat("container_id: container ", id, " is being deleted"));
  }
  return absl::OkStatus();
}

absl::StatusOr<Broker::ContainerEntry*> Broker::GrantableLocked(const std::string& id) {
  ASSIGN_OR_RETURN(ContainerEntry * c, FindContainerLocked(id));
  RETURN_IF_ERROR(NotBeingDeletedLocked(id, *c));
  const std::string& node = c->container.node();
  auto n = nodes_.find(node);
  if (n == nodes_.end() || !NodeLiveLocked(n->second)) {
    return absl::UnavailableError(absl::StrCat("container_id: node ", QuoteForMessage(node),
                                               " of container ", id, " is not heartbeating"));
  }
  if (!n->second.reconciled) {
    return absl::UnavailableError(absl::StrCat("container_id: node ", QuoteForMessage(node),
                                               " of container ", id,
                                               " is reconciling after registering; retry"));
  }
  if (c->window_ids.size() > kMaxWindowsPerContainer) {
    // Only a store written before the limit can hold more.
    return absl::FailedPreconditionError(
        absl::StrCat("container_id: container ", id, " holds ", c->window_ids.size(),
                     " windows; a launcher grant names at most ", kMaxWindowsPerContainer,
                     ": release windows first"));
  }
  return c;
}

absl::Status Broker::GrantLauncher(const v1::GrantLauncherRequest& req,
                                   v1::GrantLauncherResponse* out, const Identity& caller) {
  if (req.ttl_seconds() > 3600) {
    return absl::InvalidArgumentError(
        absl::StrCat("ttl_seconds: at most 3600, got ", req.ttl_seconds()));
  }
  RETURN_IF_ERROR(ParseContainerRef("container_id", req.container_id()).status());
  // The agent must know the windows the token names before the launcher
  // arrives with it. That needs the agent: refuse at once when the node is
  // not READY rather than wait for the agent's timeout; and again after the
  // push, which released mu_.
  // A name is resolved once: the id it names stays the same object for its
  // lifetime, even if the name is freed and taken again meanwhile.
  std::string id;
  {
    absl::MutexLock l(&mu_);
    ASSIGN_OR_RETURN(id, ResolveContainerLocked(caller, "container_id", req.container_id()));
    RETURN_IF_ERROR(GrantableLocked(id).status());
  }
  RETURN_IF_ERROR(PushWindows(id, /*required=*/true));
  absl::MutexLock l(&mu_);
  ASSIGN_OR_RETURN(ContainerEntry * c, GrantableLocked(id));
  auto n = nodes_.find(c->container.node());  // GrantableLocked found it.
  if (n->second.grant_key.empty()) {
    return absl::InternalError(
        absl::StrCat("node ", QuoteForMessage(c->container.node()), " has no key"));
  }
  const int64_t now = Now();
  v1::LauncherGrant grant;
  grant.set_token_id(NewGrantTokenId());
  grant.set_node(c->container.node());
  grant.set_container_id(id);
  grant.set_tenant_id(c->container.tenant_id());
  grant.set_issued_ms(now);
  grant.set_expires_ms(now + 1000LL * (req.ttl_seconds() == 0 ? 60 : req.ttl_seconds()));
  grant.set_agent_incarnation(n->second.agent_incarnation);
  if (req.has_launcher_uid()) grant.set_launcher_uid(req.launcher_uid());
  for (const std::string& wid : c->window_ids) {
    const v1::Window& w = windows_.at(wid);
    v1::GrantWindow* gw = grant.add_windows();
    gw->set_window_id(w.id());
    gw->set_base(w.base());
    gw->set_size(w.size());
    *out->add_windows() = w;
  }
  absl::StatusOr<std::string> token = SignGrant(grant, n->second.grant_key);
  if (!token.ok()) {
    // Not the caller's doing: the node's stored key or this grant is wrong.
    return absl::InternalError(absl::StrCat("container_id: could not sign a launcher grant for ",
                                            id, ": ", token.status().message()));
  }
  out->set_token(*std::move(token));
  out->set_node(grant.node());
  out->set_launcher_socket(n->second.node.launcher_socket());
  out->set_container_id(grant.container_id());
  out->set_tenant_id(grant.tenant_id());
  out->set_expires_ms(grant.expires_ms());
  RETURN_IF_ERROR(AwaitDurableLocked());  // The token names only durable windows.
  LogEvent(LogLevel::kInfo, "launcher_granted",
           {{"container", id},
            {"tenant", grant.tenant_id()},
            {"node", grant.node()},
            {"windows", grant.windows_size()},
            {"launcher_uid",
             grant.has_launcher_uid() ? absl::StrCat(grant.launcher_uid()) : std::string("any")},
            {"expires_ms", grant.expires_ms()}});
  RecordEvent(NewEvent(kNormal, "LauncherGranted", ContainerRef(id),
                       grant.tenant_id(), "",
                       absl::StrCat("single-use launcher token for node ", grant.node(), " with ",
                                    grant.windows_size(), " window(s), valid for ",
                                    (grant.expires_ms() - grant.issued_ms()) / 1000, "s")));
  return absl::OkStatus();
}

}  // namespace iommu
