#include "tests/http_get.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"

namespace iommu {
namespace testing {
namespace {

// Closes the socket on every path.
class Socket final {
 public:
  explicit Socket(int fd) : fd_(fd) {}
  ~Socket() {
    if (fd_ >= 0) close(fd_);
  }
  Socket(const Socket&) = delete;
  Socket& operator=(const Socket&) = delete;
  int get() const { return fd_; }

 private:
  const int fd_;
};

// Waits for `events` on `fd` until `deadline`.
absl::Status WaitFor(int fd, short events, absl::Time deadline, const char* what) {
  for (;;) {
    const int64_t left = absl::ToInt64Milliseconds(deadline - absl::Now());
    if (left <= 0) return absl::DeadlineExceededError(absl::StrCat("http: timed out ", what));
    pollfd p = {fd, events, 0};
    const int rc = poll(&p, 1, static_cast<int>(left));
    if (rc > 0) return absl::OkStatus();
    if (rc < 0 && errno != EINTR) return absl::ErrnoToStatus(errno, "http: poll");
  }
}

}  // namespace

std::string UrlEncode(const std::string& s) {
  std::string out;
  for (unsigned char c : s) {
    if (isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      out.push_back(static_cast<char>(c));
    } else {
      absl::StrAppendFormat(&out, "%%%02X", c);
    }
  }
  return out;
}

absl::StatusOr<HttpResponse> HttpGet(const std::string& host, int port,
                                     const std::string& path_and_query,
                                     absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  addrinfo hints = {};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* addrs = nullptr;
  const std::string service = absl::StrCat(port);
  if (int rc = getaddrinfo(host.c_str(), service.c_str(), &hints, &addrs); rc != 0) {
    return absl::UnavailableError(absl::StrCat("http: resolve ", host, ": ", gai_strerror(rc)));
  }
  Socket sock(socket(addrs->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (sock.get() < 0) {
    freeaddrinfo(addrs);
    return absl::ErrnoToStatus(errno, "http: socket");
  }
  int rc = connect(sock.get(), addrs->ai_addr, addrs->ai_addrlen);
  freeaddrinfo(addrs);
  if (rc != 0 && errno != EINPROGRESS) {
    return absl::UnavailableError(
        absl::StrCat("http: connect ", host, ":", port, ": ", strerror(errno)));
  }
  if (absl::Status s = WaitFor(sock.get(), POLLOUT, deadline, "connecting"); !s.ok()) return s;
  int err = 0;
  socklen_t len = sizeof(err);
  getsockopt(sock.get(), SOL_SOCKET, SO_ERROR, &err, &len);
  if (err != 0) {
    return absl::UnavailableError(
        absl::StrCat("http: connect ", host, ":", port, ": ", strerror(err)));
  }
  const std::string request = absl::StrCat("GET ", path_and_query, " HTTP/1.0\r\nHost: ", host,
                                           ":", port, "\r\nConnection: close\r\n\r\n");
  size_t sent = 0;
  while (sent < request.size()) {
    if (absl::Status s = WaitFor(sock.get(), POLLOUT, deadline, "sending"); !s.ok()) return s;
    const ssize_t n =
        send(sock.get(), request.data() + sent, request.size() - sent, MSG_NOSIGNAL);
    if (n < 0 && errno != EAGAIN && errno != EINTR) return absl::ErrnoToStatus(errno, "http: send");
    if (n > 0) sent += static_cast<size_t>(n);
  }
  std::string raw;
  for (;;) {
    if (absl::Status s = WaitFor(sock.get(), POLLIN, deadline, "reading"); !s.ok()) return s;
    char buf[16384];
    const ssize_t n = recv(sock.get(), buf, sizeof(buf), 0);
    if (n == 0) break;
    if (n < 0) {
      if (errno == EAGAIN || errno == EINTR) continue;
      return absl::ErrnoToStatus(errno, "http: recv");
    }
    raw.append(buf, static_cast<size_t>(n));
  }
  const size_t header_end = raw.find("\r\n\r\n");
  if (header_end == std::string::npos) {
    return absl::DataLossError(absl::StrCat("http: no header end in ", raw.size(), " bytes"));
  }
  // "HTTP/1.1 200 OK"
  std::vector<std::string> status_line =
      absl::StrSplit(raw.substr(0, raw.find("\r\n")), absl::MaxSplits(' ', 2));
  HttpResponse out;
  if (status_line.size() < 2 || !absl::SimpleAtoi(status_line[1], &out.status)) {
    return absl::DataLossError(absl::StrCat("http: bad status line in \"", raw.substr(0, 80), "\""));
  }
  out.body = raw.substr(header_end + 4);
  return out;
}

}  // namespace testing
}  // namespace iommu
