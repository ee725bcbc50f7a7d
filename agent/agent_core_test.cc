#include "agent/agent_core.h"

#include <cerrno>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "agent/sim_backend.h"
#include "common/status_matchers.h"
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

// The window every container of MapPathTest holds and every session's grant
// names unless a test says otherwise: the low 8 GiB (the MSI window inside it
// stays the backend's to refuse).
constexpr IovaRange kAll{0, 0x1ffffffffULL};

class MapPathTest : public AgentCoreTest {
 protected:
  void SetUp() override {
    ASSERT_OK(core_->CreateContainer(kC1, "acme", {"0000:00:04.0"}, 64 * kMiB));
    ASSERT_OK(core_->CreateContainer(kC2, "acme", {"0000:00:07.0"}, 0));
    ASSERT_OK(core_->CreateContainer(kC3, "globex", {"0000:00:08.0"}, 16 * kMiB));
    for (const char* c : {kC1, kC2, kC3}) {
      absl::StatusOr<size_t> revoked = core_->SetWindows(c, {kAll});
      ASSERT_OK(revoked);
      ASSERT_EQ(*revoked, 0u);
    }
    // s1 and s2: acme on kC1 and kC2; s3: globex on kC3.
    ASSERT_OK(core_->OpenSession("s1", kC1, "acme", {kAll}));
    ASSERT_OK(core_->OpenSession("s2", kC2, "acme", {kAll}));
    ASSERT_OK(core_->OpenSession("s3", kC3, "globex", {kAll}));
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
  // A session maps into its own container only: the same memory reaches a
  // second container through a session on that one.
  auto mem = core_->RegisterMemory("s1", "acme", Memory(1, 8 * kMiB), "guest");
  ASSERT_OK(mem);
  EXPECT_EQ(mem->owner_tenant, "acme");
  EXPECT_FALSE(mem->shared);
  auto again = core_->RegisterMemory("s2", "acme", Memory(1, 8 * kMiB), "guest");
  ASSERT_OK(again);
  EXPECT_TRUE(again->shared);
  ASSERT_OK(core_->MapMemory("s1", kC1, mem->memory_id, 0, 8 * kMiB, 0x100000000, true, true));
  ASSERT_OK(core_->MapMemory("s2", kC2, again->memory_id, 0, 8 * kMiB, 0x100000000, true, true));
  EXPECT_EQ(Billed("acme"), 8 * kMiB);
  EXPECT_EQ(Mapped("acme"), 16 * kMiB);
  EXPECT_EQ(BackendMappings(kC1), 1u);
  EXPECT_EQ(BackendMappings(kC2), 1u);
  // Unmap one of two: still billed. Both: zero.
  ASSERT_OK(core_->Unmap(kC1, 0x100000000, 8 * kMiB, "s1"));
  EXPECT_EQ(Billed("acme"), 8 * kMiB);
  ASSERT_OK(core_->Unmap(kC2, 0x100000000, 8 * kMiB, "s2"));
  EXPECT_EQ(Billed("acme"), 0u);
  EXPECT_EQ(Mapped("acme"), 0u);
}

TEST_F(MapPathTest, SecondTenantHandedTheMemoryBillsTheOwnerOnce) {
  auto mine = core_->RegisterMemory("s1", "acme", Memory(1, 4 * kMiB), "guest");
  ASSERT_OK(mine);
  auto theirs = core_->RegisterMemory("s3", "globex", Memory(1, 4 * kMiB), "borrowed");
  ASSERT_OK(theirs);
  EXPECT_TRUE(theirs->shared);
  EXPECT_EQ(theirs->owner_tenant, "acme");
  ASSERT_OK(core_->MapMemory("s1", kC1, mine->memory_id, 0, 4 * kMiB, 0, true, true));
  ASSERT_OK(core_->MapMemory("s3", kC3, theirs->memory_id, 0, 4 * kMiB, 0, true, false));
  EXPECT_EQ(Billed("acme"), 4 * kMiB);
  EXPECT_EQ(Billed("globex"), 0u);
  EXPECT_EQ(Mapped("acme"), 8 * kMiB);
}

TEST_F(MapPathTest, PartialOverlapsBillDistinctPages) {
  auto mem = core_->RegisterMemory("s1", "acme", Memory(1, 16 * kPage), "guest");
  ASSERT_OK(mem);
  auto shared = core_->RegisterMemory("s2", "acme", Memory(1, 16 * kPage), "guest");
  ASSERT_OK(shared);
  ASSERT_OK(core_->MapMemory("s1", kC1, mem->memory_id, 0, 3 * kPage, 0x10000, true, true));
  ASSERT_OK(
      core_->MapMemory("s2", kC2, shared->memory_id, 2 * kPage, 3 * kPage, 0x10000, true, true));
  EXPECT_EQ(Billed("acme"), 5 * kPage);
  EXPECT_EQ(Mapped("acme"), 6 * kPage);
}

// Regression (issue 11, B): mapping records are agent memory shared by every
// tenant; one tenant's sessions now stop at their own bound.
TEST_F(MapPathTest, MappingsPastTheTenantLimitAreRefusedAndOtherTenantsServed) {
  core_->SetMaxMappingsPerTenant(2);
  auto a1 = core_->RegisterMemory("s1", "acme", Memory(1, 4 * kMiB), "guest");
  auto a2 = core_->RegisterMemory("s2", "acme", Memory(2, 4 * kMiB), "guest");
  ASSERT_OK(a1);
  ASSERT_OK(a2);
  ASSERT_OK(core_->MapMemory("s1", kC1, a1->memory_id, 0, kMiB, 0, true, true));
  // The bound counts the tenant across its sessions and containers.
  ASSERT_OK(core_->MapMemory("s2", kC2, a2->memory_id, 0, kMiB, 0, true, true));
  const std::string before = Snapshot();
  EXPECT_THAT(core_->MapMemory("s1", kC1, a1->memory_id, kMiB, kMiB, kMiB, true, true),
              StatusIs(Code::kResourceExhausted,
                       "iova: tenant \"acme\" already holds 2 mappings on node n1 (limit 2 per "
                       "tenant, --max-mappings-per-tenant)"));
  EXPECT_EQ(Snapshot(), before);
  auto g = core_->RegisterMemory("s3", "globex", Memory(3, 4 * kMiB), "guest");
  ASSERT_OK(g);
  EXPECT_OK(core_->MapMemory("s3", kC3, g->memory_id, 0, kMiB, 0, true, true));
  // Unmapping, and a closed session, give the slots back.
  ASSERT_OK(core_->Unmap(kC2, 0, kMiB, "s2"));
  EXPECT_OK(core_->MapMemory("s1", kC1, a1->memory_id, kMiB, kMiB, kMiB, true, true));
  core_->CloseSession("s1");
  ASSERT_OK(core_->OpenSession("s4", kC1, "acme", {kAll}));
  auto a4 = core_->RegisterMemory("s4", "acme", Memory(4, 4 * kMiB), "guest");
  ASSERT_OK(a4);
  EXPECT_OK(core_->MapMemory("s4", kC1, a4->memory_id, 0, kMiB, 0, true, true));
  EXPECT_OK(core_->MapMemory("s4", kC1, a4->memory_id, kMiB, kMiB, kMiB, true, true));
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

uint64_t KernelCounted(const std::vector<v1::PinUsage>& usage, const std::string& tenant) {
  for (const v1::PinUsage& u : usage) {
    if (u.tenant_id() == tenant) return u.kernel_counted_bytes();
  }
  return 0;
}

// Regression (issue 12, item 2): the kernel charges RLIMIT_MEMLOCK per
// mapping, the ledger per page. A tenant mapping one page again and again was
// billed one page while the kernel counted every mapping, so it could exhaust
// the agent-wide limit for every tenant. It now stops at its share.
TEST_F(MapPathTest, HostileTenantStopsAtItsKernelPinShareAndOthersAreServed) {
  core_->SetKernelPinLimits(16 * kPage, KernelPinAccount::kUnlimited);
  auto hostile = core_->RegisterMemory("s3", "globex", Memory(3, kPage), "one-page");
  ASSERT_OK(hostile);
  for (uint64_t i = 0; i < 16; ++i) {
    ASSERT_OK(core_->MapMemory("s3", kC3, hostile->memory_id, 0, kPage, i * kPage, true, true));
  }
  EXPECT_EQ(Billed("globex"), kPage);
  EXPECT_EQ(KernelCounted(core_->Usage(), "globex"), 16 * kPage);
  const std::string before = Snapshot();
  EXPECT_THAT(core_->MapMemory("s3", kC3, hostile->memory_id, 0, kPage, 16 * kPage, true, true),
              StatusIs(Code::kResourceExhausted,
                       "would make the kernel count 69632 bytes of pins for tenant \"globex\" on "
                       "node n1, past its share of 65536 bytes (--kernel-pin-bytes-per-tenant"));
  EXPECT_EQ(Snapshot(), before);  // Refused before the kernel: nothing mapped.
  // The well-behaved tenant still gets its whole share.
  auto good = core_->RegisterMemory("s1", "acme", Memory(1, 16 * kPage), "guest");
  ASSERT_OK(good);
  EXPECT_OK(core_->MapMemory("s1", kC1, good->memory_id, 0, 16 * kPage, 0, true, true));
  EXPECT_EQ(KernelCounted(core_->Usage(), "acme"), 16 * kPage);
  // Unmapping, closing the session and destroying a container give it back.
  ASSERT_OK(core_->Unmap(kC3, 0, kPage, "s3"));
  EXPECT_EQ(KernelCounted(core_->Usage(), "globex"), 15 * kPage);
  EXPECT_OK(core_->MapMemory("s3", kC3, hostile->memory_id, 0, kPage, 16 * kPage, true, true));
  core_->CloseSession("s3");
  EXPECT_EQ(KernelCounted(core_->Usage(), "globex"), 0u);
  ASSERT_OK(core_->DestroyContainer(kC1));
  EXPECT_EQ(KernelCounted(core_->Usage(), "acme"), 0u);
  EXPECT_EQ(core_->Stats().kernel_counted_bytes, 0u);
}

TEST_F(MapPathTest, NodeKernelPinRoomIsSharedByAllTenants) {
  core_->SetKernelPinLimits(16 * kPage, 20 * kPage);
  auto g = core_->RegisterMemory("s3", "globex", Memory(3, 16 * kPage), "guest");
  auto a = core_->RegisterMemory("s1", "acme", Memory(1, 16 * kPage), "guest");
  ASSERT_OK(g);
  ASSERT_OK(a);
  ASSERT_OK(core_->MapMemory("s3", kC3, g->memory_id, 0, 16 * kPage, 0, true, true));
  EXPECT_THAT(core_->MapMemory("s1", kC1, a->memory_id, 0, 8 * kPage, 0, true, true),
              StatusIs(Code::kResourceExhausted,
                       "for tenant \"acme\" would make the kernel count 98304 bytes of pins on "
                       "node n1, past the agent's RLIMIT_MEMLOCK room of 81920 bytes"));
  EXPECT_OK(core_->MapMemory("s1", kC1, a->memory_id, 0, 4 * kPage, 0, true, true));
}

TEST_F(MapPathTest, StatsCountEveryMappingInFullForTheMappingSessionsTenant) {
  // acme's memory, mapped by globex too: the ledger bills acme, the kernel
  // counts each mapping for the tenant whose session made it.
  auto mine = core_->RegisterMemory("s1", "acme", Memory(1, 4 * kPage), "guest");
  auto theirs = core_->RegisterMemory("s3", "globex", Memory(1, 4 * kPage), "borrowed");
  ASSERT_OK(mine);
  ASSERT_OK(theirs);
  ASSERT_OK(core_->MapMemory("s1", kC1, mine->memory_id, 0, 4 * kPage, 0, true, true));
  ASSERT_OK(core_->MapMemory("s1", kC1, mine->memory_id, 0, 4 * kPage, 0x100000, true, true));
  ASSERT_OK(core_->MapMemory("s3", kC3, theirs->memory_id, 0, 2 * kPage, 0, true, false));
  const AgentStats s = core_->Stats();
  EXPECT_EQ(s.kernel_counted_bytes, 10 * kPage);
  EXPECT_EQ(s.kernel_pin_bytes_per_tenant_limit, UINT64_MAX);
  ASSERT_EQ(s.tenants.size(), 2u);
  EXPECT_EQ(s.tenants[0].id, "acme");
  EXPECT_EQ(s.tenants[0].billed_bytes, 4 * kPage);
  EXPECT_EQ(s.tenants[0].kernel_counted_bytes, 8 * kPage);
  EXPECT_EQ(s.tenants[1].id, "globex");
  EXPECT_EQ(s.tenants[1].billed_bytes, 0u);
  EXPECT_EQ(s.tenants[1].kernel_counted_bytes, 2 * kPage);
  EXPECT_EQ(KernelCounted(core_->Usage(), "globex"), 2 * kPage);
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
  // s4: another acme session on kC1, whose memory s1 must not see.
  ASSERT_OK(core_->OpenSession("s4", kC1, "acme", {kAll}));
  auto other = core_->RegisterMemory("s4", "acme", Memory(2, 8 * kPage), "other");
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
      {core_->MapMemory("s1", "c-00000000000000ff", id, 0, kPage, 0, true, true),
       Code::kPermissionDenied,
       "container_id: c-00000000000000ff is not the container of session s1"},
      {core_->MapMemory("s1", kC2, id, 0, kPage, 0, true, true), Code::kPermissionDenied,
       "container_id: c-0000000000000002 is not the container of session s1"},
      {core_->MapMemory("s9", kC1, id, 0, kPage, 0, true, true), Code::kNotFound,
       "session: no session \"s9\""},
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
      {core_->Unmap(kC1, 0x10000, kPage, "s4").status(), Code::kPermissionDenied,
       "another session"},
      {core_->Unmap(kC1, 0x10000, kPage, "s2").status(), Code::kPermissionDenied,
       "container_id: c-0000000000000001 is not the container of session s2"},
      {core_->Unmap(kC1, 0x10000, kPage, "s9").status(), Code::kNotFound, "session: no session"},
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

// ------------------------------------------------------ sessions, windows

TEST_F(MapPathTest, OpenSessionChecksContainerTenantAndId) {
  EXPECT_THAT(core_->OpenSession("s5", "c-00000000000000ff", "acme", {kAll}),
              StatusIs(Code::kNotFound, "container_id: c-00000000000000ff is not held"));
  EXPECT_THAT(core_->OpenSession("s5", kC3, "acme", {kAll}),
              StatusIs(Code::kUnauthenticated,
                       "token: container c-0000000000000003 does not belong to tenant \"acme\""));
  EXPECT_THAT(core_->OpenSession("s1", kC2, "acme", {kAll}),
              StatusIs(Code::kAlreadyExists, "session: \"s1\" exists"));
  // Nothing was opened by the refusals.
  EXPECT_THAT(core_->RegisterMemory("s5", "acme", Memory(1, kPage), "guest"),
              StatusIs(Code::kNotFound, "session: no session \"s5\""));
  EXPECT_THAT(core_->SessionDevices("s5"), StatusIs(Code::kNotFound, "session: no session"));
  // s1 is still bound to kC1.
  EXPECT_THAT(core_->SessionDevices("s1"), IsOkAndHolds(ElementsAre("0000:00:04.0")));
}

// Invariant 7: a session is bound to the container incarnation it was opened
// on. Destroying the container kills it, even when the same id comes back
// (here for another tenant, as Reconcile does for a container "desired with
// another tenant").
TEST_F(MapPathTest, SessionOnDestroyedContainerIsDead) {
  auto mem = core_->RegisterMemory("s1", "acme", Memory(1, 8 * kPage), "guest");
  ASSERT_OK(mem);
  ASSERT_OK(core_->MapMemory("s1", kC1, mem->memory_id, 0, 8 * kPage, 0x10000, true, true));
  ASSERT_EQ(Billed("acme"), 8 * kPage);

  ASSERT_OK(core_->DestroyContainer(kC1));
  // The destroy released the container's mappings and their billing.
  EXPECT_EQ(Billed("acme"), 0u);
  EXPECT_EQ(Mapped("acme"), 0u);
  EXPECT_THAT(core_->SessionMappings("s1"), IsEmpty());
  EXPECT_THAT(backend_->ListMappings(1), StatusIs(Code::kNotFound, ""));

  ASSERT_OK(core_->CreateContainer(kC1, "globex", {"0000:00:04.0"}, 64 * kMiB));
  ASSERT_OK(core_->SetWindows(kC1, {kAll}));  // Windows are no obstacle.
  const std::string before = Snapshot();
  constexpr char kDead[] =
      "session: container c-0000000000000001 this session was opened on was destroyed";
  EXPECT_THAT(core_->MapMemory("s1", kC1, mem->memory_id, 0, 8 * kPage, 0x10000, true, true),
              StatusIs(Code::kFailedPrecondition, kDead));
  EXPECT_THAT(core_->Unmap(kC1, 0x10000, 8 * kPage, "s1"),
              StatusIs(Code::kFailedPrecondition, kDead));
  EXPECT_THAT(core_->SessionDevices("s1"), StatusIs(Code::kFailedPrecondition, kDead));
  EXPECT_THAT(core_->RegisterMemory("s1", "acme", Memory(2, kPage), "more"),
              StatusIs(Code::kFailedPrecondition, kDead));
  // Nothing reached the new container, and nobody is billed.
  EXPECT_EQ(Snapshot(), before);
  EXPECT_EQ(BackendMappings(kC1), 0u);
  EXPECT_THAT(*backend_->ListMappings(4), IsEmpty());  // The new incarnation.
  EXPECT_EQ(Billed("acme"), 0u);
  EXPECT_EQ(Billed("globex"), 0u);
  // The dead session's id stays taken until it is closed.
  EXPECT_THAT(core_->OpenSession("s1", kC1, "globex", {kAll}),
              StatusIs(Code::kAlreadyExists, "session: \"s1\" exists"));
  // The old tenant cannot open on the new incarnation; its tenant can.
  EXPECT_THAT(core_->OpenSession("s5", kC1, "acme", {kAll}),
              StatusIs(Code::kUnauthenticated, "does not belong to tenant \"acme\""));
  ASSERT_OK(core_->OpenSession("s5", kC1, "globex", {kAll}));
  EXPECT_THAT(core_->SessionDevices("s5"), IsOkAndHolds(ElementsAre("0000:00:04.0")));
  core_->CloseSession("s1");
  EXPECT_THAT(core_->SessionDevices("s1"), StatusIs(Code::kNotFound, "session: no session"));
  EXPECT_TRUE(core_->Usage().empty());
}

TEST_F(MapPathTest, SessionOnContainerRecreatedForTheSameTenantIsDeadToo) {
  ASSERT_OK(core_->DestroyContainer(kC1));
  ASSERT_OK(core_->CreateContainer(kC1, "acme", {"0000:00:04.0"}, 64 * kMiB));
  ASSERT_OK(core_->SetWindows(kC1, {kAll}));
  EXPECT_THAT(core_->SessionDevices("s1"),
              StatusIs(Code::kFailedPrecondition, "this session was opened on was destroyed"));
  EXPECT_THAT(core_->RegisterMemory("s1", "acme", Memory(1, kPage), "guest"),
              StatusIs(Code::kFailedPrecondition, "was destroyed"));
  EXPECT_TRUE(core_->Usage().empty());
}

// Invariant 2: the broker's word on which IOVA a container holds is final; a
// released window takes its mappings (and their pins) with it.
TEST_F(MapPathTest, ReleasedWindowRevokesItsMappingsAndRefusesNewOnes) {
  const IovaRange w1{0x100000, 0x1fffff}, w2{0x40000000, 0x401fffff};
  ASSERT_OK(core_->SetWindows(kC1, {w1, w2}));
  ASSERT_OK(core_->OpenSession("s5", kC1, "acme", {w1, w2}));
  auto mem = core_->RegisterMemory("s5", "acme", Memory(1, 16 * kPage), "guest");
  ASSERT_OK(mem);
  const std::string& id = mem->memory_id;
  ASSERT_OK(core_->MapMemory("s5", kC1, id, 0, 4 * kPage, w1.start, true, true));
  ASSERT_OK(core_->MapMemory("s5", kC1, id, 4 * kPage, 4 * kPage, w2.start, true, true));
  // The same pages as the first mapping: revoking this one keeps them billed.
  ASSERT_OK(core_->MapMemory("s5", kC1, id, 0, 4 * kPage, w2.start + 0x10000, true, true));
  ASSERT_EQ(Billed("acme"), 8 * kPage);
  ASSERT_EQ(Mapped("acme"), 12 * kPage);

  absl::StatusOr<size_t> revoked = core_->SetWindows(kC1, {w1});
  ASSERT_OK(revoked);
  EXPECT_EQ(*revoked, 2u);
  EXPECT_EQ(Billed("acme"), 4 * kPage);
  EXPECT_EQ(Mapped("acme"), 4 * kPage);
  EXPECT_EQ(BackendMappings(kC1), 1u);
  absl::StatusOr<std::vector<BackendMapping>> in_backend = backend_->ListMappings(1);
  ASSERT_OK(in_backend);
  ASSERT_EQ(in_backend->size(), 1u);
  EXPECT_EQ((*in_backend)[0].iova, w1.start);
  ASSERT_EQ(core_->SessionMappings("s5").size(), 1u);

  const std::string before = Snapshot();
  EXPECT_THAT(core_->MapMemory("s5", kC1, id, 8 * kPage, kPage, w2.start, true, true),
              StatusIs(Code::kPermissionDenied,
                       "iova: 0x40000000+0x1000 is outside every window of the session "
                       "[0x100000-0x1fffff, 0x40000000-0x401fffff] that container "
                       "c-0000000000000001 still holds [0x100000-0x1fffff]"));
  EXPECT_THAT(core_->Unmap(kC1, w2.start, 0x200000, "s5"),
              StatusIs(Code::kNotFound, "no mapping inside"));
  EXPECT_EQ(Snapshot(), before);

  // Shrinking the window: a mapping left partly outside is revoked whole.
  revoked = core_->SetWindows(kC1, {{w1.start, w1.start + 2 * kPage - 1}});
  ASSERT_OK(revoked);
  EXPECT_EQ(*revoked, 1u);
  EXPECT_TRUE(core_->Usage().empty());
  EXPECT_THAT(*backend_->ListMappings(1), IsEmpty());

  // Granted again, the window is mappable again (the grant still names it);
  // setting the same windows again revokes nothing.
  ASSERT_OK(core_->SetWindows(kC1, {w1, w2}));
  ASSERT_OK(core_->MapMemory("s5", kC1, id, 0, kPage, w2.start, true, true));
  EXPECT_THAT(core_->SetWindows(kC1, {w1, w2}), IsOkAndHolds(0u));
  EXPECT_EQ(Billed("acme"), kPage);
  // Other containers' mappings are untouched by kC1's windows.
  auto theirs = core_->RegisterMemory("s3", "globex", Memory(2, kPage), "g");
  ASSERT_OK(theirs);
  ASSERT_OK(core_->MapMemory("s3", kC3, theirs->memory_id, 0, kPage, w2.start, true, true));
  EXPECT_THAT(core_->SetWindows(kC1, {}), IsOkAndHolds(1u));
  EXPECT_EQ(Billed("acme"), 0u);
  EXPECT_EQ(Billed("globex"), kPage);
  EXPECT_EQ(BackendMappings(kC3), 1u);
  EXPECT_THAT(core_->SetWindows("c-00000000000000ff", {w1}),
              StatusIs(Code::kNotFound, "container_id: c-00000000000000ff is not held"));
}

TEST_F(MapPathTest, MapMustBeInsideGrantAndContainerWindows) {
  // Two adjacent windows both sides know, one only the grant names (released
  // since), one only the container holds (allocated since).
  const IovaRange a{0x100000, 0x1fffff}, b{0x200000, 0x2fffff}, granted_only{0x40000000, 0x401fffff},
      container_only{0x80000000, 0x801fffff};
  ASSERT_OK(core_->SetWindows(kC1, {a, b, container_only}));
  ASSERT_OK(core_->OpenSession("s5", kC1, "acme", {a, b, granted_only}));
  auto mem = core_->RegisterMemory("s5", "acme", Memory(1, 16 * kPage), "guest");
  ASSERT_OK(mem);
  const std::string& id = mem->memory_id;
  const std::string before = Snapshot();
  struct Case {
    uint64_t iova;
    uint64_t length;
    const char* why;
  };
  const Case refused[] = {
      {granted_only.start, kPage, "only the grant names it"},
      {container_only.start, kPage, "only the container holds it"},
      {b.start - kPage, 2 * kPage, "straddles two adjacent windows, inside neither"},
      {a.start - kPage, 2 * kPage, "starts before the window"},
      {b.last + 1 - kPage, 2 * kPage, "ends past the window"},
      {0, kPage, "inside no window at all"},
  };
  for (const Case& c : refused) {
    EXPECT_THAT(core_->MapMemory("s5", kC1, id, 0, c.length, c.iova, true, true),
                StatusIs(Code::kPermissionDenied,
                         absl::StrCat("iova: 0x", absl::Hex(c.iova), "+0x", absl::Hex(c.length),
                                      " is outside every window of the session")))
        << c.why;
  }
  // Argument errors come first, wherever the range is.
  EXPECT_THAT(core_->MapMemory("s5", kC1, id, 0, kPage, granted_only.start + 0x10, true, true),
              StatusIs(Code::kInvalidArgument, "iova: must be a multiple"));
  EXPECT_THAT(core_->MapMemory("s5", kC1, id, 0, 0, 0, true, true),
              StatusIs(Code::kInvalidArgument, "length: must be greater than 0"));
  EXPECT_THAT(core_->MapMemory("s5", kC1, id, 8 * kPage, 16 * kPage, 0, true, true),
              StatusIs(Code::kInvalidArgument, "passes the end of memory"));
  EXPECT_THAT(core_->MapMemory("s5", kC1, id, 0, 2 * kPage, 0xfffffffffffff000ULL, true, true),
              StatusIs(Code::kInvalidArgument, "overflows 64 bits"));
  EXPECT_EQ(Snapshot(), before);
  // Wholly inside one window both know, up to its very edges: mapped.
  EXPECT_OK(core_->MapMemory("s5", kC1, id, 0, 2 * kPage, a.start, true, true));
  EXPECT_OK(core_->MapMemory("s5", kC1, id, 0, 2 * kPage, a.last + 1 - 2 * kPage, true, true));
  EXPECT_OK(core_->MapMemory("s5", kC1, id, 0, 16 * kPage, b.start, true, true));
  EXPECT_EQ(BackendMappings(kC1), 3u);
}

TEST_F(MapPathTest, FreshContainerHasNoWindowsUntilTheBrokerSetsThem) {
  ASSERT_OK(core_->CreateContainer(kC4, "acme", {"0000:00:05.0", "0000:00:05.1"}, kMiB));
  ASSERT_OK(core_->OpenSession("s5", kC4, "acme", {kAll}));
  auto mem = core_->RegisterMemory("s5", "acme", Memory(1, kPage), "guest");
  ASSERT_OK(mem);
  EXPECT_THAT(core_->MapMemory("s5", kC4, mem->memory_id, 0, kPage, 0x10000, true, true),
              StatusIs(Code::kPermissionDenied,
                       "that container c-0000000000000004 still holds []"));
  EXPECT_TRUE(core_->Usage().empty());
  ASSERT_OK(core_->SetWindows(kC4, {kAll}));
  EXPECT_OK(core_->MapMemory("s5", kC4, mem->memory_id, 0, kPage, 0x10000, true, true));
  EXPECT_EQ(Billed("acme"), kPage);
}

TEST_F(MapPathTest, ReconcileGivesCreatedContainersTheirDesiredWindows) {
  v1::AgentContainer desired = Desired(kC4, "acme", {"0000:00:05.0", "0000:00:05.1"});
  desired.set_pin_budget_bytes(kMiB);
  v1::IovaRange* w = desired.add_windows();
  w->set_start(0x100000);
  w->set_last(0x1fffff);
  std::vector<v1::AgentContainer> all = {desired};
  for (const v1::AgentContainer& held : core_->Containers()) all.push_back(held);
  ReconcileResult r = core_->Reconcile(all);
  ASSERT_THAT(r.failed_ids, IsEmpty());
  ASSERT_OK(core_->OpenSession("s5", kC4, "acme", {kAll}));
  auto mem = core_->RegisterMemory("s5", "acme", Memory(1, kPage), "guest");
  ASSERT_OK(mem);
  EXPECT_THAT(core_->MapMemory("s5", kC4, mem->memory_id, 0, kPage, 0x200000, true, true),
              StatusIs(Code::kPermissionDenied, "still holds [0x100000-0x1fffff]"));
  EXPECT_OK(core_->MapMemory("s5", kC4, mem->memory_id, 0, kPage, 0x100000, true, true));
}

}  // namespace
}  // namespace agent
}  // namespace iommu
