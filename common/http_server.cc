#include "common/http_server.h"

#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/http_request.h"

namespace iommu {
namespace {

using Clock = std::chrono::steady_clock;

constexpr int kBacklog = 128;
// After the reply, how long we keep reading what the client still sends
// before closing (see Connection::State::kDraining).
constexpr Clock::duration kLinger = std::chrono::seconds(1);
constexpr size_t kMaxDrainBytes = 64 * 1024;
// While out of fds, how long the listener is left alone instead of being
// polled (it stays readable, so polling it would spin).
constexpr Clock::duration kAcceptPause = std::chrono::milliseconds(100);
constexpr char kText[] = "text/plain; charset=utf-8";

const char* Reason(int status) {
  switch (status) {
    case 200:
      return "OK";
    case 400:
      return "Bad Request";
    case 404:
      return "Not Found";
    case 405:
      return "Method Not Allowed";
    case 431:
      return "Request Header Fields Too Large";
    case 500:
      return "Internal Server Error";
    case 503:
      return "Service Unavailable";
    default:
      return "Status";
  }
}

// The whole reply. HEAD gets the headers a GET would, body left out.
std::string FormatReply(const HttpReply& reply, bool head, bool allow) {
  std::string out =
      absl::StrCat("HTTP/1.1 ", reply.status, " ", Reason(reply.status),
                   "\r\nContent-Type: ", reply.content_type,
                   "\r\nContent-Length: ", reply.body.size(), allow ? "\r\nAllow: GET, HEAD" : "",
                   "\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n");
  if (!head) out += reply.body;
  return out;
}

bool WouldBlock(int err) { return err == EAGAIN || err == EWOULDBLOCK; }

struct Connection {
  enum class State {
    kReading,   // Waiting for a complete request head.
    kWriting,   // Sending the reply.
    kDraining,  // Reply sent and our side shut down; reading to EOF so that
                // closing with unread input does not reset the connection
                // and destroy the reply before the client has read it.
  };
  UniqueFd fd;
  State state = State::kReading;
  uint64_t serial = 0;  // Accept order: the lowest reading one has idled longest.
  Clock::time_point deadline;
  std::string in;
  std::string out;
  size_t sent = 0;
  size_t drained = 0;
};

// Owns the connections; lives on the loop thread only, so it needs no lock.
class Loop {
 public:
  Loop(const std::map<std::string, HttpHandler>& handlers, const HttpServerOptions& options,
       int listener, int wake)
      : handlers_(handlers),
        options_(options),
        timeout_(std::chrono::milliseconds(std::max(options.request_timeout_ms, 1))),
        max_connections_(static_cast<size_t>(std::max(options.max_connections, 1))),
        listener_(listener),
        wake_(wake) {}

  void Run() {
    std::vector<pollfd> fds;
    for (;;) {
      Clock::time_point now = Clock::now();
      for (auto& c : conns_) {
        if (c->deadline <= now) c->fd.reset();  // Too slow: close, no reply.
      }
      Sweep();
      const bool accepting = now >= accept_paused_until_;
      fds.clear();
      fds.push_back(pollfd{wake_, POLLIN, 0});
      fds.push_back(pollfd{accepting ? listener_ : -1, POLLIN, 0});  // poll skips fd -1.
      for (const auto& c : conns_) {
        const short events = c->state == Connection::State::kWriting ? POLLOUT : POLLIN;
        fds.push_back(pollfd{c->fd.get(), events, 0});
      }
      if (poll(fds.data(), fds.size(), TimeoutMs(now, accepting)) < 0) continue;  // EINTR; retried.
      if (fds[0].revents != 0) return;                                            // Stopping.
      for (size_t i = 0; i < conns_.size(); ++i) {
        if (fds[i + 2].revents != 0) Service(*conns_[i]);
      }
      Sweep();
      if ((fds[1].revents & POLLIN) != 0) AcceptAll();
    }
  }

 private:
  // Until the earliest deadline, or forever when nothing is waiting.
  int TimeoutMs(Clock::time_point now, bool accepting) const {
    std::optional<Clock::time_point> next;
    if (!accepting) next = accept_paused_until_;
    for (const auto& c : conns_) {
      if (!next.has_value() || c->deadline < *next) next = c->deadline;
    }
    if (!next.has_value()) return -1;
    const auto ms = std::chrono::ceil<std::chrono::milliseconds>(*next - now).count();
    return static_cast<int>(std::clamp<int64_t>(ms, 0, 60 * 60 * 1000));
  }

  void Sweep() {
    conns_.erase(std::remove_if(conns_.begin(), conns_.end(),
                                [](const std::unique_ptr<Connection>& c) { return !c->fd; }),
                 conns_.end());
  }

