#include "common/grpc_status.h"

#include <string>

#include "common/message_text.h"
#include "gtest/gtest.h"

namespace iommu {
namespace {

TEST(GrpcStatusTest, CodeAndMessageCrossUnchanged) {
  const grpc::Status s = ToGrpcStatus(absl::NotFoundError("container_id: no container \"c-1\""));
  EXPECT_EQ(s.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(s.error_message(), "container_id: no container \"c-1\"");
  const absl::Status back = FromGrpcStatus(s);
  EXPECT_EQ(back.code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(back.message(), s.error_message());
  EXPECT_TRUE(ToGrpcStatus(absl::OkStatus()).ok());
}

// A message past gRPC's metadata limit would reach the client as
// RESOURCE_EXHAUSTED: the one sent is cut, keeping its field and its rule.
TEST(GrpcStatusTest, LongMessagesAreCutInTheMiddle) {
  const std::string message = "tenant_id: \"" + std::string(1 << 20, 'a') + "\" is not yours";
  const grpc::Status s = ToGrpcStatus(absl::PermissionDeniedError(message));
  EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_LE(s.error_message().size(), kMaxMessageBytes);
  EXPECT_EQ(s.error_message().rfind("tenant_id: \"aaa", 0), 0u);
  EXPECT_NE(s.error_message().find("\" is not yours"), std::string::npos);
}

}  // namespace
}  // namespace iommu
