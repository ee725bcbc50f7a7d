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
      core_->CreateContainer(request->container_id(), request->tenant_id(), devices,
                             request->pin_budget_bytes());
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

grpc::Status AgentService::Unmap(grpc::ServerContext* /*context*/,
                                 const v1::AgentUnmapRequest* request,
                                 v1::AgentUnmapResponse* response) {
  // An operator's revocation: any session's mappings in the range.
  absl::StatusOr<uint64_t> bytes =
      core_->Unmap(request->container_id(), request->iova(), request->size(), "");
  if (!bytes.ok()) return ToGrpcStatus(bytes.status());
  response->set_unmapped_bytes(*bytes);
  return grpc::Status::OK;
}

grpc::Status AgentService::SetWindows(grpc::ServerContext* /*context*/,
                                      const v1::SetWindowsRequest* request,
                                      v1::SetWindowsResponse* response) {
  std::vector<IovaRange> windows;
  for (const v1::IovaRange& w : request->windows().windows()) {
    if (w.last() < w.start()) {
      return ToGrpcStatus(absl::InvalidArgumentError("windows: a range ends before it starts"));
    }
    windows.push_back({w.start(), w.last()});
  }
  absl::StatusOr<size_t> revoked =
      core_->SetWindows(request->windows().container_id(), std::move(windows));
  if (!revoked.ok()) return ToGrpcStatus(revoked.status());
  response->set_revoked_mappings(static_cast<uint32_t>(*revoked));
  return grpc::Status::OK;
}

grpc::Status AgentService::SetPinBudgets(grpc::ServerContext* /*context*/,
                                         const v1::SetPinBudgetsRequest* request,
                                         v1::SetPinBudgetsResponse* /*response*/) {
  core_->SetBudgets({request->budgets().begin(), request->budgets().end()});
  return grpc::Status::OK;
}

}  // namespace agent
}  // namespace iommu
