// A tiny blocking HTTP/1.0 GET client over TCP, for tests that read
// /metrics from a daemon or query Prometheus's HTTP API. No TLS, no
// redirects, no chunked encoding (HTTP/1.0 answers are delimited by the
// connection closing).
//
// Thread-safe (no shared state).
#ifndef TESTS_HTTP_GET_H_
#define TESTS_HTTP_GET_H_

#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace iommu {
namespace testing {

struct HttpResponse {
  int status = 0;      // e.g. 200.
  std::string body;
};

// GETs http://<host>:<port><path_and_query>. `path_and_query` must already
// be URL-encoded. Errors: UNAVAILABLE when the connection fails,
// DEADLINE_EXCEEDED after `timeout`, DATA_LOSS for a malformed answer.
absl::StatusOr<HttpResponse> HttpGet(const std::string& host, int port,
                                     const std::string& path_and_query,
                                     absl::Duration timeout = absl::Seconds(10));

// Percent-encodes `s` for a URL query value (RFC 3986 unreserved kept).
std::string UrlEncode(const std::string& s);

}  // namespace testing
}  // namespace iommu

#endif  // TESTS_HTTP_GET_H_
