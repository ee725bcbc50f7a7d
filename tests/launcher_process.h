// Test helper: iommu-launcher (from the test's runfiles) as a child process.
// Its stdin is a pipe the test keeps open (so --hold never sees EOF), its
// stdout a pipe the test reads, its stderr a file. The child is killed in the
// destructor, so a failing test leaves nothing running.
//
// Thread-compatible (one thread drives a LauncherProcess).
#ifndef TESTS_LAUNCHER_PROCESS_H_
#define TESTS_LAUNCHER_PROCESS_H_

#include <sys/types.h>

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/unique_fd.h"

namespace iommu::testing {

class LauncherProcess final {
 public:
  LauncherProcess() = default;
  LauncherProcess(const LauncherProcess&) = delete;
  LauncherProcess& operator=(const LauncherProcess&) = delete;
  ~LauncherProcess() { Kill(); }

  // Starts the launcher with `args` and the test's environment plus
  // `env_extra` ("K=V", e.g. the grant token); stderr goes to `stderr_path`.
  // `stdin_text`, if any, is written to its stdin (which stays open), e.g.
  // the token for --token-file=-. On error no child is left running.
  absl::Status Start(const std::vector<std::string>& args,
                     const std::vector<std::string>& env_extra, const std::string& stderr_path,
                     const std::string& stdin_text = "");
  // Reads stdout until the line `line` arrives (or the launcher exits);
  // all output so far is in output().
  absl::Status WaitForLine(const std::string& line, absl::Duration timeout);
  // Waits up to `timeout` for the launcher to exit; returns its wait status,
  // or DEADLINE_EXCEEDED if it is still running.
  absl::StatusOr<int> WaitExit(absl::Duration timeout);
  // Whether the child still runs (it is reaped if it exited).
  bool Running();
  // SIGKILL and reap; returns the wait status (that of the last exit, or 0,
  // when not running).
  int Kill();

  pid_t pid() const { return pid_; }
  const std::string& output() const { return output_; }

 private:
  pid_t pid_ = -1;
  int exit_status_ = 0;
  UniqueFd stdin_;
  UniqueFd stdout_;
  std::string output_;
};

}  // namespace iommu::testing

#endif  // TESTS_LAUNCHER_PROCESS_H_
