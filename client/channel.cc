#include "client/channel.h"

#include <memory>
#include <string>

#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"

namespace iommu {
namespace client {

StubFactory GrpcStubFactory() {
  return [](const std::string& address)
             -> absl::StatusOr<std::shared_ptr<iommu::v1::Broker::StubInterface>> {
    std::shared_ptr<grpc::Channel> channel =
        grpc::CreateChannel(address, grpc::InsecureChannelCredentials());
    return std::shared_ptr<iommu::v1::Broker::StubInterface>(
        iommu::v1::Broker::NewStub(channel));
  };
}

}  // namespace client
}  // namespace iommu
