// The agent's lifecycle through its real entry points: a real broker, a real
// agent (sim backend) with its journal and an iommu-fdholder process, and a
// launcher on the agent's socket. kill -9 and SIGTERM + start again must lose
// nothing: the container stays READY, billing is the same, the launcher
// resumes its session with its resume token, and a session nobody resumes
// is closed and stops being billed. Without an fd store the container's
// kernel objects are gone: it is re-made and billing follows.
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "launcher/client.h"
#include "proto/broker.grpc.pb.h"
#include "tests/cluster.h"
#include "tests/daemon.h"
#include "tests/test_util.h"

extern char** environ;

namespace iommu::testing {
namespace {

using ::iommu::launcher::LauncherClient;
using ::testing::HasSubstr;

constexpr char kTwoEdus[] = "0000:00:04.0=1234:11e8@5,0000:00:05.0=1234:11e8@6";
constexpr char kDevA[] = "0000:00:04.0";
constexpr uint64_t kMiB = 1 << 20;

// An iommu-fdholder process on a socket in `dir`; killed with the test.
class Holder {
 public:
  absl::Status Start(const std::string& dir) {
    socket_ = absl::StrCat(dir, "/fdholder.sock");
    const std::string binary = RunfilePath("agent/iommu-fdholder");
    std::vector<std::string> args = {binary, absl::StrCat("--socket=", socket_)};
    std::vector<char*> argv;
    for (std::string& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    if (posix_spawn(&pid_, binary.c_str(), nullptr, nullptr, argv.data(), environ) != 0) {
      return absl::InternalError("posix_spawn iommu-fdholder");
    }
    struct stat st;
    if (!PollUntil([&] { return ::stat(socket_.c_str(), &st) == 0; })) {
      return absl::DeadlineExceededError("iommu-fdholder did not create its socket");
    }
    return absl::OkStatus();
  }
  void Kill() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
      pid_ = -1;
    }
  }
  ~Holder() { Kill(); }
  std::string flag() const { return absl::StrCat("--fd-store=holder:", socket_); }

