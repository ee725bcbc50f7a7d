#include "common/validation.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace iommu {
namespace {

using ::testing::HasSubstr;

void ExpectInvalid(const absl::Status& s, const std::string& substr) {
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_THAT(s.message(), HasSubstr(substr));
}

TEST(ValidationTest, TenantIdRules) {
  EXPECT_TRUE(ValidateTenantId("tenant_id", "acme-1").ok());
  ExpectInvalid(ValidateTenantId("tenant_id", ""), "tenant_id: required");
  ExpectInvalid(ValidateTenantId("tenant_id", "1acme"), "tenant_id: must start with a lowercase");
  ExpectInvalid(ValidateTenantId("tenant_id", "Acme"), "tenant_id: must start");
  ExpectInvalid(ValidateTenantId("tenant_id", "ac_me"), "only lowercase letters, digits and '-'");
  ExpectInvalid(ValidateTenantId("tenant_id", std::string(64, 'a')), "at most 63");
}

TEST(ValidationTest, NodeNameRules) {
  EXPECT_TRUE(ValidateNodeName("node", "n1.rack-2").ok());
  EXPECT_TRUE(ValidateNodeName("node", "7node").ok());
  ExpectInvalid(ValidateNodeName("node", "-n"), "node: must start");
  ExpectInvalid(ValidateNodeName("node", "n/1"), "node: only lowercase");
}

TEST(ValidationTest, RequestIdRules) {
  EXPECT_TRUE(ValidateRequestId("request_id", "").ok());
  EXPECT_TRUE(ValidateRequestId("request_id", "9f2c-AB_x:1.2").ok());
  ExpectInvalid(ValidateRequestId("request_id", "a b"), "request_id: only [A-Za-z0-9._:-]");
  ExpectInvalid(ValidateRequestId("request_id", std::string(129, 'a')), "at most 128");
}

TEST(ValidationTest, PciAddressRules) {
  EXPECT_TRUE(ValidatePciAddress("devices[0]", "0000:00:04.0").ok());
  EXPECT_TRUE(ValidatePciAddress("devices[0]", "abcd:ff:1f.7").ok());
  ExpectInvalid(ValidatePciAddress("devices[0]", "0000:00:04"), "devices[0]: must be a PCI address");
  ExpectInvalid(ValidatePciAddress("devices[0]", "0000:00:04.0 "), "must be a PCI address");
  ExpectInvalid(ValidatePciAddress("devices[0]", "0000:00:0G.0"), "must be a PCI address");
  ExpectInvalid(ValidatePciAddress("devices[0]", "0000:00:20.0"), "device must be <= 1f");
  ExpectInvalid(ValidatePciAddress("devices[0]", "0000:00:04.8"), "function <= 7");
}

TEST(ValidationTest, ObjectIdRules) {
  EXPECT_TRUE(ValidateObjectId("container_id", "c-0123456789abcdef", "c-").ok());
  ExpectInvalid(ValidateObjectId("container_id", "", "c-"), "container_id: required");
  ExpectInvalid(ValidateObjectId("container_id", "w-0123456789abcdef", "c-"), "\"c-\" followed by");
  ExpectInvalid(ValidateObjectId("container_id", "c-0123456789ABCDEF", "c-"), "16 lowercase hex");
}

TEST(ValidationTest, PageSize) {
  EXPECT_EQ(*EffectivePageSize("page_size", 0), kDefaultPageSize);
  EXPECT_EQ(*EffectivePageSize("page_size", 5), 5u);
  ExpectInvalid(EffectivePageSize("page_size", 1001).status(), "page_size: at most 1000");
}

TEST(ValidationTest, MinPageSizeIsLowestBit) {
  EXPECT_EQ(MinPageSize(0x40201000), 0x1000u);
  EXPECT_EQ(MinPageSize(0), 0u);
}

TEST(ValidationTest, WindowRequestRules) {
  EXPECT_EQ(*ValidateWindowRequest(0x2000, 0, false, 0, 0x1000), 0x1000u);
  EXPECT_EQ(*ValidateWindowRequest(0x200000, 0x200000, true, 0x400000, 0x1000), 0x200000u);
  ExpectInvalid(ValidateWindowRequest(0, 0, false, 0, 0x1000).status(), "size: must be greater than 0");
  ExpectInvalid(ValidateWindowRequest(0x1800, 0, false, 0, 0x1000).status(),
                "size: must be a multiple of the IOMMU page size 0x1000, got 0x1800");
  ExpectInvalid(ValidateWindowRequest(0x1000, 0x3000, false, 0, 0x1000).status(),
                "alignment: must be a power of two");
  ExpectInvalid(ValidateWindowRequest(0x1000, 0x800, false, 0, 0x1000).status(),
                "alignment: must be at least the IOMMU page size");
  ExpectInvalid(ValidateWindowRequest(0x1000, 0x200000, true, 0x1000, 0x1000).status(),
                "base: must be a multiple of the alignment 0x200000");
  ExpectInvalid(ValidateWindowRequest(0x2000, 0, true, 0xfffffffffffff000ull, 0x1000).status(),
                "size: base 0xfffffffffffff000 + size 0x2000 overflows 64 bits");
  EXPECT_TRUE(ValidateWindowRequest(0x1000, 0, true, 0xfffffffffffff000ull, 0x1000).ok());
}

TEST(ValidationTest, PageTokensAndQuotas) {
  EXPECT_TRUE(ValidatePageToken("page_token", std::string(256, 'a')).ok());
  EXPECT_EQ(ValidatePageToken("page_token", std::string(257, 'a')).message(),
            "page_token: at most 256 characters");
  EXPECT_TRUE(ValidateQuota(4096, 0).ok());
  EXPECT_EQ(ValidateQuota(0, 0).message(), "quota.pinned_bytes: required, must be greater than 0");
  EXPECT_EQ(ValidateQuota(4097, 0).message(),
            "quota.pinned_bytes: must be a multiple of 4096 (a host page), got 4097");
  EXPECT_EQ(ValidateQuota(4096, 100).message(),
            "quota.window_bytes: must be a multiple of 4096 (a host page), got 100");
}

}  // namespace
}  // namespace iommu
