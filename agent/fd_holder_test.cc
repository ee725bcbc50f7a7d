#include "agent/fd_holder.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "agent/fd_holder_protocol.h"
#include "agent/fd_test_util.h"
#include "common/status_matchers.h"
#include "common/unix_socket.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace iommu {
namespace agent {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::StartsWith;

// --- The wire format ---------------------------------------------------------

TEST(FdHolderProtocolTest, ParsesTheThreeVerbs) {
  absl::StatusOr<HolderRequest> put = ParseHolderRequest("PUT vfio-group.12");
  ASSERT_OK(put);
  EXPECT_EQ(put->verb, HolderRequest::Verb::kPut);
  EXPECT_EQ(put->name, "vfio-group.12");
  EXPECT_EQ(put->expected_fds(), 1u);
  absl::StatusOr<HolderRequest> remove = ParseHolderRequest("REMOVE memfd_3");
  ASSERT_OK(remove);
  EXPECT_EQ(remove->verb, HolderRequest::Verb::kRemove);
  EXPECT_EQ(remove->expected_fds(), 0u);
  absl::StatusOr<HolderRequest> list = ParseHolderRequest("LIST");
  ASSERT_OK(list);
  EXPECT_EQ(list->verb, HolderRequest::Verb::kList);
}

TEST(FdHolderProtocolTest, RefusesMalformedRequestsNamingTheRule) {
  EXPECT_THAT(ParseHolderRequest(""),
              StatusIs(absl::StatusCode::kInvalidArgument, "empty packet"));
  EXPECT_THAT(ParseHolderRequest("GET x"),
              StatusIs(absl::StatusCode::kInvalidArgument, "unknown verb"));
  EXPECT_THAT(ParseHolderRequest("put x"),
              StatusIs(absl::StatusCode::kInvalidArgument, "unknown verb"));
  EXPECT_THAT(ParseHolderRequest("PUT"),
              StatusIs(absl::StatusCode::kInvalidArgument, "PUT needs a name"));
  EXPECT_THAT(ParseHolderRequest("PUT a b"),
              StatusIs(absl::StatusCode::kInvalidArgument, "fd name: character 0x20"));
  EXPECT_THAT(ParseHolderRequest("REMOVE a:b"),
              StatusIs(absl::StatusCode::kInvalidArgument, "fd name: character 0x3a"));
  EXPECT_THAT(ParseHolderRequest("LIST all"),
              StatusIs(absl::StatusCode::kInvalidArgument, "LIST takes no argument"));
  EXPECT_THAT(ParseHolderRequest(std::string("PUT a\0b", 7)),
              StatusIs(absl::StatusCode::kInvalidArgument, "fd name: character 0x00"));
}

TEST(FdHolderProtocolTest, RepliesRoundTrip) {
  absl::StatusOr<HolderReply> ok = ParseHolderReply(FormatOkReply());
  ASSERT_OK(ok);
  EXPECT_EQ(ok->kind, HolderReply::Kind::kOk);
  absl::StatusOr<HolderReply> err = ParseHolderReply(
      FormatErrorReply(absl::ResourceExhaustedError("fd holder: the --max-fds limit")));
  ASSERT_OK(err);
  EXPECT_EQ(err->kind, HolderReply::Kind::kError);
  EXPECT_THAT(err->error,
              StatusIs(absl::StatusCode::kResourceExhausted, "fd holder: the --max-fds limit"));
  absl::StatusOr<HolderReply> fds = ParseHolderReply(FormatFdsReply({"a", "b.c"}));
  ASSERT_OK(fds);
  EXPECT_EQ(fds->kind, HolderReply::Kind::kFds);
  EXPECT_THAT(fds->names, ElementsAre("a", "b.c"));
  EXPECT_THAT(ParseHolderReply("ERR NO_SUCH_CODE x"),
              StatusIs(absl::StatusCode::kInvalidArgument, "known status code"));
  EXPECT_THAT(ParseHolderReply("HELLO"),
              StatusIs(absl::StatusCode::kInvalidArgument, "expected OK, ERR or FDS"));
}

TEST(FdHolderPeerTest, ServesItsOwnUidAndRootOnly) {
  EXPECT_TRUE(FdHolderServesPeer(1000, 1000));
  EXPECT_TRUE(FdHolderServesPeer(0, 1000));
  EXPECT_TRUE(FdHolderServesPeer(0, 0));
  EXPECT_FALSE(FdHolderServesPeer(1001, 1000));
  EXPECT_FALSE(FdHolderServesPeer(1000, 0));
}

// --- The server, in-process, spoken to packet by packet ------------------------

class FdHolderTest : public ::testing::Test {
 protected:
  void Start(size_t max_fds = 64, size_t max_connections = 8) {
    FdHolder::Options options;
    options.socket_path = NewTestDir("fdholder") + "/fdholder.sock";
    options.max_fds = max_fds;
    options.max_connections = max_connections;
    path_ = options.socket_path;
    absl::StatusOr<std::unique_ptr<FdHolder>> holder = FdHolder::Listen(options);
    ASSERT_OK(holder);
    holder_ = *std::move(holder);
    serve_ = std::thread([this] { serve_status_ = holder_->Serve(); });
  }

