#include "common/identity_cache.h"

#include <string>

#include "gtest/gtest.h"

namespace iommu {
namespace {

TEST(IdentityCacheTest, AnswersWhatWasInsertedForTheSameBytesAndTrustDomainOnly) {
  IdentityCache cache(8);
  const Identity acme{Role::kTenant, "acme"};
  EXPECT_FALSE(cache.Find("iommu.local", "PEM-A").has_value());
  cache.Insert("iommu.local", "PEM-A", acme);
  EXPECT_EQ(cache.Find("iommu.local", "PEM-A"), acme);
  EXPECT_FALSE(cache.Find("iommu.local", "PEM-B").has_value());
  EXPECT_FALSE(cache.Find("other.domain", "PEM-A").has_value());
  // The key keeps the two parts apart: "a" + "bPEM" is not "ab" + "PEM".
  cache.Insert("a", "bPEM", acme);
  EXPECT_FALSE(cache.Find("ab", "PEM").has_value());
}

TEST(IdentityCacheTest, StaysWithinItsCapacity) {
  IdentityCache cache(3);
  for (int i = 0; i < 10; ++i) {
    cache.Insert("d", std::to_string(i), Identity{Role::kTenant, std::to_string(i)});
    EXPECT_LE(cache.size(), 3u);
    EXPECT_EQ(cache.Find("d", std::to_string(i)), (Identity{Role::kTenant, std::to_string(i)}));
  }
  // Replacing an entry of a full cache keeps the others.
  IdentityCache full(2);
  full.Insert("d", "x", Identity{Role::kTenant, "x"});
  full.Insert("d", "y", Identity{Role::kTenant, "y"});
  full.Insert("d", "y", Identity{Role::kTenant, "y2"});
  EXPECT_EQ(full.Find("d", "x"), (Identity{Role::kTenant, "x"}));
  EXPECT_EQ(full.Find("d", "y"), (Identity{Role::kTenant, "y2"}));
  IdentityCache none(0);
  none.Insert("d", "x", Identity{Role::kTenant, "x"});
  EXPECT_FALSE(none.Find("d", "x").has_value());
}

}  // namespace
}  // namespace iommu
