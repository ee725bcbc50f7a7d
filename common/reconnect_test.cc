#include "common/reconnect.h"

#include <grpc/grpc.h>

#include <map>
#include <string>

#include "gtest/gtest.h"

namespace iommu {
namespace {

std::map<std::string, int> Ints(const grpc::ChannelArguments& args) {
  grpc_channel_args c = args.c_channel_args();
  std::map<std::string, int> out;
  for (size_t i = 0; i < c.num_args; ++i) {
    if (c.args[i].type == GRPC_ARG_INTEGER) out[c.args[i].key] = c.args[i].value.integer;
  }
  return out;
}

TEST(ReconnectTest, BackoffsAsGivenAndAConnectTimeoutAHandshakeCanMeet) {
  grpc::ChannelArguments args;
  SetReconnectBackoff(absl::Milliseconds(100), absl::Milliseconds(500), &args);
  std::map<std::string, int> got = Ints(args);
  EXPECT_EQ(got[GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS], 100);
  EXPECT_EQ(got[GRPC_ARG_MAX_RECONNECT_BACKOFF_MS], 500);
  EXPECT_EQ(got[GRPC_ARG_MIN_RECONNECT_BACKOFF_MS], 2000);
}

TEST(ReconnectTest, OutOfRangeDurationsAreClamped) {
  grpc::ChannelArguments args;
  SetReconnectBackoff(absl::ZeroDuration(), absl::Hours(100), &args);
  std::map<std::string, int> got = Ints(args);
  EXPECT_EQ(got[GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS], 1);
  EXPECT_EQ(got[GRPC_ARG_MAX_RECONNECT_BACKOFF_MS], 3600000);
  grpc::ChannelArguments inverted;
  SetReconnectBackoff(absl::Seconds(2), absl::Seconds(1), &inverted);
  EXPECT_EQ(Ints(inverted)[GRPC_ARG_MAX_RECONNECT_BACKOFF_MS], 2000);
}

}  // namespace
}  // namespace iommu