  void AcceptAll() {
    // At most one table's worth per round, so a flood of connects cannot keep
    // the loop from serving the connections it already has.
    for (size_t i = 0; i < max_connections_; ++i) {
      UniqueFd fd(accept4(listener_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC));
      if (!fd) {
        const int err = errno;
        if (WouldBlock(err)) return;
        if (err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM) {
          accept_paused_until_ = Clock::now() + kAcceptPause;
          return;
        }
        continue;  // ECONNABORTED, EINTR, ...: that one connection is gone.
      }
      if (conns_.size() >= max_connections_) Evict();
      auto c = std::make_unique<Connection>();
      c->fd = std::move(fd);
      c->serial = next_serial_++;
      c->deadline = Clock::now() + timeout_;
      conns_.push_back(std::move(c));
      // By the time we accept, most clients have sent their request: answer it
      // now, before more newcomers can push this connection out.
      Service(*conns_.back());
      Sweep();
    }
  }

  // Makes room for a newcomer: closes the connection that has waited longest
  // for a complete request (the likeliest to be an idle hog), or failing
  // that the oldest of the rest (a reply the client is slow to read).
  void Evict() {
    auto victim = conns_.end();
    for (auto it = conns_.begin(); it != conns_.end(); ++it) {
      const bool reading = (*it)->state == Connection::State::kReading;
      if (victim == conns_.end()) {
        victim = it;
        continue;
      }
      const bool victim_reading = (*victim)->state == Connection::State::kReading;
      if (reading != victim_reading ? reading : (*it)->serial < (*victim)->serial) victim = it;
    }
    if (victim != conns_.end()) conns_.erase(victim);
  }

  void Service(Connection& c) {
    switch (c.state) {
      case Connection::State::kReading:
        return Read(c);
      case Connection::State::kWriting:
        return Write(c);
      case Connection::State::kDraining:
        return Drain(c);
    }
  }

  void Read(Connection& c) {
    char buf[4096];
    for (;;) {
      // Never buffer more than one byte past the cap: enough for the parser
      // to tell "too large" from "complete".
      const size_t room = options_.max_request_head_bytes + 1 - c.in.size();
      const ssize_t n = recv(c.fd.get(), buf, std::min(sizeof(buf), room), 0);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && WouldBlock(errno)) return;
      if (n <= 0) {
        c.fd.reset();  // Closed (or failed) before a complete request.
        return;
      }
      c.in.append(buf, static_cast<size_t>(n));
      absl::StatusOr<std::optional<HttpRequest>> parsed =
          ParseHttpRequest(c.in, options_.max_request_head_bytes);
      if (!parsed.ok() || parsed->has_value()) return Respond(c, parsed);
    }
  }

  void Respond(Connection& c, const absl::StatusOr<std::optional<HttpRequest>>& parsed) {
    HttpReply reply;
    bool head = false;
    bool allow = false;
    if (!parsed.ok()) {
      reply = parsed.status().code() == absl::StatusCode::kResourceExhausted
                  ? HttpReply{431, kText, "request head too large\n"}
                  : HttpReply{400, kText, "bad request\n"};
    } else {
      const HttpRequest& r = **parsed;
      head = r.method == "HEAD";
      const auto it = handlers_.find(r.path);
      if (it == handlers_.end()) {
        reply = HttpReply{404, kText, "not found\n"};
      } else if (!head && r.method != "GET") {
        reply = HttpReply{405, kText, "only GET and HEAD\n"};
        allow = true;
      } else {
        reply = it->second();
      }
    }
    c.out = FormatReply(reply, head, allow);
    c.in = std::string();  // Release the buffer; nothing more is parsed.
    c.state = Connection::State::kWriting;
    c.deadline = Clock::now() + timeout_;
    Write(c);  // The socket is usually writable: skip a poll round.
  }

  void Write(Connection& c) {
    while (c.sent < c.out.size()) {
      // MSG_NOSIGNAL: a client that went away is EPIPE here, not SIGPIPE.
      const ssize_t n =
          send(c.fd.get(), c.out.data() + c.sent, c.out.size() - c.sent, MSG_NOSIGNAL);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && WouldBlock(errno)) return;
      if (n <= 0) {
        c.fd.reset();
        return;
      }
      c.sent += static_cast<size_t>(n);
    }
    // EOF tells an HTTP/1.0 client the reply is complete.
    shutdown(c.fd.get(), SHUT_WR);
    c.out = std::string();
    c.state = Connection::State::kDraining;
    c.deadline = Clock::now() + std::min<Clock::duration>(timeout_, kLinger);
  }

