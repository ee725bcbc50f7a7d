// LauncherSessions driven directly (OnConnect / OnRequest / OnDisconnect, no
// socket) over a real AgentCore and SimBackend, with tokens signed by
// SignGrant and an injected clock: token checks, session rules, memory
// registration from real memfds, maps inside windows, and that a closed
// connection leaves no pins, no billing and no fds behind (DESIGN.md
// "Launchers never hold the IOMMU side", invariants 2, 3, 4, 7, 8).
#include "agent/launcher_sessions.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "agent/agent_core.h"
#include "agent/mapping_page.h"
#include "agent/sim_backend.h"
#include "common/status_matchers.h"
#include "common/unique_fd.h"
#include "common/unix_socket.h"
#include "common/grant_token.h"
#include "common/validation.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "proto/launcher.pb.h"

namespace iommu {
namespace agent {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::StartsWith;
using Code = absl::StatusCode;

constexpr uint64_t kPage = 4096;
constexpr uint64_t kMiB = 1 << 20;

// Groups: 5 = {04.0}, 6 = {05.0, 05.1}, 8 = {07.0}, 9 = {08.0}.
constexpr char kDevices[] =
    "0000:00:04.0=1234:11e8@5,0000:00:05.0=1234:11e8@6,"
    "0000:00:05.1=1234:11e9@6,0000:00:07.0=1af4:1041@8,"
    "0000:00:08.0=1af4:1041@9";

constexpr char kC1[] = "c-0000000000000001";  // acme, 04.0, 64 MiB budget.
constexpr char kC2[] = "c-0000000000000002";  // globex, 07.0, 4 pages budget.
constexpr char kC3[] = "c-0000000000000003";  // acme, 05.0 + 05.1.
constexpr char kNotHeld[] = "c-00000000000000ee";

constexpr char kKey[] = "0123456789abcdef0123456789abcdef";
constexpr char kOtherKey[] = "fedcba9876543210fedcba9876543210";

constexpr uid_t kUid = 1000;
constexpr int64_t kStartMs = 1'700'000'000'000;

// Windows every grant names unless a test says otherwise.
constexpr uint64_t kW1Base = 0x100000, kW1Size = 0x100000;      // 1 MiB at 1 MiB.
constexpr uint64_t kW2Base = 0x40000000, kW2Size = 0x200000;    // 2 MiB at 1 GiB.

// Open fds of this process (the directory's own fd counts the same every time).
int CountOpenFds() {
  DIR* dir = opendir("/proc/self/fd");
  if (dir == nullptr) return -1;
  int n = 0;
  while (dirent* e = readdir(dir)) {
    if (e->d_name[0] != '.') ++n;
  }
  closedir(dir);
  return n;
}

UniqueFd Memfd(uint64_t size) {
  UniqueFd fd(memfd_create("guest", MFD_CLOEXEC | MFD_ALLOW_SEALING));
  EXPECT_TRUE(fd.valid()) << "memfd_create: " << errno;
  EXPECT_EQ(ftruncate(fd.get(), static_cast<off_t>(size)), 0);
  return fd;
}

UniqueFd Dup(const UniqueFd& fd) { return UniqueFd(fcntl(fd.get(), F_DUPFD_CLOEXEC, 0)); }

absl::Status StatusOf(const v1::LauncherResponse& r) {
  return absl::Status(static_cast<absl::StatusCode>(r.code()), r.message());
}

v1::LauncherRequest OpenReq(const std::string& token) {
  v1::LauncherRequest req;
  req.set_seq(1);
  req.mutable_open_session()->set_token(token);
  return req;
}

v1::LauncherRequest RegisterReq(const std::string& name = "guest") {
  v1::LauncherRequest req;
  req.set_seq(2);
  req.mutable_register_memory()->set_name(name);
  return req;
}

v1::LauncherRequest MapReq(const std::string& memory_id, uint64_t offset, uint64_t length,
                           uint64_t iova, bool readable = true, bool writable = true) {
  v1::LauncherRequest req;
  req.set_seq(3);
  auto* m = req.mutable_map();
  m->set_memory_id(memory_id);
  m->set_offset(offset);
  m->set_length(length);
  m->set_iova(iova);
  m->set_readable(readable);
  m->set_writable(writable);
  return req;
}

v1::LauncherRequest UnmapReq(uint64_t iova, uint64_t length) {
  v1::LauncherRequest req;
  req.set_seq(4);
  req.mutable_unmap()->set_iova(iova);
  req.mutable_unmap()->set_length(length);
  return req;
}

v1::LauncherRequest ListReq() {
  v1::LauncherRequest req;
  req.set_seq(5);
  req.mutable_list_mappings();
  return req;
}

v1::LauncherRequest DevicesReq() {
  v1::LauncherRequest req;
  req.set_seq(6);
  req.mutable_get_devices();
  return req;
}

// SignGrant for grants that must sign; a failure fails the test.
std::string Signed(const v1::LauncherGrant& grant, absl::string_view key) {
  absl::StatusOr<std::string> token = SignGrant(grant, key);
  EXPECT_TRUE(token.ok()) << token.status();
  return token.ok() ? *token : std::string();
}

class LauncherSessionsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    fds_at_start_ = CountOpenFds();
    absl::StatusOr<std::vector<SimDeviceSpec>> specs = ParseSimDevices(kDevices);
    ASSERT_OK(specs);
    absl::StatusOr<std::unique_ptr<SimBackend>> backend = SimBackend::Create(*std::move(specs));
    ASSERT_OK(backend);
    backend_ = *std::move(backend);
    core_ = std::make_unique<AgentCore>("n1", backend_.get());
    ASSERT_OK(core_->CreateContainer(kC1, "acme", {"0000:00:04.0"}, 64 * kMiB));
    ASSERT_OK(core_->CreateContainer(kC2, "globex", {"0000:00:07.0"}, 4 * kPage));
    ASSERT_OK(core_->CreateContainer(kC3, "acme", {"0000:00:05.1", "0000:00:05.0"}, 0));
    // The broker pushes a container's windows before it grants a token
    // naming them: every container holds the windows Grant() signs.
    for (const char* c : {kC1, kC2, kC3}) {
      absl::StatusOr<size_t> revoked = core_->SetWindows(c, GrantedWindows());
      ASSERT_OK(revoked);
      ASSERT_EQ(*revoked, 0u);
    }
    core_->SetGrantKey(kKey);
    options_.now_ms = [this] { return now_ms_; };
    MakeSessions();
  }

  void TearDown() override {
    // The server disconnects every connection when it stops.
    for (uint64_t conn : connected_) sessions_->OnDisconnect(conn);
    EXPECT_EQ(sessions_->session_count(), 0u);
    EXPECT_THAT(core_->Usage(), IsEmpty());
    sessions_.reset();
    core_.reset();
    backend_.reset();
    EXPECT_EQ(CountOpenFds(), fds_at_start_) << "fds leaked";
  }

  void MakeSessions() {
    sessions_ = std::make_unique<LauncherSessions>(core_.get(), options_);
  }

  uint64_t Connect(uid_t uid = kUid) {
    const uint64_t conn = next_conn_++;
    PeerCred peer;
    peer.pid = 4242;
    peer.uid = uid;
    peer.gid = uid;
    EXPECT_OK(sessions_->OnConnect(conn, peer));
    connected_.push_back(conn);
    return conn;
  }

  // The windows Grant() names, as the inclusive ranges the core keeps.
  static std::vector<IovaRange> GrantedWindows() {
    return {{kW1Base, kW1Base + kW1Size - 1}, {kW2Base, kW2Base + kW2Size - 1}};
  }

