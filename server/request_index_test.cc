// Unit tests of the request digests (against SipHash's published test
// vectors) and of the broker's in-memory index of remembered answers.
#include "server/request_index.h"

#include <string>

#include "gtest/gtest.h"
#include "server/request_digest.h"

namespace iommu {
namespace {

using Match = RequestIndex::Match;

// The reference key 00 01 .. 0f and message 00 01 .. (n - 1).
constexpr Hash128 kReferenceKey{0x0706050403020100ULL, 0x0f0e0d0c0b0a0908ULL};
std::string ReferenceMessage(int n) {
  std::string m;
  for (int i = 0; i < n; ++i) m.push_back(static_cast<char>(i));
  return m;
}

TEST(RequestDigestTest, SipHash64MatchesReferenceVectors) {
  EXPECT_EQ(SipHash64(kReferenceKey, ""), 0x726fdb47dd0e0e31ULL);
  // The example of the SipHash paper (appendix A): a 15-byte message.
  EXPECT_EQ(SipHash64(kReferenceKey, ReferenceMessage(15)), 0xa129ca6149be45e5ULL);
}

TEST(RequestDigestTest, SipHash128MatchesReferenceVector) {
  const Hash128 h = SipHash128(kReferenceKey, "");
  EXPECT_EQ(h.lo, 0xe6a825ba047f81a3ULL);
  EXPECT_EQ(h.hi, 0x930255c71472f66dULL);
}

TEST(RequestDigestTest, FingerprintDigestIsAFunctionOfTheWholeFingerprint) {
  const std::string a = "CreateTenant\n" + std::string(1000, 'x');
  std::string b = a;
  b.back() = 'y';
  EXPECT_EQ(FingerprintDigest(a), FingerprintDigest(std::string(a)));
  EXPECT_NE(FingerprintDigest(a), FingerprintDigest(b));
  EXPECT_NE(FingerprintDigest(""), FingerprintDigest(std::string(1, '\0')));
}

TEST(RequestIndexTest, AnswersAbsentSameOrOtherDigest) {
  RequestIndex index;
  EXPECT_EQ(index.Find("tenant/acme|r1", 7), Match::kAbsent);
  index.Insert("tenant/acme|r1", 7, 1000);
  EXPECT_EQ(index.Find("tenant/acme|r1", 7), Match::kSameDigest);
  EXPECT_EQ(index.Find("tenant/acme|r1", 8), Match::kOtherDigest);
  // Another caller's id of the same spelling is another key.
  EXPECT_EQ(index.Find("tenant/other|r1", 7), Match::kAbsent);
  EXPECT_EQ(index.Find("r1", 7), Match::kAbsent);
  EXPECT_EQ(index.size(), 1u);
}

TEST(RequestIndexTest, IndexesBareLegacyIdsUnderTheEmptyScope) {
  RequestIndex index;
  index.Insert("r1", 7, 1000);
  EXPECT_EQ(index.Find("r1", 7), Match::kSameDigest);
  EXPECT_EQ(index.CountInScope(""), 1);
  EXPECT_EQ(index.CountInScope("r1"), 0);
}

TEST(RequestIndexTest, CountsPerScope) {
  RequestIndex index;
  index.Insert("tenant/acme|a", 1, 10);
  index.Insert("tenant/acme|b", 2, 20);
  index.Insert("operator/admin|a", 3, 30);
  EXPECT_EQ(index.CountInScope("tenant/acme"), 2);
  EXPECT_EQ(index.CountInScope("operator/admin"), 1);
  EXPECT_EQ(index.CountInScope("tenant/nobody"), 0);
  EXPECT_EQ(index.CountInScope(""), 0);
}

TEST(RequestIndexTest, CountsBytesPerScopeThroughReplacementAndExpiry) {
  RequestIndex index;
  index.Insert("tenant/acme|a", 1, 10, 100);
  index.Insert("tenant/acme|b", 2, 20, 5000);
  index.Insert("operator/admin|a", 3, 30, 7);
  EXPECT_EQ(index.BytesInScope("tenant/acme"), 5100u);
  EXPECT_EQ(index.BytesInScope("operator/admin"), 7u);
  EXPECT_EQ(index.BytesInScope("tenant/nobody"), 0u);
  index.Insert("tenant/acme|b", 2, 25, 300);  // Replaced: its old size goes.
  EXPECT_EQ(index.BytesInScope("tenant/acme"), 400u);
  EXPECT_EQ(index.Expire(15), 1);
  EXPECT_EQ(index.BytesInScope("tenant/acme"), 300u);
  EXPECT_EQ(index.Expire(100), 2);
  EXPECT_EQ(index.BytesInScope("tenant/acme"), 0u);
  EXPECT_EQ(index.BytesInScope("operator/admin"), 0u);
}

TEST(RequestIndexTest, InsertingAKeyAgainReplacesItsEntryAndCountsItOnce) {
  RequestIndex index;
  index.Insert("tenant/acme|a", 1, 10);
  index.Insert("tenant/acme|a", 2, 20);
  EXPECT_EQ(index.Find("tenant/acme|a", 2), Match::kSameDigest);
  EXPECT_EQ(index.CountInScope("tenant/acme"), 1);
  EXPECT_EQ(index.size(), 1u);
  // The replacement's time counts for expiry.
  EXPECT_EQ(index.Expire(15), 0);
  EXPECT_EQ(index.Expire(21), 1);
}

TEST(RequestIndexTest, ExpiryForgetsOnlyEntriesOlderThanTheCutoff) {
  RequestIndex index;
  index.Insert("a|1", 1, 10);
  index.Insert("a|2", 2, 20);
  index.Insert("b|1", 3, 30);
  index.Insert("bare", 4, 5);
  // As the store's rule: time_ms < before_ms, so 30 stays at cutoff 30.
  EXPECT_EQ(index.Expire(30), 3);
  EXPECT_EQ(index.Find("a|1", 1), Match::kAbsent);
  EXPECT_EQ(index.Find("a|2", 2), Match::kAbsent);
  EXPECT_EQ(index.Find("bare", 4), Match::kAbsent);
  EXPECT_EQ(index.Find("b|1", 3), Match::kSameDigest);
  EXPECT_EQ(index.CountInScope("a"), 0);
  EXPECT_EQ(index.CountInScope(""), 0);
  EXPECT_EQ(index.CountInScope("b"), 1);
  EXPECT_EQ(index.Expire(30), 0);
  EXPECT_EQ(index.size(), 1u);
}

TEST(RequestIndexTest, ExpiryVisitsEveryEntryOfALargeTable) {
  RequestIndex index;
  for (int i = 0; i < 10000; ++i) index.Insert("t|" + std::to_string(i), i, i);
  EXPECT_EQ(index.Expire(5000), 5000);
  EXPECT_EQ(index.size(), 5000u);
  EXPECT_EQ(index.CountInScope("t"), 5000);
  EXPECT_EQ(index.Find("t|4999", 4999), Match::kAbsent);
  EXPECT_EQ(index.Find("t|5000", 5000), Match::kSameDigest);
}

TEST(RequestIndexTest, AnswersDoNotDependOnTheHashKey) {
  RequestIndex a(Hash128{1, 2});
  RequestIndex b(Hash128{3, 4});
  for (RequestIndex* index : {&a, &b}) {
    index->Insert("tenant/acme|r1", 7, 1000);
    EXPECT_EQ(index->Find("tenant/acme|r1", 7), Match::kSameDigest);
    EXPECT_EQ(index->Find("tenant/acme|r2", 7), Match::kAbsent);
  }
}

}  // namespace
}  // namespace iommu
