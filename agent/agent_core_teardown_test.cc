// Teardown without the core's mutex (issue 12 item 3): closing a session,
// revoking windows and destroying a container take their mappings out of the
// live tables, unmap them in as few backend calls as the layout allows, and
// never make heartbeats or other sessions wait for the kernel. The sim
// backend's unmap gate (SimBackend::BlockUnmaps) holds a teardown "in the
// kernel" while the test looks at everything else. No timings: every wait is
// on a condition.
#include <cerrno>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "agent/agent_core.h"
#include "agent/sim_backend.h"
#include "common/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace iommu {
namespace agent {
namespace {

using Code = absl::StatusCode;

constexpr char kC1[] = "c-0000000000000001";
constexpr char kC2[] = "c-0000000000000002";
constexpr uint64_t kPage = 4096;
constexpr uint64_t kBase = 0x100000000;  // Where the tests' mappings start.
constexpr IovaRange kAll{0, 0x1ffffffffULL};

GuestMemoryRegion Memory(uint64_t ino, uint64_t size) {
  return GuestMemoryRegion{ObjectKey{7, ino}, size, 0x7f0000000000ULL + ino * (1ULL << 32),
                           nullptr};
}

class TeardownTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<std::vector<SimDeviceSpec>> specs =
        ParseSimDevices("0000:00:04.0=1234:11e8@5,0000:00:07.0=1af4:1041@8");
    ASSERT_OK(specs);
    absl::StatusOr<std::unique_ptr<SimBackend>> backend = SimBackend::Create(*std::move(specs));
    ASSERT_OK(backend);
    backend_ = *std::move(backend);
    core_ = std::make_unique<AgentCore>("n1", backend_.get());
    ASSERT_OK(core_->CreateContainer(kC1, "acme", {"0000:00:04.0"}, 1ULL << 30));
    ASSERT_OK(core_->CreateContainer(kC2, "globex", {"0000:00:07.0"}, 1ULL << 30));
    ASSERT_OK(core_->SetWindows(kC1, {kAll}));
    ASSERT_OK(core_->SetWindows(kC2, {kAll}));
    // a and b: acme on kC1; g: globex on kC2.
    ASSERT_OK(core_->OpenSession("a", kC1, "acme", {kAll}));
    ASSERT_OK(core_->OpenSession("b", kC1, "acme", {kAll}));
    ASSERT_OK(core_->OpenSession("g", kC2, "globex", {kAll}));
  }

  void TearDown() override {
    backend_->UnblockUnmaps();
    backend_->UnblockDestroys();
  }

  // Registers `pages` pages for `session` (distinct memory per session).
  std::string Register(const std::string& session, const std::string& tenant, uint64_t ino,
                       uint64_t pages) {
    absl::StatusOr<MemoryInfo> m =
        core_->RegisterMemory(session, tenant, Memory(ino, pages * kPage), "guest");
    EXPECT_OK(m);
    return m.ok() ? m->memory_id : "";
  }
  // Maps page `page` of `memory` at kBase + slot pages of the session's
  // container.
  absl::Status MapPage(const std::string& session, const char* container,
                       const std::string& memory, uint64_t page, uint64_t slot) {
    return core_->MapMemory(session, container, memory, page * kPage, kPage,
                            kBase + slot * kPage, true, true);
  }
  uint64_t Billed(const std::string& tenant) {
    for (const v1::PinUsage& u : core_->Usage()) {
      if (u.tenant_id() == tenant) return u.billed_bytes();
    }
    return 0;
  }
  size_t BackendMappings(ContainerHandle handle) {
    absl::StatusOr<std::vector<BackendMapping>> m = backend_->ListMappings(handle);
    EXPECT_OK(m);
    return m.ok() ? m->size() : 0;
  }

  std::unique_ptr<SimBackend> backend_;
  std::unique_ptr<AgentCore> core_;
};

