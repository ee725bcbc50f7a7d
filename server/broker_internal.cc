#include "server/broker_internal.h"

#include "absl/strings/str_cat.h"
#include "server/event_log.h"

namespace iommu {
namespace broker_internal {

bool IsLowerHex(const std::string& s, size_t length) {
  if (s.size() != length) return false;
  for (char c : s) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

absl::StatusOr<v1::Quota> MaskedQuota(const v1::Quota& current, const v1::Quota& given,
                                      const google::protobuf::FieldMask& mask) {
  if (mask.paths_size() == 0) return given;
  v1::Quota out = current;
  for (const std::string& path : mask.paths()) {
    if (path == "quota" || path == "*") {
      out = given;
    } else if (path == "quota.pinned_bytes") {
      out.set_pinned_bytes(given.pinned_bytes());
    } else if (path == "quota.max_containers") {
      out.set_max_containers(given.max_containers());
    } else if (path == "quota.window_bytes") {
      out.set_window_bytes(given.window_bytes());
    } else {
      return absl::InvalidArgumentError(absl::StrCat(
          "update_mask: unknown path ", QuoteForMessage(path),
          " (known: quota.pinned_bytes, quota.max_containers, quota.window_bytes, quota, *)"));
    }
  }
  return out;
}

std::string RequestKey(const Identity& caller, const std::string& request_id) {
  if (request_id.empty()) return "";
  return absl::StrCat(caller.ToString(), "|", request_id);
}

StoreRecord Record(const char* kind, const std::string& id,
                   const google::protobuf::Message& msg) {
  return StoreRecord{kind, id, msg.SerializeAsString()};
}

v1::ObjectRef Ref(v1::ObjectKind kind, const std::string& id) {
  v1::ObjectRef r;
  r.set_kind(kind);
  r.set_id(id);
  return r;
}
v1::ObjectRef TenantRef(const std::string& id) { return Ref(v1::OBJECT_KIND_TENANT, id); }
v1::ObjectRef NodeRef(const std::string& name) { return Ref(v1::OBJECT_KIND_NODE, name); }
v1::ObjectRef ContainerRef(const std::string& id) { return Ref(v1::OBJECT_KIND_CONTAINER, id); }
v1::ObjectRef WindowRef(const std::string& id) { return Ref(v1::OBJECT_KIND_WINDOW, id); }

std::string QuotaText(const v1::Quota& q) {
  return absl::StrCat("pinned ", EventBytes(q.pinned_bytes()), ", max containers ",
                      q.max_containers() == 0 ? "no limit" : absl::StrCat(q.max_containers()),
                      ", window bytes ",
                      q.window_bytes() == 0 ? "no limit" : EventBytes(q.window_bytes()));
}

v1::Event NewEvent(v1::EventType type, const char* reason, v1::ObjectRef object,
                   const std::string& tenant, const std::string& request_id, std::string message,
                   std::initializer_list<v1::ObjectRef> related) {
  v1::Event e;
  e.set_type(type);
  e.set_reason(reason);
  *e.mutable_object() = std::move(object);
  e.set_tenant_id(tenant);
  e.set_request_id(request_id);
  e.set_message(std::move(message));
  for (const v1::ObjectRef& r : related) {
    if (!r.id().empty()) *e.add_related() = r;
  }
  return e;
}

absl::Status AgentCallError(const std::string& node, const std::string& address,
                            const absl::Status& s) {
  // The broker never cancels its calls to agents: CANCELLED is an agent
  // that dropped the call as it stopped (gRPC's answer at its server's
  // shutdown), which is as retryable as no answer at all.
  if (absl::IsUnavailable(s) || absl::IsDeadlineExceeded(s) || absl::IsCancelled(s)) {
    return absl::UnavailableError(absl::StrCat("node: agent of node ", QuoteForMessage(node),
                                               address.empty() ? "" : " at ", address,
                                               " did not answer: ", s.message()));
  }
  return absl::Status(s.code(), absl::StrCat("node ", QuoteForMessage(node), ": ", s.message()));
}

}  // namespace broker_internal
}  // namespace iommu
