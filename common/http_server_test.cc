#include "common/http_server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <map>
#include <string>

#include "absl/strings/str_cat.h"
#include "tests/http_get.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace iommu {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::StartsWith;

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
  EXPECT_THAT(Raw(server_->port(), "POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"),
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
  auto second = HttpServer::Start("metrics_address",
                                  absl::StrCat("127.0.0.1:", (*first)->port()), {});
  EXPECT_EQ(second.status().code(), absl::StatusCode::kUnavailable);
  auto bad_path = HttpServer::Start("metrics_address", "127.0.0.1:0",
                                    {{"healthz", [] { return HttpReply{}; }}});
  EXPECT_EQ(bad_path.status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace iommu
