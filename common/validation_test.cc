#include "common/validation.h"

#include "common/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace iommu {
namespace {

using Code = absl::StatusCode;

TEST(ValidationTest, TenantIdRules) {
  EXPECT_TRUE(ValidateTenantId("tenant_id", "acme-1").ok());
  EXPECT_THAT(ValidateTenantId("tenant_id", ""),
              StatusIs(Code::kInvalidArgument, "tenant_id: required"));
  EXPECT_THAT(ValidateTenantId("tenant_id", "1acme"),
              StatusIs(Code::kInvalidArgument, "tenant_id: must start with a lowercase"));
  EXPECT_THAT(ValidateTenantId("tenant_id", "Acme"),
              StatusIs(Code::kInvalidArgument, "tenant_id: must start"));
  EXPECT_THAT(ValidateTenantId("tenant_id", "ac_me"),
              StatusIs(Code::kInvalidArgument, "only lowercase letters, digits and '-'"));
  EXPECT_THAT(ValidateTenantId("tenant_id", std::string(64, 'a')),
              StatusIs(Code::kInvalidArgument, "at most 63"));
}

TEST(ValidationTest, NodeNameRules) {
  EXPECT_TRUE(ValidateNodeName("node", "n1.rack-2").ok());
  EXPECT_TRUE(ValidateNodeName("node", "7node").ok());
  EXPECT_THAT(ValidateNodeName("node", "-n"), StatusIs(Code::kInvalidArgument, "node: must start"));
  EXPECT_THAT(ValidateNodeName("node", "n/1"),
              StatusIs(Code::kInvalidArgument, "node: only lowercase"));
}

TEST(ValidationTest, RequestIdRules) {
  EXPECT_TRUE(ValidateRequestId("request_id", "").ok());
  EXPECT_TRUE(ValidateRequestId("request_id", "9f2c-AB_x:1.2").ok());
  EXPECT_THAT(ValidateRequestId("request_id", "a b"),
              StatusIs(Code::kInvalidArgument, "request_id: only [A-Za-z0-9._:-]"));
  EXPECT_THAT(ValidateRequestId("request_id", std::string(129, 'a')),
              StatusIs(Code::kInvalidArgument, "at most 128"));
}

TEST(ValidationTest, PciAddressRules) {
  EXPECT_TRUE(ValidatePciAddress("devices[0]", "0000:00:04.0").ok());
  EXPECT_TRUE(ValidatePciAddress("devices[0]", "abcd:ff:1f.7").ok());
  EXPECT_THAT(ValidatePciAddress("devices[0]", "0000:00:04"),
              StatusIs(Code::kInvalidArgument, "devices[0]: must be a PCI address"));
  EXPECT_THAT(ValidatePciAddress("devices[0]", "0000:00:04.0 "),
              StatusIs(Code::kInvalidArgument, "must be a PCI address"));
  EXPECT_THAT(ValidatePciAddress("devices[0]", "0000:00:0G.0"),
              StatusIs(Code::kInvalidArgument, "must be a PCI address"));
  EXPECT_THAT(ValidatePciAddress("devices[0]", "0000:00:20.0"),
              StatusIs(Code::kInvalidArgument, "device must be <= 1f"));
  EXPECT_THAT(ValidatePciAddress("devices[0]", "0000:00:04.8"),
              StatusIs(Code::kInvalidArgument, "function <= 7"));
}

TEST(ValidationTest, ObjectIdRules) {
  EXPECT_TRUE(ValidateObjectId("container_id", "c-0123456789abcdef", "c-").ok());
  EXPECT_THAT(ValidateObjectId("container_id", "", "c-"),
              StatusIs(Code::kInvalidArgument, "container_id: required"));
  EXPECT_THAT(ValidateObjectId("container_id", "w-0123456789abcdef", "c-"),
              StatusIs(Code::kInvalidArgument, "\"c-\" followed by"));
  EXPECT_THAT(ValidateObjectId("container_id", "c-0123456789ABCDEF", "c-"),
              StatusIs(Code::kInvalidArgument, "16 lowercase hex"));
}

TEST(ValidationTest, PageSize) {
  EXPECT_EQ(*EffectivePageSize("page_size", 0), kDefaultPageSize);
  EXPECT_EQ(*EffectivePageSize("page_size", 5), 5u);
  EXPECT_THAT(EffectivePageSize("page_size", 1001).status(),
              StatusIs(Code::kInvalidArgument, "page_size: at most 1000"));
}

TEST(ValidationTest, MinPageSizeIsLowestBit) {
  EXPECT_EQ(MinPageSize(0x40201000), 0x1000u);
  EXPECT_EQ(MinPageSize(0), 0u);
}

TEST(ValidationTest, WindowRequestRules) {
  EXPECT_EQ(*ValidateWindowRequest(0x2000, 0, false, 0, 0x1000), 0x1000u);
  EXPECT_EQ(*ValidateWindowRequest(0x200000, 0x200000, true, 0x400000, 0x1000), 0x200000u);
  EXPECT_THAT(ValidateWindowRequest(0, 0, false, 0, 0x1000).status(),
              StatusIs(Code::kInvalidArgument, "size: must be greater than 0"));
  EXPECT_THAT(ValidateWindowRequest(0x1800, 0, false, 0, 0x1000).status(),
              StatusIs(Code::kInvalidArgument,
                       "size: must be a multiple of the IOMMU page size 0x1000, got 0x1800"));
  EXPECT_THAT(ValidateWindowRequest(0x1000, 0x3000, false, 0, 0x1000).status(),
              StatusIs(Code::kInvalidArgument, "alignment: must be a power of two"));
  EXPECT_THAT(ValidateWindowRequest(0x1000, 0x800, false, 0, 0x1000).status(),
              StatusIs(Code::kInvalidArgument, "alignment: must be at least the IOMMU page size"));
  EXPECT_THAT(
      ValidateWindowRequest(0x1000, 0x200000, true, 0x1000, 0x1000).status(),
      StatusIs(Code::kInvalidArgument, "base: must be a multiple of the alignment 0x200000"));
  EXPECT_THAT(ValidateWindowRequest(0x2000, 0, true, 0xfffffffffffff000ull, 0x1000).status(),
              StatusIs(Code::kInvalidArgument,
                       "size: base 0xfffffffffffff000 + size 0x2000 overflows 64 bits"));
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
