#include "agent/fd_store.h"

#include <fcntl.h>
#include <stdlib.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "agent/fd_holder.h"
#include "agent/fd_test_util.h"
#include "common/status_matchers.h"
#include "common/unix_socket.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace iommu {
namespace agent {
namespace {

using ::testing::ElementsAre;

std::vector<std::string> Names(const std::map<std::string, UniqueFd>& fds) {
  std::vector<std::string> names;
  for (const auto& entry : fds) names.push_back(entry.first);
  return names;
}

// --- Names and specs -----------------------------------------------------------

TEST(ValidateFdNameTest, AcceptsTheConservativeSet) {
  EXPECT_OK(ValidateFdName("vfio-container.7"));
  EXPECT_OK(ValidateFdName("memfd_tenant-a.vm-3.0"));
  EXPECT_OK(ValidateFdName(std::string(200, 'x')));
}

TEST(ValidateFdNameTest, RefusesEmptyLongAndOtherCharacters) {
  EXPECT_THAT(ValidateFdName(""),
              StatusIs(absl::StatusCode::kInvalidArgument, "fd name: must not be empty"));
  EXPECT_THAT(ValidateFdName(std::string(201, 'x')),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "fd name: 201 characters exceeds the limit of 200"));
  EXPECT_THAT(ValidateFdName("group:12"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "fd name: character 0x3a at position 5 is not one of [A-Za-z0-9._-]"));
  EXPECT_THAT(ValidateFdName("a b"),
              StatusIs(absl::StatusCode::kInvalidArgument, "character 0x20 at position 1"));
  EXPECT_THAT(ValidateFdName("a\n"),
              StatusIs(absl::StatusCode::kInvalidArgument, "character 0x0a at position 1"));
  EXPECT_THAT(ValidateFdName("dir/x"),
              StatusIs(absl::StatusCode::kInvalidArgument, "character 0x2f"));
}

TEST(OpenFdStoreTest, RefusesUnknownSpecsNamingTheFlagAndTheForms) {
  for (const char* spec : {"", "sytemd", "holder", "file:/x"}) {
    EXPECT_THAT(OpenFdStore(spec),
                StatusIs(absl::StatusCode::kInvalidArgument,
                         "expected none, systemd or holder:/absolute/socket/path"))
        << spec;
    EXPECT_THAT(OpenFdStore(spec), StatusIs(absl::StatusCode::kInvalidArgument, "--fd-store="))
        << spec;
  }
  EXPECT_THAT(OpenFdStore("holder:"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "--fd-store=holder:: the holder's socket must be an absolute path"));
  EXPECT_THAT(OpenFdStore("holder:run/fdholder.sock"),
              StatusIs(absl::StatusCode::kInvalidArgument, "must be an absolute path"));
}

TEST(OpenFdStoreTest, SystemdNeedsNotifySocket) {
  ::unsetenv("NOTIFY_SOCKET");
  EXPECT_THAT(OpenFdStore("systemd"),
              StatusIs(absl::StatusCode::kFailedPrecondition, "$NOTIFY_SOCKET is not set"));
  EXPECT_THAT(OpenFdStore("systemd"),
              StatusIs(absl::StatusCode::kFailedPrecondition, "FileDescriptorStoreMax="));
}

TEST(NoneFdStoreTest, AcceptsEverythingAndKeepsNothing) {
  absl::StatusOr<std::unique_ptr<FdStore>> store = OpenFdStore("none");
  ASSERT_OK(store);
  EXPECT_EQ((*store)->Describe(), "none");
  UniqueFd memfd = NewMemfd("m");
  EXPECT_OK((*store)->Put("m", memfd.get()));
  EXPECT_OK((*store)->Remove("m"));
  EXPECT_OK((*store)->Remove("never-stored"));
  absl::StatusOr<std::map<std::string, UniqueFd>> fds = (*store)->Retrieve();
  ASSERT_OK(fds);
  EXPECT_TRUE(fds->empty());
  EXPECT_THAT((*store)->Put("a:b", memfd.get()),
              StatusIs(absl::StatusCode::kInvalidArgument, "fd name:"));
  EXPECT_THAT((*store)->Put("m", -1),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "fd: -1 is not an open file descriptor"));
}

