// Launcher grant tokens: the broker signs a v1::LauncherGrant with a key it
// shares with one node's agent; the agent verifies the token a launcher
// presents on its unix socket and consumes its id so that it opens one
// session only (DESIGN.md, "Launchers never hold the IOMMU side").
//
// Token format (ASCII, at most kMaxGrantTokenBytes):
//   "v1." base64url(payload) "." base64url(HMAC-SHA256(key, payload))
// where payload is the serialized LauncherGrant and base64url is RFC 4648
// section 5 without padding. Only the canonical encoding is accepted, so a
// token has exactly one spelling.
//
// Thread-safety: the free functions are pure (OpenSSL's HMAC and RAND_bytes
// are thread-safe); ReplayCache is thread-safe.
#ifndef COMMON_GRANT_TOKEN_H_
#define COMMON_GRANT_TOKEN_H_

#include <cstddef>
#include <cstdint>
#include <set>
#include <string>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "proto/launcher.pb.h"

namespace iommu {

// Longer tokens are refused before any decoding, so a hostile peer cannot
// make the agent decode or MAC megabytes. A grant with a few dozen windows
// fits in well under 1 KiB.
inline constexpr size_t kMaxGrantTokenBytes = 4096;

// Keys shorter than this are refused: HMAC-SHA256 wants at least 128 bits,
// and an empty key is always a configuration mistake.
inline constexpr size_t kMinGrantKeyBytes = 16;

// Returns the token for `grant` signed with `key`. Never aborts on its
// input: a grant comes from a request (its windows, ids) and a key from a
// store, so a bad one is an error for that request, not for the process.
// Errors:
//   FAILED_PRECONDITION "grant key: must be at least 16 bytes, got N" (the
//   signer's configuration is wrong, not the grant);
//   INVALID_ARGUMENT "grant: does not serialize" (e.g. a string field that is
//   not UTF-8);
//   RESOURCE_EXHAUSTED "grant: token would be N bytes, over the limit of 4096
//   bytes" (too many or too large windows or ids).
absl::StatusOr<std::string> SignGrant(const v1::LauncherGrant& grant, absl::string_view key);

// Checks `token` against `key` and returns its grant when the MAC matches and
// now_ms < grant.expires_ms. The MAC is compared in constant time before the
// payload is parsed, so nothing an attacker writes is interpreted unless the
// broker signed it. Errors (all UNAUTHENTICATED, so a peer learns only which
// rule failed):
//   "token: malformed (...)"   empty, too long, not "v1.<b64>.<b64>", bad or
//                              non-canonical base64, MAC of the wrong size,
//                              or a signed payload that does not parse;
//   "token: bad signature"     the MAC does not match (tampered, other key);
//   "token: expired at <ms> (now <ms>)".
// FAILED_PRECONDITION when `key` is shorter than kMinGrantKeyBytes (the
// agent's configuration, not the token, is wrong).
// Does not consult a ReplayCache: call ReplayCache::Consume on success.
absl::StatusOr<v1::LauncherGrant> VerifyGrant(absl::string_view token,
                                              absl::string_view key,
                                              int64_t now_ms);

// 32 random bytes from OpenSSL's CSPRNG, for a new broker/agent key. Aborts
// if the CSPRNG fails: no input reaches this (only the process's own
// entropy source), and there is no safe fallback to a weaker key.
std::string NewGrantKey();

// 16 random bytes as 32 lower-case hex digits, for LauncherGrant.token_id
// and the agent's incarnation. Aborts like NewGrantKey if the CSPRNG fails.
std::string NewGrantTokenId();

// How many unexpired token ids a ReplayCache remembers: per tenant (so one
// tenant burning tokens cannot lock every other tenant out, issue 11) and in
// all (a memory bound: about 150 bytes an id). The total defaults to room
// for 64 tenants at their full share.
struct ReplayCacheLimits {
  size_t per_tenant = 4096;
  size_t total = 4096 * 64;
};

// INVALID_ARGUMENT naming the flag when `limits` cannot work: a zero limit
// (--replay-cache-per-tenant, --replay-cache-max) or a total below the
// per-tenant limit.
absl::Status ValidateReplayCacheLimits(const ReplayCacheLimits& limits);

// Remembers the ids of tokens already used until they expire, so a token
// (single-use by design) cannot open a second session. Bounded per tenant
// and in all: when a bound is full of unexpired ids it refuses new tokens
// (of that tenant, or of everyone for the total) rather than forgetting an
// id that could then be replayed. In memory only: after an agent restart
// the agent's new incarnation refuses every token issued before it
// (LauncherGrant.agent_incarnation), so nothing forgotten can be replayed.
//
// Thread-safe.
class ReplayCache final {
 public:
  // `limits` should pass ValidateReplayCacheLimits; a zero limit is taken
  // as 1 (every id is still remembered until it expires).
  explicit ReplayCache(ReplayCacheLimits limits = ReplayCacheLimits());

  ReplayCache(const ReplayCache&) = delete;
  ReplayCache& operator=(const ReplayCache&) = delete;

  // Records `token_id`, a token of `tenant`, as used until `expires_ms`.
  // Forgets ids whose expiry is at or before `now_ms` first. Errors, none of
  // which records anything:
  //   INVALID_ARGUMENT "token_id: ..." when the id is empty;
  //   UNAUTHENTICATED "token: expired ..." when expires_ms <= now_ms;
  //   UNAUTHENTICATED "token: already used" when the id is remembered;
  //   RESOURCE_EXHAUSTED "token: tenant \"acme\" has used 4096 unexpired
  //   tokens on this node (limit 4096 per tenant) ..." when the tenant's
  //   share is full;
  //   RESOURCE_EXHAUSTED "token: replay cache full ..." when the total is.
  absl::Status Consume(const std::string& token_id, const std::string& tenant,
                       int64_t expires_ms, int64_t now_ms);

  // Ids remembered now (expired ones may linger until the next Consume).
  size_t size();
  // Ids of `tenant` remembered now.
  size_t tenant_size(const std::string& tenant);

 private:
  struct Entry {
    int64_t expires_ms;
    std::string tenant;
  };
  void PruneLocked(int64_t now_ms) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // Constant after construction.
  const ReplayCacheLimits limits_;

  absl::Mutex mu_;
  // id -> entry, and the same ids ordered by expiry for pruning.
  absl::flat_hash_map<std::string, Entry> by_id_ ABSL_GUARDED_BY(mu_);
  std::set<std::pair<int64_t, std::string>> by_expiry_ ABSL_GUARDED_BY(mu_);
  // Only tenants with at least one id.
  absl::flat_hash_map<std::string, size_t> per_tenant_ ABSL_GUARDED_BY(mu_);
};

}  // namespace iommu

#endif  // COMMON_GRANT_TOKEN_H_