  void Drain(Connection& c) {
    char buf[4096];
    for (;;) {
      const ssize_t n = recv(c.fd.get(), buf, sizeof(buf), 0);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && WouldBlock(errno)) return;
      c.drained += n > 0 ? static_cast<size_t>(n) : 0;
      if (n <= 0 || c.drained > kMaxDrainBytes) {
        c.fd.reset();
        return;
      }
    }
  }

  const std::map<std::string, HttpHandler>& handlers_;
  const HttpServerOptions& options_;
  const Clock::duration timeout_;
  const size_t max_connections_;
  const int listener_;
  const int wake_;
  std::vector<std::unique_ptr<Connection>> conns_;
  uint64_t next_serial_ = 0;
  Clock::time_point accept_paused_until_;
};

// A listening, non-blocking socket on host:port (`host` without brackets).
absl::StatusOr<UniqueFd> Listen(absl::string_view field, const std::string& address,
                                const std::string& host, const std::string& port) {
  const auto unavailable = [&](absl::string_view why) {
    return absl::UnavailableError(
        absl::StrCat(field, ": cannot serve HTTP on ", address, " (", why, ")"));
  };
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  addrinfo* found = nullptr;
  if (const int err = getaddrinfo(host.c_str(), port.c_str(), &hints, &found); err != 0) {
    return unavailable(gai_strerror(err));
  }
  std::unique_ptr<addrinfo, decltype(&freeaddrinfo)> list(found, freeaddrinfo);
  int last_errno = EADDRNOTAVAIL;
  for (const addrinfo* ai = list.get(); ai != nullptr; ai = ai->ai_next) {
    UniqueFd fd(socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    if (!fd) {
      last_errno = errno;
      continue;
    }
    const int one = 1;
    // A restarted daemon can bind while the old one's connections linger in
    // TIME_WAIT.
    setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    // "[::]:port" means IPv6 only, as it did under civetweb.
    if (ai->ai_family == AF_INET6) {
      setsockopt(fd.get(), IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
    }
    if (bind(fd.get(), ai->ai_addr, ai->ai_addrlen) != 0 || listen(fd.get(), kBacklog) != 0) {
      last_errno = errno;
      continue;
    }
    return fd;
  }
  return unavailable(std::strerror(last_errno));
}

}  // namespace

HttpServer::HttpServer(std::map<std::string, HttpHandler> handlers, HttpServerOptions options,
                       UniqueFd listener, UniqueFd wake, int port)
    : handlers_(std::move(handlers)),
      options_(options),
      listener_(std::move(listener)),
      wake_(std::move(wake)),
      port_(port) {}

void HttpServer::Run() { Loop(handlers_, options_, listener_.get(), wake_.get()).Run(); }

absl::StatusOr<std::unique_ptr<HttpServer>> HttpServer::Start(
    absl::string_view field, const std::string& address,
    std::map<std::string, HttpHandler> handlers, HttpServerOptions options) {
  const size_t colon = address.rfind(':');
  int port = -1;
  std::string host = colon == std::string::npos ? "" : address.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  if (colon == std::string::npos || host.empty() || colon + 1 >= address.size() ||
      !absl::ascii_isdigit(address[colon + 1]) ||
      !absl::SimpleAtoi(absl::string_view(address).substr(colon + 1), &port) || port < 0 ||
      port > 65535 || address.find_first_of(", \t") != std::string::npos ||
      host.find_first_of("[]") != std::string::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, ": must be host:port with a port in 0-65535, got \"", address, "\""));
  }
  for (const auto& [path, h] : handlers) {
    if (path.empty() || path[0] != '/' || h == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat(field, ": handler path \"", path, "\" must start with '/'"));
    }
  }
  absl::StatusOr<UniqueFd> listener = Listen(field, address, host, absl::StrCat(port));
  if (!listener.ok()) return listener.status();
  UniqueFd wake(eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
  if (!wake) return absl::ErrnoToStatus(errno, absl::StrCat(field, ": eventfd"));
  sockaddr_storage bound{};
  socklen_t len = sizeof(bound);
  if (getsockname(listener->get(), reinterpret_cast<sockaddr*>(&bound), &len) != 0) {
    return absl::ErrnoToStatus(errno, absl::StrCat(field, ": getsockname"));
  }
  const int bound_port = bound.ss_family == AF_INET6
                             ? ntohs(reinterpret_cast<const sockaddr_in6*>(&bound)->sin6_port)
                             : ntohs(reinterpret_cast<const sockaddr_in*>(&bound)->sin_port);
  std::unique_ptr<HttpServer> server(new HttpServer(
      std::move(handlers), options, *std::move(listener), std::move(wake), bound_port));
  // Everything the loop reads is set above; starting the thread publishes it.
  server->loop_ = std::thread([s = server.get()] { s->Run(); });
  return server;
}

HttpServer::~HttpServer() {
  const uint64_t one = 1;
  // Cannot fail short of a bug: the counter is far from overflowing.
  (void)!write(wake_.get(), &one, sizeof(one));
  if (loop_.joinable()) loop_.join();  // Closes every connection on its way out.
}

}  // namespace iommu
