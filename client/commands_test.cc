#include "client/commands.h"

#include <algorithm>
#include <chrono>
#include <memory>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "client/args.h"
#include "common/version.h"
#include "client/commands_fixture.h"
#include "client/fake_broker_stub.h"
#include "client/views.pb.h"
#include "gmock/gmock.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/util/json_util.h"
#include "gtest/gtest.h"

namespace iommu {
namespace client {
namespace {

using ::google::protobuf::util::JsonStringToMessage;

// iommuctl's JSON adds an RFC 3339 sibling to every *_ms time field.
google::protobuf::util::JsonParseOptions IgnoreUnknownFields() {
  google::protobuf::util::JsonParseOptions options;
  options.ignore_unknown_fields = true;
  return options;
}

namespace v1 = ::iommu::v1;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Not;
using ::testing::StartsWith;

// ---------------------------------------------------------------- requests

TEST_F(CommandsTest, ContainerCreateBySelectorBuildsTheRequest) {
  v1::Container answer;
  answer.set_id("c-00000000000000a1");
  answer.set_tenant_id("acme");
  fake_->SetResponse("CreateContainer", answer);
  ASSERT_EQ(Run({"container", "create", "--tenant=acme", "--vendor=0x1234", "--device-id=0x11e8",
                 "--count=2"}),
            0)
      << err_;
  auto reqs = fake_->Requests<v1::CreateContainerRequest>("CreateContainer");
  ASSERT_EQ(reqs.size(), 1u);
  EXPECT_EQ(reqs[0].request_id(), "generated-1");
  EXPECT_EQ(reqs[0].tenant_id(), "acme");
  EXPECT_EQ(reqs[0].node(), "");
  EXPECT_THAT(reqs[0].devices(), IsEmpty());
  EXPECT_EQ(reqs[0].selector().vendor_id(), 0x1234u);
  EXPECT_EQ(reqs[0].selector().device_id(), 0x11e8u);
  EXPECT_EQ(reqs[0].selector().count(), 2u);
  EXPECT_THAT(out_, HasSubstr("c-00000000000000a1"));
  EXPECT_EQ(err_, "");
}

TEST_F(CommandsTest, ContainerCreateSelectsVendorColonDeviceInHex) {
  v1::Container answer;
  answer.set_id("c-00000000000000a1");
  fake_->SetResponse("CreateContainer", answer);
  ASSERT_EQ(Run({"container", "create", "--tenant=acme", "--vendor=8086:1533"}), 0) << err_;
  auto reqs = fake_->Requests<v1::CreateContainerRequest>("CreateContainer");
  ASSERT_EQ(reqs.size(), 1u);
  EXPECT_EQ(reqs[0].selector().vendor_id(), 0x8086u);
  EXPECT_EQ(reqs[0].selector().device_id(), 0x1533u);

  EXPECT_EQ(Run({"container", "create", "--tenant=acme", "--vendor=8086:1533", "--device-id=1"}),
            2);
  EXPECT_THAT(err_, StartsWith("error: --device-id: cannot be combined with "
                               "--vendor=8086:1533, which names the device id already"));
  EXPECT_EQ(fake_->Requests<v1::CreateContainerRequest>("CreateContainer").size(), 1u);
}

TEST_F(CommandsTest, ContainerCreateOnNamedNodeAndDevices) {
  ASSERT_EQ(Run({"container", "create", "--tenant=acme", "--node=host-a",
                 "--device=0000:00:04.0", "--device=0000:00:05.0"}),
            0)
      << err_;
  auto reqs = fake_->Requests<v1::CreateContainerRequest>("CreateContainer");
  ASSERT_EQ(reqs.size(), 1u);
  EXPECT_EQ(reqs[0].node(), "host-a");
  ASSERT_EQ(reqs[0].devices_size(), 2);
  EXPECT_EQ(reqs[0].devices(0), "0000:00:04.0");
  EXPECT_EQ(reqs[0].devices(1), "0000:00:05.0");
  EXPECT_FALSE(reqs[0].has_selector());
}

TEST_F(CommandsTest, ContainerCreateRefusesMixedPlacementWithoutCallingTheBroker) {
  EXPECT_EQ(Run({"container", "create", "--tenant=acme", "--node=host-a",
                 "--device=0000:00:04.0", "--vendor=0x1234"}),
            2);
  EXPECT_THAT(err_, StartsWith("error: --vendor: cannot be combined with --node/--device"));
  EXPECT_THAT(err_, HasSubstr("Run 'iommuctl container create --help' for usage."));
  EXPECT_EQ(Run({"container", "create", "--tenant=acme", "--node=host-a"}), 2);
  EXPECT_THAT(err_, StartsWith("error: --device: required with --node"));
  EXPECT_EQ(Run({"container", "create", "--tenant=acme", "--device=0000:00:04.0"}), 2);
  EXPECT_THAT(err_, StartsWith("error: --node: required with --device"));
  EXPECT_THAT(fake_->calls(), IsEmpty());
}

TEST_F(CommandsTest, ContainerCreatePassesTheBudget) {
  ASSERT_EQ(Run({"container", "create", "--tenant=acme", "--vendor=0x1234", "--budget=16Gi"}), 0)
      << err_;
  ASSERT_EQ(Run({"container", "create", "--tenant=acme", "--node=host-a",
                 "--device=0000:00:04.0", "--budget=0x200000"}),
            0)
      << err_;
  ASSERT_EQ(Run({"container", "create", "--tenant=acme"}), 0) << err_;
  auto reqs = fake_->Requests<v1::CreateContainerRequest>("CreateContainer");
  ASSERT_EQ(reqs.size(), 3u);
  EXPECT_EQ(reqs[0].pin_budget_bytes(), 16ull << 30);
  EXPECT_EQ(reqs[1].pin_budget_bytes(), 0x200000u);
  // Without --budget the broker gives the rest of the tenant's quota.
  EXPECT_EQ(reqs[2].pin_budget_bytes(), 0u);
}

TEST_F(CommandsTest, ContainerSetBudgetCarriesARequestIdAndShowsTheContainer) {
  v1::Container answer;
  answer.set_id("c-00000000000000a1");
  answer.set_pin_budget_bytes(16ull << 30);
  fake_->SetResponse("SetContainerBudget", answer);
  ASSERT_EQ(Run({"container", "set-budget", "c-00000000000000a1", "--budget=16Gi"}), 0) << err_;
  ASSERT_EQ(Run({"--request-id=budget-1", "container", "set-budget", "c-00000000000000a1",
                 "--budget=0"}),
            0)
      << err_;
  auto reqs = fake_->Requests<v1::SetContainerBudgetRequest>("SetContainerBudget");
  ASSERT_EQ(reqs.size(), 2u);
  EXPECT_EQ(reqs[0].request_id(), "generated-1");
  EXPECT_EQ(reqs[0].container_id(), "c-00000000000000a1");
  EXPECT_EQ(reqs[0].pin_budget_bytes(), 16ull << 30);
  EXPECT_EQ(reqs[1].request_id(), "budget-1");
  EXPECT_EQ(reqs[1].pin_budget_bytes(), 0u);
  EXPECT_THAT(out_, HasSubstr("Pin budget:"));
  EXPECT_THAT(out_, HasSubstr("16.0GiB (17179869184 bytes)"));
}

TEST_F(CommandsTest, ContainerSetBudgetUnavailableSuggestsRetry) {
  fake_->SetError("SetContainerBudget",
                  grpc::Status(grpc::StatusCode::UNAVAILABLE, "connection refused"));
  EXPECT_EQ(Run({"container", "set-budget", "c-1", "--budget=1Gi"}), 1);
  EXPECT_THAT(err_, HasSubstr("retry safely with --request-id=generated-1"));
}

v1::GrantLauncherResponse SampleGrant() {
  v1::GrantLauncherResponse g;
  g.set_token("tok.ABCdef-123_xyz");
  g.set_node("host-a");
  g.set_launcher_socket("/run/iommu-agent/launcher.sock");
  g.set_container_id("c-00000000000000a1");
  g.set_tenant_id("acme");
  g.set_expires_ms(1714564860000);  // 2024-05-01T12:01:00Z.
  v1::Window* w = g.add_windows();
  w->set_id("w-00000000000000b2");
  w->set_base(0x100000000);
  w->set_size(2ull << 30);
  return g;
}

TEST_F(CommandsTest, ContainerGrantBuildsTheRequestAndShowsTheTokenFirst) {
  fake_->SetResponse("GrantLauncher", SampleGrant());
  ASSERT_EQ(Run({"container", "grant", "c-00000000000000a1", "--ttl=5m"}), 0) << err_;
  ASSERT_EQ(Run({"container", "grant", "c-00000000000000a1"}), 0) << err_;
  auto reqs = fake_->Requests<v1::GrantLauncherRequest>("GrantLauncher");
  ASSERT_EQ(reqs.size(), 2u);
  EXPECT_EQ(reqs[0].container_id(), "c-00000000000000a1");
  EXPECT_EQ(reqs[0].ttl_seconds(), 300u);
  // Without --ttl the broker's default (60s) applies.
  EXPECT_EQ(reqs[1].ttl_seconds(), 0u);
  // Not a mutation: no request id was made.
  EXPECT_EQ(ids_issued_, 0);
  EXPECT_THAT(out_, StartsWith("Token:            tok.ABCdef-123_xyz\n"));
  EXPECT_THAT(out_, HasSubstr("Launcher socket:  /run/iommu-agent/launcher.sock\n"));
  EXPECT_THAT(out_, HasSubstr("Expires:          2024-05-01T12:01:00Z\n"));
  EXPECT_EQ(err_, "");

  ASSERT_EQ(Run({"-o", "json", "container", "grant", "c-00000000000000a1"}), 0) << err_;
  v1::GrantLauncherResponse back;
  ASSERT_TRUE(JsonStringToMessage(out_, &back, IgnoreUnknownFields()).ok()) << out_;
  EXPECT_EQ(back.token(), "tok.ABCdef-123_xyz");
  EXPECT_EQ(back.windows_size(), 1);
}

TEST_F(CommandsTest, ContainerGrantTokenOnlyPrintsJustTheTokenAndANewline) {
  fake_->SetResponse("GrantLauncher", SampleGrant());
  ASSERT_EQ(Run({"container", "grant", "c-00000000000000a1", "--token-only", "--ttl=30s"}), 0)
      << err_;
  EXPECT_EQ(out_, "tok.ABCdef-123_xyz\n");
  EXPECT_EQ(err_, "");
  EXPECT_EQ(fake_->Requests<v1::GrantLauncherRequest>("GrantLauncher")[0].ttl_seconds(), 30u);
}

TEST_F(CommandsTest, ContainerGrantTokenOnlyFailsOnAnEmptyToken) {
  // A script must not carry on with an empty $TOKEN.
  EXPECT_EQ(Run({"container", "grant", "c-1", "--token-only"}), 1);
  EXPECT_EQ(out_, "");
  EXPECT_EQ(err_, "error: INTERNAL: the broker returned an empty token\n");
}

TEST_F(CommandsTest, ContainerGrantTokenOnlyRefusesJsonWithoutCallingTheBroker) {
  EXPECT_EQ(Run({"-o", "json", "container", "grant", "c-1", "--token-only"}), 2);
  EXPECT_THAT(err_, StartsWith("error: --token-only: prints the bare token; cannot be combined "
                               "with -o json, yaml or jsonpath\n"));
  EXPECT_THAT(err_, HasSubstr("Run 'iommuctl container grant --help' for usage."));
  EXPECT_THAT(fake_->calls(), IsEmpty());
}

TEST_F(CommandsTest, ContainerGrantRefusesTtlOutsideOneSecondToOneHour) {
  struct Case {
    const char* flag;
    const char* error;
  } cases[] = {
      {"--ttl=500ms", "error: --ttl: must be at least 1s, got \"500ms\"\n"},
      {"--ttl=61m", "error: --ttl: must be at most 1h, got \"61m\"\n"},
      {"--ttl=3601", "error: --ttl: must be at most 1h, got \"3601\"\n"},
      {"--ttl=1500ms", "error: --ttl: must be a whole number of seconds, got \"1500ms\"\n"},
      {"--ttl=0", "error: --ttl: must be a positive, finite duration, got \"0\"\n"},
      {"--ttl=-5s", "error: --ttl: must be a positive, finite duration, got \"-5s\"\n"},
  };
  for (const Case& c : cases) {
    EXPECT_EQ(Run({"container", "grant", "c-1", c.flag}), 2) << c.flag;
    EXPECT_THAT(err_, StartsWith(c.error)) << c.flag;
    EXPECT_THAT(err_, HasSubstr("Run 'iommuctl container grant --help' for usage.")) << c.flag;
  }
  EXPECT_THAT(fake_->calls(), IsEmpty());
  // The bounds themselves are accepted.
  ASSERT_EQ(Run({"container", "grant", "c-1", "--ttl=1s"}), 0) << err_;
  ASSERT_EQ(Run({"container", "grant", "c-1", "--ttl=1h"}), 0) << err_;
  auto reqs = fake_->Requests<v1::GrantLauncherRequest>("GrantLauncher");
  ASSERT_EQ(reqs.size(), 2u);
  EXPECT_EQ(reqs[0].ttl_seconds(), 1u);
  EXPECT_EQ(reqs[1].ttl_seconds(), 3600u);
}

// Issue 15: the alert runbook's `set-quota acme --window-bytes=16G` was
// refused (--pinned was required) and a set-quota reset the limits not given.
TEST_F(CommandsTest, SetQuotaSendsOnlyTheGivenLimitInTheMask) {
  ASSERT_EQ(Run({"tenant", "set-quota", "acme", "--window-bytes=16Gi"}), 0) << err_;
  auto set = fake_->Requests<v1::SetTenantQuotaRequest>("SetTenantQuota");
  ASSERT_EQ(set.size(), 1u);
  EXPECT_THAT(set[0].update_mask().paths(), ElementsAre("quota.window_bytes"));
  EXPECT_EQ(set[0].quota().window_bytes(), 16ull << 30);

  EXPECT_EQ(Run({"tenant", "set-quota", "acme"}), 2);
  EXPECT_THAT(err_, HasSubstr("give at least one of --pinned, --max-containers, --window-bytes"));
  EXPECT_EQ(fake_->Requests<v1::SetTenantQuotaRequest>("SetTenantQuota").size(), 1u);
}

TEST_F(CommandsTest, TenantCreateAndSetQuotaFillTheQuota) {
  ASSERT_EQ(Run({"tenant", "create", "acme", "--pinned=64Gi", "--max-containers=8"}), 0) << err_;
  ASSERT_EQ(Run({"tenant", "set-quota", "acme", "--pinned=0x1000", "--window-bytes=1Ti"}), 0)
      << err_;
  auto create = fake_->Requests<v1::CreateTenantRequest>("CreateTenant");
  ASSERT_EQ(create.size(), 1u);
  EXPECT_EQ(create[0].tenant_id(), "acme");
  EXPECT_EQ(create[0].quota().pinned_bytes(), 64ull << 30);
  EXPECT_EQ(create[0].quota().max_containers(), 8u);
  EXPECT_EQ(create[0].quota().window_bytes(), 0u);
  auto set = fake_->Requests<v1::SetTenantQuotaRequest>("SetTenantQuota");
  ASSERT_EQ(set.size(), 1u);
  EXPECT_EQ(set[0].quota().pinned_bytes(), 0x1000u);
  EXPECT_EQ(set[0].quota().max_containers(), 0u);
  EXPECT_EQ(set[0].quota().window_bytes(), 1ull << 40);
  // Only the limits given are in the mask; max-containers keeps its value.
  EXPECT_THAT(set[0].update_mask().paths(),
              ElementsAre("quota.pinned_bytes", "quota.window_bytes"));
  // A fresh request id per mutation.
  EXPECT_EQ(create[0].request_id(), "generated-1");
  EXPECT_EQ(set[0].request_id(), "generated-2");
}

TEST_F(CommandsTest, WindowAllocateWithFixedBase) {
  ASSERT_EQ(Run({"window", "allocate", "c-00000000000000a1", "--size=1Gi", "--align=2Mi",
                 "--base=0x100000000"}),
            0)
      << err_;
  auto reqs = fake_->Requests<v1::AllocateWindowRequest>("AllocateWindow");
  ASSERT_EQ(reqs.size(), 1u);
  EXPECT_EQ(reqs[0].container_id(), "c-00000000000000a1");
  EXPECT_EQ(reqs[0].size(), 1ull << 30);
  EXPECT_EQ(reqs[0].alignment(), 2u << 20);
  EXPECT_TRUE(reqs[0].fixed_base());
  EXPECT_EQ(reqs[0].base(), 0x100000000u);

  ASSERT_EQ(Run({"window", "allocate", "c-00000000000000a1", "--size=4Ki"}), 0) << err_;
  reqs = fake_->Requests<v1::AllocateWindowRequest>("AllocateWindow");
  ASSERT_EQ(reqs.size(), 2u);
  EXPECT_FALSE(reqs[1].fixed_base());
  EXPECT_EQ(reqs[1].alignment(), 0u);
}

TEST_F(CommandsTest, ContainerListFiltersByState) {
  ASSERT_EQ(Run({"container", "list", "--tenant=acme", "--node=host-a",
                 "--state=node-unavailable"}),
            0)
      << err_;
  auto reqs = fake_->Requests<v1::ListContainersRequest>("ListContainers");
  ASSERT_EQ(reqs.size(), 1u);
  EXPECT_EQ(reqs[0].tenant_id(), "acme");
  EXPECT_EQ(reqs[0].node(), "host-a");
  EXPECT_EQ(reqs[0].state(), v1::CONTAINER_STATE_NODE_UNAVAILABLE);
  EXPECT_EQ(Run({"container", "list", "--state=gone"}), 2);
  EXPECT_THAT(err_, StartsWith("error: --state: must be ready, node-unavailable, failed or deleting, got \"gone\""));
}

TEST_F(CommandsTest, NodeDeleteSendsNodeForceAndARequestId) {
  ASSERT_EQ(Run({"node", "delete", "host-a"}), 0) << err_;
  ASSERT_EQ(Run({"node", "delete", "host-b", "--force"}), 0) << err_;
  auto reqs = fake_->Requests<v1::DeleteNodeRequest>("DeleteNode");
  ASSERT_EQ(reqs.size(), 2u);
  EXPECT_EQ(reqs[0].node(), "host-a");
  EXPECT_FALSE(reqs[0].force());
  EXPECT_FALSE(reqs[0].request_id().empty());
  EXPECT_EQ(reqs[1].node(), "host-b");
  EXPECT_TRUE(reqs[1].force());
  EXPECT_THAT(out_, HasSubstr("node host-b deleted"));
}

TEST_F(CommandsTest, NodeDrainAndDeviceList) {
  ASSERT_EQ(Run({"node", "drain", "host-a", "--delete-containers"}), 0) << err_;
  auto drain = fake_->Requests<v1::DrainNodeRequest>("DrainNode");
  ASSERT_EQ(drain.size(), 1u);
  EXPECT_EQ(drain[0].node(), "host-a");
  EXPECT_TRUE(drain[0].delete_containers());
  ASSERT_EQ(Run({"device", "list", "--node=host-a"}), 0) << err_;
  auto devices = fake_->Requests<v1::ListDevicesRequest>("ListDevices");
  ASSERT_EQ(devices.size(), 1u);
  EXPECT_EQ(devices[0].node(), "host-a");
}

TEST_F(CommandsTest, EveryBrokerRpcIsReachable) {
  const std::vector<std::vector<std::string>> commands = {
      {"tenant", "create", "a", "--pinned=1Gi"},
      {"tenant", "get", "a"},
      {"tenant", "list"},
      {"tenant", "set-quota", "a", "--pinned=2Gi"},
      {"tenant", "delete", "a"},
      {"node", "list"},
      {"node", "get", "n"},
      {"node", "cordon", "n"},
      {"node", "uncordon", "n"},
      {"node", "drain", "n"},
      {"node", "delete", "n"},
      {"device", "list", "--node=n"},
      {"container", "create", "--tenant=a"},
      {"container", "get", "c"},
      {"container", "list"},
      {"container", "delete", "c"},
      {"container", "set-budget", "c", "--budget=4Ki"},
      {"container", "label", "c", "--label=team=ml", "--remove=env"},
      {"container", "list", "--watch"},
      {"tenant", "label", "a", "--remove=env"},
      {"container", "grant", "c"},
      {"window", "allocate", "c", "--size=4Ki"},
      {"window", "release", "w"},
      {"window", "list"},
      {"usage"},
      {"describe", "container", "c"},
      {"top"},
      {"version"},
  };
  for (const auto& c : commands) {
    EXPECT_EQ(Run(c), 0) << absl::StrJoin(c, " ") << ": " << err_;
    // JSON output of every command parses.
    std::vector<std::string> json = c;
    json.push_back("-o");
    json.push_back("json");
    EXPECT_EQ(Run(json), 0) << err_;
    EXPECT_THAT(out_, StartsWith("{"));
  }
  std::set<std::string> methods;
  for (const auto& call : fake_->calls()) methods.insert(call.method);
  // Every method of the Broker service, read from the proto itself so that a
  // new RPC without a command fails here.
  const google::protobuf::ServiceDescriptor* service =
      google::protobuf::DescriptorPool::generated_pool()->FindServiceByName(
          v1::Broker::service_full_name());
  ASSERT_NE(service, nullptr);
  std::set<std::string> want;
  for (int i = 0; i < service->method_count(); ++i) want.insert(service->method(i)->name());
  EXPECT_EQ(methods, want);
  EXPECT_EQ(want.count("SetContainerBudget"), 1u);
  EXPECT_EQ(want.count("GrantLauncher"), 1u);
}

// ---------------------------------------------------------------- request ids

TEST_F(CommandsTest, GivenRequestIdIsHonoured) {
  ASSERT_EQ(Run({"--request-id=retry-42", "container", "delete", "c-1"}), 0) << err_;
  ASSERT_EQ(Run({"window", "release", "w-1", "--request-id", "retry-42"}), 0) << err_;
  EXPECT_EQ(fake_->Requests<v1::DeleteContainerRequest>("DeleteContainer")[0].request_id(),
            "retry-42");
  EXPECT_EQ(fake_->Requests<v1::ReleaseWindowRequest>("ReleaseWindow")[0].request_id(),
            "retry-42");
  EXPECT_EQ(ids_issued_, 0);
  EXPECT_EQ(out_, "window w-1 released\n");
}

TEST_F(CommandsTest, InvalidRequestIdIsAUsageError) {
  EXPECT_EQ(Run({"--request-id=has space", "tenant", "delete", "a"}), 2);
  EXPECT_THAT(err_, StartsWith("error: --request-id: only [A-Za-z0-9._:-] allowed"));
  EXPECT_THAT(fake_->calls(), IsEmpty());
}

TEST(NewRequestIdTest, IsAFreshValidUuid) {
  const std::string a = NewRequestId();
  const std::string b = NewRequestId();
  EXPECT_NE(a, b);
  ASSERT_EQ(a.size(), 36u);
  EXPECT_EQ(a[8], '-');
  EXPECT_EQ(a[14], '4');
  EXPECT_TRUE(a[19] == '8' || a[19] == '9' || a[19] == 'a' || a[19] == 'b') << a;
}

// ---------------------------------------------------------------- errors

TEST_F(CommandsTest, BrokerErrorExitsOneWithCodeName) {
  fake_->SetError("GetContainer",
                  grpc::Status(grpc::StatusCode::NOT_FOUND,
                               "container_id: no container \"c-0123456789abcdef\""));
  EXPECT_EQ(Run({"container", "get", "c-0123456789abcdef"}), 1);
  EXPECT_EQ(err_, "error: NOT_FOUND: container_id: no container \"c-0123456789abcdef\"\n");
  EXPECT_EQ(out_, "");
}

TEST_F(CommandsTest, UnavailableMutationSuggestsRetryWithTheSameRequestId) {
  fake_->SetError("DeleteTenant", grpc::Status(grpc::StatusCode::UNAVAILABLE, "connection refused"));
  EXPECT_EQ(Run({"tenant", "delete", "acme"}), 1);
  // Tried again until --timeout (5s) was spent, every time with one id.
  EXPECT_THAT(err_, StartsWith("error: UNAVAILABLE: connection refused (tried "));
  EXPECT_THAT(err_, HasSubstr("--timeout sets how long)\n"));
  EXPECT_THAT(err_, HasSubstr("--request-id=generated-1"));
  const auto deletes = fake_->Requests<v1::DeleteTenantRequest>("DeleteTenant");
  EXPECT_GT(deletes.size(), 2u);
  for (const v1::DeleteTenantRequest& r : deletes) EXPECT_EQ(r.request_id(), "generated-1");
  absl::Duration paused;
  for (absl::Duration d : retry_pauses_) paused += d;
  EXPECT_LT(paused, absl::Seconds(5));
}

// A change of leader (no replica listens for a moment, then the new one
// does) is ridden through: the same request id again, and one answer.
TEST_F(CommandsTest, AMutationCarriesOnThroughAChangeOfLeader) {
  int calls = 0;
  fake_->SetHandler("CreateTenant", [&calls](const google::protobuf::Message& req,
                                             google::protobuf::Message* resp) {
    if (++calls < 3) return grpc::Status(grpc::StatusCode::UNAVAILABLE, "connection refused");
    auto* tenant = dynamic_cast<v1::Tenant*>(resp);
    tenant->set_id(dynamic_cast<const v1::CreateTenantRequest&>(req).tenant_id());
    return grpc::Status::OK;
  });
  ASSERT_EQ(Run({"tenant", "create", "acme", "--pinned=1Gi"}), 0) << err_;
  EXPECT_EQ(err_, "");
  const auto creates = fake_->Requests<v1::CreateTenantRequest>("CreateTenant");
  ASSERT_EQ(creates.size(), 3u);
  for (const v1::CreateTenantRequest& r : creates) EXPECT_EQ(r.request_id(), "generated-1");
  EXPECT_EQ(retry_pauses_.size(), 2u);
}

// A refusal is the broker's answer: it is not asked again.
TEST_F(CommandsTest, ARefusalIsNotRetried) {
  fake_->SetError("GetTenant", grpc::Status(grpc::StatusCode::NOT_FOUND, "tenant_id: no tenant"));
  EXPECT_EQ(Run({"tenant", "get", "acme"}), 1);
  EXPECT_EQ(fake_->calls().size(), 1u);
  EXPECT_TRUE(retry_pauses_.empty());
}

TEST_F(CommandsTest, InvalidArgumentFromBrokerIsExitOne) {
  fake_->SetError("AllocateWindow",
                  grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                               "size: must be a multiple of the IOMMU page size 0x1000"));
  EXPECT_EQ(Run({"window", "allocate", "c-1", "--size=100"}), 1);
  EXPECT_EQ(err_,
            "error: INVALID_ARGUMENT: size: must be a multiple of the IOMMU page size 0x1000\n");
}

TEST_F(CommandsTest, StubFactoryFailureExitsOne) {
  std::vector<const char*> argv = {"iommuctl", "tenant", "list"};
  std::ostringstream out, err;
  StubFactory failing = [](const GlobalOptions&)
      -> absl::StatusOr<std::shared_ptr<v1::Broker::StubInterface>> {
    return absl::UnavailableError("no route");
  };
  EXPECT_EQ(RunIommuctl(3, argv.data(), out, err, failing, env_), 1);
  EXPECT_EQ(err.str(), "error: UNAVAILABLE: no route\n");
}

TEST_F(CommandsTest, UsageErrorsExitTwoWithHint) {
  EXPECT_EQ(Run({"frobnicate"}), 2);
  EXPECT_EQ(err_, "error: unknown command \"frobnicate\"\nRun 'iommuctl --help' for usage.\n");
  EXPECT_EQ(Run({"tenant", "create", "acme", "--pinned=lots"}), 2);
  EXPECT_THAT(err_, StartsWith("error: --pinned: \"lots\" does not start with a digit"));
  EXPECT_THAT(err_, HasSubstr("Run 'iommuctl tenant create --help' for usage."));
  EXPECT_EQ(Run({}), 2);
  EXPECT_THAT(err_, HasSubstr("Usage:"));
  EXPECT_THAT(fake_->calls(), IsEmpty());
  EXPECT_THAT(addresses_, IsEmpty());
}

// ---------------------------------------------------------------- help etc.

TEST_F(CommandsTest, HelpAtEveryLevelExitsZeroWithoutTheBroker) {
  for (const std::vector<std::string>& args :
       std::vector<std::vector<std::string>>{{"--help"},
                                             {"-h"},
                                             {"help"},
                                             {"container", "--help"},
                                             {"container", "create", "--help"},
                                             {"help", "container", "create"},
                                             {"usage", "-h"}}) {
    EXPECT_EQ(Run(args), 0) << absl::StrJoin(args, " ");
    EXPECT_THAT(out_, HasSubstr("Usage:"));
    EXPECT_EQ(err_, "");
  }
  EXPECT_EQ(Run({"container", "create", "--help"}), 0);
  EXPECT_THAT(out_, HasSubstr("Examples:"));
  EXPECT_THAT(addresses_, IsEmpty());
}

TEST_F(CommandsTest, CompletionBashPrintsTheScriptWithoutTheBroker) {
  ASSERT_EQ(Run({"completion", "bash"}), 0) << err_;
  EXPECT_EQ(out_, RenderBashCompletion());
  EXPECT_THAT(out_, HasSubstr("complete -F _iommuctl iommuctl\n"));
  EXPECT_EQ(Run({"completion", "zsh"}), 2);
  EXPECT_THAT(err_, StartsWith("error: completion: only bash is supported, got \"zsh\""));
  EXPECT_THAT(addresses_, IsEmpty());
}

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

// ---------------------------------------------------------------- wiring

TEST_F(CommandsTest, BrokerAddressFromFlagElseEnvironmentDefault) {
  ASSERT_EQ(Run({"node", "list"}), 0);
  ASSERT_EQ(Run({"--broker=10.1.2.3:9", "node", "list"}), 0);
  EXPECT_EQ(addresses_, (std::vector<std::string>{"default.example:7400", "10.1.2.3:9"}));
}

TEST_F(CommandsTest, TimeoutBecomesTheCallDeadline) {
  const auto before = std::chrono::system_clock::now();
  ASSERT_EQ(Run({"--timeout=30s", "tenant", "get", "a"}), 0);
  ASSERT_EQ(fake_->calls().size(), 1u);
  const auto left = fake_->calls()[0].deadline - before;
  EXPECT_GE(left, std::chrono::seconds(29));
  EXPECT_LE(left, std::chrono::seconds(31));
}

// A broker with `total` tenants named t0000.. that pages them.
void ServeTenants(FakeBrokerStub& fake, int total) {
  fake.SetHandler("ListTenants", [total](const google::protobuf::Message& request,
                                         google::protobuf::Message* response) {
    const auto& req = dynamic_cast<const v1::ListTenantsRequest&>(request);
    auto* resp = dynamic_cast<v1::ListTenantsResponse*>(response);
    const int start = req.page_token().empty() ? 0 : std::stoi(req.page_token());
    const int end = std::min<int>(total, start + static_cast<int>(req.page_size()));
    for (int i = start; i < end; ++i) resp->add_tenants()->set_id(absl::StrFormat("t%04d", i));
    if (end < total) resp->set_next_page_token(absl::StrCat(end));
    return grpc::Status::OK;
  });
}

TEST_F(CommandsTest, ListFetchesEveryPage) {
  ServeTenants(*fake_, 2500);
  ASSERT_EQ(Run({"-o", "json", "tenant", "list"}), 0) << err_;
  auto reqs = fake_->Requests<v1::ListTenantsRequest>("ListTenants");
  ASSERT_EQ(reqs.size(), 3u);
  EXPECT_EQ(reqs[0].page_size(), 1000u);
  EXPECT_EQ(reqs[0].page_token(), "");
  EXPECT_EQ(reqs[1].page_token(), "1000");
  EXPECT_EQ(reqs[2].page_token(), "2000");
  v1::ListTenantsResponse all;
  ASSERT_TRUE(JsonStringToMessage(out_, &all, IgnoreUnknownFields()).ok());
  EXPECT_EQ(all.tenants_size(), 2500);
  EXPECT_EQ(all.tenants(2499).id(), "t2499");
  EXPECT_EQ(all.next_page_token(), "");
}

TEST_F(CommandsTest, LimitStopsEarlyAndKeepsTheResumeToken) {
  ServeTenants(*fake_, 2500);
  ASSERT_EQ(Run({"-o", "json", "tenant", "list", "--limit=1200"}), 0) << err_;
  auto reqs = fake_->Requests<v1::ListTenantsRequest>("ListTenants");
  ASSERT_EQ(reqs.size(), 2u);
  EXPECT_EQ(reqs[1].page_size(), 200u);
  v1::ListTenantsResponse all;
  ASSERT_TRUE(JsonStringToMessage(out_, &all, IgnoreUnknownFields()).ok());
  EXPECT_EQ(all.tenants_size(), 1200);
  EXPECT_EQ(all.next_page_token(), "1200");

  ASSERT_EQ(Run({"tenant", "list", "--limit=3"}), 0) << err_;
  const std::vector<std::string> lines = absl::StrSplit(out_, '\n', absl::SkipEmpty());
  EXPECT_EQ(lines.size(), 4u);  // Header + 3.
}

TEST_F(CommandsTest, ListStopsOnARepeatedPageToken) {
  fake_->SetHandler("ListWindows", [](const google::protobuf::Message&,
                                      google::protobuf::Message* response) {
    dynamic_cast<v1::ListWindowsResponse*>(response)->set_next_page_token("again");
    return grpc::Status::OK;
  });
  EXPECT_EQ(Run({"window", "list"}), 1);
  EXPECT_THAT(err_, StartsWith("error: INTERNAL: the broker returned the same page_token twice"));
}

TEST_F(CommandsTest, TablesForListsAndConfirmationsForDeletes) {
  v1::ListContainersResponse page;
  auto* c = page.add_containers();
  c->set_id("c-00000000000000a1");
  c->set_tenant_id("acme");
  c->set_node("host-a");
  c->set_state(v1::CONTAINER_STATE_READY);
  fake_->SetResponse("ListContainers", page);
  ASSERT_EQ(Run({"container", "list"}), 0) << err_;
  EXPECT_THAT(out_, StartsWith("ID                  NAME  TENANT  NODE    STATE"));
  EXPECT_THAT(out_, HasSubstr("c-00000000000000a1  -     acme    host-a  ready"));
  ASSERT_EQ(Run({"container", "delete", "c-00000000000000a1"}), 0);
  EXPECT_EQ(out_, "container c-00000000000000a1 deleted\n");
  ASSERT_EQ(Run({"-o", "json", "container", "delete", "c-00000000000000a1"}), 0);
  EXPECT_EQ(out_, "{}\n");
}

TEST_F(CommandsTest, NoHeadersLeavesOutTheHeaderRowAndKeepsTheColumns) {
  v1::ListContainersResponse page;
  auto* c = page.add_containers();
  c->set_id("c-00000000000000a1");
  c->set_tenant_id("acme");
  c->set_node("host-a");
  c->set_state(v1::CONTAINER_STATE_READY);
  fake_->SetResponse("ListContainers", page);
  ASSERT_EQ(Run({"container", "list"}), 0) << err_;
  const std::string with = out_;
  ASSERT_EQ(Run({"container", "list", "--no-headers"}), 0) << err_;
  EXPECT_THAT(out_, StartsWith("c-00000000000000a1  -     acme    host-a  ready"));
  EXPECT_EQ(with, with.substr(0, with.find('\n') + 1) + out_);
}

TEST_F(CommandsTest, OutputNamePrintsKindSlashIdOneALine) {
  v1::ListContainersResponse page;
  page.add_containers()->set_id("c-00000000000000a1");
  page.add_containers()->set_id("c-00000000000000a2");
  fake_->SetResponse("ListContainers", page);
  ASSERT_EQ(Run({"-o", "name", "container", "list"}), 0) << err_;
  EXPECT_EQ(out_, "container/c-00000000000000a1\ncontainer/c-00000000000000a2\n");
  v1::ListTenantsResponse tenants;
  tenants.add_tenants()->set_id("acme");
  fake_->SetResponse("ListTenants", tenants);
  ASSERT_EQ(Run({"tenant", "list", "--output=name"}), 0) << err_;
  EXPECT_EQ(out_, "tenant/acme\n");
  fake_->SetResponse("ListTenants", v1::ListTenantsResponse());
  ASSERT_EQ(Run({"tenant", "list", "-o", "name"}), 0) << err_;
  EXPECT_EQ(out_, "");
}

TEST_F(CommandsTest, OutputNameIsRefusedBeforeAMutationWithNothingToNameIsSent) {
  EXPECT_EQ(Run({"-o", "name", "container", "delete", "c-00000000000000a1"}), 2);
  EXPECT_THAT(err_, StartsWith("error: --output=name: \"container delete\" prints no objects "
                               "to name; use -o table or -o json"));
  EXPECT_TRUE(fake_->calls().empty());
}

TEST_F(CommandsTest, TransportFlagsWinOverTheEnvironment) {
  env_.cert = "/env/cert.pem";
  env_.key = "/env/key.pem";
  env_.ca = "/env/ca.pem";
  env_.trust_domain = "env.domain";
  EXPECT_EQ(Run({"tenant", "list", "--cert=/flag/cert.pem", "--trust-domain=flag.domain"}), 0);
  ASSERT_EQ(globals_.size(), 1u);
  EXPECT_EQ(globals_[0].cert, "/flag/cert.pem");
  EXPECT_EQ(globals_[0].key, "/env/key.pem");
  EXPECT_EQ(globals_[0].ca, "/env/ca.pem");
  EXPECT_EQ(globals_[0].trust_domain, "flag.domain");
  EXPECT_FALSE(globals_[0].insecure);
  EXPECT_EQ(Run({"--insecure", "tenant", "list"}), 0);
  EXPECT_TRUE(globals_[1].insecure);
}

TEST_F(CommandsTest, BadTransportConfigurationIsAUsageError) {
  std::vector<const char*> argv = {"iommuctl", "tenant", "list"};
  std::ostringstream out, err;
  StubFactory refusing = [](const GlobalOptions&)
      -> absl::StatusOr<std::shared_ptr<v1::Broker::StubInterface>> {
    return absl::InvalidArgumentError("--cert: cannot read /nope");
  };
  EXPECT_EQ(RunIommuctl(3, argv.data(), out, err, refusing, env_), 2);
  EXPECT_EQ(err.str(), "error: --cert: cannot read /nope\n");
}

// ---------------------------------------------------------------- describe, top

v1::Event MakeEvent(const std::string& reason, v1::ObjectKind kind, const std::string& id,
                    const std::string& message, std::vector<v1::ObjectRef> related = {}) {
  v1::Event e;
  e.set_type(v1::EVENT_TYPE_NORMAL);
  e.set_reason(reason);
  e.set_message(message);
  e.mutable_object()->set_kind(kind);
  e.mutable_object()->set_id(id);
  for (auto& r : related) *e.add_related() = r;
  e.set_count(1);
  return e;
}

v1::ObjectRef ContainerObject(const std::string& id) {
  v1::ObjectRef r;
  r.set_kind(v1::OBJECT_KIND_CONTAINER);
  r.set_id(id);
  return r;
}

TEST_F(CommandsTest, DescribeContainerGathersItsWindowsUsageAndEvents) {
  v1::Container c;
  c.set_id("c-00000000000000a1");
  c.set_tenant_id("acme");
  c.set_node("host-a");
  c.set_window_count(1);
  fake_->SetResponse("GetContainer", c);
  v1::ListWindowsResponse windows;
  windows.add_windows()->set_id("w-00000000000000b2");
  fake_->SetResponse("ListWindows", windows);
  v1::GetUsageResponse usage;
  v1::NodeUsage* row = usage.add_nodes();
  row->set_tenant_id("acme");
  row->set_node("host-a");
  row->set_pinned_bytes(1 << 20);
  fake_->SetResponse("GetUsage", usage);
  v1::ListEventsResponse events;
  *events.add_events() = MakeEvent("ContainerCreated", v1::OBJECT_KIND_CONTAINER,
                                   "c-00000000000000a1", "on node host-a");
  *events.add_events() = MakeEvent("WindowAllocated", v1::OBJECT_KIND_WINDOW, "w-00000000000000b2",
                                   "w-00000000000000b2 at 0x0-0x1fffff");
  fake_->SetResponse("ListEvents", events);

  ASSERT_EQ(Run({"describe", "container", "c-00000000000000a1"}), 0) << err_;
  auto gets = fake_->Requests<v1::GetContainerRequest>("GetContainer");
  ASSERT_EQ(gets.size(), 1u);
  EXPECT_EQ(gets[0].container_id(), "c-00000000000000a1");
  auto list = fake_->Requests<v1::ListWindowsRequest>("ListWindows");
  ASSERT_EQ(list.size(), 1u);
  EXPECT_EQ(list[0].container_id(), "c-00000000000000a1");
  EXPECT_EQ(list[0].page_size(), 50u);
  auto usage_reqs = fake_->Requests<v1::GetUsageRequest>("GetUsage");
  ASSERT_EQ(usage_reqs.size(), 1u);
  EXPECT_EQ(usage_reqs[0].tenant_id(), "acme");
  EXPECT_EQ(usage_reqs[0].node(), "host-a");
  auto event_reqs = fake_->Requests<v1::ListEventsRequest>("ListEvents");
  ASSERT_EQ(event_reqs.size(), 1u);
  EXPECT_EQ(event_reqs[0].object().kind(), v1::OBJECT_KIND_CONTAINER);
  EXPECT_EQ(event_reqs[0].object().id(), "c-00000000000000a1");

  EXPECT_THAT(out_, StartsWith("ID:            c-00000000000000a1\n"));
  EXPECT_THAT(out_, HasSubstr("Usage:         tenant acme on node host-a: 1.0MiB pinned"));
  EXPECT_THAT(out_, HasSubstr("\nWindows:\n  ID "));
  EXPECT_THAT(out_, HasSubstr("\nEvents:\n  AGE"));
  EXPECT_THAT(out_, HasSubstr("Normal  ContainerCreated  on node host-a\n"));
  EXPECT_THAT(out_, HasSubstr("WindowAllocated   w-00000000000000b2 at 0x0-0x1fffff\n"));

  // One JSON object with all of it.
  ASSERT_EQ(Run({"-o", "json", "describe", "container", "c-00000000000000a1"}), 0) << err_;
  iommu::ctl::ContainerDescription d;
  ASSERT_TRUE(JsonStringToMessage(out_, &d, IgnoreUnknownFields()).ok()) << out_;
  EXPECT_EQ(d.container().id(), "c-00000000000000a1");
  EXPECT_EQ(d.windows_size(), 1);
  EXPECT_EQ(d.usage().pinned_bytes(), 1u << 20);
  EXPECT_EQ(d.events_size(), 2);
  EXPECT_FALSE(d.deleted());
}

TEST_F(CommandsTest, DescribeADeletedContainerShowsWhatHappenedToIt) {
  fake_->SetError("GetContainer",
                  grpc::Status(grpc::StatusCode::NOT_FOUND, "container_id: no container \"c-1\""));
  v1::ListEventsResponse events;
  *events.add_events() =
      MakeEvent("ContainerDeleted", v1::OBJECT_KIND_CONTAINER, "c-1", "c-1 deleted from host-a");
  fake_->SetResponse("ListEvents", events);
  ASSERT_EQ(Run({"describe", "container", "c-1"}), 0) << err_;
  EXPECT_THAT(out_, HasSubstr("State:  deleted"));
  EXPECT_THAT(out_, HasSubstr("ContainerDeleted"));
  EXPECT_THAT(fake_->Requests<v1::ListWindowsRequest>("ListWindows"), IsEmpty());
}

TEST_F(CommandsTest, DescribeAnUnknownContainerIsTheGetsNotFound) {
  fake_->SetError("GetContainer",
                  grpc::Status(grpc::StatusCode::NOT_FOUND, "container_id: no container \"c-1\""));
  fake_->SetError("ListEvents",
                  grpc::Status(grpc::StatusCode::NOT_FOUND, "object.id: no container \"c-1\""));
  EXPECT_EQ(Run({"describe", "container", "c-1"}), 1);
  EXPECT_EQ(err_, "error: NOT_FOUND: container_id: no container \"c-1\"\n");
  EXPECT_EQ(out_, "");
}

TEST_F(CommandsTest, DescribeTenantAndNodeAskForTheirRelatedObjects) {
  v1::Tenant t;
  t.set_id("acme");
  fake_->SetResponse("GetTenant", t);
  ASSERT_EQ(Run({"describe", "tenant", "acme"}), 0) << err_;
  EXPECT_EQ(fake_->Requests<v1::GetUsageRequest>("GetUsage").back().tenant_id(), "acme");
  EXPECT_EQ(fake_->Requests<v1::ListContainersRequest>("ListContainers").back().tenant_id(),
            "acme");
  EXPECT_EQ(fake_->Requests<v1::ListEventsRequest>("ListEvents").back().object().kind(),
            v1::OBJECT_KIND_TENANT);
  EXPECT_THAT(out_, HasSubstr("\nContainers:  <none>\n"));
  EXPECT_THAT(out_, HasSubstr("\nEvents:  <none>\n"));

  v1::Node n;
  n.set_name("host-a");
  n.set_container_count(60);
  fake_->SetResponse("GetNode", n);
  v1::ListContainersResponse page;
  page.add_containers()->set_id("c-00000000000000a1");
  page.set_next_page_token("c-00000000000000a1");
  fake_->SetResponse("ListContainers", page);
  ASSERT_EQ(Run({"describe", "node", "host-a"}), 0) << err_;
  EXPECT_EQ(fake_->Requests<v1::ListDevicesRequest>("ListDevices").back().node(), "host-a");
  EXPECT_EQ(fake_->Requests<v1::ListContainersRequest>("ListContainers").back().node(), "host-a");
  EXPECT_EQ(fake_->Requests<v1::GetUsageRequest>("GetUsage").back().node(), "host-a");
  EXPECT_EQ(fake_->Requests<v1::ListEventsRequest>("ListEvents").back().object().id(), "host-a");
  EXPECT_THAT(out_, HasSubstr("... and 59 more (iommuctl container list --node=host-a)"));
}

TEST_F(CommandsTest, DescribeWindowFindsItsContainerThroughItsEvents) {
  v1::ListEventsResponse events;
  *events.add_events() = MakeEvent("WindowAllocated", v1::OBJECT_KIND_WINDOW, "w-00000000000000b2",
                                   "allocated", {ContainerObject("c-00000000000000a1")});
  fake_->SetResponse("ListEvents", events);
  v1::ListWindowsResponse windows;
  v1::Window* w = windows.add_windows();
  w->set_id("w-00000000000000b2");
  w->set_container_id("c-00000000000000a1");
  w->set_base(0x100000000);
  w->set_size(4096);
  fake_->SetResponse("ListWindows", windows);
  v1::Container c;
  c.set_id("c-00000000000000a1");
  c.set_node("host-a");
  fake_->SetResponse("GetContainer", c);
  ASSERT_EQ(Run({"describe", "window", "w-00000000000000b2"}), 0) << err_;
  auto list = fake_->Requests<v1::ListWindowsRequest>("ListWindows");
  ASSERT_EQ(list.size(), 1u);
  EXPECT_EQ(list[0].container_id(), "c-00000000000000a1");
  EXPECT_EQ(fake_->Requests<v1::GetContainerRequest>("GetContainer")[0].container_id(),
            "c-00000000000000a1");
  EXPECT_THAT(out_, HasSubstr("Base:       0x100000000\n"));
  EXPECT_THAT(out_, HasSubstr("\nContainer:\n  ID:       c-00000000000000a1\n"));

  // Released: not among its container's windows any more, but its events are.
  fake_->SetResponse("ListWindows", v1::ListWindowsResponse());
  ASSERT_EQ(Run({"describe", "window", "w-00000000000000b2"}), 0) << err_;
  EXPECT_THAT(out_, HasSubstr("State:  deleted"));

  // No events and not found anywhere.
  fake_->SetResponse("ListEvents", v1::ListEventsResponse());
  EXPECT_EQ(Run({"describe", "window", "w-00000000000000b2"}), 1);
  EXPECT_EQ(err_, "error: NOT_FOUND: window_id: no window \"w-00000000000000b2\"\n");
  // Without a hint every window the caller may see is searched.
  EXPECT_EQ(fake_->Requests<v1::ListWindowsRequest>("ListWindows").back().container_id(), "");
}

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
    if (dynamic_cast<const v1::ListContainersRequest&>(req).state() ==
        v1::CONTAINER_STATE_FAILED) {
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
TEST_F(CommandsTest, ContainerListWatchPrintsTheListThenEachChange) {
  v1::ListContainersResponse list;
  list.set_resource_version("run.7");
  v1::Container* c = list.add_containers();
  c->set_id("c-00000000000000a1");
  c->set_name("vm-1");
  c->set_tenant_id("acme");
  c->set_state(v1::CONTAINER_STATE_READY);
  fake_->SetResponse("ListContainers", list);
  v1::WatchResponse first;
  v1::WatchEvent* bookmark = first.add_events();
  bookmark->set_type(v1::WatchEvent::BOOKMARK);
  bookmark->set_resource_version("run.7");
  v1::WatchResponse changes;
  v1::WatchEvent* down = changes.add_events();
  down->set_type(v1::WatchEvent::PUT);
  down->set_resource_version("run.8");
  *down->mutable_container() = *c;
  down->mutable_container()->set_state(v1::CONTAINER_STATE_NODE_UNAVAILABLE);
  v1::WatchEvent* gone = changes.add_events();
  gone->set_type(v1::WatchEvent::DELETE);
  gone->set_resource_version("run.9");
  *gone->mutable_container() = *c;
  fake_->SetWatch({first, changes}, grpc::Status(grpc::StatusCode::UNAVAILABLE, "broker gone"));
  int waits = 0;
  env_.wait = [&waits](absl::Duration) { return ++waits < 2; };

  ASSERT_EQ(Run({"container", "list", "--tenant=acme", "-l", "team=ml", "--watch"}), 0) << err_;
  EXPECT_THAT(out_, HasSubstr("ID                  NAME  TENANT"));
  EXPECT_THAT(out_, HasSubstr("CHANGED  c-00000000000000a1  vm-1  acme"));
  EXPECT_THAT(out_, HasSubstr("node-unavailable"));
  EXPECT_THAT(out_, HasSubstr("DELETED  c-00000000000000a1"));
  EXPECT_THAT(err_, HasSubstr("watch: the stream ended (broker gone); reconnecting"));
  // The watch asked for containers of the list's tenant and selector, from
  // the list's version, and resumed from the last event it saw.
  std::vector<v1::WatchRequest> watches = fake_->Requests<v1::WatchRequest>("Watch");
  ASSERT_EQ(watches.size(), 2u);
  EXPECT_EQ(watches[0].resource_version(), "run.7");
  EXPECT_EQ(watches[0].tenant_id(), "acme");
  EXPECT_EQ(watches[0].label_selector(), "team=ml");
  ASSERT_EQ(watches[0].kinds_size(), 1);
  EXPECT_EQ(watches[0].kinds(0), v1::OBJECT_KIND_CONTAINER);
  EXPECT_EQ(watches[1].resource_version(), "run.9");
}

// The change of container `id` on `node` in `state`.
v1::WatchEvent ContainerEvent(v1::WatchEvent::Type type, const std::string& version,
                              const std::string& id, const std::string& node,
                              v1::ContainerState state) {
  v1::WatchEvent e;
  e.set_type(type);
  e.set_resource_version(version);
  e.mutable_container()->set_id(id);
  e.mutable_container()->set_tenant_id("acme");
  e.mutable_container()->set_node(node);
  e.mutable_container()->set_state(state);
  return e;
}

// --node and --state, which Watch does not take, narrow the changes with
// Kubernetes' enter/leave rule: starting to match shows the container,
// ceasing to match takes it back as DELETED, other containers stay unseen.
class ContainerListWatchFilterTest : public CommandsTest {
 protected:
  void SetUp() override {
    CommandsTest::SetUp();
    v1::ListContainersResponse list;
    list.set_resource_version("run.1");
    *list.add_containers() = ContainerEvent(v1::WatchEvent::PUT, "", "c-00000000000000a1", "n1",
                                            v1::CONTAINER_STATE_READY)
                                 .container();
    fake_->SetResponse("ListContainers", list);
    v1::WatchResponse changes;
    const auto ready = v1::CONTAINER_STATE_READY;
    const auto down = v1::CONTAINER_STATE_NODE_UNAVAILABLE;
    const auto put = v1::WatchEvent::PUT;
    const auto del = v1::WatchEvent::DELETE;
    *changes.add_events() = ContainerEvent(put, "run.2", "c-00000000000000a1", "n1", down);
    *changes.add_events() = ContainerEvent(put, "run.3", "c-00000000000000b2", "n2", ready);
    *changes.add_events() = ContainerEvent(put, "run.4", "c-00000000000000c3", "n1", ready);
    *changes.add_events() = ContainerEvent(put, "run.5", "c-00000000000000a1", "n1", ready);
    *changes.add_events() = ContainerEvent(del, "run.6", "c-00000000000000b2", "n2", ready);
    *changes.add_events() = ContainerEvent(put, "run.7", "c-00000000000000d4", "n1", down);
    *changes.add_events() = ContainerEvent(del, "run.8", "c-00000000000000c3", "n1", ready);
    // The stream ends; the first wait says stop.
    fake_->SetWatch({changes}, grpc::Status(grpc::StatusCode::UNAVAILABLE, "broker gone"));
  }

  // The lines of out_ after the list's (which ends with the header and a1).
  std::vector<std::string> Changes() {
    std::vector<std::string> lines = absl::StrSplit(out_, '\n', absl::SkipEmpty());
    std::vector<std::string> changes;
    for (const std::string& l : lines) {
      if (absl::StartsWith(l, "CHANGED") || absl::StartsWith(l, "DELETED")) {
        changes.push_back(l.substr(0, 27));
      }
    }
    return changes;
  }
};

TEST_F(ContainerListWatchFilterTest, ContainersEnterAndLeaveTheNodeAndState) {
  ASSERT_EQ(Run({"container", "list", "--node=n1", "--state=ready", "--watch"}), 0) << err_;
  EXPECT_THAT(out_, HasSubstr("c-00000000000000a1"));
  EXPECT_THAT(Changes(), ElementsAre("DELETED  c-00000000000000a1",    // Went down.
                                     "CHANGED  c-00000000000000c3",    // New on n1.
                                     "CHANGED  c-00000000000000a1",    // Back up.
                                     "DELETED  c-00000000000000c3"));  // Deleted.
  // The broker was asked for every node and state: --node and --state are
  // applied by iommuctl.
  std::vector<v1::WatchRequest> watches = fake_->Requests<v1::WatchRequest>("Watch");
  ASSERT_EQ(watches.size(), 1u);
  EXPECT_EQ(watches[0].resource_version(), "run.1");
}

TEST_F(ContainerListWatchFilterTest, JsonEmitsALeavingContainerAsADelete) {
  ASSERT_EQ(Run({"-o", "json", "container", "list", "--state=ready", "--watch"}), 0) << err_;
  // The list, then a1 leaving (a DELETE marked left_selection), b2, c3 and
  // a1 entering, b2 and c3 deleted; d4 never matched.
  EXPECT_THAT(out_, HasSubstr("\"type\": \"DELETE\",\n  \"resource_version\": \"run.2\""));
  EXPECT_THAT(out_, HasSubstr("\"left_selection\": true"));
  EXPECT_THAT(out_, HasSubstr("\"resource_version\": \"run.6\""));
  EXPECT_THAT(out_, Not(HasSubstr("c-00000000000000d4")));
  EXPECT_THAT(out_, Not(HasSubstr("\"resource_version\": \"run.7\"")));
}

TEST_F(CommandsTest, ContainerListWatchListsAgainWhenTheVersionIsTooOld) {
  v1::ListContainersResponse list;
  list.set_resource_version("run.1");
  fake_->SetResponse("ListContainers", list);
  fake_->SetWatch({}, grpc::Status(grpc::StatusCode::OUT_OF_RANGE, "resource_version: too old"));
  int relists = 0;
  fake_->SetHandler("ListContainers", [&](const google::protobuf::Message& req,
                                          google::protobuf::Message* out) {
    if (dynamic_cast<const v1::ListContainersRequest&>(req).page_size() == 1 && ++relists == 3) {
      return grpc::Status(grpc::StatusCode::PERMISSION_DENIED, "stop here");
    }
    out->CopyFrom(list);
    return grpc::Status::OK;
  });
  EXPECT_EQ(Run({"container", "list", "--watch"}), 1);
  EXPECT_THAT(err_, HasSubstr("resource_version: too old; listing again"));
  EXPECT_THAT(err_, HasSubstr("PERMISSION_DENIED: stop here"));
}

}  // namespace client
}  // namespace iommu
