#include "common/http_request.h"

#include <optional>
#include <string>

#include "absl/status/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace iommu {
namespace {

constexpr size_t kMax = 8192;

TEST(ParseHttpRequestTest, ParsesACompleteHead) {
  const std::string head = "GET /metrics?name[]=x HTTP/1.1\r\nHost: a\r\nAccept: */*\r\n\r\n";
  auto r = ParseHttpRequest(head + "trailing body", kMax);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_TRUE(r->has_value());
  EXPECT_EQ((*r)->method, "GET");
  EXPECT_EQ((*r)->target, "/metrics?name[]=x");
  EXPECT_EQ((*r)->path, "/metrics");
  EXPECT_EQ((*r)->minor_version, 1);
  EXPECT_EQ((*r)->head_size, head.size());
}

TEST(ParseHttpRequestTest, AcceptsHttp10WithoutHeaders) {
  auto r = ParseHttpRequest("HEAD /healthz HTTP/1.0\r\n\r\n", kMax);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_TRUE(r->has_value());
  EXPECT_EQ((*r)->method, "HEAD");
  EXPECT_EQ((*r)->path, "/healthz");
  EXPECT_EQ((*r)->minor_version, 0);
}

TEST(ParseHttpRequestTest, EveryPrefixOfAHeadIsIncomplete) {
  const std::string head = "GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n";
  for (size_t n = 0; n < head.size(); ++n) {
    auto r = ParseHttpRequest(head.substr(0, n), kMax);
    ASSERT_TRUE(r.ok()) << n << ": " << r.status();
    EXPECT_FALSE(r->has_value()) << n;
  }
  auto r = ParseHttpRequest(head, kMax);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE(r->has_value());
}

TEST(ParseHttpRequestTest, MalformedHeadsAreInvalidArgument) {
  for (const char* bad : {
           "garbage\r\n\r\n",
           "GET /healthz\r\n\r\n",                   // HTTP/0.9.
           "GET  /healthz HTTP/1.1\r\n\r\n",         // Two spaces.
           "GET /healthz HTTP/1.1 \r\n\r\n",         // Trailing space.
           "GET healthz HTTP/1.1\r\n\r\n",           // Not origin-form.
           "GET http://a/healthz HTTP/1.1\r\n\r\n",  // Absolute-form.
           "OPTIONS * HTTP/1.1\r\n\r\n",             // Asterisk-form.
           "GET /a\x01 HTTP/1.1\r\n\r\n",            // Control byte.
           "GET /\xc3\xa9 HTTP/1.1\r\n\r\n",         // Non-ASCII.
           "G(T / HTTP/1.1\r\n\r\n",                 // Not a token.
           "GET / HTTP/2.0\r\n\r\n",                 // Not HTTP/1.x.
           "GET / HTTP/1.10\r\n\r\n",
           "GET / http/1.1\r\n\r\n",
           "GET / HTTP/1.1\r\nno colon\r\n\r\n",
           "GET / HTTP/1.1\r\n: empty name\r\n\r\n",
           "GET / HTTP/1.1\r\nHost : a\r\n\r\n",            // Space before the colon.
           "GET / HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n",  // Obsolete folding.
           "GET / HTTP/1.1\r\nHost: a\nX: b\r\n\r\n",       // Bare LF.
           "GET / HTTP/1.1\r\nHost: a\rX: b\r\n\r\n",       // Bare CR.
       }) {
    auto r = ParseHttpRequest(bad, kMax);
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << bad;
  }
  const std::string nul("GET / HTTP/1.1\r\nX: a\0b\r\n\r\n", 27);
  EXPECT_EQ(ParseHttpRequest(nul, kMax).status().code(), absl::StatusCode::kInvalidArgument);
}

// The request line alone decides a garbage request: the client need not
// finish (or ever send) the rest of the head to be refused.
TEST(ParseHttpRequestTest, ABadRequestLineIsRefusedBeforeTheHeadEnds) {
  EXPECT_EQ(ParseHttpRequest("garbage\r\n", kMax).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ParseHttpRequest("GET / HTTP/1.1\n", kMax).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(ParseHttpRequestTest, HeadsOverTheCapAreResourceExhausted) {
  const std::string line = "GET /healthz HTTP/1.1\r\n";
  // No CRLF at all within the cap.
  EXPECT_EQ(ParseHttpRequest(std::string(kMax, 'a'), kMax).status().code(),
            absl::StatusCode::kResourceExhausted);
  // A header that never ends.
  EXPECT_EQ(ParseHttpRequest(line + "X: " + std::string(kMax, 'a'), kMax).status().code(),
            absl::StatusCode::kResourceExhausted);
  // Complete, but one byte too long; exactly the cap is fine.
  const std::string fits = line + "X: " + std::string(kMax - line.size() - 7, 'a') + "\r\n\r\n";
  ASSERT_EQ(fits.size(), kMax);
  auto ok = ParseHttpRequest(fits, kMax);
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_TRUE(ok->has_value());
  EXPECT_EQ(ParseHttpRequest(fits, kMax - 1).status().code(), absl::StatusCode::kResourceExhausted);
  // Still below the cap and incomplete: wait for more.
  auto partial = ParseHttpRequest(line + "X: aaaa", kMax);
  ASSERT_TRUE(partial.ok());
  EXPECT_FALSE(partial->has_value());
}

}  // namespace
}  // namespace iommu