// --- systemd, without systemd: a datagram socket standing in for it ------------

// One notification as systemd would receive it.
struct Notification {
  std::string text;
  std::vector<UniqueFd> fds;
};

// A bound AF_UNIX datagram socket under TEST_TMPDIR (or, when that path is
// too long for sun_path, in the abstract namespace, which sd_notify reaches
// as "@name"), exported as $NOTIFY_SOCKET.
class FakeNotifySocket {
 public:
  FakeNotifySocket() {
    // Numbered high, clear of the fds the LISTEN_FDS tests put at 3 onwards.
    UniqueFd low(::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0));
    fd_.reset(::fcntl(low.get(), F_DUPFD_CLOEXEC, 200));
    sockaddr_un addr;
    std::memset(&addr, 0, sizeof(addr));
    addr.sun_family = AF_UNIX;
    std::string path = NewTestDir("notify") + "/notify.sock";
    socklen_t len;
    if (path.size() < sizeof(addr.sun_path)) {
      std::memcpy(addr.sun_path, path.data(), path.size());
      len = offsetof(sockaddr_un, sun_path) + path.size() + 1;
      env_ = path;
    } else {
      // Abstract names are shared by every process in the network namespace,
      // and Bazel runs tests in PID namespaces where every test is pid 1 or 2:
      // a random suffix keeps concurrent runs apart.
      uint64_t nonce = 0;
      (void)::getrandom(&nonce, sizeof(nonce), 0);
      const std::string name = absl::StrCat("iommu-fd-store-test-", ::getpid(), "-", nonce);
      std::memcpy(addr.sun_path + 1, name.data(), name.size());
      len = offsetof(sockaddr_un, sun_path) + 1 + name.size();
      env_ = "@" + name;
    }
    bound_ = ::bind(fd_.get(), reinterpret_cast<sockaddr*>(&addr), len) == 0;
    ::setenv("NOTIFY_SOCKET", env_.c_str(), 1);
  }
  ~FakeNotifySocket() { ::unsetenv("NOTIFY_SOCKET"); }

  bool bound() const { return bound_; }

  // The next queued notification; empty text when none is queued.
  Notification Next() {
    Notification n;
    char buf[4096];
    iovec iov{buf, sizeof(buf)};
    alignas(cmsghdr) char control[CMSG_SPACE(16 * sizeof(int))];
    msghdr msg;
    std::memset(&msg, 0, sizeof(msg));
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof(control);
    const ssize_t r = ::recvmsg(fd_.get(), &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
    if (r < 0) return n;
    n.text.assign(buf, r);
    for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
      if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
      const size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
      for (size_t i = 0; i < count; ++i) {
        int fd;
        std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
        n.fds.emplace_back(fd);
      }
    }
    return n;
  }

 private:
  UniqueFd fd_;
  std::string env_;
  bool bound_ = false;
};

TEST(SystemdFdStoreTest, PutRemovesTheNameThenStoresADuplicate) {
  FakeNotifySocket systemd;
  ASSERT_TRUE(systemd.bound());
  absl::StatusOr<std::unique_ptr<FdStore>> store = OpenFdStore("systemd");
  ASSERT_OK(store);
  EXPECT_EQ((*store)->Describe(), "systemd fd store");
  UniqueFd memfd = NewMemfd("guest");
  ASSERT_OK((*store)->Put("memfd.guest-1", memfd.get()));

  Notification remove = systemd.Next();
  EXPECT_EQ(remove.text, "FDSTOREREMOVE=1\nFDNAME=memfd.guest-1");
  EXPECT_TRUE(remove.fds.empty());
  Notification put = systemd.Next();
  EXPECT_EQ(put.text, "FDSTORE=1\nFDNAME=memfd.guest-1");
  ASSERT_EQ(put.fds.size(), 1u);
  EXPECT_EQ(FileId(put.fds[0].get()), FileId(memfd.get()));
  EXPECT_EQ(systemd.Next().text, "");
  EXPECT_NE(::fcntl(memfd.get(), F_GETFD), -1);  // The caller keeps its fd.
}

