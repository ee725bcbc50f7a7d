#include "agent/agent_core.h"

#include <cerrno>
#include <memory>
#include <string>
#include <vector>

#include "agent/sim_backend.h"
#include "agent/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace iommu {
namespace agent {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::SizeIs;
using Code = absl::StatusCode;

constexpr char kC1[] = "c-0000000000000001";
constexpr char kC2[] = "c-0000000000000002";
constexpr char kC3[] = "c-0000000000000003";
constexpr char kC4[] = "c-0000000000000004";

// Groups: 5 = {04.0}, 6 = {05.0, 05.1}, 8 = {07.0}, 9 = {08.0}.
constexpr char kDevices[] =
    "0000:00:04.0=1234:11e8@5,0000:00:05.0=1234:11e8@6,"
    "0000:00:05.1=1234:11e9@6,0000:00:07.0=1af4:1041@8,"
    "0000:00:08.0=1af4:1041@9";

v1::AgentContainer Desired(const std::string& id, const std::string& tenant,
                           std::vector<std::string> devices) {
  v1::AgentContainer c;
  c.set_id(id);
  c.set_tenant_id(tenant);
  for (std::string& d : devices) c.add_devices(std::move(d));
  return c;
}

std::vector<std::string> Ids(const std::vector<v1::AgentContainer>& containers) {
  std::vector<std::string> out;
  for (const v1::AgentContainer& c : containers) out.push_back(c.id());
  return out;
}

class AgentCoreTest : public ::testing::Test {
 protected:
  AgentCoreTest() {
    absl::StatusOr<std::vector<SimDeviceSpec>> specs = ParseSimDevices(kDevices);
    EXPECT_OK(specs);
    absl::StatusOr<std::unique_ptr<SimBackend>> backend =
        SimBackend::Create(*std::move(specs));
    EXPECT_OK(backend);
    backend_ = *std::move(backend);
    core_ = std::make_unique<AgentCore>("n1", backend_.get());
  }

