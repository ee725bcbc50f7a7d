#include "common/flag_spelling.h"

#include <set>
#include <string>

#include "absl/status/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace iommu {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Pair;

bool Known(absl::string_view name) {
  static const std::set<std::string> kFlags = {"node_timeout_ms", "insecure", "listen",
                                               "log_level", "version"};
  return kFlags.count(std::string(name)) > 0;
}

TEST(FlagSpellingTest, DashedNamesReachAbseilWithUnderscores) {
  absl::StatusOr<TranslatedFlags> t = TranslateFlagSpelling(
      {"prog", "--node-timeout-ms=500", "--listen", "127.0.0.1:0", "-log-level=debug",
       "--insecure", "--version"},
      Known);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_THAT(t->args, ElementsAre("prog", "--node_timeout_ms=500", "--listen", "127.0.0.1:0",
                                   "--log_level=debug", "--insecure", "--version"));
  EXPECT_TRUE(t->deprecated.empty());
  EXPECT_FALSE(t->help);
}

TEST(FlagSpellingTest, UnderscoreSpellingsStillWorkAndAreReportedDeprecated) {
  absl::StatusOr<TranslatedFlags> t =
      TranslateFlagSpelling({"prog", "--node_timeout_ms=500", "--log_level", "info"}, Known);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_THAT(t->args, ElementsAre("prog", "--node_timeout_ms=500", "--log_level", "info"));
  EXPECT_THAT(t->deprecated, ElementsAre(Pair("--node_timeout_ms", "--node-timeout-ms"),
                                         Pair("--log_level", "--log-level")));
}

TEST(FlagSpellingTest, ValuesNegationsHelpAndTheEndOfFlagsPassAsMeant) {
  absl::StatusOr<TranslatedFlags> t = TranslateFlagSpelling(
      {"prog", "--node-timeout-ms", "-5", "--no-insecure", "--noinsecure", "-h", "--",
       "--not-a-flag_x"},
      Known);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_THAT(t->args, ElementsAre("prog", "--node_timeout_ms", "-5", "--noinsecure",
                                   "--noinsecure", "--", "--not-a-flag_x"));
  EXPECT_TRUE(t->help);
  // A value with '=' keeps its dashes and underscores.
  t = TranslateFlagSpelling({"prog", "--listen=a-b_c:1"}, Known);
  ASSERT_TRUE(t.ok());
  EXPECT_THAT(t->args, ElementsAre("prog", "--listen=a-b_c:1"));
}

TEST(FlagSpellingTest, AnUnknownFlagIsNamedAsGiven) {
  absl::StatusOr<TranslatedFlags> t =
      TranslateFlagSpelling({"prog", "--node-timout-ms=5"}, Known);
  EXPECT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(t.status().message(), "unknown flag --node-timout-ms (see --help)");
  t = TranslateFlagSpelling({"prog", "--no-listen"}, Known);
  EXPECT_TRUE(t.ok()) << "negation of a non-boolean is Abseil's to refuse";
  t = TranslateFlagSpelling({"prog", "--nope"}, Known);
  EXPECT_THAT(std::string(t.status().message()), HasSubstr("unknown flag --nope"));
}

TEST(FlagSpellingTest, HelpListsDashedNamesSortedAndWrapped) {
  const std::string help = RenderFlagsHelp(
      "Usage: prog --listen=HOST:PORT",
      {{"node_timeout_ms", "How long a node may stay silent before it is marked unavailable "
                           "and its containers node-unavailable, in milliseconds.",
        "10000"},
       {"insecure", "Plaintext.", "false"}});
  EXPECT_EQ(help,
            "Usage: prog --listen=HOST:PORT\n\nFlags:\n"
            "  --insecure\n      Plaintext. (default: \"false\")\n"
            "  --node-timeout-ms\n"
            "      How long a node may stay silent before it is marked unavailable and its\n"
            "      containers node-unavailable, in milliseconds. (default: \"10000\")\n");
}

}  // namespace
}  // namespace iommu
