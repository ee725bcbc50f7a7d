#include "common/unix_socket.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/status_matchers.h"
#include "gtest/gtest.h"

namespace iommu {
namespace {

using Code = absl::StatusCode;

// Open fds of this process, counted from /proc/self/fd.
int CountOpenFds() {
  DIR* dir = opendir("/proc/self/fd");
  if (dir == nullptr) return -1;
  int count = 0;
  while (readdir(dir) != nullptr) ++count;
  closedir(dir);
  return count;
}

std::pair<UniqueFd, UniqueFd> SeqpacketPair() {
  int sv[2];
  EXPECT_EQ(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), 0);
  return {UniqueFd(sv[0]), UniqueFd(sv[1])};
}

std::pair<UniqueFd, UniqueFd> Pipe() {
  int p[2];
  EXPECT_EQ(pipe2(p, O_CLOEXEC), 0);
  return {UniqueFd(p[0]), UniqueFd(p[1])};
}

ino_t Inode(int fd) {
  struct stat st;
  EXPECT_EQ(fstat(fd, &st), 0);
  return st.st_ino;
}

// A fresh directory under TEST_TMPDIR.
std::string TempDir() {
  std::string tmpl = absl::StrCat(std::getenv("TEST_TMPDIR"), "/sockXXXXXX");
  EXPECT_NE(mkdtemp(tmpl.data()), nullptr);
  return tmpl;
}

TEST(UniqueFdTest, ClosesOnDestructionAndMovesOwnership) {
  auto [r, w] = Pipe();
  const int raw = r.get();
  UniqueFd moved(std::move(r));
  EXPECT_FALSE(r.valid());
  EXPECT_EQ(moved.get(), raw);
  UniqueFd assigned;
  assigned = std::move(moved);
  EXPECT_EQ(assigned.get(), raw);
  assigned.reset();
  EXPECT_EQ(fcntl(raw, F_GETFD), -1);
  const int wraw = w.release();
  EXPECT_FALSE(w.valid());
  EXPECT_NE(fcntl(wraw, F_GETFD), -1);
  close(wraw);
}

TEST(UnixSocketTest, PassesBytesAndFdsCloseOnExec) {
  auto [a, b] = SeqpacketPair();
  auto [r, w] = Pipe();
  ASSERT_OK(SendPacket(a.get(), "hello", {r.get(), w.get()}));
  absl::StatusOr<Packet> p = RecvPacket(b.get(), 100, 4);
  ASSERT_OK(p);
  EXPECT_EQ(p->bytes, "hello");
  EXPECT_FALSE(p->eof);
  ASSERT_EQ(p->fds.size(), 2u);
  EXPECT_EQ(Inode(p->fds[0].get()), Inode(r.get()));
  EXPECT_EQ(Inode(p->fds[1].get()), Inode(w.get()));
  EXPECT_NE(p->fds[0].get(), r.get());
  EXPECT_EQ(fcntl(p->fds[0].get(), F_GETFD) & FD_CLOEXEC, FD_CLOEXEC);
  EXPECT_EQ(fcntl(p->fds[1].get(), F_GETFD) & FD_CLOEXEC, FD_CLOEXEC);
  // The received write end really is the pipe.
  ASSERT_EQ(write(p->fds[1].get(), "x", 1), 1);
  char c = 0;
  ASSERT_EQ(read(r.get(), &c, 1), 1);
  EXPECT_EQ(c, 'x');
}

TEST(UnixSocketTest, OversizePacketIsRefusedAndItsFdsClosed) {
  auto [a, b] = SeqpacketPair();
  auto [r, w] = Pipe();
  const int before = CountOpenFds();
  ASSERT_OK(SendPacket(a.get(), std::string(100, 'x'), {r.get(), w.get()}));
  EXPECT_THAT(RecvPacket(b.get(), 10, 4),
              StatusIs(Code::kInvalidArgument,
                       "packet: 100 bytes exceeds the limit of 10 bytes"));
  EXPECT_EQ(CountOpenFds(), before);
  // Packet boundaries hold: the next packet arrives intact.
  ASSERT_OK(SendPacket(a.get(), "next", {}));
  absl::StatusOr<Packet> p = RecvPacket(b.get(), 10, 4);
  ASSERT_OK(p);
  EXPECT_EQ(p->bytes, "next");
}

TEST(UnixSocketTest, TooManyFdsAreAllClosed) {
  auto [a, b] = SeqpacketPair();
  auto [r, w] = Pipe();
  auto [r2, w2] = Pipe();
  const int before = CountOpenFds();
  // One over the limit fits the aligned control buffer (no MSG_CTRUNC) and
  // must be caught by the count; two over is truncated by the kernel.
  ASSERT_OK(SendPacket(a.get(), "two", {r.get(), w.get()}));
  EXPECT_THAT(RecvPacket(b.get(), 100, 1),
              StatusIs(Code::kInvalidArgument, "more than 1 fd attached (the limit)"));
  EXPECT_EQ(CountOpenFds(), before);
  ASSERT_OK(SendPacket(a.get(), "four", {r.get(), w.get(), r2.get(), w2.get()}));
  EXPECT_THAT(RecvPacket(b.get(), 100, 2),
              StatusIs(Code::kInvalidArgument, "more than 2 fds attached"));
  EXPECT_EQ(CountOpenFds(), before);
  ASSERT_OK(SendPacket(a.get(), "one", {r.get()}));
  EXPECT_THAT(RecvPacket(b.get(), 100, 0),
              StatusIs(Code::kInvalidArgument, "more than 0 fds"));
  EXPECT_EQ(CountOpenFds(), before);
}

TEST(UnixSocketTest, ReportsEofAndWouldBlock) {
  auto [a, b] = SeqpacketPair();
  ASSERT_EQ(fcntl(b.get(), F_SETFL, O_NONBLOCK), 0);
  absl::StatusOr<Packet> p = RecvPacket(b.get(), 100, 1);
  ASSERT_OK(p);
  EXPECT_TRUE(p->would_block);
  EXPECT_FALSE(p->eof);
  a.reset();
  p = RecvPacket(b.get(), 100, 1);
  ASSERT_OK(p);
  EXPECT_TRUE(p->eof);
  EXPECT_FALSE(p->would_block);
}

TEST(UnixSocketTest, SendRefusesEmptyPacketsAndReportsClosedPeer) {
  auto [a, b] = SeqpacketPair();
  EXPECT_THAT(SendPacket(a.get(), "", {}),
              StatusIs(Code::kInvalidArgument, "packet: must not be empty"));
  b.reset();
  // EPIPE as a status, not SIGPIPE killing the test.
  EXPECT_THAT(SendPacket(a.get(), "x", {}), StatusIs(Code::kFailedPrecondition, "EPIPE"));
}

TEST(UnixSocketTest, PeerCredIsTheConnectingProcess) {
  const std::string path = TempDir() + "/s";
  absl::StatusOr<UniqueFd> listener = ListenUnix(path);
  ASSERT_OK(listener);
  absl::StatusOr<UniqueFd> client = ConnectUnix(path);
  ASSERT_OK(client);
  absl::StatusOr<UniqueFd> server = AcceptUnix(listener->get());
  ASSERT_OK(server);
  ASSERT_TRUE(server->valid());
  EXPECT_EQ(fcntl(server->get(), F_GETFD) & FD_CLOEXEC, FD_CLOEXEC);
  EXPECT_EQ(fcntl(server->get(), F_GETFL) & O_NONBLOCK, O_NONBLOCK);
  absl::StatusOr<PeerCred> cred = GetPeerCred(server->get());
  ASSERT_OK(cred);
  EXPECT_EQ(cred->pid, getpid());
  EXPECT_EQ(cred->uid, getuid());
  EXPECT_EQ(cred->gid, getgid());
  // Nothing else pending.
  absl::StatusOr<UniqueFd> none = AcceptUnix(listener->get());
  ASSERT_OK(none);
  EXPECT_FALSE(none->valid());
}

TEST(UnixSocketTest, ListenSetsModeAndGroup) {
  const std::string path = TempDir() + "/s";
  absl::StatusOr<UniqueFd> listener = ListenUnix(path, 0600, getgid());
  ASSERT_OK(listener);
  struct stat st;
  ASSERT_EQ(lstat(path.c_str(), &st), 0);
  EXPECT_TRUE(S_ISSOCK(st.st_mode));
  EXPECT_EQ(st.st_mode & 07777, 0600u);
  EXPECT_EQ(st.st_gid, getgid());
}

TEST(UnixSocketTest, ListenReplacesStaleSocketButNotLiveOneOrOtherFiles) {
  const std::string dir = TempDir();
  const std::string path = dir + "/s";
  {
    absl::StatusOr<UniqueFd> first = ListenUnix(path);
    ASSERT_OK(first);
    EXPECT_THAT(ListenUnix(path),
                StatusIs(Code::kFailedPrecondition, "another process is listening"));
  }
  // The first listener is gone but its file stays: stale, replaced.
  absl::StatusOr<UniqueFd> second = ListenUnix(path);
  ASSERT_OK(second);
  ASSERT_OK(ConnectUnix(path));

  const std::string file = dir + "/regular";
  UniqueFd f(open(file.c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0600));
  ASSERT_TRUE(f.valid());
  EXPECT_THAT(ListenUnix(file),
              StatusIs(Code::kFailedPrecondition, "exists and is not a socket"));
  EXPECT_EQ(access(file.c_str(), F_OK), 0);
}

TEST(UnixSocketTest, LongPathsWorkThroughProcSelfFd) {
  std::string dir = TempDir();
  while (dir.size() < 150) {
    dir += "/a-rather-long-directory-name";
    ASSERT_EQ(mkdir(dir.c_str(), 0700), 0);
  }
  const std::string path = dir + "/launcher.sock";
  const int before = CountOpenFds();
  absl::StatusOr<UniqueFd> listener = ListenUnix(path);
  ASSERT_OK(listener);
  absl::StatusOr<UniqueFd> client = ConnectUnix(path);
  ASSERT_OK(client);
  // The directory fds used for the long path were closed again.
  EXPECT_EQ(CountOpenFds(), before + 2);
  struct stat st;
  ASSERT_EQ(lstat(path.c_str(), &st), 0);
  EXPECT_TRUE(S_ISSOCK(st.st_mode));
}

TEST(UnixSocketTest, ConnectErrorsNameThePath) {
  const std::string path = TempDir() + "/missing";
  EXPECT_THAT(ConnectUnix(path), StatusIs(Code::kNotFound, path));
  EXPECT_THAT(ConnectUnix(""), StatusIs(Code::kInvalidArgument, "socket path"));
}

}  // namespace
}  // namespace iommu
