#include "common/cli_flags.h"

#include <string>
#include <vector>

#include "absl/strings/str_split.h"
#include "common/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace iommu {
namespace cli {
namespace {


FlagSpec Spec(std::string name, ValueKind kind, std::string value_name = "V",
              bool repeated = false) {
  FlagSpec f;
  f.name = std::move(name);
  f.kind = kind;
  f.value_name = std::move(value_name);
  f.help = "Help for " + f.name + ".";
  f.repeated = repeated;
  return f;
}

std::vector<FlagSpec> Table() {
  FlagSpec removed = Spec("token", ValueKind::kString);
  removed.removed = "gone; use --token-file";
  FlagSpec path = Spec("path", ValueKind::kString);
  path.allow_empty = true;
  return {Spec("socket", ValueKind::kString, "PATH"),
          Spec("size", ValueKind::kSize, "SIZE"),
          Spec("count", ValueKind::kUint32, "N"),
          Spec("base", ValueKind::kUint64, "ADDR"),
          Spec("vendor", ValueKind::kPciIds, "ID"),
          Spec("wait", ValueKind::kDuration, "DURATION"),
          Spec("map", ValueKind::kString, "SPEC", /*repeated=*/true),
          Spec("hold", ValueKind::kSwitch, ""),
          removed,
          path};
}

TEST(ParseFlagsTest, ReadsEveryKindInlineOrAsTheNextArgument) {
  absl::StatusOr<FlagValues> v =
      ParseFlags(Table(), {"--socket=/s", "--size", "2Mi", "--count=0x10", "--base=0x100000000",
                           "--vendor=10de:2330", "--wait", "1500ms", "--hold"});
  ASSERT_TRUE(v.ok()) << v.status();
  EXPECT_EQ(v->at("socket").back().text, "/s");
  EXPECT_EQ(v->at("size").back().number, 2u << 20);
  EXPECT_EQ(v->at("count").back().number, 16u);
  EXPECT_EQ(v->at("base").back().number, 0x100000000ull);
  EXPECT_EQ(v->at("vendor").back().number, 0x10deu);
  EXPECT_TRUE(v->at("vendor").back().has_second);
  EXPECT_EQ(v->at("vendor").back().second, 0x2330u);
  EXPECT_EQ(v->at("wait").back().duration, absl::Milliseconds(1500));
  EXPECT_EQ(v->at("hold").back().number, 1u);
}

TEST(ParseFlagsTest, SwitchesTakeTrueOrFalseAndNothingElse) {
  absl::StatusOr<FlagValues> v = ParseFlags(Table(), {"--hold=false"});
  ASSERT_TRUE(v.ok()) << v.status();
  EXPECT_EQ(v->at("hold").back().number, 0u);
  v = ParseFlags(Table(), {"--hold=TRUE"});
  ASSERT_TRUE(v.ok()) << v.status();
  EXPECT_EQ(v->at("hold").back().number, 1u);
  EXPECT_THAT(ParseFlags(Table(), {"--hold=x"}),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "--hold: takes no value (or =true / =false), got \"x\""));
  // A switch never takes the next argument as its value.
  EXPECT_THAT(ParseFlags(Table(), {"--hold", "false"}),
              StatusIs(absl::StatusCode::kInvalidArgument, "unexpected argument \"false\""));
}

TEST(ParseFlagsTest, RepeatedFlagsKeepOrderOthersAreGivenOnce) {
  absl::StatusOr<FlagValues> v = ParseFlags(Table(), {"--map=a", "--map", "b"});
  ASSERT_TRUE(v.ok()) << v.status();
  ASSERT_EQ(v->at("map").size(), 2u);
  EXPECT_EQ(v->at("map")[0].text, "a");
  EXPECT_EQ(v->at("map")[1].text, "b");
  EXPECT_THAT(ParseFlags(Table(), {"--size=1", "--size=2"}),
              StatusIs(absl::StatusCode::kInvalidArgument, "--size: given more than once"));
}

TEST(ParseFlagsTest, UnknownFlagSuggestsTheClosestName) {
  EXPECT_THAT(ParseFlags(Table(), {"--sockt=/s"}),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "unknown flag --sockt (did you mean --socket?)"));
  absl::StatusOr<FlagValues> v = ParseFlags(Table(), {"--frobnicate"});
  ASSERT_FALSE(v.ok());
  EXPECT_EQ(v.status().message(), "unknown flag --frobnicate");
}

TEST(ParseFlagsTest, RemovedFlagIsRefusedWithItsMessageAndNeverSuggested) {
  for (const std::vector<std::string>& args :
       {std::vector<std::string>{"--token=t"}, std::vector<std::string>{"--token", "t"},
        std::vector<std::string>{"--token"}}) {
    EXPECT_THAT(ParseFlags(Table(), args),
                StatusIs(absl::StatusCode::kInvalidArgument, "--token: gone; use --token-file"));
  }
  absl::StatusOr<FlagValues> v = ParseFlags(Table(), {"--tokn"});
  ASSERT_FALSE(v.ok());
  EXPECT_EQ(v.status().message(), "unknown flag --tokn");
}