  v1::LauncherGrant Grant(const std::string& container = kC1,
                          const std::string& tenant = "acme") {
    v1::LauncherGrant g;
    g.set_token_id(NewGrantTokenId());
    g.set_node("n1");
    g.set_agent_incarnation(core_->incarnation());
    g.set_container_id(container);
    g.set_tenant_id(tenant);
    auto* w1 = g.add_windows();
    w1->set_window_id("w-0000000000000001");
    w1->set_base(kW1Base);
    w1->set_size(kW1Size);
    auto* w2 = g.add_windows();
    w2->set_window_id("w-0000000000000002");
    w2->set_base(kW2Base);
    w2->set_size(kW2Size);
    g.set_issued_ms(now_ms_);
    g.set_expires_ms(now_ms_ + 60'000);
    return g;
  }

  std::vector<int> last_out_fds_;  // Owned by the sessions until the next request.

  v1::LauncherResponse Send(uint64_t conn, const v1::LauncherRequest& req,
                            std::vector<UniqueFd> fds = {}) {
    v1::LauncherResponse response;
    std::vector<int> out_fds;
    sessions_->OnRequest(conn, req, std::move(fds), &response, &out_fds);
    // Only GetDevices hands out fds: one per device address, each the sim's
    // stand-in memfd for that device.
    if (req.op_case() == v1::LauncherRequest::kGetDevices && response.code() == 0) {
      EXPECT_EQ(out_fds.size(), static_cast<size_t>(response.devices().addresses_size()));
      for (size_t i = 0; i < out_fds.size(); ++i) {
        char link[256] = {};
        const std::string path = "/proc/self/fd/" + std::to_string(out_fds[i]);
        ssize_t n = readlink(path.c_str(), link, sizeof(link) - 1);
        EXPECT_GT(n, 0);
        EXPECT_THAT(std::string(link), HasSubstr("sim-device-" + response.devices().addresses(i)));
      }
    } else {
      EXPECT_THAT(out_fds, IsEmpty());
    }
    last_out_fds_ = out_fds;
    if (response.code() != 0) {
      EXPECT_EQ(response.result_case(), v1::LauncherResponse::RESULT_NOT_SET)
          << "a refusal carries no result";
    }
    return response;
  }

  v1::LauncherResponse Open(uint64_t conn, const std::string& token) {
    return Send(conn, OpenReq(token));
  }

  // A connection with an open session on `container` of `tenant`.
  uint64_t OpenSession(const std::string& container = kC1, const std::string& tenant = "acme") {
    const uint64_t conn = Connect();
    v1::LauncherResponse r = Open(conn, Signed(Grant(container, tenant), kKey));
    EXPECT_OK(StatusOf(r));
    return conn;
  }

  v1::LauncherResponse Register(uint64_t conn, UniqueFd fd) {
    std::vector<UniqueFd> fds;
    fds.push_back(std::move(fd));
    return Send(conn, RegisterReq(), std::move(fds));
  }

  // Registers a fresh memfd of `size` bytes and returns its memory id.
  std::string RegisterNew(uint64_t conn, uint64_t size) {
    v1::LauncherResponse r = Register(conn, Memfd(size));
    EXPECT_OK(StatusOf(r));
    return r.memory_registered().memory_id();
  }

  uint64_t Billed(const std::string& tenant) {
    for (const v1::PinUsage& u : core_->Usage()) {
      if (u.tenant_id() == tenant) return u.billed_bytes();
    }
    return 0;
  }

  // Everything a refusal must leave alone.
  std::string Snapshot() {
    std::string out = absl::StrCat("sessions=", sessions_->session_count(), "\n");
    for (const char* c : {kC1, kC2, kC3}) {
      absl::StatusOr<v1::AgentGetContainerResponse> got = core_->GetContainer(c);
      out += got.ok() ? got->DebugString() : got.status().ToString();
    }
    for (const v1::PinUsage& u : core_->Usage()) out += u.DebugString();
    for (ContainerHandle h = 1; h <= 3; ++h) {
      absl::StatusOr<std::vector<BackendMapping>> m = backend_->ListMappings(h);
      out += absl::StrCat("handle ", h, ": ", m.ok() ? m->size() : 999, "\n");
    }
    return out;
  }

  int fds_at_start_ = 0;
  int64_t now_ms_ = kStartMs;
  std::unique_ptr<SimBackend> backend_;
  std::unique_ptr<AgentCore> core_;
  LauncherSessionOptions options_;
  std::unique_ptr<LauncherSessions> sessions_;
  uint64_t next_conn_ = 1;
  std::vector<uint64_t> connected_;
};

// ---------------------------------------------------------------- tokens

TEST_F(LauncherSessionsTest, ValidTokenOpensSessionBoundToItsContainer) {
  const uint64_t conn = Connect();
  v1::LauncherGrant grant = Grant();
  v1::LauncherResponse r = Open(conn, Signed(grant, kKey));
  ASSERT_OK(StatusOf(r));
  ASSERT_TRUE(r.has_session_opened());
  const auto& opened = r.session_opened();
  EXPECT_THAT(opened.session_id(), StartsWith("s-"));
  EXPECT_EQ(opened.container_id(), kC1);
  EXPECT_EQ(opened.tenant_id(), "acme");
  ASSERT_EQ(opened.windows_size(), 2);
  EXPECT_EQ(opened.windows(0).base(), kW1Base);
  EXPECT_EQ(opened.windows(1).size(), kW2Size);
  EXPECT_EQ(opened.expires_ms(), grant.expires_ms());
  EXPECT_EQ(sessions_->session_count(), 1u);
}

// Regression (issue 11, C): the used-token set lives in memory and the key
// survives a restart, so a token used before an agent restart opened a
// second session after it. Tokens are now bound to one run of the agent.
TEST_F(LauncherSessionsTest, TokenUsedBeforeARestartIsRefusedAfterIt) {
  const std::string token = Signed(Grant(), kKey);
  EXPECT_OK(StatusOf(Open(Connect(), token)));

  // The restarted agent: a new AgentCore (a new incarnation) with the same
  // key, the same container, and an empty replay cache.
  absl::StatusOr<std::vector<SimDeviceSpec>> specs = ParseSimDevices(kDevices);
  ASSERT_OK(specs);
  absl::StatusOr<std::unique_ptr<SimBackend>> backend = SimBackend::Create(*std::move(specs));
  ASSERT_OK(backend);
  auto core = std::make_unique<AgentCore>("n1", backend->get());
  EXPECT_NE(core->incarnation(), core_->incarnation());
  ASSERT_OK(core->CreateContainer(kC1, "acme", {"0000:00:04.0"}, 64 * kMiB));
  ASSERT_OK(core->SetWindows(kC1, GrantedWindows()).status());
  core->SetGrantKey(kKey);
  auto restarted = std::make_unique<LauncherSessions>(core.get(), options_);
  PeerCred peer;
  peer.pid = 4242;
  peer.uid = kUid;
  peer.gid = kUid;
  ASSERT_OK(restarted->OnConnect(1, peer));
  auto open = [&](const std::string& t) {
    v1::LauncherResponse response;
    std::vector<int> out_fds;
    restarted->OnRequest(1, OpenReq(t), {}, &response, &out_fds);
    return StatusOf(response);
  };
  EXPECT_THAT(open(token),
              StatusIs(Code::kUnauthenticated,
                       "token: issued to an earlier run of this agent (it restarted since); ask "
                       "the broker for a new grant"));
  // A grant without an incarnation (a broker that does not bind them) too.
  v1::LauncherGrant unbound = Grant();
  unbound.clear_agent_incarnation();
  EXPECT_THAT(open(Signed(unbound, kKey)),
              StatusIs(Code::kUnauthenticated, "issued to an earlier run of this agent"));
  EXPECT_EQ(restarted->session_count(), 0u);
  // A grant for the new run opens.
  v1::LauncherGrant fresh = Grant();
  fresh.set_agent_incarnation(core->incarnation());
  EXPECT_OK(open(Signed(fresh, kKey)));
  restarted->OnDisconnect(1);
  restarted.reset();
  core.reset();
}

TEST_F(LauncherSessionsTest, RefusesOpenUntilAgentHasAKeyAndKeepsTheTokenUsable) {
  core_->SetGrantKey("");
  const uint64_t conn = Connect();
  const std::string token = Signed(Grant(), kKey);
  EXPECT_THAT(StatusOf(Open(conn, token)),
              StatusIs(Code::kUnavailable, "token: this agent has not registered"));
  EXPECT_EQ(sessions_->session_count(), 0u);
  core_->SetGrantKey(kKey);
  EXPECT_OK(StatusOf(Open(conn, token)));
}

TEST_F(LauncherSessionsTest, RefusesGarbageTokens) {
  const uint64_t conn = Connect();
  const std::string before = Snapshot();
  for (const std::string& token :
       {std::string(""), std::string("hello"), std::string("v1.AAAA.BBBB"),
        std::string("v2.") + Signed(Grant(), kKey).substr(3), std::string(5000, 'a')}) {
    EXPECT_THAT(StatusOf(Open(conn, token)), StatusIs(Code::kUnauthenticated, "token: malformed"))
        << token.substr(0, 40);
  }
  EXPECT_EQ(Snapshot(), before);
}

TEST_F(LauncherSessionsTest, RefusesTamperedToken) {
  const uint64_t conn = Connect();
  std::string token = Signed(Grant(), kKey);
  // Flip one base64 digit in the middle of the payload: still canonical
  // base64, another payload under the same MAC.
  const size_t dot = token.find('.', 3);
  const size_t i = 3 + (dot - 3) / 2;
  token[i] = token[i] == 'A' ? 'B' : 'A';
  const std::string before = Snapshot();
  EXPECT_THAT(StatusOf(Open(conn, token)),
              StatusIs(Code::kUnauthenticated, "token: bad signature"));
  EXPECT_EQ(Snapshot(), before);
}

TEST_F(LauncherSessionsTest, RefusesTokenSignedWithAnotherKey) {
  const uint64_t conn = Connect();
  EXPECT_THAT(StatusOf(Open(conn, Signed(Grant(), kOtherKey))),
              StatusIs(Code::kUnauthenticated, "token: bad signature"));
  EXPECT_EQ(sessions_->session_count(), 0u);
}

TEST_F(LauncherSessionsTest, RefusesExpiredTokenIncludingExactlyAtExpiry) {
  const uint64_t conn = Connect();
  v1::LauncherGrant grant = Grant();
  const std::string token = Signed(grant, kKey);
  now_ms_ = grant.expires_ms() + 1;
  EXPECT_THAT(StatusOf(Open(conn, token)),
              StatusIs(Code::kUnauthenticated,
                       absl::StrCat("token: expired at ", grant.expires_ms())));
  now_ms_ = grant.expires_ms();
  EXPECT_THAT(StatusOf(Open(conn, token)), StatusIs(Code::kUnauthenticated, "token: expired"));
  EXPECT_EQ(sessions_->session_count(), 0u);
  now_ms_ = grant.expires_ms() - 1;  // The last valid millisecond.
  EXPECT_OK(StatusOf(Open(conn, token)));
}

TEST_F(LauncherSessionsTest, ReplayOnSecondConnectionIsRefused) {
  const std::string token = Signed(Grant(), kKey);
  const uint64_t first = Connect();
  ASSERT_OK(StatusOf(Open(first, token)));
  const uint64_t second = Connect();
  const std::string before = Snapshot();
  EXPECT_THAT(StatusOf(Open(second, token)),
              StatusIs(Code::kUnauthenticated, "token: already used"));
  EXPECT_EQ(Snapshot(), before);
  // Still refused after the first session ended: single use means single use.
  sessions_->OnDisconnect(first);
  EXPECT_THAT(StatusOf(Open(second, token)),
              StatusIs(Code::kUnauthenticated, "token: already used"));
  // The second connection can still open with a token of its own.
  EXPECT_OK(StatusOf(Open(second, Signed(Grant(), kKey))));
}

TEST_F(LauncherSessionsTest, RefusesTokenForAnotherNode) {
  const uint64_t conn = Connect();
  v1::LauncherGrant grant = Grant();
  grant.set_node("n2");
  EXPECT_THAT(StatusOf(Open(conn, Signed(grant, kKey))),
              StatusIs(Code::kUnauthenticated, "token: issued for node \"n2\", this is node \"n1\""));
  EXPECT_EQ(sessions_->session_count(), 0u);
}

TEST_F(LauncherSessionsTest, RefusesTokenForContainerNotHeld) {
  const uint64_t conn = Connect();
  EXPECT_THAT(StatusOf(Open(conn, Signed(Grant(kNotHeld, "acme"), kKey))),
              StatusIs(Code::kNotFound, absl::StrCat("container_id: ", kNotHeld)));
  EXPECT_EQ(sessions_->session_count(), 0u);
}

TEST_F(LauncherSessionsTest, RefusesTokenWhoseTenantDoesNotOwnTheContainer) {
  const uint64_t conn = Connect();
  EXPECT_THAT(StatusOf(Open(conn, Signed(Grant(kC1, "globex"), kKey))),
              StatusIs(Code::kUnauthenticated,
                       absl::StrCat("token: container ", kC1,
                                    " does not belong to tenant \"globex\"")));
  EXPECT_EQ(sessions_->session_count(), 0u);
}

TEST_F(LauncherSessionsTest, LauncherUidMustMatchPeerAndRefusalKeepsTokenUsable) {
  v1::LauncherGrant grant = Grant();
  grant.set_launcher_uid(2000);
  const std::string token = Signed(grant, kKey);
  const uint64_t wrong = Connect(kUid);
  EXPECT_THAT(StatusOf(Open(wrong, token)),
              StatusIs(Code::kPermissionDenied, "token: issued for uid 2000, presented by uid 1000"));
  EXPECT_EQ(sessions_->session_count(), 0u);
  const uint64_t right = Connect(2000);
  EXPECT_OK(StatusOf(Open(right, token)));
  EXPECT_EQ(sessions_->session_count(), 1u);
}

TEST_F(LauncherSessionsTest, AllowedUidsRefusesOtherPeersAtConnect) {
  options_.allowed_uids = {kUid};
  MakeSessions();
  PeerCred stranger;
  stranger.pid = 77;
  stranger.uid = 2000;
  EXPECT_THAT(sessions_->OnConnect(99, stranger),
              StatusIs(Code::kPermissionDenied,
                       "peer: uid 2000 may not use this agent's launcher socket"));
  // A refused connection has no state: a request on it is not served.
  EXPECT_THAT(StatusOf(Send(99, OpenReq(Signed(Grant(), kKey)))),
              StatusIs(Code::kInternal, "connection unknown"));
  EXPECT_EQ(sessions_->session_count(), 0u);
  const uint64_t conn = Connect(kUid);
  EXPECT_OK(StatusOf(Open(conn, Signed(Grant(), kKey))));
}

TEST_F(LauncherSessionsTest, AllowedGidsRefusesOtherPeersAtConnect) {
  options_.allowed_gids = {107};
  MakeSessions();
  PeerCred peer;
  peer.pid = 77;
  peer.uid = kUid;
  peer.gid = kUid;
  EXPECT_THAT(sessions_->OnConnect(99, peer),
              StatusIs(Code::kPermissionDenied,
                       "peer: gid 1000 may not use this agent's launcher socket"));
  EXPECT_THAT(StatusOf(Send(99, OpenReq(Signed(Grant(), kKey)))),
              StatusIs(Code::kInternal, "connection unknown"));
  EXPECT_EQ(sessions_->peer_connections(kUid), 0u);
  peer.gid = 107;
  ASSERT_OK(sessions_->OnConnect(100, peer));
  connected_.push_back(100);
  EXPECT_OK(StatusOf(Open(100, Signed(Grant(), kKey))));
}

TEST_F(LauncherSessionsTest, ConnectionsPerPeerAreLimitedAndFreedOnDisconnect) {
  options_.max_sessions_per_peer = 2;
  MakeSessions();
  const uint64_t a = OpenSession();
  const uint64_t idle = Connect();  // No session yet: it holds a slot all the same.
  EXPECT_EQ(sessions_->peer_connections(kUid), 2u);
  const std::string before = Snapshot();
  PeerCred peer;
  peer.pid = 4243;
  peer.uid = kUid;
  peer.gid = kUid;
  EXPECT_THAT(sessions_->OnConnect(50, peer),
              StatusIs(Code::kResourceExhausted,
                       "peer: uid 1000 already holds 2 launcher connections (limit 2 per uid)"));
  EXPECT_EQ(Snapshot(), before);
  EXPECT_EQ(sessions_->peer_connections(kUid), 2u);
  // Another uid is not held back by this one.
  const uint64_t stranger = Connect(2000);
  EXPECT_EQ(sessions_->peer_connections(2000), 1u);
  // A closed connection frees its slot, session or not.
  sessions_->OnDisconnect(idle);
  EXPECT_EQ(sessions_->peer_connections(kUid), 1u);
  const uint64_t b = OpenSession();
  EXPECT_EQ(sessions_->session_count(), 2u);
  sessions_->OnDisconnect(a);
  sessions_->OnDisconnect(b);
  sessions_->OnDisconnect(stranger);
  EXPECT_EQ(sessions_->peer_connections(kUid), 0u);
  EXPECT_EQ(sessions_->peer_connections(2000), 0u);
}

TEST_F(LauncherSessionsTest, ValidateOptionsNamesTheFlagAndTheRule) {
  EXPECT_OK(ValidateLauncherSessionOptions(LauncherSessionOptions()));
  LauncherSessionOptions o;
  o.max_sessions_per_peer = 0;
  EXPECT_THAT(ValidateLauncherSessionOptions(o),
              StatusIs(Code::kInvalidArgument, "max_sessions_per_peer: must be at least 1"));
  o = LauncherSessionOptions();
  o.max_memory_objects = 0;
  EXPECT_THAT(ValidateLauncherSessionOptions(o),
              StatusIs(Code::kInvalidArgument, "max_session_memory_objects: must be at least 1"));
  o = LauncherSessionOptions();
  o.max_memory_bytes = 4095;
  EXPECT_THAT(ValidateLauncherSessionOptions(o),
              StatusIs(Code::kInvalidArgument,
                       "max_session_memory_bytes: must be at least 4096 (one page), got 4095"));
  o = LauncherSessionOptions();
  o.allowed_gids = {static_cast<gid_t>(-1)};
  EXPECT_THAT(ValidateLauncherSessionOptions(o),
              StatusIs(Code::kInvalidArgument, "launcher_allowed_gids"));
}

TEST_F(LauncherSessionsTest, SecondOpenOnSameConnectionIsRefusedAndItsTokenStaysUnused) {
  const uint64_t conn = OpenSession();
  const std::string token = Signed(Grant(), kKey);
  const std::string before = Snapshot();
  EXPECT_THAT(StatusOf(Open(conn, token)),
              StatusIs(Code::kFailedPrecondition, "open_session: this connection already holds"));
  EXPECT_EQ(Snapshot(), before);
  EXPECT_OK(StatusOf(Open(Connect(), token)));
}

TEST_F(LauncherSessionsTest, EveryOpBeforeOpenSessionIsRefused) {
  const uint64_t conn = Connect();
  const int fds_before = CountOpenFds();
  for (const v1::LauncherRequest& req :
       {MapReq("m-0000000000000000", 0, kPage, kW1Base), UnmapReq(kW1Base, kPage), ListReq(),
        DevicesReq(), v1::LauncherRequest()}) {
    EXPECT_THAT(StatusOf(Send(conn, req)),
                StatusIs(Code::kFailedPrecondition, "open_session: the first request"))
        << req.ShortDebugString();
  }
  // RegisterMemory too, and the memfd it carried is closed.
  EXPECT_THAT(StatusOf(Register(conn, Memfd(kPage))),
              StatusIs(Code::kFailedPrecondition, "open_session: the first request"));
  EXPECT_EQ(CountOpenFds(), fds_before);
  EXPECT_THAT(core_->Usage(), IsEmpty());
  EXPECT_EQ(sessions_->session_count(), 0u);
}

TEST_F(LauncherSessionsTest, RequestWithoutOpIsRefusedOnceOpen) {
  const uint64_t conn = OpenSession();
  v1::LauncherRequest empty;
  empty.set_seq(9);
  EXPECT_THAT(StatusOf(Send(conn, empty)),
              StatusIs(Code::kInvalidArgument, "op: exactly one operation must be set"));
}

TEST_F(LauncherSessionsTest, FdsOnRequestsThatTakeNoneAreClosedAndRefused) {
  const uint64_t conn = Connect();
  const int fds_before = CountOpenFds();
  // OpenSession with an fd: refused, and the token stays unused.
  const std::string token = Signed(Grant(), kKey);
  {
    std::vector<UniqueFd> fds;
    fds.push_back(Memfd(kPage));
    EXPECT_THAT(StatusOf(Send(conn, OpenReq(token), std::move(fds))),
                StatusIs(Code::kInvalidArgument, "fd: this request takes no fd, got 1"));
  }
  EXPECT_EQ(CountOpenFds(), fds_before);
  ASSERT_OK(StatusOf(Open(conn, token)));
  const std::string memory = RegisterNew(conn, 4 * kPage);
  ASSERT_OK(StatusOf(Send(conn, MapReq(memory, 0, kPage, kW1Base))));
  const int fds_open = CountOpenFds();
  const std::string before = Snapshot();
  for (const v1::LauncherRequest& req :
       {MapReq(memory, kPage, kPage, kW1Base + kPage), UnmapReq(kW1Base, kPage), ListReq(),
        DevicesReq()}) {
    int p[2];
    ASSERT_EQ(pipe2(p, O_CLOEXEC), 0);
    std::vector<UniqueFd> fds;
    fds.emplace_back(p[0]);
    fds.emplace_back(p[1]);
    EXPECT_THAT(StatusOf(Send(conn, req, std::move(fds))),
                StatusIs(Code::kInvalidArgument, "fd: this request takes no fd, got 2"))
        << req.ShortDebugString();
    EXPECT_EQ(CountOpenFds(), fds_open) << req.ShortDebugString();
  }
  EXPECT_EQ(Snapshot(), before);
}

// ------------------------------------------------- per-tenant bounds
// Regressions (issue 11, B): each shared per-node resource is bounded per
// tenant, so one hostile tenant reaching its bound leaves others served.

TEST_F(LauncherSessionsTest, SessionsPastTheTenantLimitAreRefusedAndOtherTenantsServed) {
  options_.max_sessions_per_tenant = 2;
  MakeSessions();
  const uint64_t a1 = OpenSession(kC1, "acme");
  OpenSession(kC3, "acme");  // The limit counts the tenant, not the container.
  const std::string before = Snapshot();
  const uint64_t third = Connect(2000);  // Nor the uid.
  const std::string token = Signed(Grant(kC1, "acme"), kKey);
  EXPECT_THAT(StatusOf(Open(third, token)),
              StatusIs(Code::kResourceExhausted,
                       "open_session: tenant \"acme\" already holds 2 sessions on this node "
                       "(limit 2 per tenant, --max-sessions-per-tenant)"));
  EXPECT_EQ(Snapshot(), before);
  // Another tenant is not held back.
  OpenSession(kC2, "globex");
  // A closed session frees the slot, and the refused token was not used up.
  sessions_->OnDisconnect(a1);
  EXPECT_OK(StatusOf(Open(third, token)));
}

TEST_F(LauncherSessionsTest, MemoryPastTheTenantLimitIsRefusedAcrossItsSessions) {
  options_.max_memory_bytes_per_tenant = 8 * kPage;
  MakeSessions();
  const uint64_t a1 = OpenSession(kC1, "acme");
  const uint64_t a2 = OpenSession(kC3, "acme");
  RegisterNew(a1, 4 * kPage);
  RegisterNew(a2, 4 * kPage);
  const std::string before = Snapshot();
  EXPECT_THAT(StatusOf(Register(a2, Memfd(kPage))),
              StatusIs(Code::kResourceExhausted,
                       "fd: registering 0x1000 more bytes passes tenant \"acme\"'s limit of "
                       "0x8000 bytes of registered memory on this node "
                       "(--max-memory-bytes-per-tenant; it holds 0x8000)"));
  EXPECT_EQ(Snapshot(), before);
  const uint64_t g = OpenSession(kC2, "globex");
  RegisterNew(g, 4 * kPage);
}

TEST_F(LauncherSessionsTest, UsedTokensPastTheTenantShareAreRefusedAndOtherTenantsServed) {
  options_.replay = ReplayCacheLimits{2, 10};
  MakeSessions();
  for (int i = 0; i < 2; ++i) sessions_->OnDisconnect(OpenSession(kC1, "acme"));
  const uint64_t conn = Connect();
  const std::string token = Signed(Grant(kC1, "acme"), kKey);
  EXPECT_THAT(StatusOf(Open(conn, token)),
              StatusIs(Code::kResourceExhausted,
                       "token: tenant \"acme\" has used 2 unexpired tokens on this node "
                       "(limit 2 per tenant, --replay-cache-per-tenant)"));
  OpenSession(kC2, "globex");
  // Once acme's used tokens expire, its share is back (and they stay refused
  // by VerifyGrant as expired, so nothing forgotten can be replayed).
  now_ms_ += 60'000;
  EXPECT_OK(StatusOf(Open(conn, Signed(Grant(kC1, "acme"), kKey))));
}

TEST_F(LauncherSessionsTest, ValidateRefusesZeroPerTenantLimits) {
  LauncherSessionOptions o;
  EXPECT_OK(ValidateLauncherSessionOptions(o));
  o.max_sessions_per_tenant = 0;
  EXPECT_THAT(ValidateLauncherSessionOptions(o),
              StatusIs(Code::kInvalidArgument, "max_sessions_per_tenant: must be at least 1"));
  o = LauncherSessionOptions();
  o.max_memory_bytes_per_tenant = 100;
  EXPECT_THAT(ValidateLauncherSessionOptions(o),
              StatusIs(Code::kInvalidArgument, "max_memory_bytes_per_tenant: must be at least"));
  o = LauncherSessionOptions();
  o.replay.total = o.replay.per_tenant - 1;
  EXPECT_THAT(ValidateLauncherSessionOptions(o),
              StatusIs(Code::kInvalidArgument, "replay_cache_max: must be at least"));
}

// ---------------------------------------------------------------- memory

TEST_F(LauncherSessionsTest, RegisterMemoryNeedsExactlyOneFd) {
  const uint64_t conn = OpenSession();
  const std::string before = Snapshot();
  const int fds_before = CountOpenFds();
  EXPECT_THAT(StatusOf(Send(conn, RegisterReq())),
              StatusIs(Code::kInvalidArgument, "fd: register_memory takes exactly one fd, got 0"));
  {
    std::vector<UniqueFd> fds;
    fds.push_back(Memfd(kPage));
    fds.push_back(Memfd(kPage));
    EXPECT_THAT(StatusOf(Send(conn, RegisterReq(), std::move(fds))),
                StatusIs(Code::kInvalidArgument, "fd: register_memory takes exactly one fd, got 2"));
  }
  EXPECT_EQ(CountOpenFds(), fds_before);
  EXPECT_EQ(Snapshot(), before);
}

TEST_F(LauncherSessionsTest, RegisterMemoryRefusesWhatIsNotGuestMemory) {
  const uint64_t conn = OpenSession();
  const std::string before = Snapshot();
  const int fds_before = CountOpenFds();

  int p[2];
  ASSERT_EQ(pipe2(p, O_CLOEXEC), 0);
  UniqueFd keep_write_end(p[1]);
  EXPECT_THAT(StatusOf(Register(conn, UniqueFd(p[0]))),
              StatusIs(Code::kInvalidArgument, "fd: must be shareable memory (a memfd or a file "
                                               "on tmpfs/hugetlbfs), got a pipe"));
  keep_write_end.reset();

  int sv[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), 0);
  UniqueFd peer(sv[1]);
  EXPECT_THAT(StatusOf(Register(conn, UniqueFd(sv[0]))),
              StatusIs(Code::kInvalidArgument, "got a socket"));
  peer.reset();

