// gRPC adapters for the broker: the Broker API for orchestrators, operators
// and iommuctl, and the NodeRegistry for agents. Each handler converts the
// broker's absl::Status once, at the boundary, and logs failures.
//
// Thread-safety: safe; handlers run on gRPC's threads and Broker is
// thread-safe.
#ifndef SERVER_BROKER_SERVICE_H_
#define SERVER_BROKER_SERVICE_H_

#include "proto/broker.grpc.pb.h"
#include "server/broker.h"

namespace iommu {

class BrokerService final : public v1::Broker::Service {
 public:
  explicit BrokerService(Broker* broker) : broker_(broker) {}

#define IOMMU_BROKER_RPC(Method, Req, Resp)                                   \
  grpc::Status Method(grpc::ServerContext* ctx, const v1::Req* req, v1::Resp* resp) override;
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

 private:
  Broker* const broker_;
};

class NodeRegistryService final : public v1::NodeRegistry::Service {
 public:
  explicit NodeRegistryService(Broker* broker) : broker_(broker) {}

  grpc::Status Register(grpc::ServerContext* ctx, const v1::RegisterRequest* req,
                        v1::RegisterResponse* resp) override;
  grpc::Status Heartbeat(grpc::ServerContext* ctx, const v1::HeartbeatRequest* req,
                         v1::HeartbeatResponse* resp) override;
  grpc::Status Reconciled(grpc::ServerContext* ctx, const v1::ReconciledRequest* req,
                          v1::ReconciledResponse* resp) override;

 private:
  Broker* const broker_;
};

}  // namespace iommu

#endif  // SERVER_BROKER_SERVICE_H_
