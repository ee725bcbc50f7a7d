#include "common/http_request.h"

#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"

namespace iommu {
namespace {

constexpr absl::string_view kCrlf = "\r\n";

// RFC 9110 tchar: what a method or a header name may be made of.
bool IsTchar(char c) {
  return absl::ascii_isalnum(static_cast<unsigned char>(c)) ||
         absl::string_view("!#$%&'*+-.^_`|~").find(c) != absl::string_view::npos;
}

bool IsToken(absl::string_view s) {
  if (s.empty()) return false;
  for (char c : s) {
    if (!IsTchar(c)) return false;
  }
  return true;
}

// Visible ASCII only: a space, a control byte or a non-ASCII byte in the
// target means the request line is not METHOD SP TARGET SP VERSION.
bool IsTarget(absl::string_view s) {
  if (s.empty() || s[0] != '/') return false;
  for (char c : s) {
    const unsigned char u = static_cast<unsigned char>(c);
    if (u <= 0x20 || u >= 0x7f) return false;
  }
  return true;
}

absl::StatusOr<HttpRequest> ParseRequestLine(absl::string_view line) {
  const size_t sp1 = line.find(' ');
  const size_t sp2 = sp1 == absl::string_view::npos ? sp1 : line.find(' ', sp1 + 1);
  if (sp2 == absl::string_view::npos) {
    return absl::InvalidArgumentError("request line is not METHOD SP TARGET SP VERSION");
  }
  HttpRequest r;
  const absl::string_view method = line.substr(0, sp1);
  const absl::string_view target = line.substr(sp1 + 1, sp2 - sp1 - 1);
  const absl::string_view version = line.substr(sp2 + 1);
  if (!IsToken(method)) return absl::InvalidArgumentError("malformed method");
  // Only origin-form: the server has no virtual hosts and no proxying, and
  // "*" (OPTIONS) has nothing to answer.
  if (!IsTarget(target)) return absl::InvalidArgumentError("target must be an absolute path");
  if (version.size() != 8 || !absl::StartsWith(version, "HTTP/1.") ||
      !absl::ascii_isdigit(static_cast<unsigned char>(version[7]))) {
    return absl::InvalidArgumentError("version must be HTTP/1.x");
  }
  r.method = std::string(method);
  r.target = std::string(target);
  r.path = std::string(target.substr(0, target.find('?')));
  r.minor_version = version[7] - '0';
  return r;
}

// Header values are ignored, but a line that is not `name: value` (including
// obsolete line folding, a leading space) means the client speaks something
// else, and a bare CR, LF or NUL is how request smuggling starts.
absl::Status CheckHeaderLine(absl::string_view line) {
  const size_t colon = line.find(':');
  if (colon == absl::string_view::npos || !IsToken(line.substr(0, colon))) {
    return absl::InvalidArgumentError("header line is not name: value");
  }
  if (line.find_first_of(absl::string_view("\r\n\0", 3)) != absl::string_view::npos) {
    return absl::InvalidArgumentError("header line has a bare CR, LF or NUL");
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::optional<HttpRequest>> ParseHttpRequest(absl::string_view received,
                                                            size_t max_head_bytes) {
  const absl::Status too_large = absl::ResourceExhaustedError(
      absl::StrCat("request head longer than ", max_head_bytes, " bytes"));
  const size_t line_end = received.find(kCrlf);
  if (line_end == absl::string_view::npos) {
    // A bare LF already ends the line for some clients; we would never see
    // the CRLF we wait for, so refuse now rather than at the timeout.
    if (received.find('\n') != absl::string_view::npos) {
      return absl::InvalidArgumentError("request line ends in a bare LF");
    }
    if (received.size() >= max_head_bytes) return too_large;
    return std::nullopt;
  }
  if (line_end + kCrlf.size() > max_head_bytes) return too_large;
  absl::StatusOr<HttpRequest> request = ParseRequestLine(received.substr(0, line_end));
  if (!request.ok()) return request.status();

  // The head ends at the first empty line; the request line's own CRLF may
  // be the first half of it (no headers at all).
  const size_t end = received.find("\r\n\r\n", line_end);
  if (end == absl::string_view::npos || end + 4 > max_head_bytes) {
    if (received.size() >= max_head_bytes) return too_large;
    return std::nullopt;
  }
  if (end > line_end) {
    const absl::string_view headers =
        received.substr(line_end + kCrlf.size(), end - line_end - kCrlf.size());
    for (absl::string_view line : absl::StrSplit(headers, kCrlf)) {
      if (absl::Status s = CheckHeaderLine(line); !s.ok()) return s;
    }
  }
  request->head_size = end + 4;
  return std::optional<HttpRequest>(*std::move(request));
}

}  // namespace iommu
