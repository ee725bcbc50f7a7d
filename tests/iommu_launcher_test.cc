// Runs the iommu-launcher binary against a launcher socket served in this
// process by a fake handler: the exit codes, the error line, and --hold's
// "ready" / SIGTERM contract that shell tests rely on.
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/fake_agent_socket.h"

extern char** environ;

namespace iommu {
namespace launcher {
namespace {

using ::testing::HasSubstr;

// A child with pipes on stdin, stdout and stderr.
struct Child {
  pid_t pid = -1;
  int in = -1;   // Write end of its stdin.
  int out = -1;  // Read end of its stdout.
  int err = -1;  // Read end of its stderr.
};

// `token`, when not empty, is passed in $IOMMU_LAUNCHER_TOKEN.
Child Spawn(const std::vector<std::string>& args, const std::string& token = "") {
  const std::string binary =
      absl::StrCat(std::getenv("TEST_SRCDIR"), "/iommu_broker/launcher/iommu-launcher");
  int in[2], out[2], err[2];
  EXPECT_EQ(pipe2(in, O_CLOEXEC), 0);
  EXPECT_EQ(pipe2(out, O_CLOEXEC), 0);
  EXPECT_EQ(pipe2(err, O_CLOEXEC), 0);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, in[0], STDIN_FILENO);
  posix_spawn_file_actions_adddup2(&actions, out[1], STDOUT_FILENO);
  posix_spawn_file_actions_adddup2(&actions, err[1], STDERR_FILENO);
  std::vector<char*> argv;
  std::vector<std::string> all = {binary};
  all.insert(all.end(), args.begin(), args.end());
  for (std::string& a : all) argv.push_back(a.data());
  argv.push_back(nullptr);
  std::vector<std::string> env_strings;
  for (char** e = environ; *e != nullptr; ++e) env_strings.push_back(*e);
  if (!token.empty()) env_strings.push_back("IOMMU_LAUNCHER_TOKEN=" + token);
  std::vector<char*> env;
  for (std::string& e : env_strings) env.push_back(e.data());
  env.push_back(nullptr);
  Child child;
  EXPECT_EQ(posix_spawn(&child.pid, binary.c_str(), &actions, nullptr, argv.data(), env.data()),
            0);
  posix_spawn_file_actions_destroy(&actions);
  close(in[0]);
  close(out[1]);
  close(err[1]);
  child.in = in[1];
  child.out = out[0];
  child.err = err[0];
  return child;
}

// Reads `fd` until `want` appears or EOF; returns what was read.
std::string ReadUntil(int fd, const std::string& want) {
  std::string text;
  char buf[512];
  while (want.empty() || text.find(want) == std::string::npos) {
    const ssize_t n = read(fd, buf, sizeof(buf));
    if (n <= 0) break;
    text.append(buf, n);
  }
  return text;
}

int Wait(pid_t pid) {
  int status = 0;
  EXPECT_EQ(waitpid(pid, &status, 0), pid);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

using IommuLauncherTest = testing::FakeAgentSocketTest;

TEST_F(IommuLauncherTest, HoldPrintsReadyAfterMappingAndExitsZeroOnSigterm) {
  Child child = Spawn({SocketFlag(), "--memfd=2Mi", "--map=0:2Mi@1Mi", "--hold"}, "good");
  const std::string out = ReadUntil(child.out, "ready\n");
  EXPECT_THAT(out, HasSubstr("step=map memory_id="));
  ASSERT_THAT(out, HasSubstr("\nready\n"));
  // Everything was mapped before "ready", and the session is still open.
  EXPECT_EQ(handler_.CountEvents("request 1"), 3u);
  EXPECT_EQ(handler_.CountEvents("disconnect"), 0u);
  ASSERT_EQ(kill(child.pid, SIGTERM), 0);
  EXPECT_EQ(Wait(child.pid), 0);
  EXPECT_THAT(ReadUntil(child.out, ""), HasSubstr("step=release reason=SIGTERM"));
  EXPECT_TRUE(handler_.WaitForEvents("disconnect", 1, absl::Seconds(10)));
  close(child.in);
  close(child.out);
  close(child.err);
}

TEST_F(IommuLauncherTest, HoldEndsOnStdinEof) {
  // The token on stdin's first line; the rest of stdin still ends the hold.
  Child child = Spawn({SocketFlag(), "--token-file=-", "--hold"});
  ASSERT_EQ(write(child.in, "good\n", 5), 5);
  ASSERT_THAT(ReadUntil(child.out, "ready\n"), HasSubstr("ready\n"));
  close(child.in);
  EXPECT_EQ(Wait(child.pid), 0);
  close(child.out);
  close(child.err);
}

TEST_F(IommuLauncherTest, AgentErrorExitsOneWithCodeAndMessage) {
  Child child = Spawn({SocketFlag()}, "bad");
  close(child.in);
  EXPECT_EQ(Wait(child.pid), 1);
  EXPECT_EQ(ReadUntil(child.err, ""), "error: UNAUTHENTICATED: token: bad signature\n");
  close(child.out);
  close(child.err);
}

TEST_F(IommuLauncherTest, UsageErrorExitsOne) {
  Child child = Spawn({SocketFlag(), "--map=0:4Ki@1Mi"}, "t");
  close(child.in);
  EXPECT_EQ(Wait(child.pid), 1);
  EXPECT_THAT(ReadUntil(child.err, ""),
              HasSubstr("error: INVALID_ARGUMENT: --map: needs memory"));
  close(child.out);
  close(child.err);
}

// Regression (issue 11, D): `iommu-launcher --token=T` showed T to every
// local user in /proc/PID/cmdline. Now it never reaches the agent.
TEST_F(IommuLauncherTest, TokenFlagIsAUsageErrorAndNothingIsSent) {
  Child child = Spawn({SocketFlag(), "--token=good", "--hold"});
  close(child.in);
  EXPECT_EQ(Wait(child.pid), 1);
  EXPECT_THAT(ReadUntil(child.err, ""),
              HasSubstr("error: INVALID_ARGUMENT: --token: removed, because a token on the "
                        "command line is readable by every local user"));
  EXPECT_EQ(handler_.CountEvents("connect"), 0u);
  close(child.out);
  close(child.err);
}

}  // namespace
}  // namespace launcher
}  // namespace iommu
