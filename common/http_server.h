// A small HTTP server for the daemons' operational endpoints (/metrics,
// /healthz, /readyz): GET and HEAD on exact paths, answered by handlers that
// return a whole reply, one request per connection.
//
// One thread runs a poll() loop over non-blocking sockets, so a connection
// costs a few bytes of state rather than a worker: clients that connect and
// send nothing (or send slowly) cannot keep a complete request from being
// answered. A thread-per-connection server with a few workers is starved by
// as many idle connections: liveness probes then fail, and whoever can reach
// the port gets the daemon restarted on demand.
//
// Thread-safety: handlers run on the server's loop thread, one at a time, so
// they must be quick (they read counters). The destructor stops the loop and
// waits for it; no handler runs after it returns.
#ifndef COMMON_HTTP_SERVER_H_
#define COMMON_HTTP_SERVER_H_

#include <cstddef>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/unique_fd.h"

namespace iommu {

struct HttpReply {
  int status = 200;
  std::string content_type = "text/plain; charset=utf-8";
  std::string body;
};

using HttpHandler = std::function<HttpReply()>;

struct HttpServerOptions {
  // How long a connection has to send its whole request head, and then again
  // how long the reply may take to be written. Well below the 1 s+ timeouts
  // probes and scrapers use, so a stuck client is gone before it matters.
  int request_timeout_ms = 2000;
  // Open connections at most. When full, a newcomer replaces the connection
  // that has waited longest without sending a complete request, so filling
  // the table never locks out a prober.
  int max_connections = 128;
  // A longer request head is answered 431 and the connection closed.
  size_t max_request_head_bytes = 8192;
};

class HttpServer {
 public:
  // Serves `handlers` (exact path -> handler) on `address` (host:port, host
  // an IPv4 literal, a bracketed IPv6 literal or a name; port 0 picks a free
  // one). Other paths are 404, other methods 405, malformed requests 400.
  // INVALID_ARGUMENT for a malformed address or path (naming `field`),
  // UNAVAILABLE when the address cannot be bound.
  static absl::StatusOr<std::unique_ptr<HttpServer>> Start(
      absl::string_view field, const std::string& address,
      std::map<std::string, HttpHandler> handlers, HttpServerOptions options = {});

  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  int port() const { return port_; }

 private:
  HttpServer(std::map<std::string, HttpHandler> handlers, HttpServerOptions options,
             UniqueFd listener, UniqueFd wake, int port);
  void Run();  // The loop thread's body.

  // Set before the loop thread starts and never changed after, so the loop
  // reads them without a lock. All connection state is local to Run().
  const std::map<std::string, HttpHandler> handlers_;
  const HttpServerOptions options_;
  const UniqueFd listener_;  // Non-blocking, listening.
  const UniqueFd wake_;      // eventfd: the destructor writes it to stop the loop.
  const int port_;
  std::thread loop_;
};

}  // namespace iommu

#endif  // COMMON_HTTP_SERVER_H_