TEST_F(TeardownTest, ContiguousSessionIsUnmappedInOneBackendCall) {
  constexpr uint64_t kN = 2000;
  const std::string mem = Register("a", "acme", 1, kN);
  for (uint64_t i = 0; i < kN; ++i) ASSERT_OK(MapPage("a", kC1, mem, i, i));
  ASSERT_EQ(Billed("acme"), kN * kPage);
  const uint64_t calls = backend_->unmap_calls();
  core_->CloseSession("a");
  EXPECT_EQ(backend_->unmap_calls() - calls, 1u);
  EXPECT_EQ(BackendMappings(1), 0u);
  EXPECT_EQ(Billed("acme"), 0u);
  EXPECT_TRUE(core_->Usage().empty());
  EXPECT_EQ(core_->Stats().mappings, 0u);
}

TEST_F(TeardownTest, InterleavedSessionsAreUnmappedOneCallPerRun) {
  // Slots 0..11: a a a b a b b a a a a b. a's runs: [0-2], [4], [7-10]; then
  // b's mappings (3, 5-6, 11) are separated only by empty IOVA: one run.
  const std::string ma = Register("a", "acme", 1, 12);
  const std::string mb = Register("b", "acme", 2, 12);
  const std::string layout = "aaababbaaaab";
  for (uint64_t i = 0; i < layout.size(); ++i) {
    if (layout[i] == 'a') {
      ASSERT_OK(MapPage("a", kC1, ma, i, i));
    } else {
      ASSERT_OK(MapPage("b", kC1, mb, i, i));
    }
  }
  uint64_t calls = backend_->unmap_calls();
  core_->CloseSession("a");
  EXPECT_EQ(backend_->unmap_calls() - calls, 3u);
  EXPECT_EQ(BackendMappings(1), 4u);
  EXPECT_EQ(core_->SessionMappings("b").size(), 4u);
  EXPECT_EQ(Billed("acme"), 4 * kPage);
  calls = backend_->unmap_calls();
  core_->CloseSession("b");
  EXPECT_EQ(backend_->unmap_calls() - calls, 1u);
  EXPECT_EQ(BackendMappings(1), 0u);
  EXPECT_EQ(Billed("acme"), 0u);
}

TEST_F(TeardownTest, StrictlyAlternatingSessionsTakeOneCallPerMapping) {
  constexpr uint64_t kN = 200;
  const std::string ma = Register("a", "acme", 1, kN);
  const std::string mb = Register("b", "acme", 2, kN);
  for (uint64_t i = 0; i < kN; ++i) {
    ASSERT_OK(MapPage("a", kC1, ma, i, 2 * i));
    ASSERT_OK(MapPage("b", kC1, mb, i, 2 * i + 1));
  }
  const uint64_t calls = backend_->unmap_calls();
  core_->CloseSession("b");  // b's last mapping has nothing after it.
  EXPECT_EQ(backend_->unmap_calls() - calls, kN - 1 + 1);
  EXPECT_EQ(core_->SessionMappings("a").size(), kN);
  EXPECT_EQ(BackendMappings(1), kN);
}

TEST_F(TeardownTest, HeartbeatsAndOtherSessionsProceedWhileTeardownIsInTheKernel) {
  constexpr uint64_t kN = 1000;
  const std::string ma = Register("a", "acme", 1, kN);
  for (uint64_t i = 0; i < kN; ++i) ASSERT_OK(MapPage("a", kC1, ma, i, i));
  const std::string mb = Register("b", "acme", 2, 4);
  const std::string mg = Register("g", "globex", 3, 4);

  backend_->BlockUnmaps();
  std::thread closer([&] { core_->CloseSession("a"); });
  backend_->AwaitBlockedUnmaps(1);

  // Everything the registration loop reads answers, and billing still counts
  // every page the kernel has pinned.
  EXPECT_EQ(Billed("acme"), kN * kPage);
  EXPECT_EQ(core_->Stats().mappings, kN);
  absl::StatusOr<v1::GetInventoryResponse> inventory = core_->Inventory();
  ASSERT_OK(inventory);
  EXPECT_EQ(inventory->containers_size(), 2);
  // Another tenant's session maps and unmaps on another container.
  ASSERT_OK(MapPage("g", kC2, mg, 0, 0));
  EXPECT_EQ(Billed("globex"), kPage);
  // Another session of the same container maps beside the closing run, but
  // not inside it, and cannot unmap through it.
  ASSERT_OK(MapPage("b", kC1, mb, 0, kN));
  EXPECT_THAT(MapPage("b", kC1, mb, 1, 5),
              StatusIs(Code::kFailedPrecondition,
                       "iova: 0x100005000-0x100005fff overlaps 0x100000000-0x1003e7fff, which is "
                       "being unmapped"));
  EXPECT_THAT(core_->Unmap(kC1, kBase, (kN + 1) * kPage, "b"),
              StatusIs(Code::kFailedPrecondition, "iova: 0x100000000-0x1003e8fff overlaps"));
  // The closed session and its memory are gone at once.
  EXPECT_THAT(MapPage("a", kC1, ma, 0, kN + 1), StatusIs(Code::kNotFound, "session:"));
  EXPECT_TRUE(core_->SessionMappings("a").empty());

  backend_->UnblockUnmaps();
  closer.join();
  EXPECT_EQ(Billed("acme"), kPage);  // b's page only.
  EXPECT_EQ(core_->Stats().mappings, 2u);
  EXPECT_EQ(BackendMappings(1), 1u);
  // The range is mappable again.
  EXPECT_OK(MapPage("b", kC1, mb, 1, 5));
}

