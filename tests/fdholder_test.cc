// iommu-fdholder through its real entry point: the built binary on a socket
// under TEST_TMPDIR, an agent-side FdStore putting fds, a "restarted agent"
// (a new FdStore) taking them back, and SIGTERM ending the holder with 0.
#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "agent/fd_store.h"
#include "common/unique_fd.h"
#include "gtest/gtest.h"
#include "tests/daemon.h"

namespace iommu {
namespace {

using agent::FdStore;
using agent::OpenFdStore;
using testing::NewTempDir;
using testing::RunCommand;
using testing::RunfilePath;

std::string Holder() { return RunfilePath("agent/iommu-fdholder"); }

std::pair<dev_t, ino_t> FileId(int fd) {
  struct stat st;
  if (::fstat(fd, &st) != 0) return {0, 0};
  return {st.st_dev, st.st_ino};
}

// The holder as a child process whose stderr (its log) we read line by
// line: "started" is its fdholder_listening line, so no polling or sleeping.
class HolderProcess {
 public:
  ~HolderProcess() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
  }

  // Starts the holder with `args`; true once it logged that it listens.
  bool Start(const std::vector<std::string>& args) {
    int p[2];
    if (::pipe2(p, O_CLOEXEC) != 0) return false;
    pid_ = ::fork();
    if (pid_ == 0) {
      ::dup2(p[1], 2);
      std::vector<std::string> argv_s = {Holder()};
      argv_s.insert(argv_s.end(), args.begin(), args.end());
      std::vector<char*> argv;
      for (std::string& a : argv_s) argv.push_back(a.data());
      argv.push_back(nullptr);
      ::execv(argv[0], argv.data());
      _exit(127);
    }
    ::close(p[1]);
    log_.reset(p[0]);
    return ReadUntil("event=fdholder_listening");
  }

  // Reads the log until a line containing `needle` (true) or EOF (false).
  bool ReadUntil(absl::string_view needle) {
    char buf[4096];
    while (true) {
      if (absl::StrContains(text_.substr(scanned_), needle)) {
        scanned_ = text_.size();
        return true;
      }
      const ssize_t n = ::read(log_.get(), buf, sizeof(buf));
      if (n <= 0) return false;
      text_.append(buf, n);
    }
  }

  // SIGTERM; returns the wait status and reads the rest of the log.
  int Terminate() {
    ::kill(pid_, SIGTERM);
    ReadUntil("\x01never");  // To EOF: the holder closed its stderr.
    int status = 0;
    ::waitpid(pid_, &status, 0);
    pid_ = -1;
    return status;
  }

  const std::string& log() const { return text_; }

 private:
  pid_t pid_ = -1;
  UniqueFd log_;
  std::string text_;
  size_t scanned_ = 0;
};

TEST(FdHolderBinaryTest, KeepsFdsForARestartedAgentAndExitsZeroOnSigterm) {
  const std::string socket = NewTempDir("fdholder") + "/fdholder.sock";
  HolderProcess holder;
  ASSERT_TRUE(holder.Start({"--socket=" + socket, "--max-fds=16"})) << holder.log();
  struct stat st;
  ASSERT_EQ(::stat(socket.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);

  UniqueFd memfd(::memfd_create("guest", MFD_CLOEXEC));
  ASSERT_TRUE(memfd.valid());
  {
    absl::StatusOr<std::unique_ptr<FdStore>> agent = OpenFdStore("holder:" + socket);
    ASSERT_TRUE(agent.ok()) << agent.status();
    absl::Status put = (*agent)->Put("memfd.guest-1", memfd.get());
    ASSERT_TRUE(put.ok()) << put;
  }  // The agent is gone; the holder keeps the fd.

  absl::StatusOr<std::unique_ptr<FdStore>> restarted = OpenFdStore("holder:" + socket);
  ASSERT_TRUE(restarted.ok()) << restarted.status();
  absl::StatusOr<std::map<std::string, UniqueFd>> fds = (*restarted)->Retrieve();
  ASSERT_TRUE(fds.ok()) << fds.status();
  ASSERT_EQ(fds->size(), 1u);
  ASSERT_EQ(fds->count("memfd.guest-1"), 1u);
  EXPECT_EQ(FileId(fds->at("memfd.guest-1").get()), FileId(memfd.get()));

  const int status = holder.Terminate();
  ASSERT_TRUE(WIFEXITED(status)) << status << "\n" << holder.log();
  EXPECT_EQ(WEXITSTATUS(status), 0) << holder.log();
  EXPECT_TRUE(absl::StrContains(holder.log(), "event=fdholder_stopping signal=Terminated"))
      << holder.log();
  EXPECT_TRUE(absl::StrContains(holder.log(), "event=fdholder_stopped fds_closed=1"))
      << holder.log();

  // Gone: the agent is told to look for the holder.
  absl::Status after = (*restarted)->Remove("memfd.guest-1");
  EXPECT_EQ(after.code(), absl::StatusCode::kUnavailable) << after;
  EXPECT_TRUE(absl::StrContains(after.message(), "(is iommu-fdholder running?)")) << after;
}

TEST(FdHolderBinaryTest, RefusesASecondHolderOnALiveSocket) {
  const std::string socket = NewTempDir("fdholder") + "/fdholder.sock";
  HolderProcess first;
  ASSERT_TRUE(first.Start({"--socket=" + socket})) << first.log();
  testing::CommandResult second = RunCommand({Holder(), "--socket=" + socket});
  EXPECT_EQ(second.exit_code, 1) << second.err;
  EXPECT_TRUE(absl::StrContains(second.err, "event=listen_failed")) << second.err;
  EXPECT_TRUE(absl::StrContains(second.err, "FAILED_PRECONDITION")) << second.err;
}

TEST(FdHolderBinaryTest, BadFlagsExitOneNamingTheFlag) {
  const std::string socket = NewTempDir("fdholder") + "/fdholder.sock";
  testing::CommandResult max_fds = RunCommand({Holder(), "--socket=" + socket, "--max-fds=0"});
  EXPECT_EQ(max_fds.exit_code, 1);
  EXPECT_TRUE(absl::StrContains(max_fds.err, "max_fds: must be 1 to 1048576, got 0"))
      << max_fds.err;
  testing::CommandResult mode =
      RunCommand({Holder(), "--socket=" + socket, "--socket-mode=0999"});
  EXPECT_EQ(mode.exit_code, 1);
  EXPECT_TRUE(absl::StrContains(mode.err, "socket_mode: must be octal permissions like 0600"))
      << mode.err;
}

}  // namespace
}  // namespace iommu
