#include "common/log.h"

#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <string>

#include "absl/strings/str_cat.h"
#include "common/message_text.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace iommu {
namespace {

using ::testing::EndsWith;
using ::testing::HasSubstr;
using ::testing::Not;
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

// A value may be whatever a caller sent: each is cut to its start and end,
// so one refusal cannot write megabytes.
TEST(LogTest, LongValuesAreCutInTheMiddle) {
  const std::string error = "tenant_id: " + std::string(4000000, 'a') + " is not yours";
  const std::string line =
      FormatLogLine(LogLevel::kWarning, "rpc_error", {{"caller", "tenant/evil"}, {"error", error}});
  EXPECT_LT(line.size(), 2 * kMaxMessageBytes);
  EXPECT_THAT(line, HasSubstr("caller=tenant/evil error=\"tenant_id: aaa"));
  EXPECT_THAT(line, HasSubstr(" bytes elided]..."));
  EXPECT_THAT(line, EndsWith("aaa is not yours\""));
}

TEST(LogTest, ParsesLevels) {
  EXPECT_EQ(*ParseLogLevel("debug"), LogLevel::kDebug);
  EXPECT_EQ(*ParseLogLevel("error"), LogLevel::kError);
  EXPECT_FALSE(ParseLogLevel("loud").ok());
  EXPECT_THAT(std::string(ParseLogLevel("loud").status().message()),
              HasSubstr("log_level: must be debug, info, warning or error"));
}

// What a child process writes to stderr (a pipe) with $JOURNAL_STREAM set
// to `stream(pipe's dev:ino)`, logging one error and one info line.
std::string ChildLog(bool stream_is_stderr) {
  int fds[2];
  if (pipe(fds) != 0) return "pipe failed";
  pid_t pid = fork();
  if (pid == 0) {
    dup2(fds[1], STDERR_FILENO);
    struct stat st;
    fstat(STDERR_FILENO, &st);
    const std::string stream =
        absl::StrCat(st.st_dev, ":", st.st_ino + (stream_is_stderr ? 0 : 1));
    setenv("JOURNAL_STREAM", stream.c_str(), 1);
    LogEvent(LogLevel::kError, "fatal", {{"error", "boom"}});
    LogEvent(LogLevel::kInfo, "serving");
    _exit(0);
  }
  close(fds[1]);
  std::string out;
  char buf[1024];
  for (ssize_t n; (n = read(fds[0], buf, sizeof(buf))) > 0;) out.append(buf, n);
  close(fds[0]);
  waitpid(pid, nullptr, 0);
  return out;
}

TEST(LogTest, LinesToTheJournalCarryTheirSyslogPriority) {
  const std::string journal = ChildLog(true);
  EXPECT_THAT(journal, StartsWith("<3>ts="));
  EXPECT_THAT(journal, HasSubstr("\n<6>ts="));
  const std::string elsewhere = ChildLog(false);
  EXPECT_THAT(elsewhere, StartsWith("ts="));
  EXPECT_THAT(elsewhere, Not(HasSubstr("<6>")));
  EXPECT_STREQ(SyslogPriorityPrefix(LogLevel::kWarning), "<4>");
  EXPECT_STREQ(SyslogPriorityPrefix(LogLevel::kDebug), "<7>");
}

}  // namespace

}  // namespace iommu
