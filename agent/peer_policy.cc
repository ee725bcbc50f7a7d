#include "agent/peer_policy.h"

#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace iommu {
namespace agent {
namespace {

// (uid_t)-1 and (gid_t)-1: what chown and setresuid take as "leave alone";
// no process runs with it.
constexpr uint32_t kNoId = static_cast<uint32_t>(-1);

}  // namespace

absl::Status ValidatePeerPolicyOptions(const PeerPolicyOptions& options) {
  if (options.max_sessions_per_peer == 0) {
    return absl::InvalidArgumentError("max_sessions_per_peer: must be at least 1");
  }
  if (options.allowed_uids.count(kNoId)) {
    return absl::InvalidArgumentError(
        absl::StrCat("launcher_allowed_uids: ", kNoId, " is not a uid"));
  }
  if (options.allowed_gids.count(kNoId)) {
    return absl::InvalidArgumentError(
        absl::StrCat("launcher_allowed_gids: ", kNoId, " is not a gid"));
  }
  return absl::OkStatus();
}

PeerPolicy::PeerPolicy(PeerPolicyOptions options) : options_(std::move(options)) {}

absl::Status PeerPolicy::Admit(uid_t uid, gid_t gid) {
  if (!options_.allowed_uids.empty() && !options_.allowed_uids.count(uid)) {
    return absl::PermissionDeniedError(
        absl::StrCat("peer: uid ", uid, " may not use this agent's launcher socket"));
  }
  if (!options_.allowed_gids.empty() && !options_.allowed_gids.count(gid)) {
    return absl::PermissionDeniedError(
        absl::StrCat("peer: gid ", gid, " may not use this agent's launcher socket"));
  }
  const size_t now_held = held(uid);
  if (now_held >= options_.max_sessions_per_peer) {
    return absl::ResourceExhaustedError(
        absl::StrCat("peer: uid ", uid, " already holds ", now_held,
                     " launcher connections (limit ", options_.max_sessions_per_peer,
                     " per uid); close one first"));
  }
  ++held_[uid];
  return absl::OkStatus();
}

absl::Status PeerPolicy::Release(uid_t uid) {
  auto it = held_.find(uid);
  if (it == held_.end()) {
    // The server pairs every successful OnConnect with one OnDisconnect, so
    // this is our bug, not a peer's doing.
    return absl::InternalError(
        absl::StrCat("peer: uid ", uid, " released a launcher connection it did not hold"));
  }
  if (--it->second == 0) held_.erase(it);
  return absl::OkStatus();
}

size_t PeerPolicy::held(uid_t uid) const {
  auto it = held_.find(uid);
  return it == held_.end() ? 0 : it->second;
}

absl::StatusOr<std::set<uint32_t>> ParseIdList(
    absl::string_view field, absl::string_view text,
    const std::function<std::optional<uint32_t>(const std::string&)>& resolve_name) {
  std::set<uint32_t> ids;
  for (absl::string_view entry : absl::StrSplit(text, ',')) {
    entry = absl::StripAsciiWhitespace(entry);
    if (entry.empty()) continue;
    uint32_t id;
    // SimpleAtoi accepts a leading '+' and refuses '-', overflow and junk.
    if (absl::SimpleAtoi(entry, &id) && absl::ascii_isdigit(entry[0])) {
      if (id == kNoId) {
        return absl::InvalidArgumentError(
            absl::StrCat(field, ": ", id, " is not an id (it means \"no id\" to the kernel)"));
      }
      ids.insert(id);
      continue;
    }
    std::optional<uint32_t> named;
    if (resolve_name) named = resolve_name(std::string(entry));
    if (!named.has_value()) {
      return absl::InvalidArgumentError(absl::StrCat(
          field, ": \"", entry, "\" is not ", resolve_name ? "a number or a known name" : "a number"));
    }
    ids.insert(*named);
  }
  return ids;
}

}  // namespace agent
}  // namespace iommu
