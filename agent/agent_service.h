// AgentService: the node agent's gRPC API (iommu.v1.Agent), a thin adapter
// from the wire to AgentCore. Holds no state of its own; every status crosses
// the boundary through ToGrpcStatus.
//
// Thread-safe (AgentCore is). Uses the synchronous API: every handler is a
// short, bounded call into AgentCore.
#ifndef AGENT_AGENT_SERVICE_H_
#define AGENT_AGENT_SERVICE_H_

#include "agent/agent_core.h"
#include "proto/agent.grpc.pb.h"

namespace iommu {
namespace agent {

class AgentService final : public v1::Agent::Service {
 public:
  // `core` must outlive the service (and the server it is registered with);
  // not owned.
  explicit AgentService(AgentCore* core) : core_(core) {}

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
  AgentCore* const core_;
};

}  // namespace agent
}  // namespace iommu

#endif  // AGENT_AGENT_SERVICE_H_
