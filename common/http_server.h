// A small HTTP server for the daemons' operational endpoints (/metrics,
// /healthz, /readyz): GET and HEAD on exact paths, answered by handlers that
// return a whole reply. Built on civetweb (what prometheus-cpp's exposer
// uses), with request timeouts and a fixed thread pool, so a client that
// connects and sends nothing holds one worker for at most the timeout.
//
// Thread-safety: handlers run on the server's worker threads, possibly
// concurrently; the destructor stops the server and waits for them.
#ifndef COMMON_HTTP_SERVER_H_
#define COMMON_HTTP_SERVER_H_

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

struct mg_context;
struct mg_connection;

namespace iommu {

struct HttpReply {
  int status = 200;
  std::string content_type = "text/plain; charset=utf-8";
  std::string body;
};

using HttpHandler = std::function<HttpReply()>;

struct HttpServerOptions {
  int threads = 2;
  int request_timeout_ms = 5000;
};

class HttpServer {
 public:
  // Serves `handlers` (exact path -> handler) on `address` (host:port; port
  // 0 picks a free one). Other paths are 404, other methods 405.
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
  struct Route;
  HttpServer();
  static int Handle(mg_connection* conn, void* cbdata);

  mg_context* ctx_ = nullptr;
  std::map<std::string, HttpHandler> handlers_;
  std::vector<std::unique_ptr<Route>> routes_;  // civetweb points at them.
  int port_ = 0;
};

}  // namespace iommu

#endif  // COMMON_HTTP_SERVER_H_
