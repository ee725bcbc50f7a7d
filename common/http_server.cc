#include "common/http_server.h"

#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "civetweb.h"

namespace iommu {

struct HttpServer::Route {
  std::string path;
  const HttpHandler* handler;
};

namespace {

const char* Reason(int status) {
  switch (status) {
    case 200: return "OK";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 500: return "Internal Server Error";
    case 503: return "Service Unavailable";
    default: return "Status";
  }
}

void Send(mg_connection* conn, const HttpReply& reply, bool head) {
  const std::string header = absl::StrCat(
      "HTTP/1.1 ", reply.status, " ", Reason(reply.status), "\r\nContent-Type: ",
      reply.content_type, "\r\nContent-Length: ", reply.body.size(),
      "\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n");
  mg_write(conn, header.data(), header.size());
  if (!head) mg_write(conn, reply.body.data(), reply.body.size());
}

// civetweb logs through this callback; returning 1 keeps it off stderr
// (start-up failures are reported as a status instead).
int Quiet(const mg_connection*, const char*) { return 1; }

}  // namespace

HttpServer::HttpServer() = default;

// civetweb matches a registered URI as a prefix ("/metrics" also takes
// "/metrics/x"); only the exact path is served.
int HttpServer::Handle(mg_connection* conn, void* cbdata) {
  const Route* route = static_cast<const Route*>(cbdata);
  const mg_request_info* info = mg_get_request_info(conn);
  const char* uri = info->local_uri != nullptr ? info->local_uri : "";
  if (route->path != uri) {
    Send(conn, HttpReply{404, "text/plain; charset=utf-8", "not found\n"}, false);
    return 404;
  }
  const bool head = std::strcmp(info->request_method, "HEAD") == 0;
  if (!head && std::strcmp(info->request_method, "GET") != 0) {
    Send(conn, HttpReply{405, "text/plain; charset=utf-8", "only GET and HEAD\n"}, false);
    return 405;
  }
  HttpReply reply = (*route->handler)();
  Send(conn, reply, head);
  return reply.status;
}

absl::StatusOr<std::unique_ptr<HttpServer>> HttpServer::Start(
    absl::string_view field, const std::string& address,
    std::map<std::string, HttpHandler> handlers, HttpServerOptions options) {
  const size_t colon = address.rfind(':');
  int port = -1;
  if (colon == std::string::npos || colon == 0 ||
      colon + 1 >= address.size() || !absl::ascii_isdigit(address[colon + 1]) ||
      !absl::SimpleAtoi(absl::string_view(address).substr(colon + 1), &port) || port < 0 ||
      port > 65535 || address.find_first_of(", \t") != std::string::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, ": must be host:port with a port in 0-65535, got \"", address, "\""));
  }
  for (const auto& [path, h] : handlers) {
    if (path.empty() || path[0] != '/' || h == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat(field, ": handler path \"", path, "\" must start with '/'"));
    }
  }
  mg_init_library(0);
  std::unique_ptr<HttpServer> server(new HttpServer());
  server->handlers_ = std::move(handlers);
  const std::string threads = absl::StrCat(options.threads);
  const std::string timeout = absl::StrCat(options.request_timeout_ms);
  const char* mg_options[] = {"listening_ports", address.c_str(),  "num_threads",
                              threads.c_str(),   "request_timeout_ms", timeout.c_str(),
                              "enable_keep_alive", "no",           nullptr};
  mg_callbacks callbacks;
  std::memset(&callbacks, 0, sizeof(callbacks));
  callbacks.log_message = Quiet;
  server->ctx_ = mg_start(&callbacks, nullptr, mg_options);
  if (server->ctx_ == nullptr) {
    return absl::UnavailableError(absl::StrCat(
        field, ": cannot serve HTTP on ", address, " (address in use, not local, or not permitted)"));
  }
  mg_server_port ports[4];
  std::memset(ports, 0, sizeof(ports));
  const int n = mg_get_server_ports(server->ctx_, 4, ports);
  server->port_ = n > 0 ? ports[0].port : 0;
  // Routes live as long as the server; civetweb keeps pointers to them.
  for (auto& [path, handler] : server->handlers_) {
    server->routes_.push_back(std::make_unique<Route>(Route{path, &handler}));
    mg_set_request_handler(server->ctx_, path.c_str(), Handle, server->routes_.back().get());
  }
  return server;
}

HttpServer::~HttpServer() {
  if (ctx_ != nullptr) mg_stop(ctx_);  // Waits for running handlers.
}

}  // namespace iommu