TEST(SystemdFdStoreTest, RetrieveReturnsWhatThisRunPutUntilRemoved) {
  FakeNotifySocket systemd;
  absl::StatusOr<std::unique_ptr<FdStore>> store = OpenFdStore("systemd");
  ASSERT_OK(store);
  UniqueFd first = NewMemfd("first");
  UniqueFd second = NewMemfd("second");
  ASSERT_OK((*store)->Put("m", first.get()));
  ASSERT_OK((*store)->Put("m", second.get()));
  absl::StatusOr<std::map<std::string, UniqueFd>> fds = (*store)->Retrieve();
  ASSERT_OK(fds);
  ASSERT_THAT(Names(*fds), ElementsAre("m"));
  EXPECT_EQ(FileId(fds->at("m").get()), FileId(second.get()));
  EXPECT_TRUE(IsCloexec(fds->at("m").get()));

  ASSERT_OK((*store)->Remove("m"));
  for (int i = 0; i < 4; ++i) systemd.Next();  // The two Puts.
  EXPECT_EQ(systemd.Next().text, "FDSTOREREMOVE=1\nFDNAME=m");
  absl::StatusOr<std::map<std::string, UniqueFd>> after = (*store)->Retrieve();
  ASSERT_OK(after);
  EXPECT_TRUE(after->empty());
}

TEST(SystemdFdStoreTest, ANotifySocketWithNobodyThereIsAnErrorNamingTheCall) {
  // An abstract address nobody is bound to: connect is refused.
  const std::string nobody = absl::StrCat("@iommu-fd-store-test-nobody-", ::getpid());
  ::setenv("NOTIFY_SOCKET", nobody.c_str(), 1);
  absl::StatusOr<std::unique_ptr<FdStore>> store = OpenFdStore("systemd");
  ASSERT_OK(store);
  UniqueFd memfd = NewMemfd("m");
  EXPECT_THAT((*store)->Put("m", memfd.get()),
              StatusIs(absl::StatusCode::kUnavailable,
                       "sd_pid_notify_with_fds FDSTOREREMOVE=1 FDNAME=m: ECONNREFUSED"));
  ::unsetenv("NOTIFY_SOCKET");
  EXPECT_THAT((*store)->Remove("m"),
              StatusIs(absl::StatusCode::kFailedPrecondition, "$NOTIFY_SOCKET is not set"));
}

// Runs `body` in a child process (so that it may take over fds 3 and up and
// the environment) and returns what it reported: "" for success.
std::string InChild(const std::function<std::string()>& body) {
  int report[2];
  if (::pipe2(report, O_CLOEXEC) != 0) return "pipe2 failed";
  const pid_t child = ::fork();
  if (child < 0) return "fork failed";
  if (child == 0) {
    ::close(report[0]);
    const std::string error = body();
    (void)::write(report[1], error.data(), error.size());
    _exit(error.empty() ? 0 : 1);
  }
  ::close(report[1]);
  std::string error;
  char buf[1024];
  ssize_t n;
  while ((n = ::read(report[0], buf, sizeof(buf))) > 0) error.append(buf, n);
  ::close(report[0]);
  int status = 0;
  ::waitpid(child, &status, 0);
  if (!WIFEXITED(status)) return absl::StrCat("child died: wait status ", status, " ", error);
  if (WEXITSTATUS(status) != 0 && error.empty()) return "child failed without a report";
  return error;
}

// Puts `fds` at SD_LISTEN_FDS_START (3) onwards, as systemd passes them.
std::string PassAsListenFds(std::vector<UniqueFd> fds, const std::string& names) {
  std::vector<int> high;
  for (UniqueFd& fd : fds) {
    const int h = ::fcntl(fd.get(), F_DUPFD, 100);
    if (h < 0) return "F_DUPFD failed";
    high.push_back(h);
    fd.reset();
  }
  for (size_t i = 0; i < high.size(); ++i) {
    if (::dup2(high[i], 3 + static_cast<int>(i)) < 0) return "dup2 failed";
    ::close(high[i]);
  }
  ::setenv("LISTEN_PID", absl::StrCat(::getpid()).c_str(), 1);
  ::setenv("LISTEN_FDS", absl::StrCat(fds.size()).c_str(), 1);
  ::setenv("LISTEN_FDNAMES", names.c_str(), 1);
  return "";
}

