#include "client/json_tree.h"

#include "absl/status/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace iommu {
namespace client {
namespace {

using ::testing::HasSubstr;

TEST(JsonTreeTest, KeepsMemberOrderAndNumbersExactly) {
  absl::StatusOr<JsonNode> doc = ParseJson(
      R"({"z": 18446744073709551615, "a": [1, -2.5e3, true, false, null], "m": {}})");
  ASSERT_TRUE(doc.ok()) << doc.status();
  ASSERT_EQ(doc->kind, JsonNode::Kind::kObject);
  ASSERT_EQ(doc->members.size(), 3u);
  EXPECT_EQ(doc->members[0].first, "z");
  EXPECT_EQ(doc->members[0].second.scalar, "18446744073709551615");
  EXPECT_EQ(doc->members[1].first, "a");
  EXPECT_EQ(CompactJson(doc->members[1].second), "[1,-2.5e3,true,false,null]");
  EXPECT_EQ(CompactJson(*doc),
            R"({"z":18446744073709551615,"a":[1,-2.5e3,true,false,null],"m":{}})");
  EXPECT_EQ(doc->Find("m")->kind, JsonNode::Kind::kObject);
  EXPECT_EQ(doc->Find("nope"), nullptr);
}

TEST(JsonTreeTest, DecodesEscapesAndSurrogatePairs) {
  absl::StatusOr<JsonNode> doc = ParseJson(R"("a\"b\\c\/\n\t\u00e9\ud83d\ude00")");
  ASSERT_TRUE(doc.ok()) << doc.status();
  EXPECT_EQ(doc->scalar, "a\"b\\c/\n\t\xc3\xa9\xf0\x9f\x98\x80");
  EXPECT_EQ(QuoteJsonString(doc->scalar), "\"a\\\"b\\\\c/\\n\\t\xc3\xa9\xf0\x9f\x98\x80\"");
  EXPECT_EQ(QuoteJsonString(std::string("\x01\x7f", 2)), "\"\\u0001\\u007f\"");
}

TEST(JsonTreeTest, MalformedInputIsInvalidArgumentNamingTheOffset) {
  for (const char* bad : {"", "{", "[1,]", "{\"a\" 1}", "\"unterminated", "01x", "-", "1.",
                          "tru", "{\"a\":1} extra", "\"\\ud800\"", "\"\\x\"", "\"a\nb\"",
                          "[1 2]"}) {
    absl::StatusOr<JsonNode> doc = ParseJson(bad);
    EXPECT_EQ(doc.status().code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_THAT(std::string(doc.status().message()), HasSubstr("JSON at byte")) << bad;
  }
}

TEST(JsonTreeTest, RefusesNestingPastTheLimitInsteadOfOverflowingTheStack) {
  std::string deep(100000, '[');
  absl::StatusOr<JsonNode> doc = ParseJson(deep);
  EXPECT_EQ(doc.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(doc.status().message()), HasSubstr("deeper than 128"));
  std::string ok = std::string(128, '[') + std::string(128, ']');
  EXPECT_TRUE(ParseJson(ok).ok());
}

}  // namespace
}  // namespace client
}  // namespace iommu