 private:
  pid_t pid_ = -1;
  std::string socket_;
};

class AgentRestartTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_OK(cluster_.StartBroker());
    broker_ = cluster_.BrokerStub();
    ASSERT_OK(holder_.Start(cluster_.dir()));
  }

  std::vector<std::string> AgentFlags(std::vector<std::string> extra = {}) {
    extra.push_back(holder_.flag());
    return extra;
  }

  void StartAgent(std::vector<std::string> flags) {
    ASSERT_OK(cluster_.StartAgent("n1", kTwoEdus, flags));
  }

  std::string Socket() const { return absl::StrCat(cluster_.dir(), "/n1.sock"); }

  void MakeTenantAndContainer() {
    v1::CreateTenantRequest req;
    req.set_tenant_id("acme");
    req.mutable_quota()->set_pinned_bytes(64 * kMiB);
    v1::Tenant t;
    grpc::Status s = Call(broker_.get(), &v1::Broker::Stub::CreateTenant, req, &t);
    ASSERT_TRUE(s.ok()) << s.error_message();
    container_ = CreateContainerWithWindow(broker_.get(), "acme", "n1", kDevA, 16 * kMiB, 4 * kMiB);
    ASSERT_FALSE(container_.empty());
  }

  // A grant for the container, once the node serves it (after a restart the
  // broker refuses until the agent has registered and reconciled).
  std::string Grant() {
    std::string token;
    std::string last;
    PollUntil([&] {
      v1::GrantLauncherRequest req;
      req.set_container_id(container_);
      req.set_ttl_seconds(300);
      v1::GrantLauncherResponse out;
      grpc::Status s = Call(broker_.get(), &v1::Broker::Stub::GrantLauncher, req, &out);
      last = s.error_message();
      token = out.token();
      return s.ok();
    });
    EXPECT_FALSE(token.empty()) << last;
    return token;
  }

  // The tenant's billed bytes as the broker reports them (the agent's
  // heartbeats), and the container's state.
  uint64_t BilledAtBroker() {
    v1::GetUsageRequest req;
    req.set_tenant_id("acme");
    v1::GetUsageResponse out;
    grpc::Status s = Call(broker_.get(), &v1::Broker::Stub::GetUsage, req, &out);
    if (!s.ok() || out.tenants_size() == 0) return ~uint64_t{0};
    return out.tenants(0).pinned_bytes();
  }
  v1::ContainerState ContainerState() {
    v1::GetContainerRequest req;
    req.set_container_id(container_);
    v1::Container out;
    grpc::Status s = Call(broker_.get(), &v1::Broker::Stub::GetContainer, req, &out);
    return s.ok() ? out.state() : v1::CONTAINER_STATE_UNSPECIFIED;
  }

  // A launcher session with `pages` 4 KiB pages of one memfd mapped at the
  // window's base; returns the client and the SessionOpened.
  struct Launcher {
    std::unique_ptr<LauncherClient> client;
    v1::LauncherResponse::SessionOpened session;
    std::string memory_id;
    uint64_t base = 0;
  };
  Launcher OpenAndMap(uint64_t bytes) {
    Launcher l;
    absl::StatusOr<std::unique_ptr<LauncherClient>> c = LauncherClient::Connect(Socket());
    EXPECT_TRUE(c.ok()) << c.status();
    if (!c.ok()) return l;
    l.client = *std::move(c);
    absl::StatusOr<v1::LauncherResponse::SessionOpened> opened = l.client->OpenSession(Grant());
    EXPECT_TRUE(opened.ok()) << opened.status();
    if (!opened.ok()) return l;
    l.session = *opened;
    EXPECT_EQ(l.session.resume_token().size(), 64u);
    absl::StatusOr<UniqueFd> memfd = LauncherClient::CreateMemfd(bytes, "guest");
    EXPECT_TRUE(memfd.ok()) << memfd.status();
    absl::StatusOr<v1::LauncherResponse::MemoryRegistered> reg =
        l.client->RegisterMemory(memfd->get(), "guest");
    EXPECT_TRUE(reg.ok()) << reg.status();
    if (!reg.ok()) return l;
    l.memory_id = reg->memory_id();
    l.base = l.session.windows(0).base();
    EXPECT_OK(l.client->Map(l.memory_id, 0, bytes, l.base, true, true));
    return l;
  }

  void WaitForBilled(uint64_t want) {
    uint64_t seen = 0;
    EXPECT_TRUE(PollUntil([&] { return (seen = BilledAtBroker()) == want; }, absl::Seconds(15)))
        << "billed " << seen << ", want " << want << "\n"
        << cluster_.agent("n1").Log();
  }

  Cluster cluster_;
  std::unique_ptr<v1::Broker::Stub> broker_;
  Holder holder_;
  std::string container_;
};

// kill -9 while a launcher holds a session: the new run adopts the container
// (READY, same billing), the old token is refused, and the launcher resumes
// with its resume token: its mappings and memory ids are as they were.
TEST_F(AgentRestartTest, Kill9KeepsContainerBillingAndTheSessionWhichTheLauncherResumes) {
  StartAgent(AgentFlags());
  ASSERT_NO_FATAL_FAILURE(MakeTenantAndContainer());
  Launcher l = OpenAndMap(2 * kMiB);
  ASSERT_FALSE(HasFailure());
  WaitForBilled(2 * kMiB);

  // StartAgent kills the old process with SIGKILL first.
  StartAgent(AgentFlags());
  EXPECT_THAT(cluster_.agent("n1").Log(), HasSubstr("containers_adopted=1"));
  EXPECT_EQ(ContainerState(), v1::CONTAINER_STATE_READY);
  WaitForBilled(2 * kMiB);

  // The old connection is gone with the old process.
  EXPECT_FALSE(l.client->ListMappings().ok());
  ASSERT_OK_AND_ASSIGN(again, LauncherClient::Connect(Socket()));
  EXPECT_THAT(again->ResumeSession(l.session.session_id(), std::string(64, '0')).status(),
              StatusIs(absl::StatusCode::kUnauthenticated, "resume_token"));
  ASSERT_OK_AND_ASSIGN(resumer, LauncherClient::Connect(Socket()));
  ASSERT_OK_AND_ASSIGN(resumed,
                       resumer->ResumeSession(l.session.session_id(), l.session.resume_token()));
  EXPECT_EQ(resumed.container_id(), container_);
  ASSERT_OK_AND_ASSIGN(mappings, resumer->ListMappings());
  ASSERT_EQ(mappings.size(), 1u);
  EXPECT_EQ(mappings[0].iova(), l.base);
  EXPECT_EQ(mappings[0].length(), 2 * kMiB);
  // The memory id is still good: map one more MiB of it next to the first.
  EXPECT_OK(resumer->Map(l.memory_id, 0, kMiB, l.base + 2 * kMiB, true, false));
  WaitForBilled(2 * kMiB);  // The same pages: billed once.
  // Resumed once only.
  ASSERT_OK_AND_ASSIGN(twice, LauncherClient::Connect(Socket()));
  EXPECT_THAT(twice->ResumeSession(l.session.session_id(), l.session.resume_token()).status(),
              StatusIs(absl::StatusCode::kUnauthenticated, "resume_token"));

  // Ending the resumed session releases everything.
  resumer.reset();
  WaitForBilled(0);
}

