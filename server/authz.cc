#include "server/authz.h"

#include "absl/strings/str_cat.h"
#include "common/message_text.h"
#include "common/status_macros.h"
#include "common/validation.h"

namespace iommu {
namespace {

absl::Status NeedsRole(absl::string_view method, absl::string_view role, const Identity& caller) {
  return absl::PermissionDeniedError(absl::StrCat(method, ": needs the ", role,
                                                  " role; caller is ", caller.ToString()));
}

absl::Status Unauthenticated() {
  return absl::UnauthenticatedError(
      "peer certificate: none presented (a client certificate signed by the broker's CA is "
      "required)");
}

}  // namespace

void Authorizer::CountDenial(absl::string_view method, const Identity& caller,
                             const absl::Status& refusal) const {
  if (on_denial_) on_denial_(method, caller, refusal);
}

absl::Status Authorizer::Deny(absl::string_view method, const Identity& caller,
                              absl::Status s) const {
  if (!s.ok()) CountDenial(method, caller, s);
  return s;
}

absl::Status Authorizer::OperatorOnly(absl::string_view method, const Identity& caller) const {
  switch (caller.role) {
    case Role::kOperator: return absl::OkStatus();
    case Role::kAnonymous: return Deny(method, caller, Unauthenticated());
    default: return Deny(method, caller, NeedsRole(method, "operator", caller));
  }
}

// Operators pass; a tenant passes for its own container, and for an id that
// names no container at all (the broker then answers NOT_FOUND or
// INVALID_ARGUMENT itself, with the same words as below).
absl::Status Authorizer::OwnContainer(absl::string_view method, const Identity& caller,
                                      const std::string& container_id) const {
  if (caller.role != Role::kTenant) return OperatorOnly(method, caller);
  // By name: a bare NAME is looked up in the caller's own tenant by the
  // broker; TENANT/NAME of another tenant is answered as a name nobody has.
  const size_t slash = container_id.find('/');
  if (slash != std::string::npos) {
    if (container_id.compare(0, slash, caller.name) != 0 || slash != caller.name.size()) {
      return Deny(method, caller,
                  absl::NotFoundError(absl::StrCat("container_id: no container named ",
                                                   QuoteForMessage(container_id))));
    }
    return absl::OkStatus();
  }
  std::optional<std::string> owner = owners_->ContainerTenant(container_id);
  if (owner.has_value() && *owner != caller.name) {
    return Deny(method, caller,
                absl::NotFoundError(
                    absl::StrCat("container_id: no container ", QuoteForMessage(container_id))));
  }
  return absl::OkStatus();
}

// For requests with a tenant filter or target: a tenant may only name itself,
// and an empty filter becomes itself.
absl::Status Authorizer::OwnTenantFilter(absl::string_view method, const Identity& caller,
                                         std::string* tenant_id) const {
  if (caller.role != Role::kTenant) return OperatorOnly(method, caller);
  if (tenant_id->empty()) {
    *tenant_id = caller.name;
    return absl::OkStatus();
  }
  if (*tenant_id != caller.name) {
    // A name no tenant can have is a malformed request, not a denial.
    RETURN_IF_ERROR(ValidateTenantId("tenant_id", *tenant_id));
    return Deny(method, caller,
                absl::PermissionDeniedError(absl::StrCat(
                    "tenant_id: ", caller.ToString(), " may only name its own tenant ",
                    QuoteForMessage(caller.name), ", not ", QuoteForMessage(*tenant_id))));
  }
  return absl::OkStatus();
}

absl::Status Authorizer::OwnNode(absl::string_view method, const Identity& caller,
                                 const std::string& node) const {
  if (caller.role == Role::kOperator) return absl::OkStatus();
  if (caller.role == Role::kAnonymous) return Deny(method, caller, Unauthenticated());
  if (caller.role != Role::kAgent) return Deny(method, caller, NeedsRole(method, "agent", caller));
  if (node != caller.name) {
    return Deny(method, caller,
                absl::PermissionDeniedError(
                    absl::StrCat("node: ", caller.ToString(), " may only act for node ",
                                 QuoteForMessage(caller.name), ", not ", QuoteForMessage(node))));
  }
  return absl::OkStatus();
}

// ---- tenants: the operator manages them; a tenant may read its own.
absl::Status Authorizer::Authorize(const Identity& c, v1::CreateTenantRequest*) const {
  return OperatorOnly("CreateTenant", c);
}
absl::Status Authorizer::Authorize(const Identity& c, v1::GetTenantRequest* req) const {
  if (c.role == Role::kTenant && req->tenant_id().empty()) {
    return absl::OkStatus();  // The broker's own "tenant_id: required" answers it.
  }
  return OwnTenantFilter("GetTenant", c, req->mutable_tenant_id());
}
absl::Status Authorizer::Authorize(const Identity& c, v1::ListTenantsRequest*) const {
  return OperatorOnly("ListTenants", c);
}
absl::Status Authorizer::Authorize(const Identity& c, v1::SetTenantQuotaRequest*) const {
  return OperatorOnly("SetTenantQuota", c);
}
absl::Status Authorizer::Authorize(const Identity& c, v1::DeleteTenantRequest*) const {
  return OperatorOnly("DeleteTenant", c);
}
absl::Status Authorizer::Authorize(const Identity& c, v1::SetTenantLabelsRequest*) const {
  return OperatorOnly("SetTenantLabels", c);
}

// ---- nodes and devices: fleet management, operators only.
absl::Status Authorizer::Authorize(const Identity& c, v1::ListNodesRequest*) const {
  return OperatorOnly("ListNodes", c);
}
absl::Status Authorizer::Authorize(const Identity& c, v1::GetNodeRequest*) const {
  return OperatorOnly("GetNode", c);
}
absl::Status Authorizer::Authorize(const Identity& c, v1::CordonNodeRequest*) const {
  return OperatorOnly("CordonNode", c);
}
absl::Status Authorizer::Authorize(const Identity& c, v1::UncordonNodeRequest*) const {
  return OperatorOnly("UncordonNode", c);
}
absl::Status Authorizer::Authorize(const Identity& c, v1::DrainNodeRequest*) const {
  return OperatorOnly("DrainNode", c);
}

absl::Status Authorizer::Authorize(const Identity& c, v1::DeleteNodeRequest*) const {
  return OperatorOnly("DeleteNode", c);
}
absl::Status Authorizer::Authorize(const Identity& c, v1::ListDevicesRequest*) const {
  return OperatorOnly("ListDevices", c);
}

// ---- containers, launcher grants, windows: the owning tenant.
absl::Status Authorizer::Authorize(const Identity& c, v1::CreateContainerRequest* req) const {
  return OwnTenantFilter("CreateContainer", c, req->mutable_tenant_id());
}
absl::Status Authorizer::Authorize(const Identity& c, v1::GetContainerRequest* req) const {
  return OwnContainer("GetContainer", c, req->container_id());
}
absl::Status Authorizer::Authorize(const Identity& c, v1::ListContainersRequest* req) const {
  return OwnTenantFilter("ListContainers", c, req->mutable_tenant_id());
}
absl::Status Authorizer::Authorize(const Identity& c, v1::DeleteContainerRequest* req) const {
  return OwnContainer("DeleteContainer", c, req->container_id());
}
absl::Status Authorizer::Authorize(const Identity& c, v1::SetContainerBudgetRequest* req) const {
  return OwnContainer("SetContainerBudget", c, req->container_id());
}
absl::Status Authorizer::Authorize(const Identity& c, v1::SetContainerLabelsRequest* req) const {
  return OwnContainer("SetContainerLabels", c, req->container_id());
}
absl::Status Authorizer::Authorize(const Identity& c, v1::GrantLauncherRequest* req) const {
  return OwnContainer("GrantLauncher", c, req->container_id());
}
absl::Status Authorizer::Authorize(const Identity& c, v1::AllocateWindowRequest* req) const {
  return OwnContainer("AllocateWindow", c, req->container_id());
}
absl::Status Authorizer::Authorize(const Identity& c, v1::ReleaseWindowRequest* req) const {
  if (c.role != Role::kTenant) return OperatorOnly("ReleaseWindow", c);
  std::optional<std::string> owner = owners_->WindowTenant(req->window_id());
  if (owner.has_value() && *owner != c.name) {
    return Deny("ReleaseWindow", c,
                absl::NotFoundError(
                    absl::StrCat("window_id: no window ", QuoteForMessage(req->window_id()))));
  }
  return absl::OkStatus();
}
absl::Status Authorizer::Authorize(const Identity& c, v1::ListWindowsRequest* req) const {
  // With the tenant filter forced to the caller, a container_id of another
  // tenant's container simply lists nothing.
  return OwnTenantFilter("ListWindows", c, req->mutable_tenant_id());
}
absl::Status Authorizer::Authorize(const Identity& c, v1::GetUsageRequest* req) const {
  return OwnTenantFilter("GetUsage", c, req->mutable_tenant_id());
}

// ---- watch: the lists' rules, and nodes for operators only.
absl::Status Authorizer::Authorize(const Identity& c, v1::WatchRequest* req) const {
  constexpr absl::string_view kMethod = "Watch";
  if (c.role != Role::kTenant) return OperatorOnly(kMethod, c);
  for (int kind : req->kinds()) {
    if (kind == v1::OBJECT_KIND_NODE) {
      return Deny(kMethod, c,
                  absl::PermissionDeniedError(absl::StrCat(
                      "kinds: changes of nodes need the operator role; caller is ", c.ToString())));
    }
  }
  if (req->kinds().empty()) {
    for (v1::ObjectKind k :
         {v1::OBJECT_KIND_TENANT, v1::OBJECT_KIND_CONTAINER, v1::OBJECT_KIND_WINDOW}) {
      req->add_kinds(k);
    }
  }
  return OwnTenantFilter(kMethod, c, req->mutable_tenant_id());
}

// ---- version: read-only and about the broker only: any authenticated
// caller (operator, tenant, agent, broker), never an anonymous one.
absl::Status Authorizer::Authorize(const Identity& c, v1::GetVersionRequest*) const {
  if (c.role == Role::kAnonymous) return Deny("GetVersion", c, Unauthenticated());
  return absl::OkStatus();
}

// ---- events: operators see all; a tenant the events of its own tenant,
// containers and windows, and its "every event" list is narrowed to itself
// (events of the fleet, such as nodes', carry no tenant and drop out). The
// broker's NOT_FOUND for an object that neither exists nor has events is
// worded as the one here for another tenant's container or window.
absl::Status Authorizer::Authorize(const Identity& c, v1::ListEventsRequest* req) const {
  constexpr absl::string_view kMethod = "ListEvents";
  if (c.role != Role::kTenant) return OperatorOnly(kMethod, c);
  const v1::ObjectRef& object = req->object();
  std::optional<std::string> owner;
  switch (object.kind()) {
    case v1::OBJECT_KIND_TENANT:
      if (object.id() != c.name) {
        RETURN_IF_ERROR(ValidateTenantId("object.id", object.id()));
        return Deny(kMethod, c,
                    absl::PermissionDeniedError(absl::StrCat(
                        "object.id: ", c.ToString(), " may only name its own tenant ",
                        QuoteForMessage(c.name), ", not ", QuoteForMessage(object.id()))));
      }
      break;
    case v1::OBJECT_KIND_NODE:
      return Deny(kMethod, c,
                  absl::PermissionDeniedError(absl::StrCat(
                      "object.kind: events of nodes need the operator role; caller is ",
                      c.ToString())));
    case v1::OBJECT_KIND_CONTAINER:
      owner = owners_->ContainerTenant(object.id());
      if (owner.has_value() && *owner != c.name) {
        return Deny(kMethod, c,
                    absl::NotFoundError(
                        absl::StrCat("object.id: no container ", QuoteForMessage(object.id()))));
      }
      break;
    case v1::OBJECT_KIND_WINDOW:
      owner = owners_->WindowTenant(object.id());
      if (owner.has_value() && *owner != c.name) {
        return Deny(kMethod, c,
                    absl::NotFoundError(
                        absl::StrCat("object.id: no window ", QuoteForMessage(object.id()))));
      }
      break;
    default:
      break;  // Every event (narrowed below), or a kind the broker refuses.
  }
  // Narrowed to the caller: a deleted object of another tenant, whose
  // events the broker still holds, then looks like one that never existed.
  return OwnTenantFilter(kMethod, c, req->mutable_tenant_id());
}

// ---- NodeRegistry: the agent of that node.
absl::Status Authorizer::Authorize(const Identity& c, v1::RegisterRequest* req) const {
  return OwnNode("Register", c, req->node());
}
absl::Status Authorizer::Authorize(const Identity& c, v1::HeartbeatRequest* req) const {
  return OwnNode("Heartbeat", c, req->node());
}
absl::Status Authorizer::Authorize(const Identity& c, v1::ReconciledRequest* req) const {
  return OwnNode("Reconciled", c, req->node());
}

}  // namespace iommu
