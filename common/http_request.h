// The request-head parser of common/http_server: a pure function from the
// bytes a client has sent so far to "need more", a parsed request line, or an
// error. Kept apart from the socket loop so every malformed input can be
// unit-tested without a socket.
//
// Only what the operational endpoints need: HTTP/1.0 and HTTP/1.1, an
// origin-form target, headers checked for shape but otherwise ignored (no
// request bodies, no keep-alive: the server always closes after one reply).
//
// Thread-safe (no state).
#ifndef COMMON_HTTP_REQUEST_H_
#define COMMON_HTTP_REQUEST_H_

#include <cstddef>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace iommu {

struct HttpRequest {
  std::string method;     // As sent, e.g. "GET" (methods are case-sensitive).
  std::string target;     // As sent, e.g. "/metrics?x=1".
  std::string path;       // `target` up to the first '?', e.g. "/metrics".
  int minor_version = 1;  // HTTP/1.<minor_version>.
  size_t head_size = 0;   // Bytes of the head, including the final CRLFCRLF.
};

// Parses the request head at the start of `received`.
//   - nullopt: the head is incomplete (no CRLFCRLF yet) and may still fit;
//     read more.
//   - a request: the head is complete and well-formed. Bytes after it (a body,
//     a pipelined request) are not looked at.
//   - INVALID_ARGUMENT: malformed (answer 400). Reported as soon as the
//     request line is complete, so a garbage line is refused without waiting
//     for the rest of the head.
//   - RESOURCE_EXHAUSTED: no complete head within `max_head_bytes` (answer
//     431), so a client cannot make the server buffer without bound.
absl::StatusOr<std::optional<HttpRequest>> ParseHttpRequest(absl::string_view received,
                                                            size_t max_head_bytes);

}  // namespace iommu

#endif  // COMMON_HTTP_REQUEST_H_
