#include "common/http_server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/unique_fd.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/http_get.h"

namespace iommu {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::StartsWith;

constexpr char kText[] = "text/plain; charset=utf-8";

// A connected TCP socket to 127.0.0.1:port, or -1.
int Connect(int port) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

// Sends `request` raw and returns everything until the server closes.
std::string Raw(int port, const std::string& request) {
  int fd = Connect(port);
  if (fd < 0) return "";
  (void)!write(fd, request.data(), request.size());
  std::string out;
  char buf[4096];
  for (ssize_t n; (n = read(fd, buf, sizeof(buf))) > 0;) out.append(buf, n);
  close(fd);
  return out;
}

// What a client reads until the server closes, or until 10 s pass (so a
// starved server fails the test instead of hanging it).
struct Received {
  std::string data;
  bool eof = false;  // The server closed the connection.
};

Received ReadUntilClosed(int fd) {
  timeval tv{10, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  Received r;
  char buf[4096];
  for (;;) {
    const ssize_t n = read(fd, buf, sizeof(buf));
    if (n > 0) {
      r.data.append(buf, n);
      continue;
    }
    r.eof = n == 0 || errno == ECONNRESET;
    return r;
  }
}

// A connection that sends `request` and reads the reply, with the 10 s bound.
Received Exchange(int port, const std::string& request) {
  UniqueFd fd(Connect(port));
  if (!fd) return {};
  if (write(fd.get(), request.data(), request.size()) != static_cast<ssize_t>(request.size())) {
    return {};
  }
  return ReadUntilClosed(fd.get());
}

std::map<std::string, HttpHandler> Healthz() {
  std::map<std::string, HttpHandler> h;
  h["/healthz"] = [] { return HttpReply{200, kText, "ok\n"}; };
  return h;
}

std::unique_ptr<HttpServer> StartOrDie(HttpServerOptions options) {
  auto s = HttpServer::Start("metrics_address", "127.0.0.1:0", Healthz(), options);
  EXPECT_TRUE(s.ok()) << s.status();
  return s.ok() ? *std::move(s) : nullptr;
}

class HttpServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::map<std::string, HttpHandler> h;
    h["/healthz"] = [] { return HttpReply{200, "text/plain; charset=utf-8", "ok\n"}; };
    h["/readyz"] = [this] {
      return ready_ ? HttpReply{200, "text/plain; charset=utf-8", "ok\n"}
                    : HttpReply{503, "text/plain; charset=utf-8", "store: not open\n"};
    };
    absl::StatusOr<std::unique_ptr<HttpServer>> s =
        HttpServer::Start("metrics_address", "127.0.0.1:0", std::move(h));
    ASSERT_TRUE(s.ok()) << s.status();
    server_ = *std::move(s);
    ASSERT_GT(server_->port(), 0);
  }
  std::atomic<bool> ready_{false};
  std::unique_ptr<HttpServer> server_;
};

TEST_F(HttpServerTest, ServesExactPathsWithTheHandlersStatus) {
  auto got = testing::HttpGet("127.0.0.1", server_->port(), "/healthz");
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->status, 200);
  EXPECT_EQ(got->body, "ok\n");
  got = testing::HttpGet("127.0.0.1", server_->port(), "/readyz");
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->status, 503);
  EXPECT_EQ(got->body, "store: not open\n");
  ready_ = true;
  got = testing::HttpGet("127.0.0.1", server_->port(), "/readyz");
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->status, 200);
}

TEST_F(HttpServerTest, OtherPathsAndMethodsAreRefused) {
  for (const char* path : {"/", "/nope", "/healthz/x", "/healthzz"}) {
    auto got = testing::HttpGet("127.0.0.1", server_->port(), path);
    ASSERT_TRUE(got.ok()) << got.status();
    EXPECT_EQ(got->status, 404) << path;
  }
  EXPECT_THAT(
      Raw(server_->port(), "POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"),
      StartsWith("HTTP/1.1 405"));
  const std::string head = Raw(server_->port(), "HEAD /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
  EXPECT_THAT(head, StartsWith("HTTP/1.1 200"));
  EXPECT_THAT(head, HasSubstr("Content-Length: 3"));
  EXPECT_THAT(head, Not(HasSubstr("ok\n"))) << "HEAD has no body";
  EXPECT_THAT(Raw(server_->port(), "garbage\r\n\r\n"), HasSubstr(" 400 Bad Request"));
}

TEST_F(HttpServerTest, ASilentClientDoesNotStopOthers) {
  int silent = Connect(server_->port());
  ASSERT_GE(silent, 0);
  auto got = testing::HttpGet("127.0.0.1", server_->port(), "/healthz", absl::Seconds(3));
  close(silent);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->status, 200);
}