TEST_F(TeardownTest, DestroyingTheContainerDuringTeardownReleasesEverythingOnce) {
  constexpr uint64_t kN = 100;
  const std::string ma = Register("a", "acme", 1, kN);
  for (uint64_t i = 0; i < kN; ++i) ASSERT_OK(MapPage("a", kC1, ma, i, i));
  const std::string mb = Register("b", "acme", 2, 1);
  ASSERT_OK(MapPage("b", kC1, mb, 0, kN + 10));

  backend_->BlockUnmaps();
  std::thread closer([&] { core_->CloseSession("a"); });
  backend_->AwaitBlockedUnmaps(1);
  ASSERT_OK(core_->DestroyContainer(kC1));
  // The live mapping's pins went with the address space; the draining run's
  // stay billed until its unmap returns (here: ENOENT, the container is gone).
  EXPECT_EQ(Billed("acme"), kN * kPage);
  backend_->UnblockUnmaps();
  closer.join();
  EXPECT_EQ(Billed("acme"), 0u);
  EXPECT_TRUE(core_->Usage().empty());
  EXPECT_EQ(core_->Stats().mappings, 0u);
  // The id can be used again.
  ASSERT_OK(core_->CreateContainer(kC1, "acme", {"0000:00:04.0"}, 1ULL << 30));
}

TEST_F(TeardownTest, FailedUnmapKeepsTheMappingsBilledUntilTheContainerGoes) {
  constexpr uint64_t kN = 10;
  const std::string ma = Register("a", "acme", 1, kN);
  for (uint64_t i = 0; i < kN; ++i) ASSERT_OK(MapPage("a", kC1, ma, i, i));
  backend_->set_next_error(SimOp::kUnmap, EIO);
  core_->CloseSession("a");
  // The kernel still pins them: still mapped, still billed, still counted.
  EXPECT_EQ(BackendMappings(1), kN);
  EXPECT_EQ(Billed("acme"), kN * kPage);
  EXPECT_EQ(core_->Stats().mappings, kN);
  absl::StatusOr<v1::AgentGetContainerResponse> c = core_->GetContainer(kC1);
  ASSERT_OK(c);
  EXPECT_EQ(c->mappings_size(), static_cast<int>(kN));
  ASSERT_OK(core_->DestroyContainer(kC1));
  EXPECT_EQ(Billed("acme"), 0u);
}