  {
    UniqueFd rw = Memfd(4 * kPage);
    UniqueFd ro(open(absl::StrCat("/proc/self/fd/", rw.get()).c_str(), O_RDONLY | O_CLOEXEC));
    ASSERT_TRUE(ro.valid());
    EXPECT_THAT(StatusOf(Register(conn, std::move(ro))),
                StatusIs(Code::kInvalidArgument, "fd: must be open read-write"));
  }
  EXPECT_THAT(StatusOf(Register(conn, Memfd(0))),
              StatusIs(Code::kInvalidArgument,
                       "fd: memory size must be a non-zero multiple of 4096, got 0"));
  EXPECT_THAT(StatusOf(Register(conn, Memfd(100))),
              StatusIs(Code::kInvalidArgument,
                       "fd: memory size must be a non-zero multiple of 4096, got 100"));
  EXPECT_THAT(StatusOf(Register(conn, Memfd(kPage + 1))),
              StatusIs(Code::kInvalidArgument, "got 4097"));
  {
    v1::LauncherRequest req = RegisterReq(std::string(65, 'n'));
    std::vector<UniqueFd> fds;
    fds.push_back(Memfd(kPage));
    EXPECT_THAT(StatusOf(Send(conn, req, std::move(fds))),
                StatusIs(Code::kInvalidArgument, "name: at most 64 characters"));
  }
  EXPECT_EQ(CountOpenFds(), fds_before);
  EXPECT_EQ(Snapshot(), before);
  // None of the refusals counted against the session's limits.
  EXPECT_OK(StatusOf(Register(conn, Memfd(kPage))));
}

