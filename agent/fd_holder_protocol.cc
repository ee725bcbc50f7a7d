#include "agent/fd_holder_protocol.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "agent/fd_name.h"

namespace iommu {
namespace agent {
namespace {

constexpr absl::string_view kPut = "PUT";
constexpr absl::string_view kRemove = "REMOVE";
constexpr absl::string_view kList = "LIST";
constexpr absl::string_view kOk = "OK";
constexpr absl::string_view kErr = "ERR";
constexpr absl::string_view kFds = "FDS";

// The canonical codes a reply may carry, by name (absl::StatusCodeToString).
bool ParseStatusCode(absl::string_view name, absl::StatusCode* code) {
  for (int c = 1; c <= 16; ++c) {
    const auto candidate = static_cast<absl::StatusCode>(c);
    if (absl::StatusCodeToString(candidate) == name) {
      *code = candidate;
      return true;
    }
  }
  return false;
}

absl::Status Prefixed(absl::string_view prefix, const absl::Status& s) {
  return absl::Status(s.code(), absl::StrCat(prefix, s.message()));
}

}  // namespace

std::string FormatPutRequest(absl::string_view name) {
  return absl::StrCat(kPut, " ", name);
}
std::string FormatRemoveRequest(absl::string_view name) {
  return absl::StrCat(kRemove, " ", name);
}
std::string FormatListRequest() { return std::string(kList); }

absl::StatusOr<HolderRequest> ParseHolderRequest(absl::string_view bytes) {
  if (bytes.empty()) {
    return absl::InvalidArgumentError("holder request: empty packet");
  }
  if (bytes.size() > kMaxHolderRequestBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("holder request: ", bytes.size(),
                     " bytes exceeds the limit of ", kMaxHolderRequestBytes));
  }
  const size_t space = bytes.find(' ');
  const absl::string_view verb = bytes.substr(0, space);
  const bool has_arg = space != absl::string_view::npos;
  const absl::string_view arg = has_arg ? bytes.substr(space + 1) : "";
  HolderRequest request;
  if (verb == kList) {
    if (has_arg) {
      return absl::InvalidArgumentError("holder request: LIST takes no argument");
    }
    request.verb = HolderRequest::Verb::kList;
    return request;
  }
  if (verb == kPut) {
    request.verb = HolderRequest::Verb::kPut;
  } else if (verb == kRemove) {
    request.verb = HolderRequest::Verb::kRemove;
  } else {
    return absl::InvalidArgumentError(
        "holder request: unknown verb (expected PUT <name>, REMOVE <name> or LIST)");
  }
  if (!has_arg) {
    return absl::InvalidArgumentError(
        absl::StrCat("holder request: ", verb, " needs a name"));
  }
  if (absl::Status s = ValidateFdName(arg); !s.ok()) {
    return Prefixed("holder request: ", s);
  }
  request.name = std::string(arg);
  return request;
}

std::string FormatOkReply() { return std::string(kOk); }

std::string FormatErrorReply(const absl::Status& status) {
  std::string reply = absl::StrCat(kErr, " ", absl::StatusCodeToString(status.code()),
                                   " ", status.message());
  if (reply.size() > kMaxHolderReplyBytes) reply.resize(kMaxHolderReplyBytes);
  return reply;
}

std::string FormatFdsReply(const std::vector<std::string>& names) {
  return absl::StrCat(kFds, " ", absl::StrJoin(names, " "));
}

absl::StatusOr<HolderReply> ParseHolderReply(absl::string_view bytes) {
  HolderReply reply;
  if (bytes == kOk) {
    reply.kind = HolderReply::Kind::kOk;
    return reply;
  }
  const size_t space = bytes.find(' ');
  const absl::string_view head = bytes.substr(0, space);
  const absl::string_view rest =
      space == absl::string_view::npos ? "" : bytes.substr(space + 1);
  if (head == kErr) {
    const size_t code_end = rest.find(' ');
    const absl::string_view code_name = rest.substr(0, code_end);
    absl::StatusCode code;
    if (!ParseStatusCode(code_name, &code)) {
      return absl::InvalidArgumentError("holder reply: ERR without a known status code");
    }
    const absl::string_view message =
        code_end == absl::string_view::npos ? "" : rest.substr(code_end + 1);
    reply.kind = HolderReply::Kind::kError;
    reply.error = absl::Status(code, message);
    return reply;
  }
  if (head == kFds) {
    reply.kind = HolderReply::Kind::kFds;
    for (absl::string_view name : absl::StrSplit(rest, ' ')) {
      if (absl::Status s = ValidateFdName(name); !s.ok()) {
        return Prefixed("holder reply: ", s);
      }
      reply.names.emplace_back(name);
    }
    if (reply.names.size() > kMaxHolderFdsPerPacket) {
      return absl::InvalidArgumentError(
          absl::StrCat("holder reply: more than ", kMaxHolderFdsPerPacket, " names"));
    }
    return reply;
  }
  return absl::InvalidArgumentError("holder reply: expected OK, ERR or FDS");
}

}  // namespace agent
}  // namespace iommu