  void TearDown() override { Stop(); }

  void Stop() {
    if (serve_.joinable()) {
      holder_->Shutdown();
      serve_.join();
      EXPECT_OK(serve_status_);
    }
  }

  UniqueFd Connect() {
    absl::StatusOr<UniqueFd> fd = ConnectUnix(path_);
    EXPECT_OK(fd);
    return fd.ok() ? *std::move(fd) : UniqueFd();
  }

  // Sends one request and returns the final reply's text; FDS replies
  // before it are counted into `*fds_received`.
  std::string Call(int conn, absl::string_view request, const std::vector<int>& fds = {},
                   size_t* fds_received = nullptr) {
    EXPECT_OK(SendPacket(conn, request, fds));
    while (true) {
      absl::StatusOr<Packet> reply = RecvPacket(conn, kMaxHolderReplyBytes, 32);
      EXPECT_OK(reply);
      if (!reply.ok()) return "";
      if (reply->eof) return "<eof>";
      if (absl::StartsWith(reply->bytes, "FDS ")) {
        if (fds_received != nullptr) *fds_received += reply->fds.size();
        continue;
      }
      EXPECT_TRUE(reply->fds.empty()) << reply->bytes;
      return reply->bytes;
    }
  }

  // A pipe whose write end we hand to the holder: once every copy of the
  // write end is closed, the read end reads EOF instead of EAGAIN.
  struct Pipe {
    UniqueFd read;
    UniqueFd write;
  };
  static Pipe NewPipe() {
    int p[2];
    EXPECT_EQ(::pipe2(p, O_CLOEXEC | O_NONBLOCK), 0);
    return Pipe{UniqueFd(p[0]), UniqueFd(p[1])};
  }
  // True when no process (the holder included) holds the write end.
  static bool WriteEndClosedEverywhere(const Pipe& pipe) {
    char c;
    return ::read(pipe.read.get(), &c, 1) == 0;
  }