TEST_F(LauncherSessionsTest, SameMemfdInAnotherSessionIsSharedAndBilledToFirstOwner) {
  const uint64_t a = OpenSession(kC1, "acme");
  const uint64_t b = OpenSession(kC2, "globex");
  UniqueFd memfd = Memfd(8 * kPage);
  v1::LauncherResponse first = Register(a, Dup(memfd));
  ASSERT_OK(StatusOf(first));
  const auto& mine = first.memory_registered();
  EXPECT_THAT(mine.memory_id(), StartsWith("m-"));
  EXPECT_EQ(mine.size(), 8 * kPage);
  EXPECT_EQ(mine.owner_tenant(), "acme");
  EXPECT_FALSE(mine.shared());

  v1::LauncherResponse second = Register(b, Dup(memfd));
  ASSERT_OK(StatusOf(second));
  const auto& theirs = second.memory_registered();
  EXPECT_TRUE(theirs.shared());
  EXPECT_EQ(theirs.owner_tenant(), "acme");
  EXPECT_NE(theirs.memory_id(), mine.memory_id());

  // A memory id is valid on its own connection only (invariant 7).
  EXPECT_THAT(StatusOf(Send(b, MapReq(mine.memory_id(), 0, kPage, kW1Base))),
              StatusIs(Code::kNotFound, "memory_id: this session has no memory"));

  // Both map the same pages: billed once, to acme (invariant 3), even though
  // globex mapped them into its own container.
  ASSERT_OK(StatusOf(Send(a, MapReq(mine.memory_id(), 0, 8 * kPage, kW1Base))));
  ASSERT_OK(StatusOf(Send(b, MapReq(theirs.memory_id(), 0, 8 * kPage, kW1Base))));
  EXPECT_EQ(Billed("acme"), 8 * kPage);
  EXPECT_EQ(Billed("globex"), 0u);

  // The launcher grows its memfd: the object is known with another size.
  ASSERT_EQ(ftruncate(memfd.get(), 16 * kPage), 0);
  const std::string before = Snapshot();
  EXPECT_THAT(StatusOf(Register(b, Dup(memfd))),
              StatusIs(Code::kFailedPrecondition, "registered before as 0x8000"));
  EXPECT_EQ(Snapshot(), before);
}

