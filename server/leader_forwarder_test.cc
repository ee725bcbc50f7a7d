// What a standby tells its caller when the leader's answer was CANCELLED.
#include "server/leader_forwarder.h"

#include "gmock/gmock.h"
#include "grpcpp/server_context.h"
#include "gtest/gtest.h"

namespace iommu {
namespace {

using ::testing::HasSubstr;

TEST(LeaderForwarderTest, ACancelTheCallerDidNotCauseIsARetryableUnavailable) {
  grpc::ServerContext caller;  // Not cancelled.
  absl::Status s = LeaderForwarder::Answer(absl::CancelledError(""), caller);
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(s.message(), HasSubstr("retry with the same request_id"));
}

TEST(LeaderForwarderTest, EveryOtherAnswerPassesAsItCame) {
  grpc::ServerContext caller;
  for (const absl::Status& answer :
       {absl::OkStatus(), absl::UnavailableError("fenced"), absl::NotFoundError("no tenant"),
        absl::DeadlineExceededError("slow"), absl::AbortedError("in flight")}) {
    EXPECT_EQ(LeaderForwarder::Answer(answer, caller), answer);
  }
}

}  // namespace
}  // namespace iommu
