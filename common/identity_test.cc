#include "common/identity.h"

#include "gtest/gtest.h"

namespace iommu {
namespace {

TEST(IdentityTest, ParsesEveryRole) {
  auto p = [](absl::string_view uri) { return ParseSpiffeId(uri, "iommu.local"); };
  EXPECT_EQ(*p("spiffe://iommu.local/broker"), (Identity{Role::kBroker, ""}));
  EXPECT_EQ(*p("spiffe://iommu.local/agent/node-a"), (Identity{Role::kAgent, "node-a"}));
  EXPECT_EQ(*p("spiffe://iommu.local/operator/admin"), (Identity{Role::kOperator, "admin"}));
  EXPECT_EQ(*p("spiffe://iommu.local/tenant/acme"), (Identity{Role::kTenant, "acme"}));
}

TEST(IdentityTest, RoundTrips) {
  for (const Identity& id : {Identity{Role::kBroker, ""}, Identity{Role::kAgent, "n1"},
                             Identity{Role::kTenant, "t-1"}, Identity{Role::kOperator, "ops"}}) {
    EXPECT_EQ(*ParseSpiffeId(SpiffeId("td", id), "td"), id) << id.ToString();
  }
}

TEST(IdentityTest, RefusesWhatItCannotUse) {
  for (const char* uri : {
           "spiffe://other.domain/tenant/acme",  // another trust domain
           "spiffe://iommu.local.evil/tenant/acme",
           "spiffe://iommu.local/tenant/",       // empty name
           "spiffe://iommu.local/tenant/ACME",   // tenant id rule
           "spiffe://iommu.local/tenant/a/b",    // extra segment
           "spiffe://iommu.local/broker/x",
           "spiffe://iommu.local/root/admin",    // unknown role
           "spiffe://iommu.local/",
           "https://iommu.local/tenant/acme",
           "",
       }) {
    auto id = ParseSpiffeId(uri, "iommu.local");
    EXPECT_EQ(id.status().code(), absl::StatusCode::kUnauthenticated) << uri;
    EXPECT_NE(id.status().message().find("peer certificate"), std::string::npos) << uri;
  }
}

TEST(IdentityTest, TrustDomainRule) {
  EXPECT_TRUE(ValidateTrustDomain("trust_domain", "iommu.local").ok());
  EXPECT_FALSE(ValidateTrustDomain("trust_domain", "").ok());
  EXPECT_FALSE(ValidateTrustDomain("trust_domain", "Iommu/x").ok());
}

}  // namespace
}  // namespace iommu
