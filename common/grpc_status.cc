#include "common/grpc_status.h"

#include <string>

#include "common/message_text.h"

namespace iommu {

grpc::Status ToGrpcStatus(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  // Bounded: a message may repeat a caller's value, and one past the
  // client's metadata limit would reach it as RESOURCE_EXHAUSTED instead.
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()), ElideMiddle(status.message()));
}

absl::Status FromGrpcStatus(const grpc::Status& status) {
  if (status.ok()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()),
                      status.error_message());
}

}  // namespace iommu