TEST(SystemdFdStoreTest, RetrieveTakesListenFdsByNameAndUnsetsTheEnvironment) {
  FakeNotifySocket systemd;
  const std::string error = InChild([]() -> std::string {
    UniqueFd group = NewMemfd("group");
    UniqueFd memory = NewMemfd("memory");
    const auto group_id = FileId(group.get());
    const auto memory_id = FileId(memory.get());
    std::vector<UniqueFd> fds;
    fds.push_back(std::move(group));
    fds.push_back(std::move(memory));
    if (std::string e = PassAsListenFds(std::move(fds), "vfio-group.12:memfd.a"); !e.empty()) {
      return e;
    }
    absl::StatusOr<std::unique_ptr<FdStore>> store = OpenFdStore("systemd");
    if (!store.ok()) return store.status().ToString();
    for (int round = 0; round < 2; ++round) {  // The second call returns dups again.
      absl::StatusOr<std::map<std::string, UniqueFd>> got = (*store)->Retrieve();
      if (!got.ok()) return got.status().ToString();
      if (Names(*got) != std::vector<std::string>{"memfd.a", "vfio-group.12"}) {
        return absl::StrCat("round ", round, ": names ", got->size());
      }
      if (FileId(got->at("vfio-group.12").get()) != group_id) return "group inode differs";
      if (FileId(got->at("memfd.a").get()) != memory_id) return "memory inode differs";
      if (!IsCloexec(got->at("memfd.a").get())) return "returned fd not O_CLOEXEC";
    }
    if (!IsCloexec(3) || !IsCloexec(4)) return "passed fds not made O_CLOEXEC";
    for (const char* var : {"LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"}) {
      if (::getenv(var) != nullptr) return absl::StrCat(var, " still set");
    }
    return "";
  });
  EXPECT_EQ(error, "");
}

TEST(SystemdFdStoreTest, SeveralFdsUnderOneNameKeepTheFirstAndTellSystemd) {
  FakeNotifySocket systemd;
  const std::string error = InChild([&systemd]() -> std::string {
    UniqueFd first = NewMemfd("first");
    UniqueFd second = NewMemfd("second");
    const auto first_id = FileId(first.get());
    std::vector<UniqueFd> fds;
    fds.push_back(std::move(first));
    fds.push_back(std::move(second));
    if (std::string e = PassAsListenFds(std::move(fds), "m:m"); !e.empty()) return e;
    absl::StatusOr<std::unique_ptr<FdStore>> store = OpenFdStore("systemd");
    if (!store.ok()) return store.status().ToString();
    absl::StatusOr<std::map<std::string, UniqueFd>> got = (*store)->Retrieve();
    if (!got.ok()) return got.status().ToString();
    if (Names(*got) != std::vector<std::string>{"m"}) return "names";
    if (FileId(got->at("m").get()) != first_id) return "kept the wrong fd";
    Notification remove = systemd.Next();
    if (remove.text != "FDSTOREREMOVE=1\nFDNAME=m") return "no FDSTOREREMOVE: " + remove.text;
    Notification put = systemd.Next();
    if (put.text != "FDSTORE=1\nFDNAME=m" || put.fds.size() != 1 ||
        FileId(put.fds[0].get()) != first_id) {
      return "no FDSTORE of the first: " + put.text;
    }
    return "";
  });
  EXPECT_EQ(error, "");
}

// --- The holder, in-process ------------------------------------------------------

class HolderFdStoreTest : public ::testing::Test {
 protected:
  void Start(size_t max_fds = 1024) {
    FdHolder::Options options;
    options.socket_path = NewTestDir("holder") + "/fdholder.sock";
    options.max_fds = max_fds;
    path_ = options.socket_path;
    absl::StatusOr<std::unique_ptr<FdHolder>> holder = FdHolder::Listen(options);
    ASSERT_OK(holder);
    holder_ = *std::move(holder);
    serve_ = std::thread([this] { (void)holder_->Serve(); });
  }
  void TearDown() override {
    if (serve_.joinable()) {
      holder_->Shutdown();
      serve_.join();
    }
  }
  std::unique_ptr<FdStore> Open() {
    absl::StatusOr<std::unique_ptr<FdStore>> store = OpenFdStore("holder:" + path_);
    EXPECT_OK(store);
    return store.ok() ? *std::move(store) : nullptr;
  }

