// AgentCore across a restart of the process: a first core journals and
// stores its kernel objects, a second one (a new backend, as in a new
// process) restores them. The simulated backend's "kernel object" is a memfd
// it hands to the fd store, so losing it is testable here.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <map>
#include <memory>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "agent/agent_core.h"
#include "agent/fd_store.h"
#include "agent/sim_backend.h"
#include "agent/state_journal.h"
#include "common/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace iommu {
namespace agent {
namespace {

using ::testing::HasSubstr;
using ::testing::SizeIs;
using Code = absl::StatusCode;

constexpr char kC1[] = "c-0000000000000001";
constexpr char kDevices[] = "0000:00:04.0=1234:11e8@5,0000:00:07.0=1af4:1041@8";
constexpr uint64_t kMiB = 1 << 20;
constexpr IovaRange kAll{0, 0x1ffffffffULL};

// An fd store in this process: what systemd or the holder would keep.
class MemoryFdStore final : public FdStore {
 public:
  std::string Describe() const override { return "test fd store"; }
  absl::Status Put(absl::string_view name, int fd) override {
    if (fail_puts) return absl::UnavailableError("the store is down");
    fds_[std::string(name)] = UniqueFd(::fcntl(fd, F_DUPFD_CLOEXEC, 0));
    return absl::OkStatus();
  }
  absl::Status Remove(absl::string_view name) override {
    fds_.erase(std::string(name));
    return absl::OkStatus();
  }
  absl::StatusOr<std::map<std::string, UniqueFd>> Retrieve() override {
    std::map<std::string, UniqueFd> out;
    for (const auto& [name, fd] : fds_) out[name] = UniqueFd(::fcntl(fd.get(), F_DUPFD_CLOEXEC, 0));
    return out;
  }
  void Drop(absl::string_view prefix) {
    for (auto it = fds_.begin(); it != fds_.end();) {
      it = absl::StartsWith(it->first, prefix) ? fds_.erase(it) : std::next(it);
    }
  }
  size_t size() const { return fds_.size(); }
  bool fail_puts = false;

 private:
  std::map<std::string, UniqueFd> fds_;
};

// A memfd of `size` bytes mapped like MapGuestMemory would.
absl::StatusOr<GuestMemoryRegion> MapMemfd(UniqueFd fd) {
  struct stat st;
  if (::fstat(fd.get(), &st) != 0) return absl::InternalError("fstat");
  void* addr = ::mmap(nullptr, st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd.get(), 0);
  if (addr == MAP_FAILED) return absl::InternalError("mmap");
  struct Owner {
    Owner(UniqueFd f, void* a, size_t s) : fd(std::move(f)), addr(a), size(s) {}
    ~Owner() { ::munmap(addr, size); }
    UniqueFd fd;
    void* addr;
    size_t size;
  };
  auto owner = std::make_shared<Owner>(std::move(fd), addr, static_cast<size_t>(st.st_size));
  GuestMemoryRegion r;
  r.key = ObjectKey{static_cast<uint64_t>(st.st_dev), static_cast<uint64_t>(st.st_ino)};
  r.size = static_cast<uint64_t>(st.st_size);
  r.vaddr = reinterpret_cast<uint64_t>(addr);
  r.fd = owner->fd.get();
  r.keepalive = owner;
  return r;
}

absl::StatusOr<GuestMemoryRegion> NewMemory(uint64_t size) {
  UniqueFd fd(::memfd_create("guest", MFD_CLOEXEC));
  if (!fd || ::ftruncate(fd.get(), size) != 0) return absl::InternalError("memfd");
  return MapMemfd(std::move(fd));
}

// One run of the agent: a backend and a core over the shared journal and store.
struct AgentRun {
  std::unique_ptr<SimBackend> backend;
  std::unique_ptr<AgentCore> core;
};

class AgentCoreRestartTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const char* dir = std::getenv("TEST_TMPDIR");
    path_ = absl::StrCat(dir != nullptr ? dir : "/tmp", "/journal-",
                         ::testing::UnitTest::GetInstance()->current_test_info()->name(), ".db");
    ::unlink(path_.c_str());
    ASSERT_OK_AND_ASSIGN(journal, StateJournal::Open(path_));
    journal_ = std::move(journal);
  }

  AgentRun NewRun() {
    AgentRun run;
    absl::StatusOr<std::vector<SimDeviceSpec>> specs = ParseSimDevices(kDevices);
    EXPECT_TRUE(specs.ok());
    run.backend = *SimBackend::Create(*std::move(specs));
    run.core = std::make_unique<AgentCore>("n1", run.backend.get());
    return run;
  }

  // A new run restored from the journal and the store.
  AgentRun Restart(RestoreReport* report, absl::Time deadline = absl::InfiniteFuture()) {
    AgentRun run = NewRun();
    absl::StatusOr<JournalState> state = journal_->Load();
    EXPECT_TRUE(state.ok()) << state.status();
    run.core->SetPersistence(journal_.get(), &store_);
    *report = run.core->Restore(*state, *store_.Retrieve(), deadline, MapMemfd);
    return run;
  }

