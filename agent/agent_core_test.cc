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

// ---------------------------------------------------------------- map path

constexpr uint64_t kPage = 4096;
constexpr uint64_t kMiB = 1 << 20;

GuestMemoryRegion Memory(uint64_t ino, uint64_t size) {
  // The sim backend never touches the bytes, so any page-aligned address
  // stands in for the agent's own mapping of the launcher's memfd.
  return GuestMemoryRegion{ObjectKey{7, ino}, size, 0x7f0000000000ULL + ino * (1ULL << 32),
                           nullptr};
}

class MapPathTest : public AgentCoreTest {
 protected:
  void SetUp() override {
    ASSERT_OK(core_->CreateContainer(kC1, "acme", {"0000:00:04.0"}, 64 * kMiB));
    ASSERT_OK(core_->CreateContainer(kC2, "acme", {"0000:00:07.0"}, 0));
    ASSERT_OK(core_->CreateContainer(kC3, "globex", {"0000:00:08.0"}, 16 * kMiB));
  }

  uint64_t Billed(const std::string& tenant) {
    for (const v1::PinUsage& u : core_->Usage()) {
      if (u.tenant_id() == tenant) return u.billed_bytes();
    }
    return 0;
  }
  uint64_t Mapped(const std::string& tenant) {
    for (const v1::PinUsage& u : core_->Usage()) {
      if (u.tenant_id() == tenant) return u.mapped_bytes();
    }
    return 0;
  }
  size_t BackendMappings(const char* container) {
    auto got = core_->GetContainer(container);
    EXPECT_OK(got);
    return got->mappings_size();
  }
  // Everything observable, for "a refusal changes nothing".
  std::string Snapshot() {
    std::string out;
    for (const char* c : {kC1, kC2, kC3}) out += core_->GetContainer(c)->DebugString();
    for (const v1::PinUsage& u : core_->Usage()) out += u.DebugString();
    return out;
  }
};

TEST_F(MapPathTest, SameMemoryInTwoContainersIsBilledOnce) {
  auto mem = core_->RegisterMemory("s1", "acme", Memory(1, 8 * kMiB), "guest");
  ASSERT_OK(mem);
  EXPECT_EQ(mem->owner_tenant, "acme");
  EXPECT_FALSE(mem->shared);
  ASSERT_OK(core_->MapMemory("s1", kC1, mem->memory_id, 0, 8 * kMiB, 0x100000000, true, true));
  ASSERT_OK(core_->MapMemory("s1", kC2, mem->memory_id, 0, 8 * kMiB, 0x100000000, true, true));
  EXPECT_EQ(Billed("acme"), 8 * kMiB);
  EXPECT_EQ(Mapped("acme"), 16 * kMiB);
  EXPECT_EQ(BackendMappings(kC1), 1u);
  EXPECT_EQ(BackendMappings(kC2), 1u);
  // Unmap one of two: still billed. Both: zero.
  ASSERT_OK(core_->Unmap(kC1, 0x100000000, 8 * kMiB, "s1"));
  EXPECT_EQ(Billed("acme"), 8 * kMiB);
  ASSERT_OK(core_->Unmap(kC2, 0x100000000, 8 * kMiB, "s1"));
  EXPECT_EQ(Billed("acme"), 0u);
  EXPECT_EQ(Mapped("acme"), 0u);
}

TEST_F(MapPathTest, SecondTenantHandedTheMemoryBillsTheOwnerOnce) {
  auto mine = core_->RegisterMemory("s1", "acme", Memory(1, 4 * kMiB), "guest");
  ASSERT_OK(mine);
  auto theirs = core_->RegisterMemory("s2", "globex", Memory(1, 4 * kMiB), "borrowed");
  ASSERT_OK(theirs);
  EXPECT_TRUE(theirs->shared);
  EXPECT_EQ(theirs->owner_tenant, "acme");
  ASSERT_OK(core_->MapMemory("s1", kC1, mine->memory_id, 0, 4 * kMiB, 0, true, true));
  ASSERT_OK(core_->MapMemory("s2", kC3, theirs->memory_id, 0, 4 * kMiB, 0, true, false));
  EXPECT_EQ(Billed("acme"), 4 * kMiB);
  EXPECT_EQ(Billed("globex"), 0u);
  EXPECT_EQ(Mapped("acme"), 8 * kMiB);
}

TEST_F(MapPathTest, PartialOverlapsBillDistinctPages) {
  auto mem = core_->RegisterMemory("s1", "acme", Memory(1, 16 * kPage), "guest");
  ASSERT_OK(mem);
  ASSERT_OK(core_->MapMemory("s1", kC1, mem->memory_id, 0, 3 * kPage, 0x10000, true, true));
  ASSERT_OK(core_->MapMemory("s1", kC2, mem->memory_id, 2 * kPage, 3 * kPage, 0x10000, true, true));
  EXPECT_EQ(Billed("acme"), 5 * kPage);
  EXPECT_EQ(Mapped("acme"), 6 * kPage);
}

