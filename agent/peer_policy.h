// PeerPolicy: who may use the agent's launcher socket and how much of it one
// peer may hold. The agent runs as root and a launcher is any local process
// the socket's permissions let in, so the socket checks the identity the
// kernel recorded at connect (SO_PEERCRED uid and gid) against allowed sets,
// and bounds the connections one uid holds at once. A connection holds at
// most one session, so this also bounds sessions per peer, and it counts
// connections that have not opened one yet: a peer cannot take every slot of
// --max-launcher-connections with idle connections either.
//
// The peer is its uid: a pid is free to multiply (fork) and a gid is shared
// by design (the socket's group), while a uid is what a local user cannot
// change without privilege.
//
// Pure logic, no I/O. Thread-compatible: LauncherSessions calls it under its
// own mutex.
#ifndef AGENT_PEER_POLICY_H_
#define AGENT_PEER_POLICY_H_

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace iommu {
namespace agent {

// The default of --max-sessions-per-peer: a quarter of the default
// --max-launcher-connections (64), so that two or three uids cannot hold
// every slot (issue 11: two uids at 32 each kept every other launcher out).
// Connections without a session are also closed after
// --launcher-session-open-timeout, so only sessions hold slots for long. A
// node whose launchers all run as one uid raises it to the connection limit.
inline constexpr size_t kDefaultMaxSessionsPerPeer = 16;

struct PeerPolicyOptions {
  // A peer whose SO_PEERCRED uid is not listed is refused. Empty: any uid
  // the socket's permissions let in.
  std::set<uid_t> allowed_uids;
  // A peer whose SO_PEERCRED gid (its effective gid at connect; supplementary
  // groups are not consulted) is not listed is refused. Empty: any gid. With
  // both sets, a peer must pass both.
  std::set<gid_t> allowed_gids;
  // Connections (and so sessions) one uid may hold at once; at least 1.
  size_t max_sessions_per_peer = kDefaultMaxSessionsPerPeer;
};

// INVALID_ARGUMENT naming the field when `options` cannot work:
// max_sessions_per_peer 0, or (uid_t)-1 / (gid_t)-1 in an allowed set (the
// kernel's "no id", never a real peer's).
absl::Status ValidatePeerPolicyOptions(const PeerPolicyOptions& options);

class PeerPolicy final {
 public:
  // `options` should pass ValidatePeerPolicyOptions; a limit of 0 refuses
  // every peer.
  explicit PeerPolicy(PeerPolicyOptions options);

  PeerPolicy(const PeerPolicy&) = delete;
  PeerPolicy& operator=(const PeerPolicy&) = delete;

  // Admits a new connection of the peer `uid`/`gid` and counts it against
  // `uid`. Errors, which count nothing:
  //   PERMISSION_DENIED "peer: uid 1000 may not use this agent's launcher
  //   socket" (or "gid ...") when an allowed set does not list it;
  //   RESOURCE_EXHAUSTED "peer: uid 1000 already holds 32 launcher
  //   connections (limit 32 per uid); close one first".
  absl::Status Admit(uid_t uid, gid_t gid);

  // The connection of `uid` that Admit counted closed. Releasing a uid with
  // nothing counted is a caller bug: INTERNAL, and nothing changes (the
  // agent logs it and keeps serving; aborting would hand whoever found the
  // bug a way to kill every launcher's session).
  absl::Status Release(uid_t uid);

  // Connections counted for `uid` now.
  size_t held(uid_t uid) const;
  // Uids with at least one connection (bounded by the connection limit).
  size_t peers() const { return held_.size(); }

 private:
  const PeerPolicyOptions options_;
  std::map<uid_t, size_t> held_;  // Only uids with a non-zero count.
};

// Parses a comma-separated list of ids ("1000,1001", empty entries and
// surrounding spaces ignored; an empty list is an empty set). An entry that is
// not a number is passed to `resolve_name` when given (e.g. a group name
// looked up with getgrnam), which returns the id or nullopt. Errors:
// INVALID_ARGUMENT naming `field` and the entry, for an entry that is neither
// a number below 4294967295 nor a name `resolve_name` knows.
absl::StatusOr<std::set<uint32_t>> ParseIdList(
    absl::string_view field, absl::string_view text,
    const std::function<std::optional<uint32_t>(const std::string&)>& resolve_name = nullptr);

}  // namespace agent
}  // namespace iommu

#endif  // AGENT_PEER_POLICY_H_