  std::string path_;
  std::unique_ptr<FdHolder> holder_;
  std::thread serve_;
};

TEST_F(HolderFdStoreTest, ARestartedAgentRetrievesTheSameFiles) {
  Start();
  UniqueFd memfd = NewMemfd("guest");
  int p[2];
  ASSERT_EQ(::pipe2(p, O_CLOEXEC), 0);
  UniqueFd read_end(p[0]), write_end(p[1]);
  {
    std::unique_ptr<FdStore> agent = Open();
    EXPECT_EQ(agent->Describe(), "fd holder at " + path_);
    ASSERT_OK(agent->Put("memfd.guest", memfd.get()));
    ASSERT_OK(agent->Put("pipe.read", read_end.get()));
  }
  std::unique_ptr<FdStore> restarted = Open();
  absl::StatusOr<std::map<std::string, UniqueFd>> fds = restarted->Retrieve();
  ASSERT_OK(fds);
  ASSERT_THAT(Names(*fds), ElementsAre("memfd.guest", "pipe.read"));
  EXPECT_EQ(FileId(fds->at("memfd.guest").get()), FileId(memfd.get()));
  EXPECT_EQ(FileId(fds->at("pipe.read").get()), FileId(read_end.get()));
  EXPECT_TRUE(IsCloexec(fds->at("memfd.guest").get()));
  // The store keeps its copies until Remove.
  absl::StatusOr<std::map<std::string, UniqueFd>> again = restarted->Retrieve();
  ASSERT_OK(again);
  EXPECT_EQ(again->size(), 2u);
}

TEST_F(HolderFdStoreTest, PutReplacesAndRemoveForgets) {
  Start();
  std::unique_ptr<FdStore> store = Open();
  UniqueFd first = NewMemfd("first");
  UniqueFd second = NewMemfd("second");
  ASSERT_OK(store->Put("m", first.get()));
  ASSERT_OK(store->Put("m", second.get()));
  EXPECT_EQ(holder_->fd_count(), 1u);
  absl::StatusOr<std::map<std::string, UniqueFd>> fds = store->Retrieve();
  ASSERT_OK(fds);
  ASSERT_THAT(Names(*fds), ElementsAre("m"));
  EXPECT_EQ(FileId(fds->at("m").get()), FileId(second.get()));
  ASSERT_OK(store->Remove("m"));
  ASSERT_OK(store->Remove("never-stored"));
  EXPECT_EQ(holder_->fd_count(), 0u);
  absl::StatusOr<std::map<std::string, UniqueFd>> after = store->Retrieve();
  ASSERT_OK(after);
  EXPECT_TRUE(after->empty());
}

TEST_F(HolderFdStoreTest, RetrievesMoreFdsThanOnePacketCarries) {
  Start();
  std::unique_ptr<FdStore> store = Open();
  std::map<std::string, std::pair<dev_t, ino_t>> ids;
  for (int i = 0; i < 100; ++i) {
    const std::string name = absl::StrCat("memfd.", i);
    UniqueFd memfd = NewMemfd(name);
    ids[name] = FileId(memfd.get());
    ASSERT_OK(store->Put(name, memfd.get()));
  }
  absl::StatusOr<std::map<std::string, UniqueFd>> fds = Open()->Retrieve();
  ASSERT_OK(fds);
  ASSERT_EQ(fds->size(), 100u);
  for (const auto& [name, fd] : *fds) EXPECT_EQ(FileId(fd.get()), ids.at(name)) << name;
}

