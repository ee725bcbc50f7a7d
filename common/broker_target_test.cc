#include "common/broker_target.h"

#include "gtest/gtest.h"

namespace iommu {
namespace {

HostResolver Fake() {
  return [](const std::string& host) -> absl::StatusOr<std::vector<std::string>> {
    if (host == "broker-0.example") return std::vector<std::string>{"10.0.0.1"};
    if (host == "brokers.example") return std::vector<std::string>{"10.0.0.2", "10.0.0.3"};
    if (host == "v6.example") return std::vector<std::string>{"fd00::1"};
    return absl::UnavailableError("\"" + host + "\" does not resolve");
  };
}

TEST(BrokerTargetTest, OneAddressIsPassedThroughForGrpcsResolver) {
  EXPECT_EQ(*BrokerTarget("--broker", "brokers.example:7400", Fake()), "brokers.example:7400");
  EXPECT_EQ(*BrokerTarget("--broker", "127.0.0.1:7400", Fake()), "127.0.0.1:7400");
}

TEST(BrokerTargetTest, AListBecomesOneTargetInOrder) {
  EXPECT_EQ(*BrokerTarget("--broker", "127.0.0.1:1,127.0.0.1:2", Fake()),
            "ipv4:127.0.0.1:1,127.0.0.1:2");
  EXPECT_EQ(*BrokerTarget("--broker", "broker-0.example:7400,brokers.example:7401", Fake()),
            "ipv4:10.0.0.1:7400,10.0.0.2:7401,10.0.0.3:7401");
  EXPECT_EQ(*BrokerTarget("--broker", "[::1]:7400,v6.example:7400", Fake()),
            "ipv6:[::1]:7400,[fd00::1]:7400");
}

TEST(BrokerTargetTest, BadListsAreRefusedNamingTheFlag) {
  for (const char* bad : {"", "host", "host:0", "host:99999", "a:1,", ":7400,b:1"}) {
    absl::StatusOr<std::string> t = BrokerTarget("--broker", bad, Fake());
    EXPECT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_NE(t.status().message().find("--broker"), std::string::npos) << t.status();
  }
  absl::StatusOr<std::string> mixed = BrokerTarget("--broker", "10.0.0.1:1,[::1]:1", Fake());
  EXPECT_EQ(mixed.status().code(), absl::StatusCode::kInvalidArgument);
  absl::StatusOr<std::string> unknown = BrokerTarget("--broker", "10.0.0.1:1,nope:1", Fake());
  EXPECT_EQ(unknown.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_NE(unknown.status().message().find("nope"), std::string::npos);
}

}  // namespace
}  // namespace iommu
