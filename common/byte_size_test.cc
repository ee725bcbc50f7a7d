#include "common/byte_size.h"

#include <cstdint>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace iommu {
namespace {

using ::testing::HasSubstr;

uint64_t Parsed(const std::string& text) {
  absl::StatusOr<uint64_t> v = ParseByteSize("--size", text);
  EXPECT_TRUE(v.ok()) << text << ": " << v.status();
  return v.ok() ? *v : 0;
}

void ExpectRefused(const std::string& text, const std::string& message) {
  absl::StatusOr<uint64_t> v = ParseByteSize("--size", text);
  ASSERT_FALSE(v.ok()) << text << " parsed as " << *v;
  EXPECT_EQ(v.status().code(), absl::StatusCode::kInvalidArgument) << text;
  EXPECT_THAT(v.status().message(), HasSubstr("--size: \"" + text + "\" ")) << text;
  EXPECT_THAT(v.status().message(), HasSubstr(message)) << text;
}

TEST(ParseByteSizeTest, PlainAndHexBytes) {
  EXPECT_EQ(Parsed("0"), 0u);
  EXPECT_EQ(Parsed("4096"), 4096u);
  EXPECT_EQ(Parsed("0x1000"), 0x1000u);
  EXPECT_EQ(Parsed("0X1f"), 0x1fu);
  EXPECT_EQ(Parsed("18446744073709551615"), UINT64_MAX);
  EXPECT_EQ(Parsed("0xffffffffffffffff"), UINT64_MAX);
}

TEST(ParseByteSizeTest, BinaryUnitsArePowersOf1024) {
  EXPECT_EQ(Parsed("4Ki"), 4096u);
  EXPECT_EQ(Parsed("2Mi"), 2u << 20);
  EXPECT_EQ(Parsed("1Gi"), uint64_t{1} << 30);
  EXPECT_EQ(Parsed("3Ti"), uint64_t{3} << 40);
  EXPECT_EQ(Parsed("1Pi"), uint64_t{1} << 50);
  EXPECT_EQ(Parsed("15Ei"), uint64_t{15} << 60);
}

TEST(ParseByteSizeTest, DecimalUnitsArePowersOf1000) {
  EXPECT_EQ(Parsed("4k"), 4000u);
  EXPECT_EQ(Parsed("2M"), 2000000u);
  EXPECT_EQ(Parsed("1G"), 1000000000u);
  EXPECT_EQ(Parsed("1T"), 1000000000000u);
  EXPECT_EQ(Parsed("1P"), 1000000000000000u);
  EXPECT_EQ(Parsed("18E"), 18000000000000000000u);
}

TEST(ParseByteSizeTest, AmbiguousUnitsAreRefusedNamingBothReadings) {
  ExpectRefused("1GB", "ambiguous: write 1Gi (2^30 bytes) or 1G (10^9 bytes)");
  ExpectRefused("1GiB", "write 1Gi (2^30 bytes) or 1G");
  ExpectRefused("1gb", "write 1Gi (2^30 bytes) or 1G");
  ExpectRefused("4K", "write 4Ki (2^10 bytes) or 4k (10^3 bytes)");
  ExpectRefused("4KB", "write 4Ki (2^10 bytes) or 4k");
  ExpectRefused("2m", "milli in Kubernetes: write 2Mi (2^20 bytes) or 2M (10^6 bytes)");
  ExpectRefused("1tb", "write 1Ti (2^40 bytes) or 1T (10^12 bytes)");
}

TEST(ParseByteSizeTest, JunkIsRefusedListingTheForms) {
  ExpectRefused("", "is empty");
  ExpectRefused("G", "does not start with a digit");
  ExpectRefused("-1", "does not start with a digit");
  ExpectRefused(" 1Gi", "does not start with a digit");
  ExpectRefused("1Gi ", "write 1Gi (2^30 bytes) or 1G");
  ExpectRefused("12Q", "unknown unit \"Q\"");
  ExpectRefused("1.5Gi", "not a whole number: use a smaller unit");
  ExpectRefused("0x", "not a hex number");
  ExpectRefused("0x10Mi", "hex takes no unit");
  ExpectRefused("0x10000000000000000", "at most 16 digits");
  ExpectRefused("12Q", "binary units Ki Mi Gi Ti (1Gi = 2^30), decimal units k M G T");
}

TEST(ParseByteSizeTest, OverflowIsRefused) {
  ExpectRefused("18446744073709551616", "too large");
  ExpectRefused("16Ei", "too large");
  ExpectRefused("19E", "too large");
  ExpectRefused("17179869184Gi", "too large");
}

}  // namespace
}  // namespace iommu
