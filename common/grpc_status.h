// Conversion between absl::Status and grpc::Status, done in one place at the
// RPC boundary. Thread-safe (pure functions).
#ifndef COMMON_GRPC_STATUS_H_
#define COMMON_GRPC_STATUS_H_

#include "absl/status/status.h"
#include "grpcpp/support/status.h"

namespace iommu {

// Same code (the canonical codes are numerically identical), same message,
// cut to kMaxMessageBytes (common/message_text.h) when longer.
grpc::Status ToGrpcStatus(const absl::Status& status);

// Same code, same message.
absl::Status FromGrpcStatus(const grpc::Status& status);

}  // namespace iommu

#endif  // COMMON_GRPC_STATUS_H_
