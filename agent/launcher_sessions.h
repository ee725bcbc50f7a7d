// LauncherSessions: the agent's side of the launcher protocol
// (proto/launcher.proto), plugged into LauncherServer. It turns a token the
// broker signed into a session bound to one container, its tenant and its
// windows; registers the launcher's memory; and maps, unmaps and lists
// through AgentCore, so every pin goes through the ledger and the pin
// budgets. When a connection closes (the launcher exited or was killed) the
// session's mappings are unmapped and its billing released.
//
// Thread-safe: LauncherServer calls it from its one thread; the state it
// shares with other threads lives in AgentCore.
#ifndef AGENT_LAUNCHER_SESSIONS_H_
#define AGENT_LAUNCHER_SESSIONS_H_

#include <cstdint>
#include <functional>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/random/random.h"
#include "absl/synchronization/mutex.h"
#include "agent/agent_core.h"
#include "agent/launcher_server.h"
#include "common/log_limiter.h"
#include "agent/peer_policy.h"
#include "common/grant_token.h"
#include "proto/launcher.pb.h"

namespace iommu {
namespace agent {

struct LauncherSessionOptions {
  // Peers whose SO_PEERCRED uid is not listed are refused at connect. Empty:
  // any uid the socket's permissions let in.
  std::set<uid_t> allowed_uids;
  // Peers whose SO_PEERCRED gid is not listed are refused at connect. Empty:
  // any gid. A peer must pass both sets (peer_policy.h).
  std::set<gid_t> allowed_gids;
  // Connections (each holds at most one session) one uid may hold at once;
  // more are refused at connect with RESOURCE_EXHAUSTED.
  size_t max_sessions_per_peer = kDefaultMaxSessionsPerPeer;
  // Per session: how many memory objects and how many bytes of them it may
  // register. Each object holds an fd and a shared mapping in the agent, so
  // these bound what one session adds to the agent's fd table and address
  // space.
  size_t max_memory_objects = 64;
  uint64_t max_memory_bytes = 1ULL << 40;
  // Per tenant on this node, whatever uids its launchers run as: open
  // sessions, and bytes of memory its sessions registered. Past either, the
  // tenant's next OpenSession / RegisterMemory is RESOURCE_EXHAUSTED naming
  // the tenant and the limit; other tenants are unaffected.
  size_t max_sessions_per_tenant = 16;
  uint64_t max_memory_bytes_per_tenant = 8ULL << 40;
  // Used token ids remembered until expiry, per tenant and in all
  // (--replay-cache-per-tenant, --replay-cache-max).
  ReplayCacheLimits replay;
  // Milliseconds since the epoch; injectable for tests of token expiry.
  std::function<int64_t()> now_ms;
};

// INVALID_ARGUMENT naming the field when `options` cannot work: a zero
// max_sessions_per_peer or max_memory_objects, max_memory_bytes below one
// page (4096), or the kernel's "no id" in an allowed set.
absl::Status ValidateLauncherSessionOptions(const LauncherSessionOptions& options);

class LauncherSessions final : public LauncherHandler {
 public:
  // `core` is not owned and must outlive this object. `options` should pass
  // ValidateLauncherSessionOptions.
  LauncherSessions(AgentCore* core, LauncherSessionOptions options);

  LauncherSessions(const LauncherSessions&) = delete;
  LauncherSessions& operator=(const LauncherSessions&) = delete;

  absl::Status OnConnect(uint64_t conn_id, const PeerCred& peer) override;
  void OnRequest(uint64_t conn_id, const v1::LauncherRequest& req, std::vector<UniqueFd> fds,
                 v1::LauncherResponse* response, std::vector<int>* out_fds) override;
  void OnDisconnect(uint64_t conn_id) override;

  // Open sessions now.
  size_t session_count();
  // Connections of `uid` counted against max_sessions_per_peer now.
  size_t peer_connections(uid_t uid);

 private:
  struct Conn {
    PeerCred peer;
    std::string session_id;  // Empty until OpenSession succeeds.
    std::string container_id;
    std::string tenant_id;
    size_t memory_objects = 0;
    uint64_t memory_bytes = 0;
    // Device fds of the last GetDevices answer: they must stay open until
    // the server has sent it, which happens before the next request.
    std::vector<UniqueFd> sent_fds;
  };

  absl::Status Open(Conn& conn, const v1::LauncherRequest::OpenSession& req,
                    v1::LauncherResponse* response) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status Resume(Conn& conn, const v1::LauncherRequest::ResumeSession& req,
                      v1::LauncherResponse* response) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status Register(Conn& conn, const v1::LauncherRequest::RegisterMemory& req,
                        std::vector<UniqueFd> fds, v1::LauncherResponse* response)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status Map(Conn& conn, const v1::LauncherRequest::Map& req)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Sessions and registered bytes of `tenant` now (a scan of at most
  // --max-launcher-connections entries).
  size_t TenantSessionsLocked(const std::string& tenant) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  uint64_t TenantMemoryBytesLocked(const std::string& tenant) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // A refusal of `conn`'s request, logged rate-limited per uid.
  absl::Status Refuse(const Conn& conn, const std::string& container, absl::Status s)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // An info line about `conn`, rate-limited per uid and `kind` in events_.
  void LogAbout(const Conn& conn, absl::string_view kind, absl::string_view event,
                std::vector<LogField> fields) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // Constant after construction.
  AgentCore* const core_;
  const LauncherSessionOptions options_;

  ReplayCache replay_;  // Thread-safe itself.
  absl::Mutex mu_;
  std::map<uint64_t, Conn> conns_ ABSL_GUARDED_BY(mu_);
  PeerPolicy peers_ ABSL_GUARDED_BY(mu_);
  absl::BitGen rng_ ABSL_GUARDED_BY(mu_);
  LogLimiter warnings_ ABSL_GUARDED_BY(mu_);
  // Sessions opened and resumed, device fds sent: state changes operators
  // want to see, so a burst of 20 per uid passes before any is dropped; a
  // peer looping on them still cannot flood the log. Separate from
  // warnings_ so that refusals stay visible.
  LogLimiter events_ ABSL_GUARDED_BY(mu_){/*per_second=*/1.0, /*burst=*/20.0};
};

}  // namespace agent
}  // namespace iommu

#endif  // AGENT_LAUNCHER_SESSIONS_H_