TEST_F(LauncherSessionsTest, PerSessionMemoryObjectLimit) {
  options_.max_memory_objects = 2;
  MakeSessions();
  const uint64_t conn = OpenSession();
  RegisterNew(conn, kPage);
  RegisterNew(conn, kPage);
  const std::string before = Snapshot();
  const int fds_before = CountOpenFds();
  EXPECT_THAT(StatusOf(Register(conn, Memfd(kPage))),
              StatusIs(Code::kResourceExhausted,
                       "fd: this session already registered 2 memory objects (limit 2)"));
  EXPECT_EQ(CountOpenFds(), fds_before);
  EXPECT_EQ(Snapshot(), before);
  // The limit is per session.
  const uint64_t other = OpenSession();
  RegisterNew(other, kPage);
}

TEST_F(LauncherSessionsTest, PerSessionMemoryByteLimit) {
  options_.max_memory_bytes = 3 * kPage;
  MakeSessions();
  const uint64_t conn = OpenSession();
  const std::string memory = RegisterNew(conn, 2 * kPage);
  const std::string before = Snapshot();
  const int fds_before = CountOpenFds();
  EXPECT_THAT(StatusOf(Register(conn, Memfd(2 * kPage))),
              StatusIs(Code::kResourceExhausted,
                       "fd: registering 0x2000 more bytes passes this session's limit of 0x3000"));
  EXPECT_EQ(CountOpenFds(), fds_before);
  EXPECT_EQ(Snapshot(), before);
  RegisterNew(conn, kPage);  // Exactly up to the limit.
  EXPECT_THAT(StatusOf(Register(conn, Memfd(kPage))),
              StatusIs(Code::kResourceExhausted, "passes this session's limit"));
}