TEST_F(MapPathTest, MapPastTheBudgetIsRefusedWithTheNumbersAndChangesNothing) {
  auto big = core_->RegisterMemory("s3", "globex", Memory(9, 32 * kMiB), "guest");
  ASSERT_OK(big);
  ASSERT_OK(core_->MapMemory("s3", kC3, big->memory_id, 0, 12 * kMiB, 0, true, true));
  const std::string before = Snapshot();
  EXPECT_THAT(core_->MapMemory("s3", kC3, big->memory_id, 12 * kMiB, 8 * kMiB, 12 * kMiB, true,
                               true),
              StatusIs(Code::kResourceExhausted,
                       "would bill tenant \"globex\" 0x800000 more bytes; it has 0xc00000 billed "
                       "of its 0x1000000 byte pin budget"));
  EXPECT_EQ(Snapshot(), before);
  // Mapping already-billed pages again costs nothing and is allowed.
  ASSERT_OK(core_->MapMemory("s3", kC3, big->memory_id, 0, 4 * kMiB, 0x40000000, true, true));
  EXPECT_EQ(Billed("globex"), 12 * kMiB);
  // Raising the budget lets it through.
  v1::ContainerBudget b;
  b.set_container_id(kC3);
  b.set_pin_budget_bytes(32 * kMiB);
  core_->SetBudgets({b});
  EXPECT_OK(core_->MapMemory("s3", kC3, big->memory_id, 12 * kMiB, 8 * kMiB, 12 * kMiB, true,
                             true));
}

TEST_F(MapPathTest, LoweredBudgetKeepsPinsButBlocksNewOnes) {
  auto mem = core_->RegisterMemory("s1", "acme", Memory(1, 8 * kMiB), "guest");
  ASSERT_OK(mem);
  ASSERT_OK(core_->MapMemory("s1", kC1, mem->memory_id, 0, 4 * kMiB, 0, true, true));
  v1::ContainerBudget b;
  b.set_container_id(kC1);
  b.set_pin_budget_bytes(1 * kMiB);
  core_->SetBudgets({b});
  EXPECT_EQ(Billed("acme"), 4 * kMiB);
  EXPECT_THAT(core_->MapMemory("s1", kC1, mem->memory_id, 4 * kMiB, kPage, 4 * kMiB, true, true),
              StatusIs(Code::kResourceExhausted, "pin budget"));
  ASSERT_OK(core_->Unmap(kC1, 0, 4 * kMiB, "s1"));
  EXPECT_OK(core_->MapMemory("s1", kC1, mem->memory_id, 0, kMiB, 0, true, true));
}

TEST_F(MapPathTest, EveryBadMapIsRefusedWithTheFieldAndChangesNothing) {
  auto mem = core_->RegisterMemory("s1", "acme", Memory(1, 8 * kPage), "guest");
  ASSERT_OK(mem);
  auto other = core_->RegisterMemory("s2", "acme", Memory(2, 8 * kPage), "other");
  ASSERT_OK(other);
  ASSERT_OK(core_->MapMemory("s1", kC1, mem->memory_id, 0, kPage, 0x10000, true, true));
  const std::string before = Snapshot();
  const std::string& id = mem->memory_id;
  struct Case {
    absl::Status status;
    Code code;
    const char* substr;
  };
  const Case cases[] = {
      {core_->MapMemory("s1", "c-00000000000000ff", id, 0, kPage, 0, true, true), Code::kNotFound,
       "container_id: c-00000000000000ff is not held"},
      {core_->MapMemory("s1", kC1, other->memory_id, 0, kPage, 0, true, true), Code::kNotFound,
       "memory_id: this session has no memory"},
      {core_->MapMemory("s1", kC1, "m-nope", 0, kPage, 0, true, true), Code::kNotFound,
       "memory_id"},
      {core_->MapMemory("s1", kC1, id, 0, kPage, 0, false, false), Code::kInvalidArgument,
       "readable, writable: at least one"},
      {core_->MapMemory("s1", kC1, id, 100, kPage, 0, true, true), Code::kInvalidArgument,
       "offset: must be a multiple of the IOMMU page size 0x1000"},
      {core_->MapMemory("s1", kC1, id, 0, 100, 0, true, true), Code::kInvalidArgument,
       "length: must be a multiple"},
      {core_->MapMemory("s1", kC1, id, 0, kPage, 0x10, true, true), Code::kInvalidArgument,
       "iova: must be a multiple"},
      {core_->MapMemory("s1", kC1, id, 0, 0, 0, true, true), Code::kInvalidArgument,
       "length: must be greater than 0"},
      {core_->MapMemory("s1", kC1, id, 4 * kPage, 8 * kPage, 0, true, true),
       Code::kInvalidArgument, "passes the end of memory"},
      {core_->MapMemory("s1", kC1, id, 0, kPage, 0x10000, true, true), Code::kAlreadyExists, ""},
      {core_->MapMemory("s1", kC1, id, 0, kPage, 0xfee00000, true, true), Code::kInvalidArgument,
       ""},
      {core_->MapMemory("s1", kC1, id, 0, 2 * kPage, 0xfffffffffffff000ULL, true, true),
       Code::kInvalidArgument, "overflows"},
      {core_->Unmap(kC1, 0x10000, kPage, "s2").status(), Code::kPermissionDenied,
       "another session"},
      {core_->Unmap(kC1, 0x11000, kPage, "s1").status(), Code::kNotFound, "no mapping inside"},
      {core_->Unmap(kC1, 0x10000, 0, "s1").status(), Code::kInvalidArgument, "length"},
  };
  for (const Case& c : cases) {
    EXPECT_THAT(c.status, StatusIs(c.code, c.substr));
  }
  EXPECT_EQ(Snapshot(), before);
}