  static uint64_t Billed(AgentCore& core, const std::string& tenant) {
    for (const v1::PinUsage& u : core.Usage()) {
      if (u.tenant_id() == tenant) return u.billed_bytes();
    }
    return 0;
  }

  // The first run: a container with a session that mapped 2 MiB of one
  // memfd twice. Returns the resume token.
  std::string FirstRun(AgentRun& run, std::string* memory_id) {
    run.core->SetPersistence(journal_.get(), &store_);
    EXPECT_OK(run.core->CreateContainer(kC1, "acme", {"0000:00:04.0"}, 64 * kMiB));
    EXPECT_OK(run.core->SetWindows(kC1, {kAll}));
    std::string token;
    EXPECT_OK(run.core->OpenSession("s1", kC1, "acme", {kAll}, &token));
    absl::StatusOr<GuestMemoryRegion> memory = NewMemory(2 * kMiB);
    EXPECT_OK(memory);
    absl::StatusOr<MemoryInfo> info =
        run.core->RegisterMemory("s1", "acme", *std::move(memory), "ram");
    EXPECT_OK(info);
    *memory_id = info->memory_id;
    EXPECT_OK(run.core->MapMemory("s1", kC1, *memory_id, 0, 2 * kMiB, 0x100000, true, true));
    EXPECT_OK(run.core->MapMemory("s1", kC1, *memory_id, 0, kMiB, 0x400000, true, false));
    return token;
  }

  std::string path_;
  std::unique_ptr<StateJournal> journal_;
  MemoryFdStore store_;
};

TEST_F(AgentCoreRestartTest, ARestartAdoptsContainersMappingsBillingAndSessions) {
  std::string memory_id;
  std::string token;
  {
    AgentRun first = NewRun();
    token = FirstRun(first, &memory_id);
    ASSERT_FALSE(HasFailure());
    ASSERT_EQ(token.size(), 64u);
    EXPECT_EQ(Billed(*first.core, "acme"), 2 * kMiB);
    first.core->KeepStateForRestart();
    first.core->CloseSession("s1");  // The launcher's connection closing with the process.
  }
  RestoreReport report;
  AgentRun second = Restart(&report);
  EXPECT_EQ(report.containers_adopted, 1u);
  EXPECT_EQ(report.containers_orphaned, 0u);
  EXPECT_EQ(report.sessions_restored, 1u);
  EXPECT_EQ(report.mappings_restored, 2u);
  EXPECT_EQ(report.memory_restored, 1u);
  EXPECT_TRUE(report.problems.empty()) << report.problems[0];
  EXPECT_EQ(Billed(*second.core, "acme"), 2 * kMiB);
  ASSERT_OK_AND_ASSIGN(container, second.core->GetContainer(kC1));
  EXPECT_THAT(container.mappings(), SizeIs(2));

  // Detached until resumed: a wrong token, then the right one, once.
  EXPECT_THAT(second.core->ResumeSession("s1", std::string(64, 'a')).status(),
              StatusIs(Code::kUnauthenticated, "resume_token"));
  EXPECT_THAT(second.core->ResumeSession("nope", token).status(),
              StatusIs(Code::kUnauthenticated, "resume_token"));
  EXPECT_OK(second.core->SetWindows(kC1, {kAll}));  // The broker's reconcile.
  ASSERT_OK_AND_ASSIGN(resumed, second.core->ResumeSession("s1", token));
  EXPECT_EQ(resumed.container_id, kC1);
  EXPECT_EQ(resumed.memory_objects, 1u);
  EXPECT_EQ(resumed.memory_bytes, 2 * kMiB);
  EXPECT_THAT(resumed.usable_windows, SizeIs(1));
  EXPECT_THAT(second.core->ResumeSession("s1", token).status(),
              StatusIs(Code::kUnauthenticated, "resume_token"));
  // The memory id still maps, through the memfd the store kept.
  EXPECT_OK(second.core->MapMemory("s1", kC1, memory_id, kMiB, kMiB, 0x800000, true, true));
  EXPECT_EQ(Billed(*second.core, "acme"), 2 * kMiB);

  // Closing the resumed session releases everything, in the journal too.
  second.core->CloseSession("s1");
  EXPECT_EQ(Billed(*second.core, "acme"), 0u);
  ASSERT_OK_AND_ASSIGN(state, journal_->Load());
  EXPECT_TRUE(state.sessions.empty());
  EXPECT_TRUE(state.mappings.empty());
  EXPECT_TRUE(state.memory.empty());
  EXPECT_THAT(state.containers, SizeIs(1));
}

