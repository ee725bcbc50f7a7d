// iommuctl against a live broker and a simulated agent on loopback: the real
// binary, its exit codes, its stderr, and JSON output that parses back into
// the API's messages.
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "google/protobuf/util/json_util.h"
#include "gtest/gtest.h"
#include "proto/broker.pb.h"
#include "tests/cluster.h"

namespace iommu {
namespace {

using ::testing::HasSubstr;
using testing::CommandResult;

class CliTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(cluster_.StartBroker().ok()) << cluster_.broker().Log();
    ASSERT_TRUE(cluster_.StartAgent("node-1", "0000:00:04.0=1234:11e8@5,0000:00:05.0=1234:11e8@6")
                    .ok());
  }

  CommandResult Ctl(std::vector<std::string> args) {
    args.insert(args.begin(), "--broker=" + cluster_.broker_address());
    args.insert(args.begin(), testing::RunfilePath("client/iommuctl"));
    return testing::RunCommand(args);
  }

  template <typename Msg>
  Msg Json(const CommandResult& r) {
    EXPECT_EQ(r.exit_code, 0) << r.err;
    Msg m;
    google::protobuf::util::JsonParseOptions opts;
    auto s = google::protobuf::util::JsonStringToMessage(r.out, &m, opts);
    EXPECT_TRUE(s.ok()) << s.ToString() << "\n" << r.out;
    return m;
  }

  testing::Cluster cluster_;
};

TEST_F(CliTest, ScenarioWithJsonOutputThatParses) {
  auto tenant = Json<v1::Tenant>(Ctl({"-o", "json", "tenant", "create", "acme", "--pinned=4G"}));
  EXPECT_EQ(tenant.id(), "acme");
  EXPECT_EQ(tenant.quota().pinned_bytes(), 4ULL << 30);

  auto nodes = Json<v1::ListNodesResponse>(Ctl({"-o", "json", "node", "list"}));
  ASSERT_EQ(nodes.nodes_size(), 1);
  EXPECT_EQ(nodes.nodes(0).state(), v1::NODE_STATE_READY);

  auto devices = Json<v1::ListDevicesResponse>(Ctl({"-o", "json", "device", "list", "--node=node-1"}));
  EXPECT_EQ(devices.devices_size(), 2);

  auto c = Json<v1::Container>(Ctl({"-o", "json", "container", "create", "--tenant=acme",
                                    "--node=node-1", "--device=0000:00:04.0"}));
  ASSERT_FALSE(c.id().empty());
  auto w1 = Json<v1::Window>(
      Ctl({"-o", "json", "window", "allocate", c.id(), "--size=1G", "--align=1G"}));
  EXPECT_EQ(w1.size(), 1ULL << 30);
  auto w2 = Json<v1::Window>(Ctl({"-o", "json", "window", "allocate", c.id(), "--size=2M",
                                  "--base=0x100000000"}));
  EXPECT_EQ(w2.base(), 0x100000000ULL);

  auto usage = Json<v1::GetUsageResponse>(Ctl({"-o", "json", "usage", "--tenant=acme"}));
  ASSERT_EQ(usage.tenants_size(), 1);
  EXPECT_EQ(usage.tenants(0).window_bytes(), (1ULL << 30) + (2ULL << 20));

  // Table output for people.
  CommandResult table = Ctl({"window", "list", "--container=" + c.id()});
  EXPECT_EQ(table.exit_code, 0);
  EXPECT_THAT(table.out, HasSubstr("0x100000000"));

  EXPECT_EQ(Ctl({"window", "release", w1.id()}).exit_code, 0);
  EXPECT_EQ(Ctl({"container", "delete", c.id()}).exit_code, 0);
  EXPECT_EQ(Ctl({"tenant", "delete", "acme"}).exit_code, 0);
  auto left = Json<v1::ListContainersResponse>(Ctl({"-o", "json", "container", "list"}));
  EXPECT_EQ(left.containers_size(), 0);
}

TEST_F(CliTest, ApiErrorsExitOneWithCodeAndMessageOnStderr) {
  CommandResult r = Ctl({"container", "get", "c-00000000000000aa"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("error: NOT_FOUND: container_id: no container"));
  EXPECT_TRUE(r.out.empty());

  r = Ctl({"tenant", "create", "Bad", "--pinned=1G"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("error: INVALID_ARGUMENT: tenant_id:"));

  ASSERT_EQ(Ctl({"tenant", "create", "acme", "--pinned=1G"}).exit_code, 0);
  r = Ctl({"tenant", "create", "acme", "--pinned=1G"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("error: ALREADY_EXISTS:"));
}

TEST_F(CliTest, UsageErrorsExitTwoAndHelpExitsZero) {
  CommandResult r = Ctl({"window", "allocate", "c-0000000000000001", "--size=1.5G"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr("--size"));
  r = Ctl({"frobnicate"});
  EXPECT_EQ(r.exit_code, 2);
  for (std::vector<std::string> help : {std::vector<std::string>{"--help"},
                                        {"container", "--help"},
                                        {"container", "create", "--help"},
                                        {"window", "allocate", "--help"}}) {
    r = Ctl(help);
    EXPECT_EQ(r.exit_code, 0) << help.back();
    EXPECT_FALSE(r.out.empty());
  }
}

TEST_F(CliTest, RetryWithSameRequestIdIsIdempotent) {
  ASSERT_EQ(Ctl({"tenant", "create", "acme", "--pinned=1G"}).exit_code, 0);
  std::vector<std::string> create = {"-o", "json", "--request-id=cli-retry-1", "container",
                                     "create", "--tenant=acme", "--node=node-1",
                                     "--device=0000:00:05.0"};
  auto a = Json<v1::Container>(Ctl(create));
  auto b = Json<v1::Container>(Ctl(create));
  EXPECT_EQ(a.id(), b.id());
  auto all = Json<v1::ListContainersResponse>(Ctl({"-o", "json", "container", "list"}));
  EXPECT_EQ(all.containers_size(), 1);
}

TEST_F(CliTest, BrokerAddressComesFromEnvironment) {
  CommandResult r = testing::RunCommand({testing::RunfilePath("client/iommuctl"), "node", "list"},
                                        {"IOMMU_BROKER=" + cluster_.broker_address()});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("node-1"));
}

TEST_F(CliTest, UnreachableBrokerIsUnavailable) {
  CommandResult r = testing::RunCommand(
      {testing::RunfilePath("client/iommuctl"), "--broker=127.0.0.1:1", "--timeout=2s", "node",
       "list"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("error: UNAVAILABLE"));
}

}  // namespace
}  // namespace iommu