TEST_F(HolderFdStoreTest, BadNamesAndFdsAreRefusedBeforeReachingTheHolder) {
  Start();
  std::unique_ptr<FdStore> store = Open();
  UniqueFd memfd = NewMemfd("m");
  EXPECT_THAT(store->Put("a b", memfd.get()),
              StatusIs(absl::StatusCode::kInvalidArgument, "fd name: character 0x20"));
  EXPECT_THAT(store->Put("", memfd.get()),
              StatusIs(absl::StatusCode::kInvalidArgument, "fd name: must not be empty"));
  EXPECT_THAT(store->Remove(std::string(201, 'a')),
              StatusIs(absl::StatusCode::kInvalidArgument, "fd name: 201 characters"));
  EXPECT_THAT(store->Put("m", 1 << 20),
              StatusIs(absl::StatusCode::kInvalidArgument, "is not an open file descriptor"));
  EXPECT_EQ(holder_->fd_count(), 0u);
}

TEST_F(HolderFdStoreTest, MaxFdsIsResourceExhaustedFromTheHolder) {
  Start(/*max_fds=*/1);
  std::unique_ptr<FdStore> store = Open();
  UniqueFd memfd = NewMemfd("m");
  ASSERT_OK(store->Put("a", memfd.get()));
  EXPECT_THAT(store->Put("b", memfd.get()),
              StatusIs(absl::StatusCode::kResourceExhausted,
                       "fd holder at " + path_ +
                           ": fd holder: already holding 1 fds, the --max-fds limit"));
  EXPECT_OK(store->Put("a", memfd.get()));
}

TEST_F(HolderFdStoreTest, OneStoreObjectOutlivesAHolderRestart) {
  Start();
  std::unique_ptr<FdStore> store = Open();
  UniqueFd memfd = NewMemfd("m");
  ASSERT_OK(store->Put("m", memfd.get()));
  holder_->Shutdown();
  serve_.join();
  EXPECT_THAT(store->Retrieve(), StatusIs(absl::StatusCode::kUnavailable, "ECONNREFUSED"));
  // A new holder on the same path (replacing the stale socket file): the
  // old one closed its fds, and the same store object reaches the new one.
  const std::string path = path_;
  FdHolder::Options options;
  options.socket_path = path;
  absl::StatusOr<std::unique_ptr<FdHolder>> again = FdHolder::Listen(options);
  ASSERT_OK(again);
  holder_ = *std::move(again);
  serve_ = std::thread([this] { (void)holder_->Serve(); });
  absl::StatusOr<std::map<std::string, UniqueFd>> fds = store->Retrieve();
  ASSERT_OK(fds);
  EXPECT_TRUE(fds->empty());
  ASSERT_OK(store->Put("m", memfd.get()));
  EXPECT_EQ(holder_->fd_count(), 1u);
}

TEST(HolderGoneTest, NoSocketIsUnavailableAskingWhetherTheHolderRuns) {
  const std::string path = NewTestDir("gone") + "/fdholder.sock";
  absl::StatusOr<std::unique_ptr<FdStore>> store = OpenFdStore("holder:" + path);
  ASSERT_OK(store);
  UniqueFd memfd = NewMemfd("m");
  const std::string expected =
      absl::StrCat("fd holder at ", path, ": connect: connect ", path, ": ENOENT");
  EXPECT_THAT((*store)->Put("m", memfd.get()),
              StatusIs(absl::StatusCode::kUnavailable, expected));
  EXPECT_THAT((*store)->Retrieve(),
              StatusIs(absl::StatusCode::kUnavailable, "(is iommu-fdholder running?)"));
}

TEST(HolderGoneTest, AStaleSocketFileIsUnavailableToo) {
  const std::string path = NewTestDir("stale") + "/fdholder.sock";
  {
    // A holder that exited: its socket file stays, nobody listens.
    absl::StatusOr<UniqueFd> listening = ListenUnix(path, 0600);
    ASSERT_OK(listening);
  }
  absl::StatusOr<std::unique_ptr<FdStore>> store = OpenFdStore("holder:" + path);
  ASSERT_OK(store);
  EXPECT_THAT((*store)->Remove("m"),
              StatusIs(absl::StatusCode::kUnavailable, "ECONNREFUSED"));
  EXPECT_THAT((*store)->Remove("m"),
              StatusIs(absl::StatusCode::kUnavailable, "(is iommu-fdholder running?)"));
}

}  // namespace
}  // namespace agent
}  // namespace iommu
