#include "tests/launcher_process.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "tests/daemon.h"

extern char** environ;

namespace iommu::testing {

absl::Status LauncherProcess::Start(const std::vector<std::string>& args,
                                    const std::vector<std::string>& env_extra,
                                    const std::string& stderr_path,
                                    const std::string& stdin_text) {
  int in[2], out[2];
  if (pipe2(in, O_CLOEXEC) != 0) return absl::ErrnoToStatus(errno, "pipe2");
  if (pipe2(out, O_CLOEXEC) != 0) {
    close(in[0]);
    close(in[1]);
    return absl::ErrnoToStatus(errno, "pipe2");
  }
  stdin_.reset(in[1]);
  stdout_.reset(out[0]);
  UniqueFd child_in(in[0]), child_out(out[1]);
  std::vector<std::string> argv = args;
  argv.insert(argv.begin(), RunfilePath("launcher/iommu-launcher"));
  std::vector<char*> cargv;
  for (std::string& a : argv) cargv.push_back(a.data());
  cargv.push_back(nullptr);
  std::vector<std::string> env;
  for (char** e = environ; *e != nullptr; ++e) env.emplace_back(*e);
  env.insert(env.end(), env_extra.begin(), env_extra.end());
  std::vector<char*> cenv;
  for (std::string& e : env) cenv.push_back(e.data());
  cenv.push_back(nullptr);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, child_in.get(), 0);
  posix_spawn_file_actions_adddup2(&fa, child_out.get(), 1);
  posix_spawn_file_actions_addopen(&fa, 2, stderr_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC,
                                   0644);
  const int rc = posix_spawn(&pid_, cargv[0], &fa, nullptr, cargv.data(), cenv.data());
  posix_spawn_file_actions_destroy(&fa);
  if (rc != 0) {
    pid_ = -1;
    return absl::ErrnoToStatus(rc, absl::StrCat("posix_spawn ", cargv[0]));
  }
  output_.clear();
  if (!stdin_text.empty() &&
      ::write(stdin_.get(), stdin_text.data(), stdin_text.size()) !=
          static_cast<ssize_t>(stdin_text.size())) {
    const int err = errno;
    Kill();
    return absl::ErrnoToStatus(err, "write the launcher's stdin");
  }
  return absl::OkStatus();
}

absl::Status LauncherProcess::WaitForLine(const std::string& line, absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  while (output_.find(line + "\n") == std::string::npos) {
    const int64_t left = absl::ToInt64Milliseconds(deadline - absl::Now());
    if (left <= 0) return absl::DeadlineExceededError(absl::StrCat("no \"", line, "\" line"));
    pollfd p = {stdout_.get(), POLLIN, 0};
    if (poll(&p, 1, static_cast<int>(left)) <= 0) continue;
    char buf[512];
    const ssize_t n = read(stdout_.get(), buf, sizeof(buf));
    if (n == 0) return absl::UnavailableError("launcher exited before the line");
    if (n > 0) output_.append(buf, n);
  }
  return absl::OkStatus();
}

bool LauncherProcess::Running() {
  if (pid_ <= 0) return false;
  int status = 0;
  if (waitpid(pid_, &status, WNOHANG) == pid_) {
    exit_status_ = status;
    pid_ = -1;
    return false;
  }
  return true;
}

absl::StatusOr<int> LauncherProcess::WaitExit(absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  while (Running()) {
    if (absl::Now() >= deadline) return absl::DeadlineExceededError("launcher still running");
    absl::SleepFor(absl::Milliseconds(20));
  }
  return exit_status_;
}

int LauncherProcess::Kill() {
  if (pid_ > 0) {
    kill(pid_, SIGKILL);
    waitpid(pid_, &exit_status_, 0);
    pid_ = -1;
  }
  return exit_status_;
}

}  // namespace iommu::testing