TEST(ParseFlagsTest, MissingAndMalformedValuesNameTheFlag) {
  EXPECT_THAT(ParseFlags(Table(), {"--size"}),
              StatusIs(absl::StatusCode::kInvalidArgument, "--size: needs a value (--size=SIZE)"));
  EXPECT_THAT(ParseFlags(Table(), {"--socket="}),
              StatusIs(absl::StatusCode::kInvalidArgument, "--socket: must not be empty"));
  EXPECT_THAT(ParseFlags(Table(), {"--size=1GB"}),
              StatusIs(absl::StatusCode::kInvalidArgument, "--size: \"1GB\" is ambiguous"));
  EXPECT_THAT(
      ParseFlags(Table(), {"--count=0x100000000"}),
      StatusIs(absl::StatusCode::kInvalidArgument, "--count: \"0x100000000\" is too large"));
  EXPECT_THAT(ParseFlags(Table(), {"--vendor=12345"}),
              StatusIs(absl::StatusCode::kInvalidArgument, "--vendor: \"12345\" is not a PCI id"));
  EXPECT_THAT(ParseFlags(Table(), {"--vendor=10de:x"}),
              StatusIs(absl::StatusCode::kInvalidArgument, "--vendor (device after ':')"));
  EXPECT_THAT(ParseFlags(Table(), {"--wait=0s"}),
              StatusIs(absl::StatusCode::kInvalidArgument, "--wait: must be a positive"));
  EXPECT_THAT(ParseFlags(Table(), {"stray"}),
              StatusIs(absl::StatusCode::kInvalidArgument, "unexpected argument \"stray\""));
  absl::StatusOr<FlagValues> v = ParseFlags(Table(), {"--path="});
  ASSERT_TRUE(v.ok()) << v.status();
  EXPECT_EQ(v->at("path").back().text, "");
}

TEST(ValueParsersTest, UintPciIdAndDuration) {
  EXPECT_EQ(*ParseUint("--n", "12", 0xffffffff), 12u);
  EXPECT_THAT(ParseUint("--n", "0x10000", 0xffff),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "--n: \"0x10000\" is too large (at most 0xffff)"));
  EXPECT_THAT(ParseUint("--n", "12abc", 100),
              StatusIs(absl::StatusCode::kInvalidArgument, "--n: expected an unsigned integer"));
  EXPECT_EQ(*ParsePciId("--v", "0X10dE"), 0x10deu);
  EXPECT_EQ(*ParseDuration("--t", "7"), absl::Seconds(7));
  EXPECT_THAT(ParseDuration("--t", "soon"),
              StatusIs(absl::StatusCode::kInvalidArgument, "--t: invalid duration \"soon\""));
  EXPECT_EQ(*ParseSize("--s", "1G"), 1000000000u);
}

TEST(SuggestTest, PicksTheClosestWithinTwoEdits) {
  EXPECT_EQ(EditDistance("devcie", "device"), 2u);
  EXPECT_EQ(Suggest("devcie", {"device", "device-id", "node"}, "--"), " (did you mean --device?)");
  EXPECT_EQ(Suggest("xyzzy", {"device"}, ""), "");
  // Ties go to the alphabetically first.
  EXPECT_EQ(Suggest("ab", {"ac", "aa"}, ""), " (did you mean aa?)");
}

TEST(WrapTest, WrapsToWidthKeepingParagraphsAndIndent) {
  EXPECT_EQ(Wrap("aaa bbb ccc", 8, 0), "aaa bbb\nccc");
  EXPECT_EQ(Wrap("aaa bbb ccc", 10, 4), "aaa\n    bbb\n    ccc");
  EXPECT_EQ(Wrap("one\ntwo", 80, 2), "one\n  two");
  EXPECT_EQ(Wrap("a verylongword", 6, 0), "a\nverylongword");
}

TEST(RenderFlagListTest, AlignsWrapsAndSkipsRemovedFlags) {
  FlagSpec required = Spec("socket", ValueKind::kString, "PATH");
  required.required = true;
  const std::string list =
      RenderFlagList({required, Spec("hold", ValueKind::kSwitch, ""),
                      Spec("map", ValueKind::kString, "SPEC", /*repeated=*/true), Table()[8]},
                     40);
  EXPECT_EQ(list,
            "  --socket=PATH  Help for socket.\n"
            "                 Required.\n"
            "  --hold         Help for hold.\n"
            "  --map=SPEC     Help for map.\n"
            "                 Repeatable.\n");
  for (absl::string_view line : absl::StrSplit(list, '\n')) EXPECT_LE(line.size(), 40u);
}

}  // namespace
}  // namespace cli
}  // namespace iommu
