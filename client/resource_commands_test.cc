// The requests the tenant, node, device, container and window commands send,
// and what they refuse before calling the broker (resource_commands.cc and
// the generic handlers of commands.cc).
#include "client/commands_fixture.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "proto/broker.grpc.pb.h"

namespace iommu {
namespace client {
namespace {

namespace v1 = ::iommu::v1;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::StartsWith;

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
  ASSERT_EQ(Run({"container", "create", "--tenant=acme", "--node=host-a", "--device=0000:00:04.0",
                 "--device=0000:00:05.0"}),
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
  EXPECT_EQ(Run({"container", "create", "--tenant=acme", "--node=host-a", "--device=0000:00:04.0",
                 "--vendor=0x1234"}),
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
  ASSERT_EQ(Run({"container", "create", "--tenant=acme", "--node=host-a", "--device=0000:00:04.0",
                 "--budget=0x200000"}),
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
  ASSERT_EQ(
      Run({"--request-id=budget-1", "container", "set-budget", "c-00000000000000a1", "--budget=0"}),
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

TEST_F(CommandsTest, ContainerGrantBindsTheTokenToALauncherUidOnlyWhenAsked) {
  fake_->SetResponse("GrantLauncher", SampleGrant());
  ASSERT_EQ(Run({"container", "grant", "c-1", "--launcher-uid=107"}), 0) << err_;
  ASSERT_EQ(Run({"container", "grant", "c-1", "--launcher-uid=0"}), 0) << err_;
  ASSERT_EQ(Run({"container", "grant", "c-1"}), 0) << err_;
  auto reqs = fake_->Requests<v1::GrantLauncherRequest>("GrantLauncher");
  ASSERT_EQ(reqs.size(), 3u);
  ASSERT_TRUE(reqs[0].has_launcher_uid());
  EXPECT_EQ(reqs[0].launcher_uid(), 107u);
  ASSERT_TRUE(reqs[1].has_launcher_uid());  // root is a uid like any other.
  EXPECT_EQ(reqs[1].launcher_uid(), 0u);
  EXPECT_FALSE(reqs[2].has_launcher_uid());
  EXPECT_EQ(Run({"container", "grant", "c-1", "--launcher-uid=qemu"}), 2);
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
  ASSERT_EQ(
      Run({"container", "list", "--tenant=acme", "--node=host-a", "--state=node-unavailable"}), 0)
      << err_;
  auto reqs = fake_->Requests<v1::ListContainersRequest>("ListContainers");
  ASSERT_EQ(reqs.size(), 1u);
  EXPECT_EQ(reqs[0].tenant_id(), "acme");
  EXPECT_EQ(reqs[0].node(), "host-a");
  EXPECT_EQ(reqs[0].state(), v1::CONTAINER_STATE_NODE_UNAVAILABLE);
  EXPECT_EQ(Run({"container", "list", "--state=gone"}), 2);
  EXPECT_THAT(
      err_,
      StartsWith(
          "error: --state: must be ready, node-unavailable, failed or deleting, got \"gone\""));
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

}  // namespace
}  // namespace client
}  // namespace iommu
