// gRPC adapters for the broker: the Broker API for orchestrators, operators
// and iommuctl, and the NodeRegistry for agents. Every handler does the same
// three things, once, at the boundary: identify the caller from its
// certificate, ask the Authorizer (server/authz.h, the whole policy), and
// convert the broker's absl::Status, logging refusals.
//
// Thread-safety: safe; handlers run on gRPC's threads, and Broker and
// Authorizer are thread-safe.
#ifndef SERVER_BROKER_SERVICE_H_
#define SERVER_BROKER_SERVICE_H_

#include "common/tls.h"
#include "proto/broker.grpc.pb.h"
#include "server/authz.h"
#include "server/broker.h"

namespace iommu {

class BrokerService final : public v1::Broker::Service {
 public:
  // All three must outlive the service.
  BrokerService(Broker* broker, const Authorizer* authz, const TransportConfig* transport)
      : broker_(broker), authz_(authz), transport_(transport) {}

#define IOMMU_BROKER_RPC(Method, Req, Resp) \
  grpc::Status Method(grpc::ServerContext* ctx, const v1::Req* req, v1::Resp* resp) override;
#include "server/broker_rpcs.inc"
#undef IOMMU_BROKER_RPC

 private:
  Broker* const broker_;
  const Authorizer* const authz_;
  const TransportConfig* const transport_;
};

class NodeRegistryService final : public v1::NodeRegistry::Service {
 public:
  NodeRegistryService(Broker* broker, const Authorizer* authz, const TransportConfig* transport)
      : broker_(broker), authz_(authz), transport_(transport) {}

  grpc::Status Register(grpc::ServerContext* ctx, const v1::RegisterRequest* req,
                        v1::RegisterResponse* resp) override;
  grpc::Status Heartbeat(grpc::ServerContext* ctx, const v1::HeartbeatRequest* req,
                         v1::HeartbeatResponse* resp) override;
  grpc::Status Reconciled(grpc::ServerContext* ctx, const v1::ReconciledRequest* req,
                          v1::ReconciledResponse* resp) override;

 private:
  Broker* const broker_;
  const Authorizer* const authz_;
  const TransportConfig* const transport_;
};

}  // namespace iommu

#endif  // SERVER_BROKER_SERVICE_H_
