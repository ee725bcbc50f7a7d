// FdHolder: the server side of iommu-fdholder, a small process that keeps
// the agent's fds for it where systemd's fd store is not available (a
// Kubernetes DaemonSet: the holder is a separate container of the agent's
// pod, so the kubelet restarts the agent without the holder). The agent
// hands fds over with HolderFdStore (agent/fd_store.h) and takes them back
// after a restart; the protocol is in agent/fd_holder_protocol.h.
//
// Rules:
//   * Only peers whose SO_PEERCRED uid is the holder's own uid (or 0) are
//     served; any other gets ERR PERMISSION_DENIED and is disconnected.
//   * Fds are kept across client disconnects; clients come and go (one per
//     agent call), at most Options::max_connections at once: a connection
//     past that gets ERR RESOURCE_EXHAUSTED and is closed.
//   * At most Options::max_fds names are held; a PUT of a new name past it is
//     RESOURCE_EXHAUSTED (replacing an existing name is always allowed).
//   * Malformed requests change nothing and their fds are closed; no input
//     ends the holder.
//   * Shutdown closes every held fd (the operator stopping the holder asks
//     for exactly that) and logs how many.
//
// Thread-safety: Serve runs the accept loop on the calling thread and one
// thread per connection; the held fds are guarded by one mutex. Shutdown and
// the accessors may be called from any thread.
#ifndef AGENT_FD_HOLDER_H_
#define AGENT_FD_HOLDER_H_

#include <sys/types.h>

#include <cstddef>
#include <list>
#include <map>
#include <memory>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "agent/fd_holder_protocol.h"
#include "common/unique_fd.h"
#include "common/log_limiter.h"

namespace iommu {
namespace agent {

// Whether the holder running as `own_uid` serves a peer of `peer_uid`.
bool FdHolderServesPeer(uid_t peer_uid, uid_t own_uid);

class FdHolder final {
 public:
  struct Options {
    std::string socket_path = "/run/iommu-agent/fdholder.sock";
    mode_t socket_mode = 0600;
    size_t max_fds = 65536;
    size_t max_connections = 8;
  };

  // Listens on options.socket_path (ListenUnix: a stale socket file is
  // replaced, a live one is FAILED_PRECONDITION). INVALID_ARGUMENT for
  // max_fds or max_connections of 0.
  static absl::StatusOr<std::unique_ptr<FdHolder>> Listen(const Options& options);

  FdHolder(const FdHolder&) = delete;
  FdHolder& operator=(const FdHolder&) = delete;
  // Shuts down (if Serve has not) and closes every held fd.
  ~FdHolder();

  // Accepts and serves connections until Shutdown; then closes the listening
  // socket (connects are refused from then on; the socket file stays, and
  // the next Listen on the path replaces it), disconnects every client,
  // waits for their threads and closes the held fds. Returns OK
  // after Shutdown, or the error that stopped accepting (poll failing).
  // Call once.
  absl::Status Serve();

  // Makes Serve return. Async-signal-unsafe; call from a thread (the binary
  // sigwaits on one). Idempotent.
  void Shutdown();

  // Held fds, and connections being served (for tests and logs).
  size_t fd_count() const;
  size_t connection_count() const;

 private:
  struct Connection {
    // Read by the connection's thread without the lock (it is set before the
    // thread starts); closed by that thread under FdHolder::mu_ when done.
    UniqueFd fd;
    std::thread thread;
    bool done = false;  // Guarded by FdHolder::mu_.
  };

  FdHolder(Options options, UniqueFd listen_fd, UniqueFd wake_fd);

  void AcceptOne();
  void ReapLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void ServeConnection(Connection* conn);
  // Handles one request on `fd`; false when the connection must be closed.
  bool HandleRequest(int fd);
  absl::Status ApplyLocked(const HolderRequest& request, UniqueFd fd)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Answers LIST; false when the connection must be closed.
  bool SendList(int fd);
  size_t CloseAllLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // Constant after construction.
  const Options options_;
  const UniqueFd wake_fd_;  // eventfd: Shutdown writes, Serve polls.
  const uid_t own_uid_;

  // Used only by the thread in Serve, which closes it when it stops.
  UniqueFd listen_fd_;

  mutable absl::Mutex mu_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  bool served_ ABSL_GUARDED_BY(mu_) = false;
  std::map<std::string, UniqueFd> fds_ ABSL_GUARDED_BY(mu_);
  std::list<Connection> connections_ ABSL_GUARDED_BY(mu_);
  LogLimiter refusal_log_limiter_ ABSL_GUARDED_BY(mu_);
};

}  // namespace agent
}  // namespace iommu

#endif  // AGENT_FD_HOLDER_H_
