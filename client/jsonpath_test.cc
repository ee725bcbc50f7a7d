#include "client/jsonpath.h"

#include "absl/status/status.h"
#include "client/json_tree.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace iommu {
namespace client {
namespace {

using ::testing::HasSubstr;

constexpr char kNodes[] = R"({
  "nodes": [
    {"name": "n1", "state": "NODE_STATE_READY", "device_count": 4, "cordoned": false,
     "labels": {"zone": "a"}},
    {"name": "n2", "state": "NODE_STATE_UNAVAILABLE", "device_count": 2, "cordoned": true,
     "labels": {}},
    {"name": "n3", "state": "NODE_STATE_READY", "device_count": 8, "cordoned": false}
  ],
  "next_page_token": ""
})";

std::string Render(const char* tmpl, const char* json = kNodes) {
  absl::StatusOr<JsonPathTemplate> t = JsonPathTemplate::Parse(tmpl);
  EXPECT_TRUE(t.ok()) << tmpl << ": " << t.status();
  absl::StatusOr<JsonNode> doc = ParseJson(json);
  EXPECT_TRUE(doc.ok()) << doc.status();
  return t.ok() && doc.ok() ? t->Render(*doc) : "<error>";
}

TEST(JsonPathTest, MembersIndexesAndWildcardsJoinResultsWithSpaces) {
  EXPECT_EQ(Render("{.nodes[*].name}"), "n1 n2 n3");
  EXPECT_EQ(Render("{$.nodes[0].name}"), "n1");
  EXPECT_EQ(Render("{.nodes[-1].name}"), "n3");
  EXPECT_EQ(Render("{.nodes[1:].device_count}"), "2 8");
  EXPECT_EQ(Render("{.nodes[:2].name}"), "n1 n2");
  EXPECT_EQ(Render("{.nodes[0]['state']}"), "NODE_STATE_READY");
  EXPECT_EQ(Render("{..zone}"), "a");
  EXPECT_EQ(Render("{.nodes[0].labels}"), "{\"zone\":\"a\"}");
  EXPECT_EQ(Render("{.nodes[0].labels.*}"), "a");
  EXPECT_EQ(Render("names: {.nodes[*].name}\n"), "names: n1 n2 n3\n");
  EXPECT_EQ(Render("{.next_page_token}"), "");
}

TEST(JsonPathTest, FiltersCompareStringsNumbersAndBooleans) {
  EXPECT_EQ(Render("{.nodes[?(@.state==\"NODE_STATE_READY\")].name}"), "n1 n3");
  EXPECT_EQ(Render("{.nodes[?(@.state != 'NODE_STATE_READY')].name}"), "n2");
  EXPECT_EQ(Render("{.nodes[?(@.device_count==8)].name}"), "n3");
  EXPECT_EQ(Render("{.nodes[?(@.cordoned==true)].name}"), "n2");
  EXPECT_EQ(Render("{.nodes[?(@.labels.zone==\"a\")].name}"), "n1");
}

TEST(JsonPathTest, RangeRepeatsItsBodyPerItemWithLiterals) {
  EXPECT_EQ(Render("{range .nodes[*]}{.name}{\"\\t\"}{.device_count}{\"\\n\"}{end}"),
            "n1\t4\nn2\t2\nn3\t8\n");
  // A range over the array itself walks its items too.
  EXPECT_EQ(Render("{range .nodes}[{.name}]{end}"), "[n1][n2][n3]");
  // $ still reaches the root inside a range.
  EXPECT_EQ(Render("{range .nodes[0:1]}{$.next_page_token}{@.name}{end}"), "n1");
  EXPECT_EQ(Render("{\"}\"}"), "}");
}

TEST(JsonPathTest, NamesThatMatchNothingPrintNothing) {
  EXPECT_EQ(Render("{.nodes[*].nope}"), "");
  EXPECT_EQ(Render("{.nodes[7].name}"), "");
  EXPECT_EQ(Render("a{.missing}b"), "ab");
}

TEST(JsonPathTest, MalformedTemplatesAreInvalidArgumentNamingTheSpot) {
  const struct {
    const char* tmpl;
    const char* message;
  } cases[] = {
      {"{.nodes", "at character 1: '{' is never closed"},
      {"{}", "empty expression"},
      {"{end}", "{end} without a {range ...}"},
      {"x{range .nodes[*]}{.name}", "at character 2: {range ...} without its {end}"},
      {"{.nodes[}", "expected an index"},
      {"{.nodes[0}", "expected ']'"},
      {"{.nodes[?(@.a>1)]}", "== or !="},
      {"{.nodes[?(.a==1)]}", "starts with @"},
      {"{.nodes[?(@.a==x)]}", "expected a \"string\""},
      {"{.nodes[?(@.a==1]}", "')'"},
      {"{..}", "'..' needs a member name"},
      {"{.a b}", "at character 5: unexpected text in the path"},
      {"{\"abc}", "'{' is never closed"},
      {"{\"a\" x}", "unexpected text after the string"},
  };
  for (const auto& c : cases) {
    absl::StatusOr<JsonPathTemplate> t = JsonPathTemplate::Parse(c.tmpl);
    EXPECT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument) << c.tmpl;
    EXPECT_THAT(std::string(t.status().message()), HasSubstr("--output=jsonpath"));
    EXPECT_THAT(std::string(t.status().message()), HasSubstr(c.message)) << c.tmpl;
  }
}

}  // namespace
}  // namespace client
}  // namespace iommu
