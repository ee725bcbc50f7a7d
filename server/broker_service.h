// gRPC adapters for the broker: the Broker API for orchestrators, operators
// and iommuctl, and the NodeRegistry for agents. Every handler does the same
// three things, once, at the boundary: identify the caller from its
// certificate (caller_identity.h), ask the Authorizer (server/authz.h, the
// whole policy), and convert the broker's absl::Status, logging refusals.
// Each caller has a bound on its calls in flight and on its refusals logged
// (CallerLimits). A replica that does not lead has no Broker of its own: it
// forwards each call, as it came, to the leader (leader_forwarder.h), which
// authorizes and answers it.
//
// Thread-safety: safe; handlers run on gRPC's threads, and Broker and
// Authorizer are thread-safe.
#ifndef SERVER_BROKER_SERVICE_H_
#define SERVER_BROKER_SERVICE_H_

#include <atomic>
#include <map>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "common/tls.h"
#include "proto/broker.grpc.pb.h"
#include "server/authz.h"
#include "server/broker.h"
#include "server/call_gate.h"
#include "server/caller_limits.h"
#include "server/leader_forwarder.h"

namespace iommu {

// What answers the calls this replica takes: the leader, through
// `forwarder`, until Lead() publishes this replica's own Broker. A replica
// leads once it holds the store (a single broker on SQLite: at its start).
// Every call comes in through its gate (call_gate.h), which a stop closes
// before gRPC shuts down.
//
// Thread-safe: Lead() publishes once, with release ordering; handlers read
// it without a lock.
class ServingState {
 public:
  struct Local {
    Broker* broker;
    const Authorizer* authz;
  };

  // `forwarder` may be null (a broker that never stands by); both must
  // outlive the services.
  explicit ServingState(const LeaderForwarder* forwarder) : forwarder_(forwarder) {}
  ServingState(const ServingState&) = delete;
  ServingState& operator=(const ServingState&) = delete;

  // From now on calls are answered here. Called at most once.
  void Lead(Broker* broker, const Authorizer* authz);
  // Null until Lead().
  const Local* local() const { return local_.load(std::memory_order_acquire); }
  // The route to the leader; UNAVAILABLE when there is none (see
  // LeaderForwarder::RouteFor).
  absl::StatusOr<std::shared_ptr<const LeaderForwarder::Route>> RouteFor(
      const Caller& caller) const;
  const LeaderForwarder* forwarder() const { return forwarder_; }

  // The door every call (watches included) comes in by: handlers enter it,
  // a stop closes it.
  CallGate& gate() { return gate_; }
  const CallGate& gate() const { return gate_; }

 private:
  const LeaderForwarder* const forwarder_;
  CallGate gate_;
  Local storage_{nullptr, nullptr};  // Written once, before local_ points at it.
  std::atomic<const Local*> local_{nullptr};
};

// What both services use; everything must outlive them.
struct ServiceDeps {
  ServingState* serving;  // Handlers enter its gate.
  const TransportConfig* transport;
  // Per-caller calls in flight and refusal log volume (thread-safe).
  CallerLimits* limits;
  // Whether calls count against the caller's in-flight bound. Not for the
  // NodeRegistry: an agent makes one call at a time, and under --insecure
  // every caller is the same identity, so agents' heartbeats would share
  // the operators' bound.
  bool bound_inflight = true;
};

// Open Watch streams, bounded per caller and in all: each holds one of the
// server's threads for as long as the caller keeps it.
class WatchSlots {
 public:
  static constexpr int kPerCaller = 8;
  static constexpr int kTotal = 256;

  // OK and a slot taken, or RESOURCE_EXHAUSTED saying which bound.
  absl::Status Take(const std::string& caller) ABSL_LOCKS_EXCLUDED(mu_);
  void Give(const std::string& caller) ABSL_LOCKS_EXCLUDED(mu_);

 private:
  absl::Mutex mu_;
  std::map<std::string, int> by_caller_ ABSL_GUARDED_BY(mu_);
  int total_ ABSL_GUARDED_BY(mu_) = 0;
};

class BrokerService final : public v1::Broker::Service {
 public:
  explicit BrokerService(ServiceDeps deps) : deps_(deps) {}

#define IOMMU_BROKER_RPC(Method, Req, Resp) \
  grpc::Status Method(grpc::ServerContext* ctx, const v1::Req* req, v1::Resp* resp) override;
#include "server/broker_rpcs.inc"
#undef IOMMU_BROKER_RPC

  grpc::Status Watch(grpc::ServerContext* ctx, const v1::WatchRequest* req,
                     grpc::ServerWriter<v1::WatchResponse>* writer) override;

 private:
  // Watch on the broker of this replica, and relayed from the leader's.
  absl::Status WatchHere(const ServingState::Local& local, grpc::ServerContext* ctx,
                         const Caller& caller, const v1::WatchRequest& req,
                         grpc::ServerWriter<v1::WatchResponse>* writer);
  absl::Status RelayWatch(grpc::ServerContext* ctx, const Caller& caller,
                          const v1::WatchRequest& req,
                          grpc::ServerWriter<v1::WatchResponse>* writer);

  const ServiceDeps deps_;
  WatchSlots watches_;
};

class NodeRegistryService final : public v1::NodeRegistry::Service {
 public:
  explicit NodeRegistryService(ServiceDeps deps) : deps_(deps) { deps_.bound_inflight = false; }

  grpc::Status Register(grpc::ServerContext* ctx, const v1::RegisterRequest* req,
                        v1::RegisterResponse* resp) override;
  grpc::Status Heartbeat(grpc::ServerContext* ctx, const v1::HeartbeatRequest* req,
                         v1::HeartbeatResponse* resp) override;
  grpc::Status Reconciled(grpc::ServerContext* ctx, const v1::ReconciledRequest* req,
                          v1::ReconciledResponse* resp) override;

 private:
  ServiceDeps deps_;  // Written only by the constructor.
};

}  // namespace iommu

#endif  // SERVER_BROKER_SERVICE_H_