TEST_F(MapPathTest, UnmapMustCoverWholeMappings) {
  auto mem = core_->RegisterMemory("s1", "acme", Memory(1, 8 * kPage), "guest");
  ASSERT_OK(mem);
  ASSERT_OK(core_->MapMemory("s1", kC1, mem->memory_id, 0, 2 * kPage, 0x10000, true, true));
  ASSERT_OK(core_->MapMemory("s1", kC1, mem->memory_id, 2 * kPage, kPage, 0x12000, true, true));
  EXPECT_THAT(core_->Unmap(kC1, 0x10000, kPage, "s1"),
              StatusIs(Code::kInvalidArgument, "cuts mapping 0x10000-0x11fff"));
  auto bytes = core_->Unmap(kC1, 0x0, 0x100000, "s1");
  ASSERT_OK(bytes);
  EXPECT_EQ(*bytes, 3 * kPage);
  EXPECT_EQ(BackendMappings(kC1), 0u);
}

TEST_F(MapPathTest, ClosingASessionUnmapsEverythingItMappedAndReleasesBilling) {
  auto a = core_->RegisterMemory("s1", "acme", Memory(1, 8 * kPage), "a");
  auto b = core_->RegisterMemory("s2", "acme", Memory(1, 8 * kPage), "b");
  ASSERT_OK(a);
  ASSERT_OK(b);
  ASSERT_OK(core_->MapMemory("s1", kC1, a->memory_id, 0, 8 * kPage, 0, true, true));
  ASSERT_OK(core_->MapMemory("s2", kC2, b->memory_id, 0, 4 * kPage, 0, true, true));
  core_->CloseSession("s1");
  EXPECT_EQ(BackendMappings(kC1), 0u);
  EXPECT_EQ(Billed("acme"), 4 * kPage);  // s2's pins stay.
  EXPECT_TRUE(core_->SessionMappings("s1").empty());
  EXPECT_EQ(core_->SessionMappings("s2").size(), 1u);
  core_->CloseSession("s2");
  EXPECT_EQ(Billed("acme"), 0u);
  EXPECT_TRUE(core_->Usage().empty());
}

TEST_F(MapPathTest, DestroyingAContainerReleasesItsPins) {
  auto mem = core_->RegisterMemory("s1", "acme", Memory(1, 8 * kPage), "a");
  ASSERT_OK(mem);
  ASSERT_OK(core_->MapMemory("s1", kC1, mem->memory_id, 0, 8 * kPage, 0, true, true));
  ASSERT_OK(core_->DestroyContainer(kC1));
  EXPECT_EQ(Billed("acme"), 0u);
  EXPECT_TRUE(core_->SessionMappings("s1").empty());
}

TEST_F(MapPathTest, BackendFailureChangesNothing) {
  auto mem = core_->RegisterMemory("s1", "acme", Memory(1, 8 * kPage), "a");
  ASSERT_OK(mem);
  const std::string before = Snapshot();
  backend_->set_next_error(SimOp::kMap, ENOSPC);
  EXPECT_THAT(core_->MapMemory("s1", kC1, mem->memory_id, 0, kPage, 0, true, true),
              StatusIs(Code::kResourceExhausted, ""));
  EXPECT_EQ(Snapshot(), before);
}

}  // namespace
}  // namespace agent
}  // namespace iommu