TEST(HttpServerStartTest, BadAddressesAndTakenPortsAreClearErrors) {
  for (const char* bad : {"", "9400", ":9400", "host:", "host:http", "host:65536", "host:+80",
                          "127.0.0.1:1,127.0.0.1:2"}) {
    auto s = HttpServer::Start("metrics_address", bad, {});
    EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_THAT(std::string(s.status().message()), HasSubstr("metrics_address: must be host:port"));
  }
  auto first = HttpServer::Start("metrics_address", "127.0.0.1:0", {});
  ASSERT_TRUE(first.ok()) << first.status();
  auto second =
      HttpServer::Start("metrics_address", absl::StrCat("127.0.0.1:", (*first)->port()), {});
  EXPECT_EQ(second.status().code(), absl::StatusCode::kUnavailable);
  auto bad_path = HttpServer::Start("metrics_address", "127.0.0.1:0",
                                    {{"healthz", [] { return HttpReply{}; }}});
  EXPECT_EQ(bad_path.status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(HttpServerStartTest, ServesOnAnIpv6Literal) {
  auto s = HttpServer::Start("metrics_address", "[::1]:0", Healthz());
  if (!s.ok() && s.status().code() == absl::StatusCode::kUnavailable) {
    GTEST_SKIP() << "no IPv6 loopback here: " << s.status();
  }
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_GT((*s)->port(), 0);
  EXPECT_EQ(HttpServer::Start("metrics_address", "[::1:0", Healthz()).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(HttpServerTest, RefusalsSayWhy) {
  const std::string post =
      Raw(server_->port(), "POST /healthz HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello");
  EXPECT_THAT(post, StartsWith("HTTP/1.1 405 Method Not Allowed\r\n"));
  EXPECT_THAT(post, HasSubstr("\r\nAllow: GET, HEAD\r\n"));
  EXPECT_THAT(post, HasSubstr("\r\nConnection: close\r\n"));
  const std::string missing = Raw(server_->port(), "HEAD /nope HTTP/1.0\r\n\r\n");
  EXPECT_THAT(missing, StartsWith("HTTP/1.1 404 Not Found\r\n"));
  EXPECT_THAT(missing, HasSubstr("\r\n\r\n"));
  EXPECT_THAT(missing, Not(HasSubstr("not found"))) << "HEAD has no body";
  for (const char* bad : {"GET /healthz\r\n\r\n", "GET /healthz HTTP/2.0\r\n\r\n",
                          "GET http://x/healthz HTTP/1.1\r\n\r\n",
                          "GET /healthz HTTP/1.1\r\nno colon here\r\n\r\n"}) {
    EXPECT_THAT(Raw(server_->port(), bad), StartsWith("HTTP/1.1 400 Bad Request\r\n")) << bad;
  }
  // The query is not part of the path.
  EXPECT_THAT(Raw(server_->port(), "GET /healthz?verbose=1 HTTP/1.1\r\n\r\n"),
              StartsWith("HTTP/1.1 200 OK\r\n"));
}

// A server with a worker per connection is held by as many idle connections
// until request_timeout_ms, so probes fail for as long as a client keeps
// reconnecting. Here far more idle connections than the table holds stay
// open for the whole test, and a prober is still answered.
TEST(HttpServerIdleTest, ManyIdleConnectionsDoNotStarveARequest) {
  HttpServerOptions options;
  options.request_timeout_ms = 60000;
  std::unique_ptr<HttpServer> server = StartOrDie(options);
  ASSERT_NE(server, nullptr);
  std::vector<UniqueFd> idle;
  for (int i = 0; i < 200; ++i) {
    idle.emplace_back(Connect(server->port()));
    ASSERT_TRUE(idle.back().valid()) << i;
  }
  for (int round = 0; round < 3; ++round) {
    const Received got = Exchange(server->port(), "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    EXPECT_THAT(got.data, StartsWith("HTTP/1.1 200 OK\r\n")) << round;
    EXPECT_TRUE(got.eof) << round;
  }
  auto got = testing::HttpGet("127.0.0.1", server->port(), "/healthz", absl::Seconds(10));
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->status, 200);
}

TEST(HttpServerIdleTest, AFullTableDropsTheLongestIdleConnectionForANewcomer) {
  HttpServerOptions options;
  options.request_timeout_ms = 60000;
  options.max_connections = 4;
  std::unique_ptr<HttpServer> server = StartOrDie(options);
  ASSERT_NE(server, nullptr);
  std::vector<UniqueFd> idle;
  for (int i = 0; i < 4; ++i) {
    idle.emplace_back(Connect(server->port()));
    ASSERT_TRUE(idle.back().valid());
    // Let the server accept them in this order.
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  const Received got = Exchange(server->port(), "GET /healthz HTTP/1.0\r\n\r\n");
  EXPECT_THAT(got.data, StartsWith("HTTP/1.1 200 OK\r\n"));
  const Received oldest = ReadUntilClosed(idle[0].get());
  EXPECT_TRUE(oldest.eof) << "the longest idle connection makes room";
  EXPECT_EQ(oldest.data, "");
}

TEST(HttpServerIdleTest, IdleAndSlowConnectionsAreClosedAtTheRequestTimeout) {
  HttpServerOptions options;
  options.request_timeout_ms = 200;
  std::unique_ptr<HttpServer> server = StartOrDie(options);
  ASSERT_NE(server, nullptr);
  UniqueFd silent(Connect(server->port()));
  UniqueFd partial(Connect(server->port()));
  ASSERT_TRUE(silent.valid() && partial.valid());
  ASSERT_EQ(write(partial.get(), "GET /healthz HTTP/1.1\r\n", 23), 23);
  const auto start = std::chrono::steady_clock::now();
  const Received a = ReadUntilClosed(silent.get());
  const Received b = ReadUntilClosed(partial.get());
  EXPECT_TRUE(a.eof);
  EXPECT_TRUE(b.eof);
  EXPECT_EQ(a.data, "");
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(9));
}

TEST(HttpServerIdleTest, DestroyingTheServerClosesItsConnections) {
  std::unique_ptr<HttpServer> server = StartOrDie({});
  ASSERT_NE(server, nullptr);
  UniqueFd silent(Connect(server->port()));
  ASSERT_TRUE(silent.valid());
  // Make sure the loop has accepted it before stopping.
  EXPECT_THAT(Exchange(server->port(), "GET /healthz HTTP/1.0\r\n\r\n").data,
              StartsWith("HTTP/1.1 200"));
  server.reset();
  EXPECT_TRUE(ReadUntilClosed(silent.get()).eof);
}

TEST_F(HttpServerTest, AnOversizedHeadIsRefusedAndClosed) {
  const std::string request =
      absl::StrCat("GET /healthz HTTP/1.1\r\nX-Big: ", std::string(16 * 1024, 'a'), "\r\n\r\n");
  const Received got = Exchange(server_->port(), request);
  EXPECT_THAT(got.data, StartsWith("HTTP/1.1 431 "));
  EXPECT_TRUE(got.eof);
}

TEST_F(HttpServerTest, ARequestSentOneByteAtATimeIsAnswered) {
  UniqueFd fd(Connect(server_->port()));
  ASSERT_TRUE(fd.valid());
  const int one = 1;
  setsockopt(fd.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  const std::string request = "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
  for (char c : request) {
    ASSERT_EQ(write(fd.get(), &c, 1), 1);
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  const Received got = ReadUntilClosed(fd.get());
  EXPECT_THAT(got.data, StartsWith("HTTP/1.1 200 OK\r\n"));
  EXPECT_THAT(got.data, HasSubstr("\r\nContent-Length: 3\r\n"));
  EXPECT_THAT(got.data, HasSubstr("\r\n\r\nok\n"));
  EXPECT_TRUE(got.eof);
}

}  // namespace
}  // namespace iommu
