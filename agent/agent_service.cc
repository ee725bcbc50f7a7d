#include "agent/agent_service.h"

#include <string>
#include <utility>
#include <vector>

#include "common/grpc_status.h"

namespace iommu {
namespace agent {

grpc::Status AgentService::GetInventory(grpc::ServerContext* /*context*/,
                                        const v1::GetInventoryRequest* /*request*/,
                                        v1::GetInventoryResponse* response) {
  absl::StatusOr<v1::GetInventoryResponse> inventory = core_->Inventory();
  if (!inventory.ok()) return ToGrpcStatus(inventory.status());
  *response = *std::move(inventory);
  return grpc::Status::OK;
}

grpc::Status AgentService::CreateContainer(
    grpc::ServerContext* /*context*/, const v1::AgentCreateContainerRequest* request,
    v1::AgentContainer* response) {
  const std::vector<std::string> devices(request->devices().begin(),
                                         request->devices().end());
  absl::StatusOr<v1::AgentContainer> created =
      core_->CreateContainer(request->container_id(), request->tenant_id(), devices);
  if (!created.ok()) return ToGrpcStatus(created.status());
  *response = *std::move(created);
  return grpc::Status::OK;
}

grpc::Status AgentService::DestroyContainer(
    grpc::ServerContext* /*context*/, const v1::AgentDestroyContainerRequest* request,
    v1::AgentDestroyContainerResponse* /*response*/) {
  return ToGrpcStatus(core_->DestroyContainer(request->container_id()));
}

grpc::Status AgentService::GetContainer(grpc::ServerContext* /*context*/,
                                        const v1::AgentGetContainerRequest* request,
                                        v1::AgentGetContainerResponse* response) {
  absl::StatusOr<v1::AgentGetContainerResponse> got =
      core_->GetContainer(request->container_id());
  if (!got.ok()) return ToGrpcStatus(got.status());
  *response = *std::move(got);
  return grpc::Status::OK;
}

grpc::Status AgentService::Map(grpc::ServerContext* /*context*/,
                               const v1::AgentMapRequest* request,
                               v1::AgentMapResponse* /*response*/) {
  return ToGrpcStatus(core_->Map(*request));
}

grpc::Status AgentService::Unmap(grpc::ServerContext* /*context*/,
                                 const v1::AgentUnmapRequest* request,
                                 v1::AgentUnmapResponse* /*response*/) {
  return ToGrpcStatus(core_->Unmap(*request));
}

}  // namespace agent
}  // namespace iommu
