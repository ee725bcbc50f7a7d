#include "common/label_selector.h"

#include <map>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace iommu {
namespace {

using ::testing::HasSubstr;
using Labels = std::map<std::string, std::string>;

bool Selects(const std::string& selector, const Labels& labels) {
  absl::StatusOr<LabelSelector> s = LabelSelector::Parse("label_selector", selector);
  EXPECT_TRUE(s.ok()) << selector << ": " << s.status();
  return s.ok() && s->Matches(labels);
}

std::string Refusal(const std::string& selector) {
  absl::StatusOr<LabelSelector> s = LabelSelector::Parse("label_selector", selector);
  EXPECT_FALSE(s.ok()) << selector;
  if (s.ok()) return "";
  EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument);
  return std::string(s.status().message());
}

TEST(LabelSelector, EmptyMatchesEverything) {
  EXPECT_TRUE(Selects("", {}));
  EXPECT_TRUE(Selects("  ", {{"a", "b"}}));
}

TEST(LabelSelector, EqualityAndInequality) {
  const Labels ml = {{"team", "ml"}, {"env", "prod"}};
  EXPECT_TRUE(Selects("team=ml", ml));
  EXPECT_TRUE(Selects("team==ml", ml));
  EXPECT_FALSE(Selects("team=web", ml));
  EXPECT_TRUE(Selects("team!=web", ml));
  EXPECT_FALSE(Selects("team!=ml", ml));
  // != and notin hold for objects without the label, as in Kubernetes.
  EXPECT_TRUE(Selects("owner!=jo", ml));
  EXPECT_FALSE(Selects("owner=jo", ml));
  EXPECT_TRUE(Selects("team = ml , env = prod", ml));
  EXPECT_FALSE(Selects("team=ml,env=dev", ml));
  EXPECT_TRUE(Selects("empty=", {{"empty", ""}}));
  EXPECT_FALSE(Selects("empty=", {}));
}

TEST(LabelSelector, SetsAndExistence) {
  const Labels ml = {{"team", "ml"}, {"index", "3"}};
  EXPECT_TRUE(Selects("team in (web, ml)", ml));
  EXPECT_FALSE(Selects("team in (web)", ml));
  EXPECT_TRUE(Selects("team notin (web,db)", ml));
  EXPECT_FALSE(Selects("team notin (ml)", ml));
  EXPECT_TRUE(Selects("owner notin (jo)", ml));
  EXPECT_TRUE(Selects("team", ml));
  EXPECT_TRUE(Selects("index", ml));  // A key that starts like "in".
  EXPECT_FALSE(Selects("owner", ml));
  EXPECT_TRUE(Selects("!owner", ml));
  EXPECT_FALSE(Selects("! team", ml));
  EXPECT_TRUE(Selects("example.com/tier in(a,b)", {{"example.com/tier", "b"}}));
}

TEST(LabelSelector, RefusalsNameThePositionAndTheRule) {
  EXPECT_THAT(Refusal("team=ml,"), HasSubstr("label_selector: at character 9: expected a label key"));
  EXPECT_THAT(Refusal("team=ml env=x"), HasSubstr("expected ',' between requirements"));
  EXPECT_THAT(Refusal("team in ml"), HasSubstr("expected '(' after in/notin"));
  EXPECT_THAT(Refusal("team in (a b)"), HasSubstr("expected ',' or ')'"));
  EXPECT_THAT(Refusal("team in (a"), HasSubstr("found the end"));
  EXPECT_THAT(Refusal("team > 3"), HasSubstr("expected one of = == != in notin"));
  EXPECT_THAT(Refusal("-team=x"), HasSubstr("a key's name must be"));
  EXPECT_THAT(Refusal("team=-x"), HasSubstr("a value must be empty"));
  EXPECT_THAT(Refusal(std::string(4097, 'a')), HasSubstr("at most 4096 characters"));
  std::string many;
  for (int i = 0; i < 33; ++i) many += (i ? ",k" : "k") + std::to_string(i);
  EXPECT_THAT(Refusal(many), HasSubstr("at most 32 requirements"));
}

}  // namespace
}  // namespace iommu
