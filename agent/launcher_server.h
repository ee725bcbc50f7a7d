// LauncherServer: the agent's unix socket for VM launchers. One thread
// accepts connections, reads one LauncherRequest per SOCK_SEQPACKET packet
// (proto/launcher.proto, "Framing"), hands it with its fds to a
// LauncherHandler, and writes the LauncherResponse with the fds the handler
// returns. The server enforces the transport rules (connection count, packet
// size, fds per request, parseable requests); the handler owns the meaning
// (sessions, tokens, memory, the ledger).
//
// Thread-safety: Start, Stop and the destructor may be called from any
// thread. Every LauncherHandler callback runs on the server's one thread, so
// callbacks never overlap and requests of one connection are handled in the
// order they were sent. The handler must therefore be fast (no network
// calls, no waiting on other connections); it must still be thread-safe with
// respect to whatever else in the agent touches the state it shares.
#ifndef AGENT_LAUNCHER_SERVER_H_
#define AGENT_LAUNCHER_SERVER_H_

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "agent/log.h"
#include "common/log_limiter.h"
#include "common/unique_fd.h"
#include "common/unix_socket.h"
#include "proto/launcher.pb.h"

namespace iommu {
namespace agent {

// What the agent does with launcher connections. Implemented by the agent
// core (sessions and memory) and by fakes in tests. Every method is called on
// the server thread only.
class LauncherHandler {
 public:
  virtual ~LauncherHandler() = default;

  // A connection opened; `peer` is what SO_PEERCRED reported at connect.
  // Return non-OK to refuse it: the server sends the status to the client as
  // a response with seq 0 and closes the connection, and OnDisconnect is not
  // called for it.
  virtual absl::Status OnConnect(uint64_t conn_id, const PeerCred& peer) = 0;

  // One request of connection `conn_id`, already parsed, with exactly one op
  // set. `fds` are the fds that came with it (at most
  // LauncherServerOptions::max_request_fds); ownership passes to the
  // handler, and those it does not move elsewhere are closed when `fds` is
  // destroyed. Fill `response` (code, message, result); the server sets its
  // seq. `out_fds` are sent with the response: they stay owned by the
  // handler, which must keep them open until OnRequest returns (the server
  // sends the response before it calls the handler again, and the kernel
  // duplicates them into the message). On a non-OK code the server sends no
  // fds. A response over kMaxLauncherPacketBytes, or more than
  // kMaxLauncherPacketFds out_fds, is replaced by INTERNAL.
  virtual void OnRequest(uint64_t conn_id, const v1::LauncherRequest& req,
                         std::vector<UniqueFd> fds,
                         v1::LauncherResponse* response,
                         std::vector<int>* out_fds) = 0;

  // The connection closed: the peer hung up, the socket failed, the peer
  // stopped reading its responses, or the server is stopping. Called exactly
  // once per successful OnConnect, after its last OnRequest; the handler
  // releases the connection's session here.
  virtual void OnDisconnect(uint64_t conn_id) = 0;
};

struct LauncherServerOptions {
  // Where to listen (ListenUnix: a stale socket file is replaced).
  std::string socket_path;
  // Who may connect: launchers run as members of the socket's group.
  mode_t socket_mode = 0660;
  std::optional<gid_t> socket_gid;
  // Connections beyond this are answered RESOURCE_EXHAUSTED and closed,
  // unless a uid holding at least two more connections than the newcomer's
  // has one without a session: that one is closed instead (told why), so a
  // few uids cannot keep the others out. Each holds an fd and a session in
  // the agent.
  size_t max_connections = 64;
  // Largest request accepted; bigger ones are answered INVALID_ARGUMENT.
  size_t max_request_bytes = kMaxLauncherPacketBytes;
  // Fds accepted with one request. Only RegisterMemory carries one.
  size_t max_request_fds = 1;
  // A connection that has not opened a session (an OpenSession answered OK)
  // this long after connecting is answered DEADLINE_EXCEEDED and closed, so
  // idle connections cannot hold slots of max_connections or of a uid's
  // limit (issue 11: two uids with 32 idle connections each kept every real
  // launcher out). Positive.
  absl::Duration session_open_timeout = absl::Seconds(5);
};

class LauncherServer final {
 public:
  // Listens on options.socket_path and starts the server thread. `handler`
  // is not owned and must outlive the server. Errors: INVALID_ARGUMENT for
  // zero limits or limits above the wire limits; ListenUnix's errors; the
  // eventfd errno.
  static absl::StatusOr<std::unique_ptr<LauncherServer>> Start(
      LauncherServerOptions options, LauncherHandler* handler);

