#include "common/log.h"

#include <cstdint>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace iommu {
namespace {

using ::testing::EndsWith;
using ::testing::HasSubstr;
using ::testing::StartsWith;

TEST(LogTest, FormatsKeyValuePairsAndQuotesWhenNeeded) {
  SetLogSource("agent");
  const std::string line = FormatLogLine(
      LogLevel::kWarning, "heartbeat_failed",
      {{"node", "n1"}, {"count", uint64_t{3}}, {"ok", false}, {"error", "a \"b\" c"}});
  EXPECT_THAT(line, StartsWith("ts="));
  EXPECT_THAT(line, HasSubstr(" level=warning src=agent event=heartbeat_failed node=n1 count=3 ok=false"));
  EXPECT_THAT(line, EndsWith(" error=\"a \\\"b\\\" c\""));
}

TEST(LogTest, IntegersAreNotPrintedAsBool) {
  EXPECT_THAT(FormatLogLine(LogLevel::kInfo, "e", {{"handle", uint64_t{7}}}),
              EndsWith("handle=7"));
}

TEST(LogTest, EmptyValueIsQuoted) {
  EXPECT_THAT(FormatLogLine(LogLevel::kInfo, "e", {{"session", ""}}),
              EndsWith("session=\"\""));
}

TEST(LogTest, ParsesLevels) {
  EXPECT_EQ(*ParseLogLevel("debug"), LogLevel::kDebug);
  EXPECT_EQ(*ParseLogLevel("error"), LogLevel::kError);
  EXPECT_FALSE(ParseLogLevel("loud").ok());
  EXPECT_THAT(std::string(ParseLogLevel("loud").status().message()),
              HasSubstr("log_level: must be debug, info, warning or error"));
}

}  // namespace

}  // namespace iommu