TEST_F(AgentCoreRestartTest, AContainerWhoseFdsWereLostStaysBilledUntilReleased) {
  std::string memory_id;
  std::string token;
  {
    AgentRun first = NewRun();
    token = FirstRun(first, &memory_id);
    ASSERT_FALSE(HasFailure());
  }
  store_.Drop(kC1);  // The fd store lost the container's kernel objects.
  RestoreReport report;
  AgentRun second = Restart(&report);
  EXPECT_EQ(report.containers_orphaned, 1u);
  ASSERT_THAT(report.problems, SizeIs(1));
  EXPECT_THAT(report.problems[0], HasSubstr("missing"));
  EXPECT_EQ(Billed(*second.core, "acme"), 2 * kMiB);
  EXPECT_THAT(second.core->ResumeSession("s1", token).status(),
              StatusIs(Code::kFailedPrecondition, "could not be adopted"));

  // The old address space still holds the devices: no new one, still billed.
  second.backend->set_next_error(SimOp::kCreateContainer, EBUSY);
  EXPECT_THAT(second.core->CreateContainer(kC1, "acme", {"0000:00:04.0"}).status(),
              StatusIs(Code::kFailedPrecondition, "still alive in the kernel"));
  EXPECT_EQ(Billed(*second.core, "acme"), 2 * kMiB);
  second.backend->set_next_error(SimOp::kCreateContainer, EBUSY);
  EXPECT_THAT(second.core->DestroyContainer(kC1), StatusIs(Code::kFailedPrecondition,
                                                            "cannot be revoked from here"));
  // Released: the container is made anew and the billing goes.
  EXPECT_OK(second.core->CreateContainer(kC1, "acme", {"0000:00:04.0"}));
  EXPECT_EQ(Billed(*second.core, "acme"), 0u);
  ASSERT_OK_AND_ASSIGN(state, journal_->Load());
  EXPECT_TRUE(state.mappings.empty());
}

TEST_F(AgentCoreRestartTest, SessionsNobodyResumesAreClosedAtTheirDeadline) {
  std::string memory_id;
  {
    AgentRun first = NewRun();
    FirstRun(first, &memory_id);
    ASSERT_FALSE(HasFailure());
  }
  RestoreReport report;
  const absl::Time deadline = absl::Now() + absl::Hours(1);
  AgentRun second = Restart(&report, deadline);
  EXPECT_EQ(second.core->CloseUnresumedSessions(deadline - absl::Seconds(1)), 0u);
  EXPECT_EQ(Billed(*second.core, "acme"), 2 * kMiB);
  EXPECT_EQ(second.core->CloseUnresumedSessions(deadline), 1u);
  EXPECT_EQ(Billed(*second.core, "acme"), 0u);
  ASSERT_OK_AND_ASSIGN(container, second.core->GetContainer(kC1));
  EXPECT_THAT(container.mappings(), SizeIs(0));
  // Its memfd left the store with it; the container's stays.
  EXPECT_EQ(store_.size(), 1u);
}

// Nothing is acknowledged that would not survive a restart: when the store
// refuses the kernel objects, the create fails and leaves nothing behind.
TEST_F(AgentCoreRestartTest, ACreateTheStoreCannotKeepFailsAndLeavesNothing) {
  AgentRun run = NewRun();
  run.core->SetPersistence(journal_.get(), &store_);
  store_.fail_puts = true;
  EXPECT_THAT(run.core->CreateContainer(kC1, "acme", {"0000:00:04.0"}).status(),
              StatusIs(Code::kUnavailable, "the store is down"));
  EXPECT_EQ(run.core->container_count(), 0u);
  store_.fail_puts = false;
  EXPECT_OK(run.core->CreateContainer(kC1, "acme", {"0000:00:04.0"}));  // Devices are free.
  ASSERT_OK_AND_ASSIGN(state, journal_->Load());
  EXPECT_THAT(state.containers, SizeIs(1));
}

// The journal never names less than the kernel holds, and forgets a map the
// backend refused.
TEST_F(AgentCoreRestartTest, AMapTheBackendRefusesLeavesNoJournalRecord) {
  std::string memory_id;
  AgentRun run = NewRun();
  FirstRun(run, &memory_id);
  ASSERT_FALSE(HasFailure());
  run.backend->set_next_error(SimOp::kMap, ENOSPC);
  EXPECT_FALSE(run.core->MapMemory("s1", kC1, memory_id, 0, kMiB, 0x900000, true, true).ok());
  ASSERT_OK_AND_ASSIGN(state, journal_->Load());
  EXPECT_THAT(state.mappings, SizeIs(2));
  EXPECT_OK(run.core->Unmap(kC1, 0x400000, kMiB, "s1").status());
  ASSERT_OK_AND_ASSIGN(after, journal_->Load());
  EXPECT_THAT(after.mappings, SizeIs(1));
}

}  // namespace
}  // namespace agent
}  // namespace iommu
