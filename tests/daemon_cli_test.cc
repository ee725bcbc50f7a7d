// The daemons' own command lines: --version names the program, its version
// and the commit it was built from; --help lists the program's own flags
// (not "No flags matched", not Abseil's internals).
#include <sys/wait.h>

#include <cstdio>
#include <tuple>
#include <string>
#include <utility>
#include <vector>

#include "common/version.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/daemon.h"

namespace iommu {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

// Runs `binary args` and returns (exit status, stdout + stderr).
std::pair<int, std::string> RunProgram(const std::string& binary, const std::string& args) {
  const std::string cmd = testing::RunfilePath(binary) + " " + args + " 2>&1";
  FILE* p = popen(cmd.c_str(), "r");
  if (p == nullptr) return {-1, ""};
  std::string out;
  char buf[4096];
  for (size_t n; (n = fread(buf, 1, sizeof(buf), p)) > 0;) out.append(buf, n);
  const int status = pclose(p);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, out};
}

struct Program {
  std::string binary;
  std::string name;
  std::vector<std::string> own_flags;
};

const std::vector<Program>& Programs() {
  static const auto* p = new std::vector<Program>{
      {"server/iommu-broker", "iommu-broker", {"--listen", "--db", "--metrics-address", "--tls-cert"}},
      {"agent/iommu-agent", "iommu-agent", {"--node", "--broker", "--state-dir", "--fd-store"}},
      {"agent/iommu-fdholder", "iommu-fdholder", {"--socket", "--max-fds"}},
  };
  return *p;
}

TEST(DaemonCliTest, VersionNamesProgramVersionAndCommit) {
  for (const Program& p : Programs()) {
    auto [code, out] = RunProgram(p.binary, "--version");
    EXPECT_EQ(code, 0) << p.name;
    EXPECT_EQ(out, VersionLine(p.name) + "\n") << p.name;
    EXPECT_THAT(out, Not(HasSubstr("Debug build"))) << p.name;
  }
}

TEST(DaemonCliTest, HelpListsTheProgramsOwnFlags) {
  for (const Program& p : Programs()) {
    auto [code, out] = RunProgram(p.binary, "--help");
    EXPECT_EQ(code, 0) << p.name;
    EXPECT_THAT(out, Not(HasSubstr("No flags matched"))) << p.name;
    EXPECT_THAT(out, HasSubstr("Usage: " + p.name)) << p.name;
    for (const std::string& flag : p.own_flags) {
      EXPECT_THAT(out, HasSubstr("\n  " + flag + "\n"))
          << p.name << " --help does not list " << flag;
    }
    EXPECT_THAT(out, Not(HasSubstr("--flagfile"))) << p.name << ": Abseil's own flags are noise";
    // One style: every flag --help lists is spelled with '-', as iommuctl's.
    EXPECT_THAT(out, Not(::testing::ContainsRegex("\n  --[a-z0-9-]*_"))) << p.name;
  }
}

// Issue 15 item 11: the '_' spellings of before keep working, with a
// deprecation warning naming the new one; an unknown flag exits 2 (not
// restarted by systemd) naming it as it was typed.
TEST(DaemonCliTest, OldUnderscoreSpellingsWorkWithAWarningAndUnknownFlagsExitTwo) {
  auto [code, out] = RunProgram("server/iommu-broker", "--log_level=debug --version");
  EXPECT_EQ(code, 0) << out;
  auto [dashed_code, dashed] = RunProgram("server/iommu-broker", "--log-level=debug --version");
  EXPECT_EQ(dashed_code, 0) << dashed;
  EXPECT_THAT(dashed, Not(HasSubstr("deprecated")));

  // A real start: the warning goes to the log, and the flag takes effect.
  std::tie(code, out) = RunProgram("agent/iommu-agent",
                                   "--node=n --broker=127.0.0.1:1 --insecure --backend=sim "
                                   "--state-dir= --log_level=bogus");
  EXPECT_EQ(code, 2) << out;
  EXPECT_THAT(out, HasSubstr("event=deprecated_flag flag=--log_level use=--log-level"));
  EXPECT_THAT(out, HasSubstr("bogus"));

  std::tie(code, out) = RunProgram("agent/iommu-agent", "--node-timout-ms=5");
  EXPECT_EQ(code, 2);
  EXPECT_THAT(out, HasSubstr("unknown flag --node-timout-ms (see --help)"));
}

// A broker flag out of range stops the start with exit 2 and names the flag
// and its rule.
TEST(DaemonCliTest, BrokerRefusesNumericFlagsOutOfRange) {
  for (const auto& [flag, rule] : std::vector<std::pair<std::string, std::string>>{
           {"--max-concurrent-registrations=-1",
            "--max-concurrent-registrations: must be at "
            "least 0, got -1"},
           {"--node-timeout-ms=0", "--node-timeout-ms: must be at least 1, got 0"},
           {"--heartbeat-interval-ms=-5", "--heartbeat-interval-ms: must be at least 1, got -5"},
       }) {
    auto [code, out] = RunProgram("server/iommu-broker",
                                  "--insecure --listen=127.0.0.1:0 --db=/nonexistent/x.db " + flag);
    EXPECT_EQ(code, 2) << flag << ": " << out;
    EXPECT_THAT(out, HasSubstr(rule)) << flag;
  }
}

// Regression (issue 11, item 7): a token on the command line is readable by
// every local user through /proc/PID/cmdline; the launcher refuses it before
// doing anything and says where a token may come from.
TEST(DaemonCliTest, LauncherRefusesATokenOnTheCommandLine) {
  auto [code, out] = RunProgram("launcher/iommu-launcher",
                                "--socket=/nonexistent.sock --token=c2VjcmV0 --memfd=4096");
  EXPECT_NE(code, 0) << out;
  EXPECT_THAT(out, HasSubstr("--token: removed"));
  EXPECT_THAT(out, HasSubstr("IOMMU_LAUNCHER_TOKEN"));
  EXPECT_THAT(out, HasSubstr("--token-file"));
}

}  // namespace
}  // namespace iommu
