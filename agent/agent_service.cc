#include "agent/agent_service.h"

#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/health_check_service_interface.h"
#include "grpcpp/server_builder.h"
#include "common/grpc_status.h"
#include "common/log.h"

namespace iommu {
namespace agent {

absl::Status AgentService::Authorize(absl::string_view method, const Identity& caller) {
  if (caller.role == Role::kBroker || caller.role == Role::kOperator) return absl::OkStatus();
  return absl::PermissionDeniedError(absl::StrCat(
      method, ": the agent API is for the broker and operators; caller is ", caller.ToString()));
}

absl::Status AgentService::Admit(const char* method, const grpc::ServerContext& ctx) const {
  absl::StatusOr<Identity> caller = PeerIdentity(ctx, transport_);
  absl::Status s = caller.ok() ? Authorize(method, *caller) : caller.status();
  if (!s.ok()) {
    const Identity who = caller.ok() ? *caller : Identity{};
    LogEvent(LogLevel::kWarning, "authz_denied",
             {{"method", method}, {"caller", who.ToString()}, {"peer", ctx.peer()},
              {"code", absl::StatusCodeToString(s.code())}, {"error", s.message()}});
    if (on_denial_) on_denial_(method, who, s);
  }
  return s;
}

#define IOMMU_ADMIT(method)                                              \
  if (absl::Status denied = Admit(method, *context); !denied.ok()) {    \
    return ToGrpcStatus(denied);                                         \
  }

grpc::Status AgentService::GetInventory(grpc::ServerContext* context,
                                        const v1::GetInventoryRequest* /*request*/,
                                        v1::GetInventoryResponse* response) {
  IOMMU_ADMIT("GetInventory");
  absl::StatusOr<v1::GetInventoryResponse> inventory = core_->Inventory();
  if (!inventory.ok()) return ToGrpcStatus(inventory.status());
  *response = *std::move(inventory);
  return grpc::Status::OK;
}

grpc::Status AgentService::CreateContainer(
    grpc::ServerContext* context, const v1::AgentCreateContainerRequest* request,
    v1::AgentContainer* response) {
  IOMMU_ADMIT("CreateContainer");
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
    grpc::ServerContext* context, const v1::AgentDestroyContainerRequest* request,
    v1::AgentDestroyContainerResponse* /*response*/) {
  IOMMU_ADMIT("DestroyContainer");
  return ToGrpcStatus(core_->DestroyContainer(request->container_id()));
}

grpc::Status AgentService::GetContainer(grpc::ServerContext* context,
                                        const v1::AgentGetContainerRequest* request,
                                        v1::AgentGetContainerResponse* response) {
  IOMMU_ADMIT("GetContainer");
  absl::StatusOr<v1::AgentGetContainerResponse> got =
      core_->GetContainerPage(request->container_id(), request->page_size(),
                              request->page_token());
  if (!got.ok()) return ToGrpcStatus(got.status());
  *response = *std::move(got);
  return grpc::Status::OK;
}

grpc::Status AgentService::Unmap(grpc::ServerContext* context,
                                 const v1::AgentUnmapRequest* request,
                                 v1::AgentUnmapResponse* response) {
  IOMMU_ADMIT("Unmap");
  // An operator's revocation: any session's mappings in the range.
  absl::StatusOr<uint64_t> bytes =
      core_->Unmap(request->container_id(), request->iova(), request->size(), "");
  if (!bytes.ok()) return ToGrpcStatus(bytes.status());
  response->set_unmapped_bytes(*bytes);
  return grpc::Status::OK;
}

grpc::Status AgentService::SetWindows(grpc::ServerContext* context,
                                      const v1::SetWindowsRequest* request,
                                      v1::SetWindowsResponse* response) {
  IOMMU_ADMIT("SetWindows");
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

grpc::Status AgentService::SetPinBudgets(grpc::ServerContext* context,
                                         const v1::SetPinBudgetsRequest* request,
                                         v1::SetPinBudgetsResponse* /*response*/) {
  IOMMU_ADMIT("SetPinBudgets");
  core_->SetBudgets({request->budgets().begin(), request->budgets().end()});
  return grpc::Status::OK;
}

#undef IOMMU_ADMIT

absl::StatusOr<ServingApi> ServeAgentApi(const std::string& listen,
                                         const TransportConfig& transport,
                                         AgentService* service) {
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  ServingApi out;
  // The synchronous server ends idle pollers beyond MAX_POLLERS (default 2)
  // and creates a thread whenever every poller is busy, so the broker's
  // concurrent creates, deletes and window pushes each cost a thread
  // creation. Its calls in flight to one node are few: keep that many.
  builder.SetSyncServerOption(grpc::ServerBuilder::SyncServerOption::MAX_POLLERS, 32);
  builder.AddListeningPort(listen, MakeServerCredentials(transport), &out.port);
  builder.RegisterService(service);
  out.server = builder.BuildAndStart();
  if (out.server == nullptr || out.port == 0) {
    return absl::UnavailableError(absl::StrCat("listen: could not serve on ", listen));
  }
  return out;
}

}  // namespace agent
}  // namespace iommu
