#include "server/record_checksum.h"

#include <string>

#include "gtest/gtest.h"

namespace iommu {
namespace {

TEST(RecordChecksumTest, Crc32cMatchesTheStandardCheckValue) {
  // The CRC-32C check value of "123456789" (RFC 3720, B.4).
  EXPECT_EQ(Crc32c(0, "123456789"), 0xE3069283u);
  EXPECT_EQ(Crc32c(0, ""), 0u);
  EXPECT_EQ(Crc32c(Crc32c(0, "1234"), "56789"), 0xE3069283u);
}

TEST(RecordChecksumTest, EveryFlippedBitOfAValueChangesTheObjectChecksum) {
  const std::string value = "\x0a\x04" "acme\x12\x05\x08\x80\x80\x80\x04";
  const uint32_t sum = ObjectChecksum("tenant", "acme", value);
  for (size_t i = 0; i < value.size(); ++i) {
    for (int bit = 0; bit < 8; ++bit) {
      std::string flipped = value;
      flipped[i] ^= static_cast<char>(1 << bit);
      EXPECT_NE(ObjectChecksum("tenant", "acme", flipped), sum) << "byte " << i << " bit " << bit;
    }
  }
}

TEST(RecordChecksumTest, MovingBytesBetweenFieldsChangesTheChecksum) {
  EXPECT_NE(ObjectChecksum("tenant", "ab", "c"), ObjectChecksum("tenant", "a", "bc"));
  EXPECT_NE(RequestChecksum("r", "fp", "x", 1), RequestChecksum("r", "f", "px", 1));
  EXPECT_NE(RequestChecksum("r", "fp", "x", 1), RequestChecksum("r", "fp", "x", 2));
}

}  // namespace
}  // namespace iommu
