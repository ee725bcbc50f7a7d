#include "agent/launcher_server.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "agent/fake_launcher_handler.h"
#include "common/status_matchers.h"
#include "common/unix_socket.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace iommu {
namespace agent {
namespace {

using ::testing::ContainsRegex;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using Code = absl::StatusCode;

constexpr absl::Duration kWait = absl::Seconds(10);

int CountOpenFds() {
  DIR* dir = opendir("/proc/self/fd");
  if (dir == nullptr) return -1;
  int count = 0;
  while (readdir(dir) != nullptr) ++count;
  closedir(dir);
  return count;
}

// A raw client: sends requests and reads responses with the transport
// functions only, so the tests can also send what LauncherClient never would.
class RawClient {
 public:
  explicit RawClient(const std::string& path) {
    absl::StatusOr<UniqueFd> fd = ConnectUnix(path);
    EXPECT_TRUE(fd.ok()) << fd.status();
    if (fd.ok()) fd_ = *std::move(fd);
  }

  absl::Status SendRaw(absl::string_view bytes, const std::vector<int>& fds = {}) {
    return SendPacket(fd_.get(), bytes, fds);
  }
  absl::Status Send(const v1::LauncherRequest& req, const std::vector<int>& fds = {}) {
    return SendRaw(req.SerializeAsString(), fds);
  }
  // The next response; `fds` receives its fds. Fails the test on EOF.
  v1::LauncherResponse Recv(std::vector<UniqueFd>* fds = nullptr) {
    v1::LauncherResponse response;
    absl::StatusOr<Packet> p =
        RecvPacket(fd_.get(), kMaxLauncherPacketBytes, kMaxLauncherPacketFds);
    EXPECT_TRUE(p.ok()) << p.status();
    if (!p.ok()) return response;
    EXPECT_FALSE(p->eof);
    EXPECT_TRUE(response.ParseFromString(p->bytes));
    if (fds != nullptr) *fds = std::move(p->fds);
    return response;
  }
  bool RecvEof() {
    absl::StatusOr<Packet> p = RecvPacket(fd_.get(), kMaxLauncherPacketBytes, 4);
    return p.ok() && p->eof;
  }
  void Close() { fd_.reset(); }

 private:
  UniqueFd fd_;
};

v1::LauncherRequest ListRequest(uint64_t seq) {
  v1::LauncherRequest req;
  req.set_seq(seq);
  req.mutable_list_mappings();
  return req;
}

class LauncherServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string dir = absl::StrCat(std::getenv("TEST_TMPDIR"), "/lsXXXXXX");
    ASSERT_NE(mkdtemp(dir.data()), nullptr);
    path_ = dir + "/launcher.sock";
  }

  void StartServer(LauncherServerOptions options = {}) {
    options.socket_path = path_;
    absl::StatusOr<std::unique_ptr<LauncherServer>> server =
        LauncherServer::Start(std::move(options), &handler_);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
  }

  std::string path_;
  FakeLauncherHandler handler_;
  std::unique_ptr<LauncherServer> server_;
};

TEST_F(LauncherServerTest, ConnectAndDisconnectAreReportedExactlyOnce) {
  StartServer();
  {
    RawClient client(path_);
    ASSERT_TRUE(handler_.WaitForEvents("connect", 1, kWait));
    EXPECT_EQ(handler_.last_peer().pid, getpid());
    EXPECT_EQ(handler_.last_peer().uid, getuid());
  }
  ASSERT_TRUE(handler_.WaitForEvents("disconnect", 1, kWait));
  server_->Stop();
  EXPECT_THAT(handler_.events(),
              ElementsAre(absl::StrCat("connect 1 uid=", getuid()), "disconnect 1"));
}

// Lines of `log` whose event is `event`.
std::vector<std::string> LinesOf(const std::string& log, absl::string_view event) {
  std::vector<std::string> lines;
  for (absl::string_view line : absl::StrSplit(log, '\n')) {
    if (absl::StrContains(line, absl::StrCat("event=", event, " "))) lines.emplace_back(line);
  }
  return lines;
}

