// The Broker's event log and version answers.
#include "server/broker.h"

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/labels.h"
#include "common/message_text.h"
#include "common/status_macros.h"
#include "common/validation.h"
#include "common/version.h"
#include "server/broker_internal.h"

namespace iommu {

// ------------------------------------------------------------ events

void Broker::RecordEvent(v1::Event event) {
  event.set_last_time_ms(Now());
  // Kept and served to watchers: bounded like every message (a refusal's
  // may repeat what a caller sent, a failure's what an agent reported).
  if (event.message().size() > kMaxMessageBytes) event.set_message(ElideMiddle(event.message()));
  events_.Record(std::move(event));
}

absl::Status Broker::RecordRefusal(v1::Event event, absl::Status refusal) {
  if (!refusal.ok()) {
    event.set_message(std::string(refusal.message()));
    RecordEvent(std::move(event));
  }
  return refusal;
}

bool Broker::ObjectExistsLocked(const v1::ObjectRef& object, const std::string& tenant) const {
  switch (object.kind()) {
    case v1::OBJECT_KIND_TENANT:
      return tenants_.count(object.id()) > 0 && (tenant.empty() || tenant == object.id());
    case v1::OBJECT_KIND_NODE:
      return nodes_.count(object.id()) > 0;
    case v1::OBJECT_KIND_CONTAINER: {
      auto it = containers_.find(object.id());
      return it != containers_.end() &&
             (tenant.empty() || it->second.container.tenant_id() == tenant);
    }
    case v1::OBJECT_KIND_WINDOW: {
      auto it = windows_.find(object.id());
      return it != windows_.end() && (tenant.empty() || it->second.tenant_id() == tenant);
    }
    default:
      return false;
  }
}

absl::Status Broker::GetVersion(const v1::GetVersionRequest&, v1::GetVersionResponse* out,
                                const Identity& caller) {
  out->set_version(kVersion);
  out->set_commit(BuildCommit());
  // Hosts, paths and endpoints are the operator's business, not a tenant's.
  if (caller.role == Role::kOperator) {
    out->set_replica(options_.replica);
    out->set_leader_since_ms(options_.leader_since_ms);
    out->set_store(options_.store);
  }
  return absl::OkStatus();
}

absl::Status Broker::ListEvents(const v1::ListEventsRequest& req, v1::ListEventsResponse* out,
                                const Identity& caller) {
  ASSIGN_OR_RETURN(uint32_t limit, EffectivePageSize("page_size", req.page_size()));
  RETURN_IF_ERROR(ValidatePageToken("page_token", req.page_token()));
  uint64_t after = 0;
  if (!req.page_token().empty() && (!absl::SimpleAtoi(req.page_token(), &after) || after == 0)) {
    return absl::InvalidArgumentError(
        "page_token: not a page token of ListEvents (pass next_page_token unchanged)");
  }
  if (!req.tenant_id().empty()) RETURN_IF_ERROR(ValidateTenantId("tenant_id", req.tenant_id()));
  const v1::ObjectRef& object = req.object();
  const char* what = nullptr;  // The kind, for NOT_FOUND; null: every event.
  switch (object.kind()) {
    case v1::OBJECT_KIND_UNSPECIFIED:
      if (!object.id().empty()) {
        return absl::InvalidArgumentError("object.kind: required with object.id");
      }
      break;
    case v1::OBJECT_KIND_TENANT:
      RETURN_IF_ERROR(ValidateTenantId("object.id", object.id()));
      what = "tenant";
      break;
    case v1::OBJECT_KIND_NODE:
      RETURN_IF_ERROR(ValidateNodeName("object.id", object.id()));
      what = "node";
      break;
    case v1::OBJECT_KIND_CONTAINER:
      RETURN_IF_ERROR(ParseContainerRef("object.id", object.id()).status());
      what = "container";
      break;
    case v1::OBJECT_KIND_WINDOW:
      RETURN_IF_ERROR(ValidateObjectId("object.id", object.id(), "w-"));
      what = "window";
      break;
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("object.kind: unknown kind ", object.kind(),
                       " (tenant, node, container or window; unset for every event)"));
  }
  absl::MutexLock l(&mu_);
  // A container's name stands for the container holding it now; the events
  // of a deleted one are asked for by id.
  v1::ObjectRef resolved = object;
  if (object.kind() == v1::OBJECT_KIND_CONTAINER) {
    ASSIGN_OR_RETURN(*resolved.mutable_id(),
                     ResolveContainerLocked(caller, "object.id", object.id()));
  }
  // Events outlive their object (until they age out), so that one can still
  // ask what happened to a deleted container. The words are the
  // authorization layer's for another tenant's object.
  if (what != nullptr && !ObjectExistsLocked(resolved, req.tenant_id()) &&
      !events_.Holds(resolved, req.tenant_id())) {
    return absl::NotFoundError(
        absl::StrCat("object.id: no ", what, " ", QuoteForMessage(object.id())));
  }
  EventLog::Page page = events_.List(resolved, req.tenant_id(), after, limit);
  for (v1::Event& e : page.events) *out->add_events() = std::move(e);
  out->set_next_page_token(page.next_after == 0 ? "" : absl::StrCat(page.next_after));
  // The events may tell of changes not yet durable.
  return AwaitDurableLocked();
}

}  // namespace iommu