TEST_F(TeardownTest, ExplicitUnmapOfManyMappingsIsOneBackendCall) {
  constexpr uint64_t kN = 500;
  const std::string ma = Register("a", "acme", 1, kN);
  for (uint64_t i = 0; i < kN; ++i) ASSERT_OK(MapPage("a", kC1, ma, i, i));
  const uint64_t calls = backend_->unmap_calls();
  EXPECT_THAT(core_->Unmap(kC1, kBase, kN * kPage, "a"), IsOkAndHolds(kN * kPage));
  EXPECT_EQ(backend_->unmap_calls() - calls, 1u);
  EXPECT_EQ(Billed("acme"), 0u);
  // A backend failure unmaps nothing and keeps the mappings.
  ASSERT_OK(MapPage("a", kC1, ma, 0, 0));
  ASSERT_OK(MapPage("a", kC1, ma, 1, 1));
  backend_->set_next_error(SimOp::kUnmap, EIO);
  EXPECT_THAT(core_->Unmap(kC1, kBase, 2 * kPage, "a"), StatusIs(Code::kInternal, ""));
  EXPECT_EQ(core_->SessionMappings("a").size(), 2u);
  EXPECT_EQ(Billed("acme"), 2 * kPage);
  EXPECT_THAT(core_->Unmap(kC1, kBase, 2 * kPage, "a"), IsOkAndHolds(2 * kPage));
}

TEST_F(TeardownTest, RevokedWindowIsUnmappedInOneCallWithoutTheMutex) {
  constexpr uint64_t kN = 300;
  const std::string ma = Register("a", "acme", 1, kN);
  for (uint64_t i = 0; i < kN; ++i) ASSERT_OK(MapPage("a", kC1, ma, i, i));
  const uint64_t calls = backend_->unmap_calls();
  backend_->BlockUnmaps();
  absl::StatusOr<size_t> revoked;
  std::thread setter([&] { revoked = core_->SetWindows(kC1, {{0, kBase - 1}}); });
  backend_->AwaitBlockedUnmaps(1);
  EXPECT_EQ(Billed("acme"), kN * kPage);
  EXPECT_OK(core_->Inventory());
  backend_->UnblockUnmaps();
  setter.join();
  EXPECT_THAT(revoked, IsOkAndHolds(kN));
  EXPECT_EQ(backend_->unmap_calls() - calls, 1u);
  EXPECT_EQ(Billed("acme"), 0u);
}

TEST_F(TeardownTest, DestroyInTheBackendBlocksNeitherHeartbeatsNorOtherContainers) {
  constexpr uint64_t kN = 50;
  const std::string ma = Register("a", "acme", 1, kN);
  for (uint64_t i = 0; i < kN; ++i) ASSERT_OK(MapPage("a", kC1, ma, i, i));
  const std::string mg = Register("g", "globex", 3, 1);

  backend_->BlockDestroys();
  absl::Status destroyed;
  std::thread destroyer([&] { destroyed = core_->DestroyContainer(kC1); });
  backend_->AwaitBlockedDestroys(1);
  // Still held and billed until the backend answers; heartbeats answer.
  EXPECT_EQ(Billed("acme"), kN * kPage);
  EXPECT_EQ(core_->container_count(), 2u);
  EXPECT_OK(core_->Inventory());
  EXPECT_EQ(core_->Stats().mappings, kN);
  // The container takes nothing new, and is not destroyed or made twice.
  EXPECT_THAT(MapPage("a", kC1, ma, 0, kN),
              StatusIs(Code::kFailedPrecondition,
                       "session: container c-0000000000000001 is being destroyed"));
  EXPECT_THAT(core_->DestroyContainer(kC1),
              StatusIs(Code::kFailedPrecondition,
                       "container_id: c-0000000000000001 is already being destroyed"));
  EXPECT_THAT(core_->CreateContainer(kC1, "acme", {"0000:00:04.0"}, 0),
              StatusIs(Code::kFailedPrecondition, "container_id: c-0000000000000001 is being "
                                                  "destroyed"));
  // Another tenant's container is served.
  ASSERT_OK(MapPage("g", kC2, mg, 0, 0));

  backend_->UnblockDestroys();
  destroyer.join();
  EXPECT_OK(destroyed);
  EXPECT_EQ(Billed("acme"), 0u);
  EXPECT_EQ(core_->container_count(), 1u);
  EXPECT_THAT(MapPage("a", kC1, ma, 0, kN), StatusIs(Code::kFailedPrecondition, "session:"));
}