// A uid allowed on the socket looping connect/close once wrote 1.45 M lines
// in 10 s; its connection lines are now bounded per uid like its refusals.
TEST_F(LauncherServerTest, ConnectionChurnOfOneUidLogsABoundedNumberOfLines) {
  StartServer();
  ::testing::internal::CaptureStderr();
  constexpr size_t kConnections = 2000;
  for (size_t i = 0; i < kConnections; ++i) RawClient client(path_);
  const bool served = handler_.WaitForEvents("disconnect", kConnections, 6 * kWait);
  // The bucket refills (1 line a second): the next connection is logged and
  // says how many were not.
  absl::SleepFor(absl::Milliseconds(1100));
  { RawClient client(path_); }
  const bool last_served = handler_.WaitForEvents("disconnect", kConnections + 1, kWait);
  server_->Stop();
  const std::string log = ::testing::internal::GetCapturedStderr();
  ASSERT_TRUE(served && last_served) << handler_.CountEvents("disconnect") << " disconnects";
  EXPECT_EQ(handler_.CountEvents("connect"), kConnections + 1);

  const std::vector<std::string> connected = LinesOf(log, "launcher_connected");
  const std::vector<std::string> disconnected = LinesOf(log, "launcher_disconnected");
  EXPECT_GE(connected.size(), 1u);
  EXPECT_LT(connected.size() + disconnected.size(), 100u) << log.substr(0, 4000);
  // Pairs: a connection's disconnect is logged exactly when its connect was.
  EXPECT_EQ(disconnected.size(), connected.size());
  ASSERT_FALSE(connected.empty());
  EXPECT_THAT(connected.back(), HasSubstr(absl::StrCat(" uid=", getuid())));
  EXPECT_THAT(connected.back(), ContainsRegex(" suppressed=[1-9][0-9]*"));
}

