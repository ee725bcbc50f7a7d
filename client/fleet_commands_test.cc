// `iommuctl top` and `iommuctl version` (fleet_commands.cc): the fleet summary
// and its --watch redraws, and the client's, broker's and agents' versions.
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "client/commands_fixture.h"
#include "client/views.pb.h"
#include "common/version.h"
#include "gmock/gmock.h"
#include "google/protobuf/util/json_util.h"
#include "gtest/gtest.h"
#include "proto/broker.grpc.pb.h"

namespace iommu {
namespace client {
namespace {

namespace v1 = ::iommu::v1;
using ::google::protobuf::util::JsonStringToMessage;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Not;
using ::testing::StartsWith;

// ---------------------------------------------------------------- version

TEST_F(CommandsTest, VersionClientOnlyNeedsNoBroker) {
  EXPECT_EQ(Run({"version", "--client"}), 0) << err_;
  EXPECT_EQ(out_, absl::StrCat("Client: iommuctl ", kVersion, " (commit ", BuildCommit(), ")\n"));
  EXPECT_EQ(Run({"version", "--client", "-o", "json"}), 0);
  EXPECT_THAT(out_, HasSubstr(absl::StrCat("\"client_version\": \"", kVersion, "\"")));
  EXPECT_THAT(addresses_, IsEmpty());
}

TEST_F(CommandsTest, VersionShowsClientBrokerAndAgents) {
  v1::GetVersionResponse broker;
  broker.set_version("9.8.7");
  broker.set_commit("0123456789ab");
  fake_->SetResponse("GetVersion", broker);
  v1::ListNodesResponse nodes;
  nodes.add_nodes()->set_name("host-a");
  nodes.mutable_nodes(0)->set_agent_version("9.8.6");
  nodes.add_nodes()->set_name("host-b");
  fake_->SetResponse("ListNodes", nodes);
  ASSERT_EQ(Run({"version"}), 0) << err_;
  EXPECT_EQ(out_, absl::StrCat("Client: iommuctl ", kVersion, " (commit ", BuildCommit(),
                               ")\nBroker: iommu-broker 9.8.7 (commit 0123456789ab)\n"
                               "Agents:\n  NODE    AGENT-VERSION\n  host-a  9.8.6\n"
                               "  host-b  -\n"));
  // A tenant may not list nodes: no agents, no error.
  fake_->SetError("ListNodes", grpc::Status(grpc::StatusCode::PERMISSION_DENIED, "operators"));
  ASSERT_EQ(Run({"version"}), 0) << err_;
  EXPECT_THAT(out_, HasSubstr("Broker: iommu-broker 9.8.7"));
  EXPECT_THAT(out_, Not(HasSubstr("Agents")));
}

TEST_F(CommandsTest, VersionPrintsTheClientLineWhenTheBrokerIsUnreachable) {
  fake_->SetError("GetVersion", grpc::Status(grpc::StatusCode::UNAVAILABLE, "down"));
  EXPECT_EQ(Run({"version"}), 1);
  EXPECT_EQ(out_, absl::StrCat("Client: iommuctl ", kVersion, " (commit ", BuildCommit(), ")\n"));
  EXPECT_THAT(err_, StartsWith("error: UNAVAILABLE: down (tried "));
}
// ---------------------------------------------------------------- top

// A GetUsage answer with tenants in id order.
v1::GetUsageResponse FleetUsage() {
  v1::GetUsageResponse usage;
  for (auto [id, pinned] : std::vector<std::pair<std::string, uint64_t>>{
           {"acme", 1ull << 30}, {"beta", 3ull << 30}, {"zeta", 0}}) {
    v1::TenantUsage* t = usage.add_tenants();
    t->set_tenant_id(id);
    t->mutable_quota()->set_pinned_bytes(4ull << 30);
    t->set_pinned_bytes(pinned);
    t->set_mapped_bytes(2 * pinned);
    t->set_dedup_saved_bytes(pinned);
    t->set_containers(pinned == 0 ? 0 : 2);
  }
  return usage;
}

TEST_F(CommandsTest, TopSortsTenantsByPinnedAndTotalsThem) {
  v1::ListNodesResponse nodes;
  v1::Node* n = nodes.add_nodes();
  n->set_name("host-a");
  n->set_state(v1::NODE_STATE_READY);
  n = nodes.add_nodes();
  n->set_name("host-b");
  n->set_state(v1::NODE_STATE_UNAVAILABLE);
  n->set_cordoned(true);
  fake_->SetResponse("ListNodes", nodes);
  fake_->SetResponse("GetUsage", FleetUsage());
  fake_->SetHandler("ListContainers", [](const google::protobuf::Message& req,
                                         google::protobuf::Message* resp) {
    // One failed container; none on unavailable nodes.
    if (dynamic_cast<const v1::ListContainersRequest&>(req).state() == v1::CONTAINER_STATE_FAILED) {
      dynamic_cast<v1::ListContainersResponse*>(resp)->add_containers()->set_id("c-1");
    }
    return grpc::Status::OK;
  });

  v1::GetVersionResponse version;
  version.set_replica("replica-b");
  version.set_leader_since_ms(1700000000000);
  version.set_store("etcd://10.0.0.1:2379");
  fake_->SetResponse("GetVersion", version);

  ASSERT_EQ(Run({"top"}), 0) << err_;
  EXPECT_THAT(out_, HasSubstr("Leader:      replica-b since 2023-11-14T22:13:20Z, store "
                              "etcd://10.0.0.1:2379\n"));
  EXPECT_THAT(out_, HasSubstr("Nodes:       2: 1 ready, 1 unavailable (not ready: host-b); "
                              "1 cordoned (host-b)\n"));
  EXPECT_THAT(out_, HasSubstr("Containers:  4: 3 ready, 1 failed\n"));
  const std::vector<std::string> lines = absl::StrSplit(out_, '\n', absl::SkipEmpty());
  ASSERT_GE(lines.size(), 5u);
  EXPECT_THAT(lines[lines.size() - 4], StartsWith("beta "));
  EXPECT_THAT(lines[lines.size() - 3], StartsWith("acme "));
  EXPECT_THAT(lines[lines.size() - 2], StartsWith("zeta "));
  EXPECT_THAT(lines[lines.size() - 1],
              StartsWith("TOTAL   4.0GiB          12.0GiB       33%  8.0GiB  4.0GiB"));

  ASSERT_EQ(Run({"-o", "json", "top"}), 0) << err_;
  iommu::ctl::FleetSummary sum;
  ASSERT_TRUE(JsonStringToMessage(out_, &sum, IgnoreUnknownFields()).ok()) << out_;
  ASSERT_EQ(sum.tenants_size(), 3);
  EXPECT_EQ(sum.tenants(0).tenant_id(), "beta");
  EXPECT_EQ(sum.total().pinned_bytes(), 4ull << 30);
  EXPECT_EQ(sum.nodes_by_state().at("unavailable"), 1u);
  EXPECT_EQ(sum.containers_by_state().at("failed"), 1u);
}

TEST_F(CommandsTest, TopForATenantGoesWithoutNodes) {
  fake_->SetError("ListNodes", grpc::Status(grpc::StatusCode::PERMISSION_DENIED,
                                            "ListNodes: needs the operator role"));
  fake_->SetResponse("GetUsage", FleetUsage());
  ASSERT_EQ(Run({"top"}), 0) << err_;
  EXPECT_THAT(out_, Not(HasSubstr("Nodes:")));
  // The broker tells tenants nothing about its replicas.
  EXPECT_THAT(out_, Not(HasSubstr("Leader:")));
  EXPECT_THAT(out_, HasSubstr("Tenants:     3\n"));
  // Other errors are errors.
  fake_->SetError("ListNodes", grpc::Status(grpc::StatusCode::UNAVAILABLE, "down"));
  EXPECT_EQ(Run({"top"}), 1);
  EXPECT_THAT(err_, StartsWith("error: UNAVAILABLE: down (tried "));
}

TEST_F(CommandsTest, TopWatchRedrawsUntilTheWaitSaysStop) {
  fake_->SetResponse("GetUsage", FleetUsage());
  std::vector<absl::Duration> waits;
  env_.wait = [&waits](absl::Duration d) {
    waits.push_back(d);
    return waits.size() < 3;
  };
  env_.out_is_terminal = true;
  ASSERT_EQ(Run({"top", "--watch=2s"}), 0) << err_;
  EXPECT_EQ(waits, std::vector<absl::Duration>(3, absl::Seconds(2)));
  size_t frames = 0;
  for (size_t at = out_.find("\x1b[2J"); at != std::string::npos;
       at = out_.find("\x1b[2J", at + 1)) {
    ++frames;
  }
  EXPECT_EQ(frames, 3u);
  EXPECT_EQ(fake_->Requests<v1::GetUsageRequest>("GetUsage").size(), 3u);

  EXPECT_EQ(Run({"-o", "json", "top", "--watch=2s"}), 2);
  EXPECT_THAT(err_, StartsWith("error: --watch: redraws a table; cannot be combined with -o json"));
}

TEST_F(CommandsTest, TopWatchWritesNoEscapesWhenOutputIsNotATerminal) {
  fake_->SetResponse("GetUsage", FleetUsage());
  int waits = 0;
  env_.wait = [&waits](absl::Duration) { return ++waits < 2; };
  env_.out_is_terminal = false;
  ASSERT_EQ(Run({"top", "--watch=2s"}), 0) << err_;
  EXPECT_EQ(out_.find('\x1b'), std::string::npos) << out_;
  ASSERT_EQ(Run({"top"}), 0) << err_;
  const std::string frame = out_;
  waits = 0;
  ASSERT_EQ(Run({"top", "--watch=2s"}), 0) << err_;
  EXPECT_EQ(out_, frame + "\n" + frame);
}

TEST_F(CommandsTest, TopWatchJsonIsRefusedWhateverTheTerminal) {
  env_.out_is_terminal = false;
  EXPECT_EQ(Run({"-o", "json", "top", "--watch=2s"}), 2);
  EXPECT_THAT(err_, StartsWith("error: --watch: redraws a table; cannot be combined with -o json"));
}

}  // namespace
}  // namespace client
}  // namespace iommu
