// FakeLauncherHandler: a LauncherHandler for tests of the launcher socket and
// its client. It keeps per-connection mappings in memory, answers every op
// plausibly, records each callback as an event string, and has switches for
// the failure paths (refuse connections, answer without a result).
//
// Events: "connect <conn> uid=<uid>", "request <conn> seq=<seq> <op>",
// "disconnect <conn>".
//
// Thread-safe: the server thread calls the handler while the test thread
// reads events and flips switches.
#ifndef AGENT_FAKE_LAUNCHER_HANDLER_H_
#define AGENT_FAKE_LAUNCHER_HANDLER_H_

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "agent/launcher_server.h"
#include "common/unique_fd.h"

namespace iommu {
namespace agent {

class FakeLauncherHandler final : public LauncherHandler {
 public:
  // The devices GetDevices returns, each backed by a memfd the fake owns (a
  // stand-in for a VFIO cdev fd) so tests can compare inodes.
  static constexpr const char* kDeviceAddresses[] = {"0000:00:04.0",
                                                     "0000:00:05.0"};
  static constexpr uint64_t kWindowBase = 0x100000;
  static constexpr uint64_t kWindowSize = 0x200000;

  FakeLauncherHandler();

  absl::Status OnConnect(uint64_t conn_id, const PeerCred& peer) override;
  void OnRequest(uint64_t conn_id, const v1::LauncherRequest& req,
                 std::vector<UniqueFd> fds, v1::LauncherResponse* response,
                 std::vector<int>* out_fds) override;
  void OnDisconnect(uint64_t conn_id) override;

  // Every event so far, in order.
  std::vector<std::string> events();
  // Waits until at least `n` events matched `prefix`; false on timeout.
  bool WaitForEvents(const std::string& prefix, size_t n, absl::Duration timeout);
  size_t CountEvents(const std::string& prefix);

  // OnConnect returns `status` from now on (OK: accept).
  void set_connect_status(absl::Status status);
  // OnRequest answers OK with no result (a handler bug the server catches).
  void set_answer_without_result(bool on);
  // The next OnRequest answers `status` and, like a buggy handler, still
  // returns the device fds (the server must drop them from an error).
  void set_error_for_next_request(absl::Status status);

  // The inode of device i's fd and of the last memory registered.
  ino_t device_inode(size_t i);
  ino_t last_memory_inode();
  // The peer of the last accepted connection.
  PeerCred last_peer();

 private:
  void Record(std::string event) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  absl::Mutex mu_;
  std::vector<std::string> events_ ABSL_GUARDED_BY(mu_);
  absl::Status connect_status_ ABSL_GUARDED_BY(mu_);
  bool answer_without_result_ ABSL_GUARDED_BY(mu_) = false;
  absl::Status next_error_ ABSL_GUARDED_BY(mu_);
  std::vector<UniqueFd> devices_ ABSL_GUARDED_BY(mu_);
  // Memory registered, kept open as the agent would, and inodes seen.
  std::vector<UniqueFd> memory_ ABSL_GUARDED_BY(mu_);
  std::set<ino_t> known_inodes_ ABSL_GUARDED_BY(mu_);
  ino_t last_memory_inode_ ABSL_GUARDED_BY(mu_) = 0;
  PeerCred last_peer_ ABSL_GUARDED_BY(mu_);
  // conn -> iova -> mapping.
  std::map<uint64_t, std::map<uint64_t, v1::LauncherResponse::MappingEntry>>
      mappings_ ABSL_GUARDED_BY(mu_);
};

}  // namespace agent
}  // namespace iommu

#endif  // AGENT_FAKE_LAUNCHER_HANDLER_H_