TEST_F(LauncherServerTest, SocketGetsModeAndIsRemovedOnStop) {
  LauncherServerOptions options;
  options.socket_mode = 0600;
  StartServer(options);
  struct stat st;
  ASSERT_EQ(stat(path_.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0600u);
  server_->Stop();
  EXPECT_NE(access(path_.c_str(), F_OK), 0);
  server_->Stop();  // Idempotent.
}

TEST_F(LauncherServerTest, PipelinedRequestsAreAnsweredInOrder) {
  StartServer();
  RawClient client(path_);
  for (uint64_t seq = 1; seq <= 20; ++seq) ASSERT_OK(client.Send(ListRequest(seq)));
  for (uint64_t seq = 1; seq <= 20; ++seq) {
    v1::LauncherResponse r = client.Recv();
    EXPECT_EQ(r.seq(), seq);
    EXPECT_EQ(r.code(), 0);
    EXPECT_TRUE(r.has_mapping_list());
  }
  std::vector<std::string> requests;
  for (const std::string& e : handler_.events()) {
    if (e.rfind("request", 0) == 0) requests.push_back(e);
  }
  ASSERT_EQ(requests.size(), 20u);
  for (size_t i = 0; i < requests.size(); ++i) {
    EXPECT_EQ(requests[i], absl::StrCat("request 1 seq=", i + 1, " ",
                                        v1::LauncherRequest::kListMappings));
  }
}

TEST_F(LauncherServerTest, UnparseableRequestIsInvalidArgumentAndConnectionSurvives) {
  StartServer();
  RawClient client(path_);
  ASSERT_OK(client.SendRaw("\xff\xff\xff\xff"));
  v1::LauncherResponse r = client.Recv();
  EXPECT_EQ(r.seq(), 0u);
  EXPECT_EQ(r.code(), static_cast<int>(Code::kInvalidArgument));
  EXPECT_THAT(r.message(), ::testing::HasSubstr("request: does not parse"));
  EXPECT_EQ(handler_.CountEvents("request"), 0u);

  ASSERT_OK(client.Send(ListRequest(7)));
  r = client.Recv();
  EXPECT_EQ(r.seq(), 7u);
  EXPECT_EQ(r.code(), 0);
}

TEST_F(LauncherServerTest, RequestWithoutOperationIsInvalidArgument) {
  StartServer();
  RawClient client(path_);
  v1::LauncherRequest req;
  req.set_seq(3);
  ASSERT_OK(client.Send(req));
  v1::LauncherResponse r = client.Recv();
  EXPECT_EQ(r.seq(), 3u);
  EXPECT_EQ(r.code(), static_cast<int>(Code::kInvalidArgument));
  EXPECT_THAT(r.message(), ::testing::HasSubstr("request: no operation set"));
  EXPECT_EQ(handler_.CountEvents("request"), 0u);
}

TEST_F(LauncherServerTest, OversizeRequestsAndExtraFdsAreRefusedWithoutLeaks) {
  LauncherServerOptions options;
  options.max_request_bytes = 1024;
  StartServer(options);
  RawClient client(path_);
  ASSERT_TRUE(handler_.WaitForEvents("connect", 1, kWait));
  UniqueFd a(memfd_create("a", MFD_CLOEXEC));
  UniqueFd b(memfd_create("b", MFD_CLOEXEC));
  const int before = CountOpenFds();

  v1::LauncherRequest big;
  big.set_seq(1);
  big.mutable_register_memory()->set_name(std::string(2000, 'n'));
  ASSERT_OK(client.Send(big, {a.get()}));
  v1::LauncherResponse r = client.Recv();
  EXPECT_EQ(r.code(), static_cast<int>(Code::kInvalidArgument));
  EXPECT_THAT(r.message(), ::testing::HasSubstr("exceeds the limit of 1024 bytes"));

  v1::LauncherRequest two;
  two.set_seq(2);
  two.mutable_register_memory()->set_name("guest");
  ASSERT_OK(client.Send(two, {a.get(), b.get()}));
  r = client.Recv();
  EXPECT_EQ(r.code(), static_cast<int>(Code::kInvalidArgument));
  EXPECT_THAT(r.message(), ::testing::HasSubstr("more than 1 fd attached"));

  // The server runs in this process: its fd table is ours.
  EXPECT_EQ(CountOpenFds(), before);
  EXPECT_EQ(handler_.CountEvents("request"), 0u);
  ASSERT_OK(client.Send(ListRequest(3)));
  EXPECT_EQ(client.Recv().code(), 0);
}

TEST_F(LauncherServerTest, FdsTravelBothWays) {
  StartServer();
  RawClient client(path_);
  UniqueFd mem(memfd_create("guest", MFD_CLOEXEC));
  ASSERT_EQ(ftruncate(mem.get(), 4096), 0);
  v1::LauncherRequest reg;
  reg.set_seq(1);
  reg.mutable_register_memory()->set_name("guest");
  ASSERT_OK(client.Send(reg, {mem.get()}));
  v1::LauncherResponse r = client.Recv();
  ASSERT_EQ(r.code(), 0) << r.message();
  EXPECT_EQ(r.memory_registered().size(), 4096u);
  struct stat st;
  ASSERT_EQ(fstat(mem.get(), &st), 0);
  EXPECT_EQ(handler_.last_memory_inode(), st.st_ino);

  v1::LauncherRequest dev;
  dev.set_seq(2);
  dev.mutable_get_devices();
  ASSERT_OK(client.Send(dev));
  std::vector<UniqueFd> fds;
  r = client.Recv(&fds);
  ASSERT_EQ(r.code(), 0) << r.message();
  ASSERT_EQ(r.devices().addresses_size(), 2);
  ASSERT_EQ(fds.size(), 2u);
  for (size_t i = 0; i < fds.size(); ++i) {
    ASSERT_EQ(fstat(fds[i].get(), &st), 0);
    EXPECT_EQ(st.st_ino, handler_.device_inode(i));
  }
}

TEST_F(LauncherServerTest, ErrorResponsesCarryNoFds) {
  StartServer();
  RawClient client(path_);
  handler_.set_error_for_next_request(absl::PermissionDeniedError("no session"));
  v1::LauncherRequest dev;
  dev.set_seq(1);
  dev.mutable_get_devices();
  ASSERT_OK(client.Send(dev));
  std::vector<UniqueFd> fds;
  v1::LauncherResponse r = client.Recv(&fds);
  EXPECT_EQ(r.code(), static_cast<int>(Code::kPermissionDenied));
  EXPECT_EQ(r.message(), "no session");
  EXPECT_TRUE(fds.empty());
}

TEST_F(LauncherServerTest, AnswerWithoutResultBecomesInternal) {
  StartServer();
  RawClient client(path_);
  handler_.set_answer_without_result(true);
  ASSERT_OK(client.Send(ListRequest(5)));
  v1::LauncherResponse r = client.Recv();
  EXPECT_EQ(r.seq(), 5u);
  EXPECT_EQ(r.code(), static_cast<int>(Code::kInternal));
  EXPECT_THAT(r.message(), ::testing::HasSubstr("neither a result nor an error"));
}

TEST_F(LauncherServerTest, ConnectionsOverTheLimitAreToldAndClosed) {
  LauncherServerOptions options;
  options.max_connections = 2;
  StartServer(options);
  auto first = std::make_unique<RawClient>(path_);
  RawClient second(path_);
  ASSERT_TRUE(handler_.WaitForEvents("connect", 2, kWait));
  RawClient third(path_);
  v1::LauncherResponse r = third.Recv();
  EXPECT_EQ(r.seq(), 0u);
  EXPECT_EQ(r.code(), static_cast<int>(Code::kResourceExhausted));
  EXPECT_THAT(r.message(), ::testing::HasSubstr("too many connections (limit 2)"));
  EXPECT_TRUE(third.RecvEof());
  EXPECT_EQ(handler_.CountEvents("connect"), 2u);

  first.reset();
  ASSERT_TRUE(handler_.WaitForEvents("disconnect", 1, kWait));
  RawClient fourth(path_);
  ASSERT_OK(fourth.Send(ListRequest(1)));
  EXPECT_EQ(fourth.Recv().code(), 0);
}

// Regression (issue 11, B.b): the agent never closed an idle connection, so
// a few uids holding idle connections kept every real launcher out.
TEST_F(LauncherServerTest, ConnectionWithoutASessionIsClosedAfterTheOpenTimeout) {
  LauncherServerOptions options;
  options.max_connections = 1;
  options.session_open_timeout = absl::Milliseconds(300);
  StartServer(options);
  RawClient idle(path_);
  ASSERT_TRUE(handler_.WaitForEvents("connect", 1, kWait));
  {
    RawClient refused(path_);
    EXPECT_EQ(refused.Recv().code(), static_cast<int>(Code::kResourceExhausted));
  }
  // Requests other than a successful OpenSession do not count as a session.
  ASSERT_OK(idle.Send(ListRequest(1)));
  EXPECT_EQ(idle.Recv().code(), 0);
  v1::LauncherResponse closed = idle.Recv();
  EXPECT_EQ(closed.seq(), 0u);
  EXPECT_EQ(closed.code(), static_cast<int>(Code::kDeadlineExceeded));
  EXPECT_THAT(closed.message(),
              ::testing::HasSubstr("launcher socket: no session opened within 300ms of "
                                   "connecting; closing"));
  EXPECT_TRUE(idle.RecvEof());
  ASSERT_TRUE(handler_.WaitForEvents("disconnect", 1, kWait));

  // The slot is free; a connection that opens a session keeps it.
  RawClient launcher(path_);
  v1::LauncherRequest open;
  open.set_seq(1);
  open.mutable_open_session()->set_token("good");
  ASSERT_OK(launcher.Send(open));
  EXPECT_EQ(launcher.Recv().code(), 0);
  absl::SleepFor(absl::Milliseconds(600));
  ASSERT_OK(launcher.Send(ListRequest(2)));
  EXPECT_EQ(launcher.Recv().code(), 0);
  EXPECT_EQ(handler_.CountEvents("disconnect"), 1u);
}

// Regression: the refused connection was closed with the client's request
// still queued, so the client's read failed with ECONNRESET instead of
// returning the RESOURCE_EXHAUSTED answer.
TEST_F(LauncherServerTest, RefusalIsNotLostToConnectionResetWhenRequestsAreQueued) {
  LauncherServerOptions options;
  options.max_connections = 1;
  StartServer(options);
  RawClient first(path_);
  ASSERT_TRUE(handler_.WaitForEvents("connect", 1, kWait));
  for (int i = 0; i < 20; ++i) {
    RawClient extra(path_);
    // Queued before the server gets to accept (most rounds) or refused with
    // EPIPE after its shutdown (the rest); either way the answer is readable.
    (void)extra.Send(ListRequest(1));
    v1::LauncherResponse r = extra.Recv();
    EXPECT_EQ(r.code(), static_cast<int>(Code::kResourceExhausted)) << "round " << i;
  }
}

TEST_F(LauncherServerTest, RefusedConnectionGetsTheReasonAndNoDisconnect) {
  StartServer();
  handler_.set_connect_status(absl::PermissionDeniedError("uid 1234: not allowed"));
  RawClient client(path_);
  v1::LauncherResponse r = client.Recv();
  EXPECT_EQ(r.code(), static_cast<int>(Code::kPermissionDenied));
  EXPECT_EQ(r.message(), "uid 1234: not allowed");
  EXPECT_TRUE(client.RecvEof());
  server_->Stop();
  EXPECT_EQ(handler_.CountEvents("connect"), 1u);
  EXPECT_EQ(handler_.CountEvents("disconnect"), 0u);
}

TEST_F(LauncherServerTest, StopWithClientsConnectedIsPromptAndClosesThem) {
  StartServer();
  std::vector<std::unique_ptr<RawClient>> clients;
  for (int i = 0; i < 3; ++i) clients.push_back(std::make_unique<RawClient>(path_));
  ASSERT_TRUE(handler_.WaitForEvents("connect", 3, kWait));
  const absl::Time start = absl::Now();
  server_->Stop();
  EXPECT_LT(absl::Now() - start, absl::Seconds(1));
  EXPECT_EQ(handler_.CountEvents("disconnect"), 3u);
  for (const auto& c : clients) EXPECT_TRUE(c->RecvEof());
  // Destroying the stopped server calls nothing more.
  server_.reset();
  EXPECT_EQ(handler_.CountEvents("disconnect"), 3u);
}

TEST_F(LauncherServerTest, StartRefusesBadLimits) {
  LauncherServerOptions options;
  options.socket_path = path_;
  options.max_connections = 0;
  EXPECT_THAT(LauncherServer::Start(options, &handler_),
              StatusIs(Code::kInvalidArgument, "max_connections"));
  options.max_connections = 1;
  options.max_request_bytes = kMaxLauncherPacketBytes + 1;
  EXPECT_THAT(LauncherServer::Start(options, &handler_),
              StatusIs(Code::kInvalidArgument, "max_request_bytes"));
  options.max_request_bytes = 1024;
  options.max_request_fds = kMaxLauncherPacketFds + 1;
  EXPECT_THAT(LauncherServer::Start(options, &handler_),
              StatusIs(Code::kInvalidArgument, "max_request_fds"));
}

}  // namespace
}  // namespace agent
}  // namespace iommu