  std::string path_;
  std::unique_ptr<FdHolder> holder_;
  std::thread serve_;
  absl::Status serve_status_;
};

TEST_F(FdHolderTest, PutRemoveAndListOverOneConnection) {
  Start();
  UniqueFd conn = Connect();
  Pipe pipe = NewPipe();
  EXPECT_EQ(Call(conn.get(), "PUT p", {pipe.write.get()}), "OK");
  pipe.write.reset();
  EXPECT_FALSE(WriteEndClosedEverywhere(pipe));  // The holder has a copy.
  EXPECT_EQ(holder_->fd_count(), 1u);
  size_t listed = 0;
  EXPECT_EQ(Call(conn.get(), "LIST", {}, &listed), "OK");
  EXPECT_EQ(listed, 1u);
  EXPECT_EQ(Call(conn.get(), "REMOVE p"), "OK");
  EXPECT_EQ(holder_->fd_count(), 0u);
  EXPECT_TRUE(WriteEndClosedEverywhere(pipe));
  EXPECT_EQ(Call(conn.get(), "REMOVE never-stored"), "OK");
}

TEST_F(FdHolderTest, GarbageIsRefusedAndTheConnectionStaysUsable) {
  Start();
  UniqueFd conn = Connect();
  EXPECT_THAT(Call(conn.get(), std::string("\x01\xff garbage\n", 11)),
              StartsWith("ERR INVALID_ARGUMENT holder request: unknown verb"));
  EXPECT_THAT(Call(conn.get(), std::string(kMaxHolderRequestBytes + 1, 'P')),
              StartsWith("ERR INVALID_ARGUMENT packet: 257 bytes exceeds the limit"));
  EXPECT_EQ(Call(conn.get(), "LIST"), "OK");
  EXPECT_EQ(holder_->fd_count(), 0u);
}

TEST_F(FdHolderTest, PutWithoutAnFdChangesNothing) {
  Start();
  UniqueFd conn = Connect();
  EXPECT_EQ(Call(conn.get(), "PUT a"),
            "ERR INVALID_ARGUMENT holder request: PUT takes exactly 1 fd, got 0");
  EXPECT_EQ(holder_->fd_count(), 0u);
}

TEST_F(FdHolderTest, PutWithTwoFdsClosesBothAndChangesNothing) {
  Start();
  UniqueFd conn = Connect();
  EXPECT_EQ(Call(conn.get(), "LIST"), "OK");  // The holder's end is accepted.
  Pipe pipe = NewPipe();
  const int fds_before = CountOpenFds();
  EXPECT_THAT(Call(conn.get(), "PUT a", {pipe.write.get(), pipe.write.get()}),
              StartsWith("ERR INVALID_ARGUMENT packet: more than 1 fd attached"));
  EXPECT_EQ(CountOpenFds(), fds_before);  // The holder shares this fd table.
  EXPECT_EQ(holder_->fd_count(), 0u);
  pipe.write.reset();
  EXPECT_TRUE(WriteEndClosedEverywhere(pipe));
}

TEST_F(FdHolderTest, FdsOnRequestsThatTakeNoneAreClosed) {
  Start();
  UniqueFd conn = Connect();
  EXPECT_EQ(Call(conn.get(), "LIST"), "OK");  // The holder's end is accepted.
  Pipe pipe = NewPipe();
  const int fds_before = CountOpenFds();
  EXPECT_EQ(Call(conn.get(), "REMOVE a", {pipe.write.get()}),
            "ERR INVALID_ARGUMENT holder request: REMOVE takes exactly 0 fds, got 1");
  EXPECT_EQ(Call(conn.get(), "LIST", {pipe.write.get()}),
            "ERR INVALID_ARGUMENT holder request: LIST takes exactly 0 fds, got 1");
  EXPECT_THAT(Call(conn.get(), "PUT bad:name", {pipe.write.get()}),
              StartsWith("ERR INVALID_ARGUMENT holder request: fd name:"));
  EXPECT_EQ(CountOpenFds(), fds_before);
  pipe.write.reset();
  EXPECT_TRUE(WriteEndClosedEverywhere(pipe));
  EXPECT_EQ(holder_->fd_count(), 0u);
}

TEST_F(FdHolderTest, RefusesNewNamesPastMaxFdsButStillReplaces) {
  Start(/*max_fds=*/2);
  UniqueFd conn = Connect();
  UniqueFd a = NewMemfd("a");
  EXPECT_EQ(Call(conn.get(), "PUT a", {a.get()}), "OK");
  EXPECT_EQ(Call(conn.get(), "PUT b", {a.get()}), "OK");
  EXPECT_EQ(Call(conn.get(), "PUT c", {a.get()}),
            "ERR RESOURCE_EXHAUSTED fd holder: already holding 2 fds, the --max-fds limit; "
            "PUT c refused");
  EXPECT_EQ(Call(conn.get(), "PUT b", {a.get()}), "OK");
  EXPECT_EQ(holder_->fd_count(), 2u);
}

TEST_F(FdHolderTest, RefusesConnectionsPastTheLimit) {
  Start(/*max_fds=*/64, /*max_connections=*/1);
  UniqueFd first = Connect();
  EXPECT_EQ(Call(first.get(), "LIST"), "OK");  // Accepted and served.
  UniqueFd second = Connect();
  absl::StatusOr<Packet> refusal = RecvPacket(second.get(), kMaxHolderReplyBytes, 0);
  ASSERT_OK(refusal);
  EXPECT_EQ(refusal->bytes,
            "ERR RESOURCE_EXHAUSTED fd holder: 1 connections already open (the limit)");
  absl::StatusOr<Packet> closed = RecvPacket(second.get(), kMaxHolderReplyBytes, 0);
  ASSERT_OK(closed);
  EXPECT_TRUE(closed->eof);
  EXPECT_EQ(Call(first.get(), "LIST"), "OK");
}

TEST_F(FdHolderTest, KeepsFdsAcrossClientsAndClosesThemOnShutdown) {
  Start();
  Pipe pipe = NewPipe();
  {
    UniqueFd conn = Connect();
    EXPECT_EQ(Call(conn.get(), "PUT p", {pipe.write.get()}), "OK");
  }
  pipe.write.reset();
  {
    UniqueFd conn = Connect();
    size_t listed = 0;
    EXPECT_EQ(Call(conn.get(), "LIST", {}, &listed), "OK");
    EXPECT_EQ(listed, 1u);
  }
  EXPECT_FALSE(WriteEndClosedEverywhere(pipe));
  Stop();
  EXPECT_TRUE(WriteEndClosedEverywhere(pipe));
}

// No input ends the holder or leaks an fd into it: random packets (random
// bytes, sometimes a well-formed verb with a random name, 0-3 fds) each get
// exactly one final reply, and afterwards the holder holds only what the
// well-formed PUTs stored.
TEST_F(FdHolderTest, RandomPacketsEachGetOneReplyAndNeverEndTheHolder) {
  Start(/*max_fds=*/1000);
  UniqueFd conn = Connect();
  UniqueFd memfd = NewMemfd("r");
  EXPECT_EQ(Call(conn.get(), "LIST"), "OK");  // The holder's end is accepted.
  const int fds_before = CountOpenFds();
  std::mt19937 rng(20261204);  // Fixed: the same packets on every run.
  const std::string verbs[] = {"PUT ", "REMOVE ", "LIST", "PUT", "put ", ""};
  const std::string alphabet = "aZ09._- :\n\x01/\xff";
  for (int i = 0; i < 2000; ++i) {
    std::string packet = verbs[rng() % 6];
    const size_t len = rng() % 40;
    for (size_t j = 0; j < len; ++j) packet.push_back(alphabet[rng() % alphabet.size()]);
    if (packet.empty()) packet = "x";
    std::vector<int> fds(rng() % 4, memfd.get());
    const std::string reply = Call(conn.get(), packet, fds);
    ASSERT_TRUE(reply == "OK" || absl::StartsWith(reply, "ERR INVALID_ARGUMENT "))
        << "packet " << i << " \"" << packet << "\" -> \"" << reply << "\"";
  }
  // Every fd the holder still has is one a well-formed PUT stored.
  size_t listed = 0;
  EXPECT_EQ(Call(conn.get(), "LIST", {}, &listed), "OK");
  EXPECT_EQ(listed, holder_->fd_count());
  // The holder shares this fd table: it grew by exactly what it holds.
  EXPECT_EQ(CountOpenFds(), fds_before + static_cast<int>(holder_->fd_count()));
}

TEST_F(FdHolderTest, ShutdownDisconnectsClientsThatAreStillConnected) {
  Start();
  UniqueFd idle = Connect();
  EXPECT_EQ(Call(idle.get(), "LIST"), "OK");  // Its thread now waits in recvmsg.
  Stop();                                      // Must not wait for the client.
  absl::StatusOr<Packet> after = RecvPacket(idle.get(), kMaxHolderReplyBytes, 0);
  ASSERT_OK(after);
  EXPECT_TRUE(after->eof);
}

TEST_F(FdHolderTest, RefusesAPeerOfAnotherUid) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to connect as another uid";
  Start();
  int report[2];
  ASSERT_EQ(::pipe2(report, O_CLOEXEC), 0);
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    // Become nobody, then connect: SO_PEERCRED records the uid at connect().
    // The socket and its directory are opened up so that only the holder's
    // uid check can refuse.
    const std::string dir = path_.substr(0, path_.rfind('/'));
    if (::chmod(path_.c_str(), 0666) != 0 || ::chmod(dir.c_str(), 0755) != 0) _exit(2);
    if (::setresgid(65534, 65534, 65534) != 0 || ::setresuid(65534, 65534, 65534) != 0) {
      _exit(3);  // E.g. a user namespace that maps only root.
    }
    absl::StatusOr<UniqueFd> as_nobody = ConnectUnix(path_);
    if (!as_nobody.ok()) _exit(4);
    absl::StatusOr<Packet> reply = RecvPacket(as_nobody->get(), kMaxHolderReplyBytes, 0);
    std::string text = reply.ok() ? reply->bytes : reply.status().ToString();
    absl::StatusOr<Packet> after = RecvPacket(as_nobody->get(), kMaxHolderReplyBytes, 0);
    text += after.ok() && after->eof ? "|eof" : "|not closed";
    (void)::write(report[1], text.data(), text.size());
    _exit(0);
  }
  ::close(report[1]);
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status));
  if (WEXITSTATUS(status) == 3) GTEST_SKIP() << "cannot become uid 65534 here";
  ASSERT_EQ(WEXITSTATUS(status), 0);
  char buf[512];
  const ssize_t n = ::read(report[0], buf, sizeof(buf));
  ::close(report[0]);
  ASSERT_GT(n, 0);
  EXPECT_EQ(std::string(buf, n),
            "ERR PERMISSION_DENIED fd holder: peer uid 65534 is neither the holder's uid 0 nor 0"
            "|eof");
}

}  // namespace
}  // namespace agent
}  // namespace iommu