// Regression guard: the session limit is checked against the fd's size
// before the agent maps it, so an fd announcing more than the limit (here
// 2 TiB of sparse memfd, more than any one object may be) is refused by the
// session's limit without the agent reserving its address space first.
TEST_F(LauncherSessionsTest, MemoryOverTheSessionLimitIsRefusedBeforeItIsMapped) {
  options_.max_memory_bytes = 4 * kPage;
  MakeSessions();
  const uint64_t conn = OpenSession();
  const std::string before = Snapshot();
  const int fds_before = CountOpenFds();
  EXPECT_THAT(StatusOf(Register(conn, Memfd(2ULL << 40))),
              StatusIs(Code::kResourceExhausted,
                       "fd: registering 0x20000000000 more bytes passes this session's limit "
                       "of 0x4000"));
  EXPECT_EQ(CountOpenFds(), fds_before);
  EXPECT_EQ(Snapshot(), before);
  RegisterNew(conn, 4 * kPage);
}

// ---------------------------------------------------------------- maps

TEST_F(LauncherSessionsTest, MapOutsideEveryWindowIsPermissionDenied) {
  const uint64_t conn = OpenSession();
  const std::string memory = RegisterNew(conn, 16 * kPage);
  const std::string before = Snapshot();
  for (uint64_t iova : {uint64_t{0}, kW1Base - kPage, kW1Base + kW1Size, kW2Base + kW2Size,
                        uint64_t{0xfee00000}}) {
    EXPECT_THAT(StatusOf(Send(conn, MapReq(memory, 0, kPage, iova))),
                StatusIs(Code::kPermissionDenied,
                         absl::StrCat("iova: ", Hex(iova), "+0x1000 is outside every window")))
        << Hex(iova);
  }
  // The error lists the session's windows and the container's.
  EXPECT_THAT(StatusOf(Send(conn, MapReq(memory, 0, kPage, 0))),
              StatusIs(Code::kPermissionDenied,
                       "is outside every window of the session [0x100000-0x1fffff, "
                       "0x40000000-0x401fffff] that container c-0000000000000001 still holds "
                       "[0x100000-0x1fffff, 0x40000000-0x401fffff]"));
  EXPECT_EQ(Snapshot(), before);
}

TEST_F(LauncherSessionsTest, MapStraddlingAWindowEdgeIsRefusedAndUpToTheEdgeIsNot) {
  const uint64_t conn = OpenSession();
  const std::string memory = RegisterNew(conn, 16 * kPage);
  const std::string before = Snapshot();
  // Past the end by one page.
  EXPECT_THAT(StatusOf(Send(conn, MapReq(memory, 0, 2 * kPage, kW1Base + kW1Size - kPage))),
              StatusIs(Code::kPermissionDenied, "is outside every window"));
  // Starting one page before the window.
  EXPECT_THAT(StatusOf(Send(conn, MapReq(memory, 0, 2 * kPage, kW1Base - kPage))),
              StatusIs(Code::kPermissionDenied, "is outside every window"));
  // Spanning the gap between two windows.
  EXPECT_THAT(StatusOf(Send(conn, MapReq(memory, 0, 16 * kPage, kW2Base - 8 * kPage))),
              StatusIs(Code::kPermissionDenied, "is outside every window"));
  // A length so large that iova + length wraps: the argument checks come
  // before the window check, and this length passes the end of the memory.
  EXPECT_THAT(StatusOf(Send(conn, MapReq(memory, 0, ~uint64_t{0} - kPage + 1, kW1Base))),
              StatusIs(Code::kInvalidArgument, "passes the end of memory"));
  // A length inside the memory at an IOVA where it wraps.
  EXPECT_THAT(StatusOf(Send(conn, MapReq(memory, 0, 2 * kPage, ~uint64_t{0} - kPage + 1))),
              StatusIs(Code::kInvalidArgument, "overflows 64 bits"));
  EXPECT_EQ(Snapshot(), before);
  // Ending exactly at the window's end is inside.
  EXPECT_OK(StatusOf(Send(conn, MapReq(memory, 0, 2 * kPage, kW1Base + kW1Size - 2 * kPage))));
  EXPECT_OK(StatusOf(Send(conn, MapReq(memory, 0, 16 * kPage, kW2Base + kW2Size - 16 * kPage))));
}

TEST_F(LauncherSessionsTest, MapRefusalsFromTheCoreNameTheFieldAndChangeNothing) {
  const uint64_t conn = OpenSession();
  const std::string memory = RegisterNew(conn, 4 * kPage);
  ASSERT_OK(StatusOf(Send(conn, MapReq(memory, 0, kPage, kW1Base))));
  const std::string before = Snapshot();
  EXPECT_THAT(StatusOf(Send(conn, MapReq(memory, 0, 0, kW1Base))),
              StatusIs(Code::kInvalidArgument, "length: must be greater than 0"));
  EXPECT_THAT(StatusOf(Send(conn, MapReq(memory, 0, kPage, kW1Base + kPage, false, false))),
              StatusIs(Code::kInvalidArgument, "readable, writable"));
  EXPECT_THAT(StatusOf(Send(conn, MapReq(memory, 0x800, kPage, kW1Base + kPage))),
              StatusIs(Code::kInvalidArgument, "offset: must be a multiple"));
  EXPECT_THAT(StatusOf(Send(conn, MapReq(memory, 0, kPage, kW1Base + 0x800))),
              StatusIs(Code::kInvalidArgument, "iova: must be a multiple"));
  EXPECT_THAT(StatusOf(Send(conn, MapReq(memory, 2 * kPage, 4 * kPage, kW1Base + kPage))),
              StatusIs(Code::kInvalidArgument, "passes the end of memory"));
  EXPECT_THAT(StatusOf(Send(conn, MapReq("m-0000000000000000", 0, kPage, kW1Base + kPage))),
              StatusIs(Code::kNotFound, "memory_id: this session has no memory"));
  EXPECT_THAT(StatusOf(Send(conn, MapReq(memory, kPage, kPage, kW1Base))),
              StatusIs(Code::kAlreadyExists, "overlaps mapping"));
  // A bad argument is named even where the range is outside every window:
  // the core checks the arguments first.
  EXPECT_THAT(StatusOf(Send(conn, MapReq(memory, 0, 0, 0))),
              StatusIs(Code::kInvalidArgument, "length: must be greater than 0"));
  EXPECT_THAT(StatusOf(Send(conn, MapReq(memory, 0x800, kPage, 0))),
              StatusIs(Code::kInvalidArgument, "offset: must be a multiple"));
  EXPECT_THAT(StatusOf(Send(conn, MapReq(memory, 2 * kPage, 4 * kPage, 0))),
              StatusIs(Code::kInvalidArgument, "passes the end of memory"));
  EXPECT_EQ(Snapshot(), before);
}

