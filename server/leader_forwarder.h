// Where a broker replica that does not lead sends the calls it takes: to the
// leader the store names (open_store.h's LeaderInfo, kept current while the
// replica stands by). Orchestrators, iommuctl and agents may then call any
// replica; a standby answers with the leader's answer, so a write reaches
// the leader wherever the client called and a read sees the leader's state.
//
// A forwarded call carries its caller (caller_identity.h), its deadline and
// its cancellation; it is forwarded once: a replica that receives a
// forwarded call and does not lead either refuses it (UNAVAILABLE, retried
// by clients) rather than passing it on, so two replicas with stale views
// of the leader cannot bounce a call between them.
//
// Thread-safe.
#ifndef SERVER_LEADER_FORWARDER_H_
#define SERVER_LEADER_FORWARDER_H_

#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "common/grpc_status.h"
#include "common/tls.h"
#include "grpcpp/channel.h"
#include "grpcpp/client_context.h"
#include "grpcpp/server_context.h"
#include "proto/broker.grpc.pb.h"
#include "server/caller_identity.h"
#include "server/open_store.h"

namespace iommu {

class LeaderForwarder {
 public:
  // `self` is this replica's name (never forwarded to).
  LeaderForwarder(TransportConfig transport, std::string self)
      : transport_(std::move(transport)), self_(std::move(self)) {}
  LeaderForwarder(const LeaderForwarder&) = delete;
  LeaderForwarder& operator=(const LeaderForwarder&) = delete;

  // The leader as the store names it now; a name without an address (a
  // leader that publishes none) or no name at all leaves nowhere to forward.
  void SetLeader(const LeaderInfo& leader) ABSL_LOCKS_EXCLUDED(mu_);

  // A connection to the leader, and stubs on it.
  struct Route {
    LeaderInfo leader;
    std::shared_ptr<grpc::Channel> channel;
    std::unique_ptr<v1::Broker::Stub> broker;
    std::unique_ptr<v1::NodeRegistry::Stub> registry;
  };

  // The route for a call of `caller`, or UNAVAILABLE saying why there is
  // none (no leader known yet; the call was forwarded already; this replica
  // is the leader but not serving yet): every such refusal is worth a retry.
  absl::StatusOr<std::shared_ptr<const Route>> RouteFor(const Caller& caller) const
      ABSL_LOCKS_EXCLUDED(mu_);

  // A client context for forwarding the server call `ctx` of `caller`: its
  // deadline and cancellation, and who it is for.
  std::unique_ptr<grpc::ClientContext> ContextFor(const grpc::ServerContext& ctx,
                                                  const Caller& caller) const;

  // What to tell the caller of `ctx` when the leader answered `leader`.
  // CANCELLED that the caller did not cause comes from the leader's
  // shutdown (gRPC answers it to calls a stopping server cut off or never
  // handed to a handler): the call may or may not have been applied, which
  // is UNAVAILABLE, "retry with the same request id", to the caller.
  static absl::Status Answer(absl::Status leader, const grpc::ServerContext& ctx);

 private:
  const TransportConfig transport_;
  const std::string self_;
  mutable absl::Mutex mu_;
  LeaderInfo leader_ ABSL_GUARDED_BY(mu_);
  std::shared_ptr<const Route> route_ ABSL_GUARDED_BY(mu_);  // To leader_, if any.
};

}  // namespace iommu

#endif  // SERVER_LEADER_FORWARDER_H_
