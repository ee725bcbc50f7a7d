#include "client/channel.h"

#include <memory>
#include <string>

#include "common/broker_target.h"
#include "common/reconnect.h"
#include "common/tls.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"

namespace iommu {
namespace client {

absl::StatusOr<TransportConfig> ClientTransport(const GlobalOptions& global) {
  TransportConfig config;
  config.insecure = global.insecure;
  config.cert_file = global.cert;
  config.key_file = global.key;
  config.ca_file = global.ca;
  if (!global.trust_domain.empty()) config.trust_domain = global.trust_domain;
  TransportFlagNames names;
  names.cert = "--cert";
  names.key = "--key";
  names.ca = "--ca";
  names.hint = "; $IOMMUCTL_CERT, $IOMMUCTL_KEY and $IOMMUCTL_CA stand in for the flags";
  if (absl::Status s = ValidateTransportConfig(config, names); !s.ok()) return s;
  return config;
}

StubFactory GrpcStubFactory() {
  return [](const GlobalOptions& global)
             -> absl::StatusOr<std::shared_ptr<iommu::v1::Broker::StubInterface>> {
    absl::StatusOr<TransportConfig> transport = ClientTransport(global);
    if (!transport.ok()) return transport.status();
    absl::StatusOr<std::string> target = BrokerTarget("--broker", global.broker);
    if (!target.ok()) return target.status();
    // Reconnect soon after a refused connection: a call retried while no
    // replica listens (client/call_retry.h) then reaches a replica within
    // half a second of it listening, not after gRPC's growing backoff.
    grpc::ChannelArguments args;
    SetReconnectBackoff(absl::Milliseconds(100), absl::Milliseconds(500), &args);
    std::shared_ptr<grpc::Channel> channel = grpc::CreateCustomChannel(
        *target, MakeChannelCredentials(*transport, Identity{Role::kBroker, ""}), args);
    return std::shared_ptr<iommu::v1::Broker::StubInterface>(
        iommu::v1::Broker::NewStub(channel));
  };
}

}  // namespace client
}  // namespace iommu
