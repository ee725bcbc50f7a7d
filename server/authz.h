// Authorization for the broker's two services, in one place. Pure logic: no
// gRPC, no I/O; the caller's Identity comes from its certificate (common/tls.h)
// and ownership from the broker's state through OwnershipView.
//
// The policy:
//  * operator: everything.
//  * tenant T: its own tenant record (GetTenant), and its own containers,
//    windows, launcher grants, usage and events (not nodes' events). Requests naming another tenant are
//    PERMISSION_DENIED. Requests naming another tenant's container or window
//    by id are NOT_FOUND with the same message the broker gives for an id
//    that does not exist, so a tenant cannot probe for others' objects. List
//    and usage requests without a tenant filter are narrowed to T;
//    CreateContainer without a tenant_id creates for T.
//  * agent N: only the NodeRegistry, and only for node N.
//  * broker: nothing here (it calls agents, not itself).
//  * anonymous (no certificate): UNAUTHENTICATED.
// Every refusal is reported to the denial hook (a metric and a log line).
//
// A container or window id names one object for its lifetime (the broker
// picks 64 random bits and never reuses them), so checking the owner before
// the broker acts cannot be raced into acting on another tenant's object.
//
// Thread-safety: Authorize* are safe to call concurrently if the
// OwnershipView is and the hook is.
#ifndef SERVER_AUTHZ_H_
#define SERVER_AUTHZ_H_

#include <functional>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "common/identity.h"
#include "proto/broker.pb.h"

namespace iommu {

// What the policy needs to know about objects named by id.
class OwnershipView {
 public:
  virtual ~OwnershipView() = default;
  // The tenant owning the container / window, or nullopt when none exists.
  virtual std::optional<std::string> ContainerTenant(const std::string& container_id) const = 0;
  virtual std::optional<std::string> WindowTenant(const std::string& window_id) const = 0;
};

class Authorizer {
 public:
  // Called once per refusal with the short method name and the caller's role.
  using DenialHook = std::function<void(absl::string_view method, const Identity& caller,
                                        const absl::Status& refusal)>;

  // `owners` must outlive the authorizer. `on_denial` may be empty.
  Authorizer(const OwnershipView* owners, DenialHook on_denial)
      : owners_(owners), on_denial_(std::move(on_denial)) {}

  // Broker service: OK, or the refusal. May narrow *req (see above). One
  // overload per RPC, generated from broker_rpcs.inc, so an RPC without a
  // rule does not compile.
#define IOMMU_BROKER_RPC(Method, Req, Resp) \
  absl::Status Authorize(const Identity& caller, v1::Req* req) const;
#include "server/broker_rpcs.inc"
#undef IOMMU_BROKER_RPC

  // The server-streaming Watch: a tenant is narrowed to its own tenant and,
  // without kinds, to tenants, containers and windows; node changes need the
  // operator role.
  absl::Status Authorize(const Identity& caller, v1::WatchRequest* req) const;

  // NodeRegistry service.
  absl::Status Authorize(const Identity& caller, v1::RegisterRequest* req) const;
  absl::Status Authorize(const Identity& caller, v1::HeartbeatRequest* req) const;
  absl::Status Authorize(const Identity& caller, v1::ReconciledRequest* req) const;

  // Reports a refusal that happened before a request could be examined
  // (e.g. the caller could not be identified) to the denial hook.
  void CountDenial(absl::string_view method, const Identity& caller,
                   const absl::Status& refusal) const;

 private:
  // Each rule returns OK or the refusal; Authorize wraps it to count denials.
  absl::Status Deny(absl::string_view method, const Identity& caller, absl::Status s) const;
  absl::Status OperatorOnly(absl::string_view method, const Identity& caller) const;
  absl::Status OwnContainer(absl::string_view method, const Identity& caller,
                            const std::string& container_id) const;
  absl::Status OwnTenantFilter(absl::string_view method, const Identity& caller,
                               std::string* tenant_id) const;
  absl::Status OwnNode(absl::string_view method, const Identity& caller,
                       const std::string& node) const;

  const OwnershipView* const owners_;
  const DenialHook on_denial_;
};

}  // namespace iommu

#endif  // SERVER_AUTHZ_H_
