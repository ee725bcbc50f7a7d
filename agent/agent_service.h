// AgentService: the node agent's gRPC API (iommu.v1.Agent), a thin adapter
// from the wire to AgentCore. Holds no state of its own; every status crosses
// the boundary through ToGrpcStatus.
//
// Authorization: only the broker (spiffe://<td>/broker) and operators may
// call it; everyone else is PERMISSION_DENIED (UNAUTHENTICATED without a
// certificate), checked in one place (Admit) before any handler runs.
//
// Thread-safe (AgentCore is). Uses the synchronous API: every handler is a
// short, bounded call into AgentCore. ServeAgentApi starts the gRPC server
// that serves it.
#ifndef AGENT_AGENT_SERVICE_H_
#define AGENT_AGENT_SERVICE_H_

#include <functional>
#include <memory>
#include <string>

#include "absl/status/statusor.h"

#include "agent/agent_core.h"
#include "common/identity.h"
#include "common/tls.h"
#include "grpcpp/server.h"
#include "proto/agent.grpc.pb.h"

namespace iommu {
namespace agent {

class AgentService final : public v1::Agent::Service {
 public:
  // Called once per refused call (for the log and the denial metric).
  using DenialHook = std::function<void(absl::string_view method, const Identity& caller,
                                        const absl::Status& refusal)>;

  // `core` must outlive the service (and the server it is registered with);
  // not owned. `transport` says how callers are identified.
  AgentService(AgentCore* core, TransportConfig transport, DenialHook on_denial = nullptr)
      : core_(core), transport_(std::move(transport)), on_denial_(std::move(on_denial)) {}

  // The policy, exposed for tests: OK for the broker and operators.
  static absl::Status Authorize(absl::string_view method, const Identity& caller);

  AgentService(const AgentService&) = delete;
  AgentService& operator=(const AgentService&) = delete;

  grpc::Status GetInventory(grpc::ServerContext* context,
                            const v1::GetInventoryRequest* request,
                            v1::GetInventoryResponse* response) override;
  grpc::Status CreateContainer(grpc::ServerContext* context,
                               const v1::AgentCreateContainerRequest* request,
                               v1::AgentContainer* response) override;
  grpc::Status DestroyContainer(grpc::ServerContext* context,
                                const v1::AgentDestroyContainerRequest* request,
                                v1::AgentDestroyContainerResponse* response) override;
  grpc::Status GetContainer(grpc::ServerContext* context,
                            const v1::AgentGetContainerRequest* request,
                            v1::AgentGetContainerResponse* response) override;
  grpc::Status SetWindows(grpc::ServerContext* context, const v1::SetWindowsRequest* request,
                          v1::SetWindowsResponse* response) override;
  grpc::Status SetPinBudgets(grpc::ServerContext* context,
                             const v1::SetPinBudgetsRequest* request,
                             v1::SetPinBudgetsResponse* response) override;
  grpc::Status Unmap(grpc::ServerContext* context,
                     const v1::AgentUnmapRequest* request,
                     v1::AgentUnmapResponse* response) override;

 private:
  // Identifies and authorizes the caller of `method`; the refusal, logged and
  // counted, or OK.
  absl::Status Admit(const char* method, const grpc::ServerContext& ctx) const;

  AgentCore* const core_;
  const TransportConfig transport_;
  const DenialHook on_denial_;
};

// A started gRPC server and the port it bound.
struct ServingApi {
  std::unique_ptr<grpc::Server> server;
  int port = 0;
};

// Serves `service` (not owned; must outlive the server) on `listen`
// (host:port, port 0 picks one) with `transport`'s credentials, plus gRPC
// health checking and reflection. UNAVAILABLE "listen: could not serve on
// <listen>" when the address cannot be bound.
absl::StatusOr<ServingApi> ServeAgentApi(const std::string& listen,
                                         const TransportConfig& transport,
                                         AgentService* service);

}  // namespace agent
}  // namespace iommu

#endif  // AGENT_AGENT_SERVICE_H_
