// Test helper: runs one of the project's daemons as a child process, waits
// for it to publish its port (--port-file), and stops or kills it. The child
// is killed in the destructor, so a failing test leaves nothing running.
//
// Thread-compatible (one thread drives a Daemon).
#ifndef TESTS_DAEMON_H_
#define TESTS_DAEMON_H_

#include <sys/types.h>

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace iommu::testing {

// A unique empty directory under TEST_TMPDIR.
std::string NewTempDir(const std::string& name);

// Path of a binary built by Bazel, from the test's runfiles
// (e.g. "server/iommu-broker").
std::string RunfilePath(const std::string& relative);

// Runs `argv` to completion with `env_extra` ("K=V") added to the
// environment; captures stdout and stderr.
struct CommandResult {
  int exit_code = -1;  // -1 if killed by a signal.
  std::string out;
  std::string err;
};
CommandResult RunCommand(const std::vector<std::string>& argv,
                         const std::vector<std::string>& env_extra = {});

// A TCP port on 127.0.0.1 that was free a moment ago (for daemons that must
// come back on the same port after a restart).
int PickFreePort();

// The state letter in the /proc stat file at `stat_path` (/proc/PID/stat or
// /proc/PID/task/TID/stat: 'R', 'S', 'T', 'Z', ...), or '?' when it cannot
// be read.
char ProcStatState(const std::string& stat_path);

// Stops child process `pid`: SIGTERM, up to `grace` for it to exit, then
// SIGKILL. Always reaps it. Returns its wait status (as waitpid).
int TerminateAndReap(pid_t pid, absl::Duration grace);

class Daemon final {
 public:
  Daemon() = default;
  ~Daemon();
  Daemon(const Daemon&) = delete;
  Daemon& operator=(const Daemon&) = delete;

  // Starts `binary` with `args` plus --port-file=<dir>/<name>.port; stderr
  // goes to <dir>/<name>.log. Waits up to `timeout` for the port.
  absl::Status Start(const std::string& binary, std::vector<std::string> args,
                     const std::string& dir, const std::string& name,
                     absl::Duration timeout = absl::Seconds(30));

  // Start in two steps: starts the child without waiting, then waits for
  // its port (e.g. a standby replica, which publishes it only once it leads).
  absl::Status Launch(const std::string& binary, std::vector<std::string> args,
                      const std::string& dir, const std::string& name);
  absl::Status WaitForPort(absl::Duration timeout = absl::Seconds(30));

  // SIGTERM, then waits for exit. Returns the exit status (as waitpid).
  int Stop();
  // Waits for the child to exit by itself. Returns the exit status.
  int Wait();
  // SIGKILL, then reaps.
  void Kill();

  int port() const { return port_; }
  pid_t pid() const { return pid_; }
  std::string address() const { return "127.0.0.1:" + std::to_string(port_); }
  std::string log_path() const { return log_; }
  std::string Log() const;  // Contents of the log so far.
  // When Start failed because the child exited before publishing its port:
  // its wait status (as waitpid); -1 otherwise.
  int early_exit_status() const { return early_exit_status_; }

 private:
  pid_t pid_ = -1;
  int port_ = 0;
  int early_exit_status_ = -1;
  std::string log_;
  std::string name_;
  std::string port_file_;
};

}  // namespace iommu::testing

#endif  // TESTS_DAEMON_H_