// An upgrade: SIGTERM, then a new process. The session survives the graceful
// stop too (the agent keeps its state for the next run instead of unmapping).
TEST_F(AgentRestartTest, GracefulStopKeepsTheSessionForTheNextRun) {
  StartAgent(AgentFlags());
  ASSERT_NO_FATAL_FAILURE(MakeTenantAndContainer());
  Launcher l = OpenAndMap(kMiB);
  ASSERT_FALSE(HasFailure());
  WaitForBilled(kMiB);
  EXPECT_EQ(cluster_.agent("n1").Stop(), 0);
  EXPECT_THAT(cluster_.agent("n1").Log(), HasSubstr("keeping_state_for_restart"));
  StartAgent(AgentFlags());
  WaitForBilled(kMiB);
  ASSERT_OK_AND_ASSIGN(resumer, LauncherClient::Connect(Socket()));
  ASSERT_OK(resumer->ResumeSession(l.session.session_id(), l.session.resume_token()).status());
  ASSERT_OK_AND_ASSIGN(mappings, resumer->ListMappings());
  EXPECT_EQ(mappings.size(), 1u);
}

// A launcher that died while the agent was down never resumes: its session
// is closed after --session-resume-timeout and billing follows.
TEST_F(AgentRestartTest, ASessionNobodyResumesIsClosedAndStopsBeingBilled) {
  StartAgent(AgentFlags({"--session-resume-timeout=1s"}));
  ASSERT_NO_FATAL_FAILURE(MakeTenantAndContainer());
  {
    Launcher l = OpenAndMap(kMiB);
    ASSERT_FALSE(HasFailure());
    WaitForBilled(kMiB);
    StartAgent(AgentFlags({"--session-resume-timeout=1s"}));
  }  // The launcher is gone too.
  EXPECT_TRUE(PollUntil([&] {
    return cluster_.agent("n1").Log().find("session_not_resumed") != std::string::npos;
  })) << cluster_.agent("n1").Log();
  WaitForBilled(0);
  EXPECT_EQ(ContainerState(), v1::CONTAINER_STATE_READY);
}

// Without an fd store the container's kernel objects die with the process:
// the new run says so, keeps the mappings billed until the backend can make
// the address space again (at once on the simulator, whose "kernel" died with
// the process), and the container is READY again, empty.
TEST_F(AgentRestartTest, WithoutAnFdStoreTheContainerIsRemadeAndBillingFollows) {
  StartAgent({"--fd-store=none"});
  ASSERT_NO_FATAL_FAILURE(MakeTenantAndContainer());
  Launcher l = OpenAndMap(kMiB);
  ASSERT_FALSE(HasFailure());
  WaitForBilled(kMiB);
  StartAgent({"--fd-store=none"});
  const std::string log = cluster_.agent("n1").Log();
  EXPECT_THAT(log, HasSubstr("restart_loses_containers"));
  EXPECT_THAT(log, HasSubstr("containers_orphaned=1"));
  WaitForBilled(0);
  EXPECT_TRUE(PollUntil([&] { return ContainerState() == v1::CONTAINER_STATE_READY; }));
  ASSERT_OK_AND_ASSIGN(resumer, LauncherClient::Connect(Socket()));
  EXPECT_THAT(resumer->ResumeSession(l.session.session_id(), l.session.resume_token()).status(),
              StatusIs(absl::StatusCode::kFailedPrecondition, "could not be adopted"));
}