// The token names windows as they were when it was issued; a window the
// container has released since is closed to the session (invariant 2).
TEST_F(LauncherSessionsTest, MapIntoAWindowReleasedSinceTheGrantIsPermissionDenied) {
  const uint64_t conn = OpenSession();
  const std::string memory = RegisterNew(conn, 4 * kPage);
  ASSERT_OK(StatusOf(Send(conn, MapReq(memory, 0, kPage, kW2Base))));
  EXPECT_EQ(Billed("acme"), kPage);
  // The broker releases the second window: its mapping is revoked.
  absl::StatusOr<size_t> revoked =
      core_->SetWindows(kC1, {{kW1Base, kW1Base + kW1Size - 1}});
  ASSERT_OK(revoked);
  EXPECT_EQ(*revoked, 1u);
  EXPECT_EQ(Billed("acme"), 0u);
  EXPECT_EQ(Send(conn, ListReq()).mapping_list().mappings_size(), 0);
  EXPECT_THAT(*backend_->ListMappings(1), IsEmpty());
  const std::string before = Snapshot();
  EXPECT_THAT(StatusOf(Send(conn, MapReq(memory, 0, kPage, kW2Base))),
              StatusIs(Code::kPermissionDenied,
                       "is outside every window of the session [0x100000-0x1fffff, "
                       "0x40000000-0x401fffff] that container c-0000000000000001 still holds "
                       "[0x100000-0x1fffff]"));
  EXPECT_EQ(Snapshot(), before);
  // The window it still holds maps as before.
  EXPECT_OK(StatusOf(Send(conn, MapReq(memory, 0, kPage, kW1Base))));
}

TEST_F(LauncherSessionsTest, MapPastTheTenantsPinBudgetIsResourceExhausted) {
  // globex has 4 pages of budget (kC2).
  const uint64_t conn = OpenSession(kC2, "globex");
  const std::string memory = RegisterNew(conn, 8 * kPage);
  ASSERT_OK(StatusOf(Send(conn, MapReq(memory, 0, 3 * kPage, kW1Base))));
  const std::string before = Snapshot();
  EXPECT_THAT(StatusOf(Send(conn, MapReq(memory, 3 * kPage, 2 * kPage, kW1Base + 3 * kPage))),
              StatusIs(Code::kResourceExhausted,
                       "would bill tenant \"globex\" 0x2000 more bytes; it has 0x3000 billed "
                       "of its 0x4000"));
  EXPECT_EQ(Snapshot(), before);
  // Pages already pinned cost nothing more: mapping them again fits.
  EXPECT_OK(StatusOf(Send(conn, MapReq(memory, 0, 3 * kPage, kW2Base))));
  EXPECT_OK(StatusOf(Send(conn, MapReq(memory, 3 * kPage, kPage, kW1Base + 3 * kPage))));
  EXPECT_EQ(Billed("globex"), 4 * kPage);
}

v1::LauncherRequest ListPageReq(uint32_t page_size, const std::string& token) {
  v1::LauncherRequest req = ListReq();
  req.mutable_list_mappings()->set_page_size(page_size);
  req.mutable_list_mappings()->set_page_token(token);
  return req;
}

// Regression (issue 12 item 4): ListMappings answered every mapping in one
// packet and failed INTERNAL "exceeds the limit of 65536" at ~2,000.
TEST_F(LauncherSessionsTest, ListMappingsPagesThroughEveryMappingOnceInOrder) {
  const uint64_t conn = OpenSession();
  const std::string memory = RegisterNew(conn, kPage);
  // Both windows full of one-page mappings of the same page (billed once).
  std::vector<uint64_t> iovas;
  for (uint64_t i = 0; i < kW1Size / kPage; ++i) iovas.push_back(kW1Base + i * kPage);
  for (uint64_t i = 0; i < kW2Size / kPage; ++i) iovas.push_back(kW2Base + i * kPage);
  for (uint64_t iova : iovas) ASSERT_OK(StatusOf(Send(conn, MapReq(memory, 0, kPage, iova))));

  std::vector<uint64_t> listed;
  std::string token;
  int pages = 0;
  do {
    v1::LauncherResponse r = Send(conn, ListPageReq(100, token));
    ASSERT_OK(StatusOf(r));
    ASSERT_LE(r.mapping_list().mappings_size(), 100);
    for (const auto& m : r.mapping_list().mappings()) listed.push_back(m.iova());
    token = r.mapping_list().next_page_token();
    ++pages;
  } while (!token.empty());
  EXPECT_EQ(listed, iovas);  // Sorted, each exactly once.
  EXPECT_EQ(pages, static_cast<int>((iovas.size() + 99) / 100));
  // The default page holds 1000: everything here in one answer.
  v1::LauncherResponse all = Send(conn, ListReq());
  EXPECT_EQ(all.mapping_list().mappings_size(), static_cast<int>(iovas.size()));
  EXPECT_EQ(all.mapping_list().next_page_token(), "");

  EXPECT_THAT(StatusOf(Send(conn, ListPageReq(1001, ""))),
              StatusIs(Code::kInvalidArgument, "page_size: at most 1000"));
  for (const char* bad : {"x", "v1.", "v1.00000000001000000", "v1.000000000010000G",
                          "v1.00000000001000AB", "v2.0000000000100000"}) {
    EXPECT_THAT(StatusOf(Send(conn, ListPageReq(0, bad))),
                StatusIs(Code::kInvalidArgument, "page_token: not a token this agent issued"))
        << bad;
  }
}

TEST(LauncherPacketTest, AFullPageOfTheLargestEntriesFitsOnePacket) {
  v1::LauncherResponse r;
  r.set_seq(UINT64_MAX);
  auto* list = r.mutable_mapping_list();
  for (uint32_t i = 0; i < kMaxLauncherMappingPage; ++i) {
    auto* e = list->add_mappings();
    e->set_memory_id("m-ffffffffffffffff");
    e->set_offset(UINT64_MAX);
    e->set_length(UINT64_MAX);
    e->set_iova(UINT64_MAX);
    e->set_readable(true);
    e->set_writable(true);
  }
  list->set_next_page_token(MappingPageToken(UINT64_MAX));
  EXPECT_LE(r.ByteSizeLong(), 60000u);
  EXPECT_LE(r.ByteSizeLong(), kMaxLauncherPacketBytes);
}

TEST_F(LauncherSessionsTest, ListMappingsAndUnmapSeeOnlyThisSession) {
  const uint64_t conn = OpenSession();
  const uint64_t other = OpenSession();
  const std::string memory = RegisterNew(conn, 16 * kPage);
  const std::string theirs = RegisterNew(other, 4 * kPage);
  ASSERT_OK(StatusOf(Send(conn, MapReq(memory, 4 * kPage, 2 * kPage, kW2Base, true, false))));
  ASSERT_OK(StatusOf(Send(conn, MapReq(memory, 0, kPage, kW1Base, false, true))));
  ASSERT_OK(StatusOf(Send(other, MapReq(theirs, 0, kPage, kW1Base + 8 * kPage))));

  v1::LauncherResponse list = Send(conn, ListReq());
  ASSERT_OK(StatusOf(list));
  ASSERT_EQ(list.mapping_list().mappings_size(), 2);
  const auto& m0 = list.mapping_list().mappings(0);
  EXPECT_EQ(m0.memory_id(), memory);
  EXPECT_EQ(m0.iova(), kW1Base);
  EXPECT_EQ(m0.offset(), 0u);
  EXPECT_EQ(m0.length(), kPage);
  EXPECT_FALSE(m0.readable());
  EXPECT_TRUE(m0.writable());
  const auto& m1 = list.mapping_list().mappings(1);
  EXPECT_EQ(m1.iova(), kW2Base);
  EXPECT_EQ(m1.offset(), 4 * kPage);
  EXPECT_EQ(m1.length(), 2 * kPage);
  EXPECT_TRUE(m1.readable());
  EXPECT_FALSE(m1.writable());

  const std::string before = Snapshot();
  // A range holding the other session's mapping (invariant 7).
  EXPECT_THAT(StatusOf(Send(conn, UnmapReq(kW1Base, kW1Size))),
              StatusIs(Code::kPermissionDenied, "holds a mapping of another session"));
  // Cutting a mapping (invariant 2).
  EXPECT_THAT(StatusOf(Send(conn, UnmapReq(kW2Base, kPage))),
              StatusIs(Code::kInvalidArgument, "unmap whole mappings"));
  EXPECT_THAT(StatusOf(Send(conn, UnmapReq(kW2Base + 4 * kPage, kPage))),
              StatusIs(Code::kNotFound, "iova: no mapping inside"));
  EXPECT_THAT(StatusOf(Send(conn, UnmapReq(kW2Base, 0))),
              StatusIs(Code::kInvalidArgument, "length: must be greater than 0"));
  EXPECT_EQ(Snapshot(), before);

  v1::LauncherResponse unmapped = Send(conn, UnmapReq(kW2Base, kW2Size));
  ASSERT_OK(StatusOf(unmapped));
  EXPECT_EQ(unmapped.unmapped().bytes(), 2 * kPage);
  EXPECT_EQ(Send(conn, ListReq()).mapping_list().mappings_size(), 1);
  EXPECT_EQ(Send(other, ListReq()).mapping_list().mappings_size(), 1);
  EXPECT_EQ(Billed("acme"), 2 * kPage);
}