  LauncherServer(const LauncherServer&) = delete;
  LauncherServer& operator=(const LauncherServer&) = delete;

  // Stops the server.
  ~LauncherServer();

  // Wakes the server thread and joins it. The thread closes every connection
  // (OnDisconnect for each, so clients see EOF), closes the listening socket
  // and removes the socket file if it is still the one it created. Returns
  // promptly: the thread never blocks except in poll(). Idempotent; after
  // it returns no handler method is called again.
  void Stop();

  const std::string& socket_path() const { return options_.socket_path; }

 private:
  struct Connection;

  LauncherServer(LauncherServerOptions options, LauncherHandler* handler,
                 UniqueFd listener, UniqueFd wake, dev_t socket_dev,
                 ino_t socket_ino);

  void Run();
  // Closes connections past their session_open_timeout; returns the poll
  // timeout (ms, -1 for none) until the next such deadline.
  int CloseIdle(std::vector<std::unique_ptr<Connection>>* conns, absl::Time now);
  // When every slot is taken: the oldest connection without a session of
  // the uid holding the most connections, if that uid holds at least two
  // more than `newcomer`; else null (the newcomer is refused).
  static Connection* IdleVictimFor(const std::vector<std::unique_ptr<Connection>>& conns,
                                   uid_t newcomer);
  // Tells `victim` why (RESOURCE_EXHAUSTED naming both uids), closes it and
  // removes it from `conns` (OnDisconnect included).
  void Evict(std::vector<std::unique_ptr<Connection>>* conns, Connection* victim, uid_t newcomer);
  // Logs a warning about `uid`, rate-limited per uid (LogLimiter) so one
  // peer's refusals cannot flood the log; a line that passes carries how
  // many were dropped before it.
  void WarnAbout(uid_t uid, absl::string_view event, std::vector<LogField> fields);
  // Logs `conn`'s launcher_connected line if its uid's share of
  // connection_lines_ allows, and remembers whether it did: the matching
  // launcher_disconnected line is logged exactly when this one was, so a
  // peer looping connect/close costs the log a bounded number of pairs.
  void LogConnected(Connection* conn);
  void LogDisconnected(const Connection& conn, absl::string_view reason);
  // Accepts one pending connection; false when accept4 failed and the
  // listener should rest (EMFILE and the like).
  bool AcceptOne(std::vector<std::unique_ptr<Connection>>* conns);
  // Reads and answers one packet; false when the connection must close.
  bool ServeOne(Connection* conn);
  // Tells the peer why its connection is refused (a seq 0 response) and
  // closes it so that the answer is not lost to ECONNRESET.
  void Refuse(Connection* conn, const absl::Status& why);
  // Sends `response` (seq already set) with `fds`; false if the connection
  // can no longer be used.
  bool Send(Connection* conn, const v1::LauncherResponse& response,
            const std::vector<int>& fds);

  // Constant after construction; the fds are used by the server thread only
  // (and `wake_` written by Stop).
  const LauncherServerOptions options_;
  LauncherHandler* const handler_;
  UniqueFd listener_;
  UniqueFd wake_;  // eventfd: Stop writes, the thread polls.
  const dev_t socket_dev_;
  const ino_t socket_ino_;

  absl::Mutex mu_;
  std::thread thread_ ABSL_GUARDED_BY(mu_);
  uint64_t next_conn_id_ = 1;  // Server thread only.
  // Every line a peer can cause at will goes through one of these, keyed by
  // uid (README "log volume"). Separate buckets so that a uid's connection
  // churn does not hide its refusals, and debug request lines (opt-in, and
  // wanted in full for a launcher being debugged) have a larger share.
  // Server thread only.
  LogLimiter warnings_;
  LogLimiter connection_lines_;
  LogLimiter request_lines_{/*per_second=*/50.0, /*burst=*/200.0};
};

}  // namespace agent
}  // namespace iommu

#endif  // AGENT_LAUNCHER_SERVER_H_
