#include "server/broker_service.h"


#include "absl/strings/str_cat.h"
#include "common/grpc_status.h"
#include "common/log.h"

namespace iommu {
namespace {

// Converts at the boundary; logs every refusal as one key=value line so that
// an operator can see why a caller was turned away.
grpc::Status Finish(const char* method, const grpc::ServerContext* ctx, const absl::Status& s) {
  if (!s.ok()) {
    LogLine(LogLevel::kWarning,
            absl::StrCat("event=rpc_error method=", method, " peer=", ctx->peer(),
                         " code=", absl::StatusCodeToString(s.code()), " error=\"", s.message(),
                         "\""));
  }
  return ToGrpcStatus(s);
}

}  // namespace

#define IOMMU_BROKER_RPC(Method, Req, Resp)                                                 \
  grpc::Status BrokerService::Method(grpc::ServerContext* ctx, const v1::Req* req,          \
                                     v1::Resp* resp) {                                      \
    return Finish(#Method, ctx, broker_->Method(*req, resp));                              \
  }
IOMMU_BROKER_RPC(CreateTenant, CreateTenantRequest, Tenant)
IOMMU_BROKER_RPC(GetTenant, GetTenantRequest, Tenant)
IOMMU_BROKER_RPC(ListTenants, ListTenantsRequest, ListTenantsResponse)
IOMMU_BROKER_RPC(SetTenantQuota, SetTenantQuotaRequest, Tenant)
IOMMU_BROKER_RPC(DeleteTenant, DeleteTenantRequest, DeleteTenantResponse)
IOMMU_BROKER_RPC(ListNodes, ListNodesRequest, ListNodesResponse)
IOMMU_BROKER_RPC(GetNode, GetNodeRequest, Node)
IOMMU_BROKER_RPC(CordonNode, CordonNodeRequest, Node)
IOMMU_BROKER_RPC(UncordonNode, UncordonNodeRequest, Node)
IOMMU_BROKER_RPC(DrainNode, DrainNodeRequest, DrainNodeResponse)
IOMMU_BROKER_RPC(ListDevices, ListDevicesRequest, ListDevicesResponse)
IOMMU_BROKER_RPC(CreateContainer, CreateContainerRequest, Container)
IOMMU_BROKER_RPC(GetContainer, GetContainerRequest, Container)
IOMMU_BROKER_RPC(ListContainers, ListContainersRequest, ListContainersResponse)
IOMMU_BROKER_RPC(DeleteContainer, DeleteContainerRequest, DeleteContainerResponse)
IOMMU_BROKER_RPC(SetContainerBudget, SetContainerBudgetRequest, Container)
IOMMU_BROKER_RPC(GrantLauncher, GrantLauncherRequest, GrantLauncherResponse)
IOMMU_BROKER_RPC(AllocateWindow, AllocateWindowRequest, Window)
IOMMU_BROKER_RPC(ReleaseWindow, ReleaseWindowRequest, ReleaseWindowResponse)
IOMMU_BROKER_RPC(ListWindows, ListWindowsRequest, ListWindowsResponse)
IOMMU_BROKER_RPC(GetUsage, GetUsageRequest, GetUsageResponse)
#undef IOMMU_BROKER_RPC

grpc::Status NodeRegistryService::Register(grpc::ServerContext* ctx,
                                           const v1::RegisterRequest* req,
                                           v1::RegisterResponse* resp) {
  return Finish("Register", ctx, broker_->Register(*req, resp));
}

grpc::Status NodeRegistryService::Heartbeat(grpc::ServerContext* ctx,
                                            const v1::HeartbeatRequest* req,
                                            v1::HeartbeatResponse* resp) {
  // A stale session is routine after a broker restart; the agent re-registers.
  return ToGrpcStatus(broker_->Heartbeat(*req, resp));
}

grpc::Status NodeRegistryService::Reconciled(grpc::ServerContext* ctx,
                                             const v1::ReconciledRequest* req,
                                             v1::ReconciledResponse* resp) {
  return Finish("Reconciled", ctx, broker_->Reconciled(*req, resp));
}

}  // namespace iommu