// The fd holder gone at start: the agent refuses to start (saying why) and
// forgets nothing; with the holder back, the container is adopted.
TEST_F(AgentRestartTest, AnUnreachableHolderStopsTheStartAndLosesNothing) {
  StartAgent(AgentFlags());
  ASSERT_NO_FATAL_FAILURE(MakeTenantAndContainer());
  Launcher l = OpenAndMap(kMiB);
  ASSERT_FALSE(HasFailure());
  WaitForBilled(kMiB);
  cluster_.agent("n1").Kill();
  const std::string dir = cluster_.dir();
  // A holder socket nobody listens on.
  absl::Status s = cluster_.StartAgent(
      "n1", kTwoEdus, {absl::StrCat("--fd-store=holder:", dir, "/nobody.sock")});
  EXPECT_FALSE(s.ok());
  EXPECT_THAT(cluster_.agent("n1").Log(), HasSubstr("fd_store"));
  EXPECT_THAT(cluster_.agent("n1").Log(), HasSubstr("nobody.sock"));
  StartAgent(AgentFlags());
  EXPECT_THAT(cluster_.agent("n1").Log(), HasSubstr("containers_adopted=1"));
  WaitForBilled(kMiB);
}

// A second agent on the same state directory is refused: two runs must never
// both believe they own the kernel objects the journal names.
TEST_F(AgentRestartTest, TwoAgentsCannotShareAStateDirectory) {
  StartAgent(AgentFlags());
  const std::string state = absl::StrCat(cluster_.dir(), "/n1.state");
  absl::Status s = cluster_.StartAgent(
      "n2", kTwoEdus, {absl::StrCat("--state-dir=", state), "--fd-store=none"});
  EXPECT_FALSE(s.ok());
  EXPECT_THAT(cluster_.agent("n2").Log(), HasSubstr("in use by another agent"));
}

// The agent runs as root and restores whatever the journal names: a state
// directory or journal others may write is refused before it is read, and
// the agent says which path, what it found and how to fix it.
TEST_F(AgentRestartTest, AStateDirectoryOthersMayWriteIsRefusedAtStart) {
  StartAgent(AgentFlags());
  EXPECT_EQ(cluster_.agent("n1").Stop(), 0);
  const std::string state = absl::StrCat(cluster_.dir(), "/n1.state");
  ASSERT_EQ(::chmod(state.c_str(), 0777), 0);
  EXPECT_FALSE(cluster_.StartAgent("n1", kTwoEdus, AgentFlags()).ok());
  const int status = cluster_.agent("n1").early_exit_status();
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) != 0) << status;
  EXPECT_THAT(cluster_.agent("n1").Log(),
              HasSubstr(absl::StrCat(state, " is owned by uid ", ::geteuid(), " with mode 0777")));
  EXPECT_THAT(cluster_.agent("n1").Log(), HasSubstr(absl::StrCat("chmod 0700 ", state)));

  // The same for the journal itself.
  ASSERT_EQ(::chmod(state.c_str(), 0700), 0);
  const std::string journal = absl::StrCat(state, "/journal.db");
  ASSERT_EQ(::chmod(journal.c_str(), 0666), 0);
  EXPECT_FALSE(cluster_.StartAgent("n1", kTwoEdus, AgentFlags()).ok());
  EXPECT_THAT(cluster_.agent("n1").Log(), HasSubstr(absl::StrCat(journal, " is owned by uid")));
  EXPECT_THAT(cluster_.agent("n1").Log(), HasSubstr("writable by group and others"));

  // Fixed as the message says, the agent starts and restores.
  ASSERT_EQ(::chmod(journal.c_str(), 0600), 0);
  StartAgent(AgentFlags());
}

}  // namespace
}  // namespace iommu::testing
