#include "common/message_text.h"

#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace iommu {
namespace {

using ::testing::EndsWith;
using ::testing::HasSubstr;
using ::testing::StartsWith;

TEST(QuoteForMessageTest, ShortValuesAreQuotedWhole) {
  EXPECT_EQ(QuoteForMessage("acme"), "\"acme\"");
  EXPECT_EQ(QuoteForMessage(""), "\"\"");
  EXPECT_EQ(QuoteForMessage(std::string(kMaxQuotedBytes, 'a')),
            "\"" + std::string(kMaxQuotedBytes, 'a') + "\"");
}

TEST(QuoteForMessageTest, EscapesWhatWouldBreakALine) {
  EXPECT_EQ(QuoteForMessage("a\"b\n\\"), "\"a\\\"b\\n\\\\\"");
  EXPECT_EQ(QuoteForMessage(std::string("\0\xff", 2)), "\"\\x00\\xff\"");
}

TEST(QuoteForMessageTest, LongValuesKeepTheirStartAndSayTheirLength) {
  const std::string quoted = QuoteForMessage(std::string(100000, 'x'));
  EXPECT_EQ(quoted, "\"" + std::string(kMaxQuotedBytes, 'x') + "...\" (100000 bytes)");
}

TEST(ElideMiddleTest, TextWithinTheBoundIsUnchanged) {
  EXPECT_EQ(ElideMiddle("tenant_id: required", 100), "tenant_id: required");
  const std::string exact(kMaxMessageBytes, 'a');
  EXPECT_EQ(ElideMiddle(exact), exact);
}

TEST(ElideMiddleTest, LongTextKeepsItsFieldAndItsRule) {
  const std::string text = "tenant_id: " + std::string(1000000, 'a') + " is not yours";
  const std::string out = ElideMiddle(text);
  EXPECT_LE(out.size(), kMaxMessageBytes);
  EXPECT_THAT(out, StartsWith("tenant_id: aaa"));
  EXPECT_THAT(out, EndsWith("aaa is not yours"));
  EXPECT_THAT(out, HasSubstr(" bytes elided]..."));
}

TEST(ElideMiddleTest, TheCountIsWhatWasLeftOut) {
  const std::string text(5000, 'b');
  const std::string out = ElideMiddle(text, 100);
  const size_t open = out.find("...[");
  const size_t close = out.find(" bytes elided]...");
  ASSERT_NE(open, std::string::npos);
  ASSERT_NE(close, std::string::npos);
  const size_t kept = out.size() - (close + 17 - open);
  EXPECT_EQ(out.substr(open + 4, close - open - 4), std::to_string(text.size() - kept));
}

TEST(ElideMiddleTest, NeverCutsAUtf8Character) {
  std::string text;
  for (int i = 0; i < 3000; ++i) text += "\xc3\xa9";  // U+00E9, two bytes.
  const std::string out = ElideMiddle(text, 101);
  EXPECT_LE(out.size(), 101u);
  const size_t open = out.find("...[");
  const size_t close = out.find("]...");
  ASSERT_NE(open, std::string::npos);
  EXPECT_EQ(open % 2, 0u) << "the start ends inside a character";
  EXPECT_EQ((out.size() - (close + 4)) % 2, 0u) << "the end starts inside a character";
}

TEST(ElideMiddleTest, ABoundSmallerThanTheMarkerKeepsOnlyTheStart) {
  EXPECT_EQ(ElideMiddle(std::string(1000, 'c'), 5), "ccccc");
}

}  // namespace
}  // namespace iommu