  std::unique_ptr<SimBackend> backend_;
  std::unique_ptr<AgentCore> core_;
};

TEST_F(AgentCoreTest, CreateReportsBackendGeometry) {
  absl::StatusOr<v1::AgentContainer> c =
      core_->CreateContainer(kC1, "acme", {"0000:00:04.0"});
  ASSERT_OK(c);
  EXPECT_EQ(c->id(), kC1);
  EXPECT_EQ(c->tenant_id(), "acme");
  EXPECT_THAT(c->devices(), ElementsAre("0000:00:04.0"));
  ASSERT_EQ(c->geometry().usable_ranges_size(), 2);
  EXPECT_EQ(c->geometry().usable_ranges(0).last(), 0xfedfffffu);
  EXPECT_EQ(c->geometry().usable_ranges(1).start(), 0xfef00000u);
  EXPECT_EQ(c->geometry().page_size_bitmap(), 0x40201000u);
  EXPECT_EQ(c->geometry().max_mappings(), 65535u);
  EXPECT_EQ(core_->container_count(), 1u);
}

TEST_F(AgentCoreTest, CreateIsIdempotentForSameTenantAndDevices) {
  ASSERT_OK(core_->CreateContainer(kC1, "acme", {"0000:00:05.0", "0000:00:05.1"}));
  // A retry, listing the devices in another order, returns the same container
  // without asking the backend again (which would say EBUSY).
  absl::StatusOr<v1::AgentContainer> again =
      core_->CreateContainer(kC1, "acme", {"0000:00:05.1", "0000:00:05.0"});
  ASSERT_OK(again);
  EXPECT_EQ(again->id(), kC1);
  EXPECT_THAT(again->devices(), ElementsAre("0000:00:05.0", "0000:00:05.1"));
  EXPECT_EQ(core_->container_count(), 1u);
}

TEST_F(AgentCoreTest, CreateWithOtherTenantOrDevicesIsAlreadyExists) {
  ASSERT_OK(core_->CreateContainer(kC1, "acme", {"0000:00:04.0"}));
  EXPECT_THAT(core_->CreateContainer(kC1, "globex", {"0000:00:04.0"}),
              StatusIs(Code::kAlreadyExists,
                       "container_id: c-0000000000000001 already exists with "
                       "tenant acme and devices [0000:00:04.0]"));
  EXPECT_THAT(core_->CreateContainer(kC1, "acme", {"0000:00:07.0"}),
              StatusIs(Code::kAlreadyExists, "already exists"));
}

TEST_F(AgentCoreTest, CreateValidatesFieldsByName) {
  EXPECT_THAT(core_->CreateContainer("c-1", "acme", {"0000:00:04.0"}),
              StatusIs(Code::kInvalidArgument, "container_id:"));
  EXPECT_THAT(core_->CreateContainer(kC1, "Acme", {"0000:00:04.0"}),
              StatusIs(Code::kInvalidArgument, "tenant_id:"));
  EXPECT_THAT(core_->CreateContainer(kC1, "acme", {}),
              StatusIs(Code::kInvalidArgument, "devices: at least one device required"));
  EXPECT_THAT(core_->CreateContainer(kC1, "acme", {"0000:00:04.0", "00:05.0"}),
              StatusIs(Code::kInvalidArgument, "devices[1]:"));
  EXPECT_THAT(core_->CreateContainer(kC1, "acme", {"0000:00:04.0", "0000:00:04.0"}),
              StatusIs(Code::kInvalidArgument, "devices[1]: duplicate of devices[0]"));
  EXPECT_EQ(core_->container_count(), 0u);
}

TEST_F(AgentCoreTest, CreatePassesBackendErrorsThrough) {
  EXPECT_THAT(core_->CreateContainer(kC1, "acme", {"0000:00:09.0"}),
              StatusIs(Code::kNotFound, "ENODEV (no device 0000:00:09.0)"));
  ASSERT_OK(core_->CreateContainer(kC1, "acme", {"0000:00:04.0"}));
  EXPECT_THAT(core_->CreateContainer(kC2, "acme", {"0000:00:04.0"}),
              StatusIs(Code::kFailedPrecondition, "EBUSY"));
  EXPECT_EQ(core_->container_count(), 1u);
}

TEST_F(AgentCoreTest, CreateUndoesBackendContainerWhenGeometryFails) {
  backend_->set_next_error(SimOp::kGetGeometry, EIO);
  EXPECT_THAT(core_->CreateContainer(kC1, "acme", {"0000:00:04.0"}),
              StatusIs(Code::kInternal, "sim GET_GEOMETRY"));
  EXPECT_EQ(core_->container_count(), 0u);
  // The device was released by the rollback.
  EXPECT_OK(core_->CreateContainer(kC1, "acme", {"0000:00:04.0"}));
}

TEST_F(AgentCoreTest, DestroyReleasesDevicesAndForgetsContainer) {
  ASSERT_OK(core_->CreateContainer(kC1, "acme", {"0000:00:04.0"}));
  ASSERT_OK(core_->DestroyContainer(kC1));
  EXPECT_EQ(core_->container_count(), 0u);
  EXPECT_THAT(core_->DestroyContainer(kC1),
              StatusIs(Code::kNotFound,
                       "container_id: c-0000000000000001 is not held by this node"));
  EXPECT_THAT(core_->GetContainer(kC1), StatusIs(Code::kNotFound, "not held"));
  EXPECT_OK(core_->CreateContainer(kC2, "globex", {"0000:00:04.0"}));
}

TEST_F(AgentCoreTest, DestroyFailureKeepsContainer) {
  ASSERT_OK(core_->CreateContainer(kC1, "acme", {"0000:00:04.0"}));
  backend_->set_next_error(SimOp::kDestroyContainer, EBUSY);
  EXPECT_THAT(core_->DestroyContainer(kC1),
              StatusIs(Code::kFailedPrecondition, "sim DESTROY"));
  EXPECT_OK(core_->GetContainer(kC1));
}

TEST_F(AgentCoreTest, GetContainerReturnsContainerAndMappings) {
  ASSERT_OK(core_->CreateContainer(kC1, "acme", {"0000:00:04.0"}));
  absl::StatusOr<v1::AgentGetContainerResponse> got = core_->GetContainer(kC1);
  ASSERT_OK(got);
  EXPECT_EQ(got->container().id(), kC1);
  EXPECT_EQ(got->container().tenant_id(), "acme");
  EXPECT_EQ(got->mappings_size(), 0);
}

TEST_F(AgentCoreTest, InventoryNamesHolderOfEachDevice) {
  ASSERT_OK(core_->CreateContainer(kC1, "acme", {"0000:00:05.0", "0000:00:05.1"}));
  ASSERT_OK(core_->CreateContainer(kC2, "globex", {"0000:00:07.0"}));
  absl::StatusOr<v1::GetInventoryResponse> inv = core_->Inventory();
  ASSERT_OK(inv);
  EXPECT_EQ(inv->node(), "n1");
  EXPECT_EQ(inv->backend(), "sim");
  EXPECT_TRUE(inv->simulated());
  ASSERT_EQ(inv->devices_size(), 5);
  EXPECT_EQ(inv->devices(0).address(), "0000:00:04.0");
  EXPECT_EQ(inv->devices(0).container_id(), "");
  EXPECT_EQ(inv->devices(1).container_id(), kC1);
  EXPECT_EQ(inv->devices(2).container_id(), kC1);
  EXPECT_EQ(inv->devices(3).container_id(), kC2);
  EXPECT_EQ(inv->devices(3).vendor_id(), 0x1af4u);
  EXPECT_EQ(inv->devices(3).iommu_group(), 8u);
  EXPECT_EQ(inv->devices(3).driver(), "vfio-pci");
  EXPECT_TRUE(inv->devices(3).assignable());
  EXPECT_EQ(inv->devices(4).container_id(), "");
  ASSERT_EQ(inv->containers_size(), 2);
  EXPECT_EQ(inv->containers(0).id(), kC1);
  EXPECT_EQ(inv->containers(1).id(), kC2);
}

TEST_F(AgentCoreTest, InventoryPassesBackendErrorThrough) {
  backend_->set_next_error(SimOp::kListDevices, EIO);
  EXPECT_THAT(core_->Inventory(), StatusIs(Code::kInternal, "sim LIST_DEVICES"));
}

TEST_F(AgentCoreTest, ReconcileDestroysExtrasCreatesMissingAndReportsFailures) {
  ASSERT_OK(core_->CreateContainer(kC1, "acme", {"0000:00:04.0"}));    // extra
  ASSERT_OK(core_->CreateContainer(kC2, "acme", {"0000:00:07.0"}));    // kept
  const std::vector<v1::AgentContainer> desired = {
      Desired(kC2, "acme", {"0000:00:07.0"}),
      // Takes the device the extra container holds: destroys come first.
      Desired(kC3, "globex", {"0000:00:04.0"}),
      Desired(kC4, "globex", {"0000:00:0a.0"}),  // no such device
  };
  ReconcileResult r = core_->Reconcile(desired);
  EXPECT_THAT(Ids(r.held), ElementsAre(kC2, kC3));
  EXPECT_THAT(r.failed_ids, ElementsAre(kC4));
  ASSERT_THAT(r.failure_reasons, SizeIs(1));
  EXPECT_THAT(r.failure_reasons[0], HasSubstr("NOT_FOUND"));
  EXPECT_THAT(r.failure_reasons[0], HasSubstr("ENODEV (no device 0000:00:0a.0)"));
  EXPECT_EQ(r.held[1].tenant_id(), "globex");
  EXPECT_GT(r.held[1].geometry().usable_ranges_size(), 0);
  EXPECT_THAT(Ids(core_->Containers()), ElementsAre(kC2, kC3));
}

TEST_F(AgentCoreTest, ReconcileRecreatesContainerThatDiffersFromDesired) {
  ASSERT_OK(core_->CreateContainer(kC1, "acme", {"0000:00:04.0"}));
  ReconcileResult r = core_->Reconcile({Desired(kC1, "acme", {"0000:00:07.0"})});
  EXPECT_THAT(r.failed_ids, IsEmpty());
  ASSERT_THAT(r.held, SizeIs(1));
  EXPECT_THAT(r.held[0].devices(), ElementsAre("0000:00:07.0"));
  // The old device is free.
  EXPECT_OK(core_->CreateContainer(kC2, "acme", {"0000:00:04.0"}));
}

TEST_F(AgentCoreTest, ReconcileToEmptyDestroysEverything) {
  ASSERT_OK(core_->CreateContainer(kC1, "acme", {"0000:00:04.0"}));
  ASSERT_OK(core_->CreateContainer(kC2, "acme", {"0000:00:07.0"}));
  ReconcileResult r = core_->Reconcile({});
  EXPECT_THAT(r.held, IsEmpty());
  EXPECT_THAT(r.failed_ids, IsEmpty());
  EXPECT_EQ(core_->container_count(), 0u);
}

TEST_F(AgentCoreTest, ReconcileReportsInvalidDesiredEntry) {
  ReconcileResult r = core_->Reconcile({Desired("bogus", "acme", {"0000:00:04.0"})});
  EXPECT_THAT(r.failed_ids, ElementsAre("bogus"));
  EXPECT_THAT(r.failure_reasons[0], HasSubstr("container_id:"));
  EXPECT_THAT(r.held, IsEmpty());
}

TEST_F(AgentCoreTest, ReconcileKeepsContainerWhoseDestroyFails) {
  ASSERT_OK(core_->CreateContainer(kC1, "acme", {"0000:00:04.0"}));
  backend_->set_next_error(SimOp::kDestroyContainer, EBUSY);
  ReconcileResult r = core_->Reconcile({});
  EXPECT_THAT(Ids(r.held), ElementsAre(kC1));
}

TEST_F(AgentCoreTest, NodeSideMapAndUnmapAreNotImplementedYet) {
  EXPECT_THAT(core_->Map(v1::AgentMapRequest()),
              StatusIs(Code::kUnimplemented,
                       "Map: the node-side map path arrives with the pinned-page ledger"));
  EXPECT_THAT(core_->Unmap(v1::AgentUnmapRequest()),
              StatusIs(Code::kUnimplemented, "pinned-page ledger"));
}

}  // namespace
}  // namespace agent
}  // namespace iommu
