#include "common/grant_token.h"

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <atomic>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace iommu {
namespace {

using Code = absl::StatusCode;

constexpr int64_t kNow = 1'700'000'000'000;

// SignGrant for grants that must sign; a failure fails the test.
std::string Signed(const v1::LauncherGrant& grant, absl::string_view key) {
  absl::StatusOr<std::string> token = SignGrant(grant, key);
  EXPECT_TRUE(token.ok()) << token.status();
  return token.ok() ? *token : std::string();
}

v1::LauncherGrant SampleGrant() {
  v1::LauncherGrant g;
  g.set_token_id(NewGrantTokenId());
  g.set_node("n1");
  g.set_container_id("c-0123456789abcdef");
  g.set_tenant_id("acme");
  v1::GrantWindow* w = g.add_windows();
  w->set_window_id("w-0000000000000001");
  w->set_base(0x100000);
  w->set_size(0x200000);
  g.set_issued_ms(kNow);
  g.set_expires_ms(kNow + 60'000);
  return g;
}

TEST(GrantTokenTest, RoundTripReturnsTheSignedGrant) {
  const std::string key = NewGrantKey();
  ASSERT_EQ(key.size(), 32u);
  const v1::LauncherGrant grant = SampleGrant();
  const std::string token = Signed(grant, key);
  EXPECT_EQ(token.substr(0, 3), "v1.");
  absl::StatusOr<v1::LauncherGrant> got = VerifyGrant(token, key, kNow);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->SerializeAsString(), grant.SerializeAsString());
  EXPECT_EQ(got->windows(0).base(), 0x100000u);
}

TEST(GrantTokenTest, TokenIdsAndKeysAreRandomHex) {
  const std::string a = NewGrantTokenId();
  EXPECT_EQ(a.size(), 32u);
  EXPECT_EQ(a.find_first_not_of("0123456789abcdef"), std::string::npos);
  EXPECT_NE(a, NewGrantTokenId());
  EXPECT_NE(NewGrantKey(), NewGrantKey());
}

TEST(GrantTokenTest, ChangingAnyByteOfTheTokenIsRefused) {
  const std::string key = NewGrantKey();
  const std::string token = Signed(SampleGrant(), key);
  for (size_t i = 0; i < token.size(); ++i) {
    std::string bad = token;
    // Swap for another base64url character (or another char for '.'/'v1').
    bad[i] = bad[i] == 'A' ? 'B' : 'A';
    absl::StatusOr<v1::LauncherGrant> got = VerifyGrant(bad, key, kNow);
    ASSERT_FALSE(got.ok()) << "byte " << i << " changed, still accepted";
    EXPECT_EQ(got.status().code(), Code::kUnauthenticated) << got.status();
  }
}

TEST(GrantTokenTest, TamperedPayloadIsBadSignature) {
  const std::string key = NewGrantKey();
  v1::LauncherGrant grant = SampleGrant();
  const std::string token = Signed(grant, key);
  // Re-encode a payload with a wider window and keep the old signature.
  grant.mutable_windows(0)->set_size(0x40000000);
  std::vector<std::string> parts = absl::StrSplit(token, '.');
  const std::string forged = absl::StrCat(
      "v1.", absl::WebSafeBase64Escape(grant.SerializeAsString()), ".", parts[2]);
  EXPECT_THAT(VerifyGrant(forged, key, kNow),
              StatusIs(Code::kUnauthenticated, "token: bad signature"));
  // A flipped bit in the payload's last character.
  std::string flipped = token;
  const size_t dot = token.rfind('.');
  flipped[dot - 2] = flipped[dot - 2] == 'Q' ? 'g' : 'Q';
  EXPECT_EQ(VerifyGrant(flipped, key, kNow).status().code(),
            Code::kUnauthenticated);
}

TEST(GrantTokenTest, WrongKeyIsBadSignature) {
  const std::string token = Signed(SampleGrant(), NewGrantKey());
  EXPECT_THAT(VerifyGrant(token, NewGrantKey(), kNow),
              StatusIs(Code::kUnauthenticated, "token: bad signature"));
}

TEST(GrantTokenTest, ValidUntilTheMillisecondBeforeExpiry) {
  const std::string key = NewGrantKey();
  const v1::LauncherGrant grant = SampleGrant();
  const std::string token = Signed(grant, key);
  EXPECT_TRUE(VerifyGrant(token, key, grant.expires_ms() - 1).ok());
  EXPECT_THAT(
      VerifyGrant(token, key, grant.expires_ms()),
      StatusIs(Code::kUnauthenticated, absl::StrCat("token: expired at ", grant.expires_ms())));
  EXPECT_THAT(VerifyGrant(token, key, grant.expires_ms() + 1),
              StatusIs(Code::kUnauthenticated, "expired"));
}

TEST(GrantTokenTest, ShortKeyIsAConfigurationError) {
  const std::string token = Signed(SampleGrant(), NewGrantKey());
  EXPECT_THAT(VerifyGrant(token, "", kNow),
              StatusIs(Code::kFailedPrecondition, "grant key: must be at least 16 bytes"));
  EXPECT_THAT(VerifyGrant(token, "0123456789abcde", kNow),
              StatusIs(Code::kFailedPrecondition, "got 15"));
}

// Regression (issue 11, A): signing used to abort the broker on a short key
// or an oversized grant; both are now errors for that one request.
TEST(GrantTokenTest, SigningWithAShortKeyIsFailedPrecondition) {
  EXPECT_THAT(SignGrant(SampleGrant(), "short"),
              StatusIs(Code::kFailedPrecondition, "grant key: must be at least 16 bytes, got 5"));
}

TEST(GrantTokenTest, SigningAGrantTooLargeForATokenIsResourceExhausted) {
  v1::LauncherGrant grant = SampleGrant();
  // Each window is ~40 bytes serialized: 100 of them pass 4096 once base64'd.
  for (int i = 0; i < 100; ++i) {
    v1::GrantWindow* w = grant.add_windows();
    w->set_window_id("w-0000000000000002");
    w->set_base(0x100000000ULL * (i + 2));
    w->set_size(0x200000);
  }
  EXPECT_THAT(SignGrant(grant, NewGrantKey()),
              StatusIs(Code::kResourceExhausted, "over the limit of 4096 bytes"));
  // Far past the limit: refused from its size alone, before encoding.
  grant.set_tenant_id(std::string(100000, 'a'));
  EXPECT_THAT(SignGrant(grant, NewGrantKey()),
              StatusIs(Code::kResourceExhausted,
                       absl::StrCat("grant: token would be more than ", grant.ByteSizeLong(),
                                    " bytes, over the limit of 4096 bytes")));
}

TEST(GrantTokenTest, MalformedTokensAreRefusedWithoutCrashing) {
  const std::string key = NewGrantKey();
  const std::string token = Signed(SampleGrant(), key);
  std::vector<std::string> parts = absl::StrSplit(token, '.');
  struct Case {
    std::string token;
    std::string want;
  };
  const std::vector<Case> cases = {
      {"", "malformed (empty)"},
      {"v1", "want v1.<payload>.<signature>"},
      {"v1.", "want v1.<payload>.<signature>"},
      {absl::StrCat("v1.", parts[1]), "want v1.<payload>.<signature>"},
      {absl::StrCat(token, ".x"), "want v1.<payload>.<signature>"},
      {absl::StrCat("v2.", parts[1], ".", parts[2]), "unknown version"},
      {absl::StrCat("v1..", parts[2]), "payload is not unpadded base64url"},
      {absl::StrCat("v1.", parts[1], "."), "signature is not unpadded base64url"},
      {absl::StrCat("v1.", parts[1], "!.", parts[2]), "payload is not"},
      {absl::StrCat("v1.", parts[1], "=.", parts[2]), "payload is not"},
      {absl::StrCat("v1.", parts[1], ".", parts[2], "=="), "signature is not"},
      {absl::StrCat("v1.", parts[1], ".", parts[2].substr(0, 20)),
       "signature is not 32 bytes"},
      // Standard (not url-safe) alphabet.
      {absl::StrCat("v1.", parts[1], ".+/+/"), "signature is not"},
      {std::string(kMaxGrantTokenBytes + 1, 'A'), "longer than 4096 bytes"},
      {std::string(1 << 20, '.'), "longer than 4096 bytes"},
      {std::string("v1.\0.\0", 6), "payload is not"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.token.substr(0, 80));
    EXPECT_THAT(VerifyGrant(c.token, key, kNow), StatusIs(Code::kUnauthenticated, c.want));
  }
}

TEST(GrantTokenTest, SignedGarbagePayloadIsMalformedNotAccepted) {
  // Only the key holder can produce this, but the agent must still not
  // crash or accept it.
  const std::string key = NewGrantKey();
  const std::string payload = "\xff\xff\xff";
  unsigned char mac[32];
  unsigned int len = 0;
  HMAC(EVP_sha256(), key.data(), key.size(),
       reinterpret_cast<const unsigned char*>(payload.data()), payload.size(),
       mac, &len);
  const std::string token = absl::StrCat(
      "v1.", absl::WebSafeBase64Escape(payload), ".",
      absl::WebSafeBase64Escape(
          absl::string_view(reinterpret_cast<char*>(mac), len)));
  EXPECT_THAT(VerifyGrant(token, key, kNow),
              StatusIs(Code::kUnauthenticated, "signed payload does not parse"));
}

TEST(ReplayCacheTest, SecondUseOfATokenIdIsRefused) {
  ReplayCache cache;
  ASSERT_TRUE(cache.Consume("t1", "acme", kNow + 1000, kNow).ok());
  EXPECT_THAT(cache.Consume("t1", "acme", kNow + 1000, kNow + 1),
              StatusIs(Code::kUnauthenticated, "token: already used"));
  EXPECT_TRUE(cache.Consume("t2", "acme", kNow + 1000, kNow + 1).ok());
  EXPECT_EQ(cache.size(), 2u);
}

TEST(ReplayCacheTest, RefusesExpiredTokensAndEmptyIds) {
  ReplayCache cache;
  EXPECT_THAT(cache.Consume("t1", "acme", kNow, kNow),
              StatusIs(Code::kUnauthenticated, "token: expired"));
  EXPECT_THAT(cache.Consume("", "acme", kNow + 1, kNow),
              StatusIs(Code::kInvalidArgument, "token_id: must not be empty"));
  EXPECT_EQ(cache.size(), 0u);
}

TEST(ReplayCacheTest, ForgetsIdsOnlyOnceTheirTokenExpired) {
  ReplayCache cache;
  ASSERT_TRUE(cache.Consume("t1", "acme", kNow + 10, kNow).ok());
  ASSERT_TRUE(cache.Consume("t2", "acme", kNow + 20, kNow).ok());
  // At kNow + 10, t1 is expired (so VerifyGrant refuses it anyway) and is
  // forgotten; t2 is still remembered.
  ASSERT_TRUE(cache.Consume("t3", "acme", kNow + 30, kNow + 10).ok());
  EXPECT_EQ(cache.size(), 2u);
  EXPECT_THAT(cache.Consume("t2", "acme", kNow + 20, kNow + 19),
              StatusIs(Code::kUnauthenticated, "already used"));
}

TEST(ReplayCacheTest, WhenFullRefusesInsteadOfForgettingUnexpiredIds) {
  ReplayCache cache(ReplayCacheLimits{2, 2});
  ASSERT_TRUE(cache.Consume("t1", "acme", kNow + 100, kNow).ok());
  ASSERT_TRUE(cache.Consume("t2", "acme", kNow + 200, kNow).ok());
  EXPECT_THAT(cache.Consume("t3", "acme", kNow + 300, kNow),
              StatusIs(Code::kResourceExhausted, "has used 2 unexpired tokens"));
  // Still refused as replays: nothing was evicted.
  EXPECT_THAT(cache.Consume("t1", "acme", kNow + 100, kNow),
              StatusIs(Code::kUnauthenticated, "already used"));
  // Once t1 expired there is room again.
  EXPECT_TRUE(cache.Consume("t3", "acme", kNow + 300, kNow + 100).ok());
}

// Regression (issue 11, B.a): 100,000 used tokens of one tenant filled the
// one global cache and every other tenant's fresh token was refused for up
// to an hour. Now the flooding tenant hits its own share only.
TEST(ReplayCacheTest, ATenantOverItsShareIsRefusedAndOtherTenantsAreNot) {
  ReplayCache cache(ReplayCacheLimits{3, 10});
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(cache.Consume(absl::StrCat("evil", i), "evil", kNow + 1000, kNow).ok());
  }
  EXPECT_THAT(
      cache.Consume("evil3", "evil", kNow + 1000, kNow),
      StatusIs(Code::kResourceExhausted,
               "token: tenant \"evil\" has used 3 unexpired tokens on this node (limit 3 per "
               "tenant"));
  EXPECT_TRUE(cache.Consume("good0", "acme", kNow + 1000, kNow).ok());
  EXPECT_EQ(cache.tenant_size("evil"), 3u);
  EXPECT_EQ(cache.tenant_size("acme"), 1u);
  // The refused id was not recorded, and the used ones are still replays.
  EXPECT_THAT(cache.Consume("evil0", "evil", kNow + 1000, kNow),
              StatusIs(Code::kUnauthenticated, "already used"));
  // Expiry gives the tenant its share back.
  EXPECT_TRUE(cache.Consume("evil3", "evil", kNow + 2000, kNow + 1000).ok());
  EXPECT_EQ(cache.tenant_size("evil"), 1u);
}

TEST(ReplayCacheTest, TheTotalBoundsMemoryAcrossTenants) {
  ReplayCache cache(ReplayCacheLimits{2, 3});
  ASSERT_TRUE(cache.Consume("a0", "a", kNow + 100, kNow).ok());
  ASSERT_TRUE(cache.Consume("a1", "a", kNow + 100, kNow).ok());
  ASSERT_TRUE(cache.Consume("b0", "b", kNow + 100, kNow).ok());
  EXPECT_THAT(cache.Consume("c0", "c", kNow + 100, kNow),
              StatusIs(Code::kResourceExhausted,
                       "replay cache full (3 unexpired tokens used, --replay-cache-max)"));
}

TEST(ReplayCacheTest, ValidateRefusesZeroAndATotalBelowTheShare) {
  EXPECT_TRUE(ValidateReplayCacheLimits(ReplayCacheLimits()).ok());
  EXPECT_THAT(ValidateReplayCacheLimits({0, 10}),
              StatusIs(Code::kInvalidArgument, "replay_cache_per_tenant: must be at least 1"));
  EXPECT_THAT(ValidateReplayCacheLimits({10, 9}),
              StatusIs(Code::kInvalidArgument,
                       "replay_cache_max: must be at least replay_cache_per_tenant (10), got 9"));
}

TEST(ReplayCacheTest, ConcurrentConsumersAcceptEachIdOnce) {
  ReplayCache cache;
  std::atomic<int> accepted{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 200; ++i) {
        if (cache.Consume(absl::StrCat("id", i), "acme", kNow + 1000, kNow).ok()) {
          ++accepted;
        }
      }
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(accepted.load(), 200);
}

}  // namespace
}  // namespace iommu
