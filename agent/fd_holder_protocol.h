// The wire protocol between the agent (HolderFdStore, agent/fd_store.cc) and
// the fd holder (agent/fd_holder.h, binary iommu-fdholder): formatting and
// parsing only, no I/O.
//
// Transport: AF_UNIX SOCK_SEQPACKET; one message per packet, ASCII text, fds
// as SCM_RIGHTS on the packet that names them. Names follow ValidateFdName
// (agent/fd_name.h), so they never contain spaces.
//
// Requests (client -> holder), at most kMaxHolderRequestBytes:
//   "PUT <name>"     exactly one fd attached; stores it under <name>,
//                    replacing (and closing) what was stored there before.
//   "REMOVE <name>"  no fd; forgets <name> and closes its fd. An unknown
//                    name is not an error.
//   "LIST"           no fd; the holder answers with zero or more
//                    "FDS <name1> <name2> ..." packets, each with one fd per
//                    name in the same order (at most kMaxHolderFdsPerPacket),
//                    then the final reply.
// Every request ends with exactly one final reply, at most
// kMaxHolderReplyBytes:
//   "OK"                          done (for LIST: the end marker);
//   "ERR <CODE> <message>"        <CODE> an absl::StatusCode name
//                                 (INVALID_ARGUMENT, RESOURCE_EXHAUSTED,
//                                 PERMISSION_DENIED, ...); nothing changed.
// A request that is malformed (unknown verb, bad name, wrong number of fds)
// changes nothing, its fds are closed, and the connection stays usable. A
// peer the holder does not serve gets one ERR PERMISSION_DENIED and is
// disconnected.
//
// Thread-safe (pure functions).
#ifndef AGENT_FD_HOLDER_PROTOCOL_H_
#define AGENT_FD_HOLDER_PROTOCOL_H_

#include <cstddef>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace iommu {
namespace agent {

// "REMOVE " + a 200-character name fits with room to spare.
inline constexpr size_t kMaxHolderRequestBytes = 256;
// "FDS " + 32 names of 201 bytes each, or an ERR with its message.
inline constexpr size_t kMaxHolderReplyBytes = 16 * 1024;
// Fds per LIST reply packet (the kernel's SCM_MAX_FD is 253).
inline constexpr size_t kMaxHolderFdsPerPacket = 32;

struct HolderRequest {
  enum class Verb { kPut, kRemove, kList };
  Verb verb = Verb::kList;
  std::string name;  // Empty for kList.
  // Fds the verb must come with: 1 for kPut, 0 otherwise.
  size_t expected_fds() const { return verb == Verb::kPut ? 1 : 0; }
};

std::string FormatPutRequest(absl::string_view name);
std::string FormatRemoveRequest(absl::string_view name);
std::string FormatListRequest();

// Parses one request packet's bytes (not its fds: the caller checks
// expected_fds()). INVALID_ARGUMENT "holder request: ..." naming the rule:
// unknown verb, missing or extra argument, or the name's ValidateFdName
// error.
absl::StatusOr<HolderRequest> ParseHolderRequest(absl::string_view bytes);

struct HolderReply {
  enum class Kind { kOk, kError, kFds };
  Kind kind = Kind::kOk;
  absl::Status error;               // kError: the holder's status.
  std::vector<std::string> names;   // kFds: one per attached fd.
};

std::string FormatOkReply();
// `status` must not be OK. The message is cut to fit kMaxHolderReplyBytes.
std::string FormatErrorReply(const absl::Status& status);
// `names` must hold 1 to kMaxHolderFdsPerPacket valid names.
std::string FormatFdsReply(const std::vector<std::string>& names);

// Parses one reply packet's bytes. INVALID_ARGUMENT "holder reply: ..." for
// anything not in the grammar above (an unknown code, a bad name).
absl::StatusOr<HolderReply> ParseHolderReply(absl::string_view bytes);

}  // namespace agent
}  // namespace iommu

#endif  // AGENT_FD_HOLDER_PROTOCOL_H_