TEST_F(LauncherSessionsTest, DisconnectReleasesMappingsBillingAndFds) {
  const int fds_before = CountOpenFds();
  const uint64_t conn = OpenSession();
  const std::string a = RegisterNew(conn, 16 * kPage);
  const std::string b = RegisterNew(conn, 8 * kPage);
  ASSERT_OK(StatusOf(Send(conn, MapReq(a, 0, 16 * kPage, kW1Base))));
  ASSERT_OK(StatusOf(Send(conn, MapReq(b, 0, 8 * kPage, kW2Base))));
  EXPECT_EQ(Billed("acme"), 24 * kPage);
  EXPECT_EQ(core_->GetContainer(kC1)->mappings_size(), 2);
  ASSERT_OK(backend_->ListMappings(1));
  EXPECT_EQ(backend_->ListMappings(1)->size(), 2u);
  EXPECT_GT(CountOpenFds(), fds_before);  // The agent holds the two memfds.
  absl::StatusOr<v1::GetInventoryResponse> inventory = core_->Inventory();
  ASSERT_OK(inventory);
  EXPECT_EQ(inventory->launcher().sessions(), 1u);
  EXPECT_EQ(inventory->launcher().memory_objects(), 2u);
  EXPECT_EQ(inventory->launcher().memory_bytes(), 24 * kPage);

  sessions_->OnDisconnect(conn);
  inventory = core_->Inventory();
  ASSERT_OK(inventory);
  EXPECT_EQ(inventory->launcher().ShortDebugString(), "");
  EXPECT_THAT(core_->Usage(), IsEmpty());
  EXPECT_EQ(core_->GetContainer(kC1)->mappings_size(), 0);
  EXPECT_THAT(*backend_->ListMappings(1), IsEmpty());
  EXPECT_EQ(sessions_->session_count(), 0u);
  EXPECT_EQ(CountOpenFds(), fds_before);
  // The connection is gone; a late request is not served.
  EXPECT_THAT(StatusOf(Send(conn, ListReq())), StatusIs(Code::kInternal, "connection unknown"));
}

TEST_F(LauncherSessionsTest, DisconnectOfSharerKeepsTheOthersPinsBilledOnce) {
  const uint64_t a = OpenSession();
  const uint64_t b = OpenSession();
  UniqueFd memfd = Memfd(8 * kPage);
  v1::LauncherResponse ra = Register(a, Dup(memfd));
  v1::LauncherResponse rb = Register(b, Dup(memfd));
  ASSERT_OK(StatusOf(ra));
  ASSERT_OK(StatusOf(rb));
  ASSERT_OK(StatusOf(Send(a, MapReq(ra.memory_registered().memory_id(), 0, 8 * kPage, kW1Base))));
  ASSERT_OK(StatusOf(
      Send(b, MapReq(rb.memory_registered().memory_id(), 4 * kPage, 4 * kPage, kW2Base))));
  EXPECT_EQ(Billed("acme"), 8 * kPage);
  sessions_->OnDisconnect(a);
  EXPECT_EQ(Billed("acme"), 4 * kPage);
  sessions_->OnDisconnect(b);
  EXPECT_THAT(core_->Usage(), IsEmpty());
}

TEST_F(LauncherSessionsTest, GetDevicesListsTheContainersDeviceAddresses) {
  const uint64_t conn = OpenSession(kC3, "acme");
  v1::LauncherResponse r = Send(conn, DevicesReq());
  ASSERT_OK(StatusOf(r));
  EXPECT_THAT(r.devices().addresses(), ElementsAre("0000:00:05.1", "0000:00:05.0"));
  const uint64_t other = OpenSession(kC2, "globex");
  EXPECT_THAT(Send(other, DevicesReq()).devices().addresses(), ElementsAre("0000:00:07.0"));
}

// Invariant 7: a session is bound to a container of its tenant. If the agent
// destroys that container and the same id comes back for another tenant (the
// broker's Reconcile recreates a container "desired with another tenant"),
// the old session must not reach the new tenant's container: the session is
// bound to the container incarnation it was opened on and is dead.
TEST_F(LauncherSessionsTest, SessionCannotReachContainerRecreatedForAnotherTenant) {
  const uint64_t conn = OpenSession(kC1, "acme");
  const std::string memory = RegisterNew(conn, 4 * kPage);
  ASSERT_OK(core_->DestroyContainer(kC1));
  ASSERT_OK(core_->CreateContainer(kC1, "globex", {"0000:00:04.0"}, 64 * kMiB));
  // The new container holds the very windows the old token names, so no
  // window check is what stops the map.
  ASSERT_OK(core_->SetWindows(kC1, GrantedWindows()));
  // acme still has pin budget on this node (kC3), so quota is not what stops
  // the map.
  v1::ContainerBudget budget;
  budget.set_container_id(kC3);
  budget.set_pin_budget_bytes(64 * kMiB);
  core_->SetBudgets({budget});
  const std::string before = Snapshot();
  constexpr char kDead[] =
      "session: container c-0000000000000001 this session was opened on was destroyed";
  EXPECT_THAT(StatusOf(Send(conn, MapReq(memory, 0, kPage, kW1Base))),
              StatusIs(Code::kFailedPrecondition, kDead));
  EXPECT_THAT(StatusOf(Send(conn, DevicesReq())), StatusIs(Code::kFailedPrecondition, kDead));
  EXPECT_THAT(StatusOf(Send(conn, UnmapReq(kW1Base, kPage))),
              StatusIs(Code::kFailedPrecondition, kDead));
  EXPECT_THAT(StatusOf(Register(conn, Memfd(kPage))),
              StatusIs(Code::kFailedPrecondition, kDead));
  EXPECT_EQ(Snapshot(), before);
  EXPECT_THAT(*backend_->ListMappings(4), IsEmpty());  // The new incarnation.
  // globex's own launcher, with a token for the new container, is served.
  const uint64_t theirs = OpenSession(kC1, "globex");
  EXPECT_THAT(Send(theirs, DevicesReq()).devices().addresses(), ElementsAre("0000:00:04.0"));
}

// ------------------------------------------------------------- fd leaks

// Counts the process's fds before the first test and after the last one:
// nothing any test did (memfds, pipes, sockets, refused fds) may outlive it.
class NoFdLeakEnvironment : public ::testing::Environment {
 public:
  void SetUp() override { at_start_ = CountOpenFds(); }
  void TearDown() override { EXPECT_EQ(CountOpenFds(), at_start_) << "fds leaked by the suite"; }

 private:
  int at_start_ = 0;
};

const ::testing::Environment* const kNoFdLeaks =
    ::testing::AddGlobalTestEnvironment(new NoFdLeakEnvironment);

}  // namespace
}  // namespace agent
}  // namespace iommu