TEST_F(TeardownTest, FailedDestroyKeepsTheContainerForARetry) {
  // The destroy ran without the mutex and failed: the container is held
  // again, not left marked as being destroyed.
  backend_->set_next_error(SimOp::kDestroyContainer, EBUSY);
  EXPECT_THAT(core_->DestroyContainer(kC1), StatusIs(Code::kFailedPrecondition, ""));
  EXPECT_EQ(core_->container_count(), 2u);
  EXPECT_OK(core_->DestroyContainer(kC1));
  EXPECT_THAT(core_->DestroyContainer(kC1),
              StatusIs(Code::kNotFound, "container_id: c-0000000000000001 is not held"));
}

// ---------------------------------------------------------------- paging

TEST_F(TeardownTest, SessionMappingsPageListsFiveThousandMappingsOnceInOrder) {
  constexpr uint64_t kN = 5000;
  const std::string mem = Register("a", "acme", 1, 1);
  // Descending, so the listing's order is the table's, not the maps'.
  for (uint64_t i = kN; i-- > 0;) ASSERT_OK(MapPage("a", kC1, mem, 0, 2 * i));
  const std::string mb = Register("b", "acme", 2, 1);
  ASSERT_OK(MapPage("b", kC1, mb, 0, 1));  // Another session's, in between.
  std::vector<uint64_t> listed;
  std::string token;
  int pages = 0;
  do {
    absl::StatusOr<AgentCore::MappingPage> page = core_->SessionMappingsPage("a", 0, token);
    ASSERT_OK(page);
    ASSERT_LE(page->mappings.size(), 1000u);
    for (const v1::Mapping& m : page->mappings) {
      EXPECT_EQ(m.session_id(), "a");
      listed.push_back(m.iova());
    }
    token = page->next_page_token;
    ++pages;
  } while (!token.empty());
  EXPECT_EQ(pages, 5);
  ASSERT_EQ(listed.size(), kN);
  for (uint64_t i = 0; i < kN; ++i) EXPECT_EQ(listed[i], kBase + 2 * i * kPage);

  EXPECT_THAT(core_->SessionMappingsPage("a", 1001, ""),
              StatusIs(Code::kInvalidArgument, "page_size: at most 1000"));
  EXPECT_THAT(core_->SessionMappingsPage("a", 0, "v1.zz"),
              StatusIs(Code::kInvalidArgument, "page_token: not a token this agent issued"));
  EXPECT_THAT(core_->SessionMappingsPage("nope", 0, ""),
              StatusIs(Code::kNotFound, "session:"));
}

TEST_F(TeardownTest, GetContainerPagesLikeTheBrokersLists) {
  constexpr uint64_t kN = 2500;
  const std::string mem = Register("a", "acme", 1, 1);
  for (uint64_t i = 0; i < kN; ++i) ASSERT_OK(MapPage("a", kC1, mem, 0, i));
  absl::StatusOr<v1::AgentGetContainerResponse> first = core_->GetContainerPage(kC1, 0, "");
  ASSERT_OK(first);
  EXPECT_EQ(first->container().id(), kC1);
  EXPECT_EQ(first->mappings_size(), 100);  // The broker's default page.
  std::vector<uint64_t> listed;
  std::string token;
  do {
    absl::StatusOr<v1::AgentGetContainerResponse> page =
        core_->GetContainerPage(kC1, 1000, token);
    ASSERT_OK(page);
    for (const v1::Mapping& m : page->mappings()) listed.push_back(m.iova());
    token = page->next_page_token();
  } while (!token.empty());
  ASSERT_EQ(listed.size(), kN);
  for (uint64_t i = 0; i < kN; ++i) EXPECT_EQ(listed[i], kBase + i * kPage);
  EXPECT_THAT(core_->GetContainerPage(kC1, 1001, ""),
              StatusIs(Code::kInvalidArgument, "page_size: at most 1000"));
  EXPECT_THAT(core_->GetContainerPage(kC1, 0, "c-0000000000000001"),
              StatusIs(Code::kInvalidArgument, "page_token:"));
  EXPECT_THAT(core_->GetContainerPage("c-00000000000000ff", 0, ""),
              StatusIs(Code::kNotFound, "container_id: c-00000000000000ff"));
}

}  // namespace
}  // namespace agent
}  // namespace iommu
