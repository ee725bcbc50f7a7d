#include "launcher/cli.h"

#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/fake_agent_socket.h"

namespace iommu {
namespace launcher {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
using Code = absl::StatusCode;

// The parser itself is common/byte_size_test.cc's; here, that the launcher
// reads sizes the way iommuctl does.
TEST(ParseSizeTest, ReadsKubernetesQuantitiesLikeIommuctl) {
  EXPECT_EQ(*ParseSize("f", "4096"), 4096u);
  EXPECT_EQ(*ParseSize("f", "0x1000"), 0x1000u);
  EXPECT_EQ(*ParseSize("f", "4Ki"), 4096u);
  EXPECT_EQ(*ParseSize("f", "2Mi"), 2u << 20);
  EXPECT_EQ(*ParseSize("f", "1Gi"), 1u << 30);
  EXPECT_EQ(*ParseSize("f", "2M"), 2000000u);
  EXPECT_EQ(*ParseSize("f", "0"), 0u);
  EXPECT_EQ(*ParseSize("f", "0xffffffffffffffff"), UINT64_MAX);
}

TEST(ParseSizeTest, RejectsJunkAmbiguityAndOverflowNamingTheField) {
  for (const char* bad : {"", "K", "0x", "-1", "+1", "1.5Mi", "12 ", "0xg", "0x10M"}) {
    SCOPED_TRACE(bad);
    EXPECT_THAT(ParseSize("--memfd", bad), StatusIs(Code::kInvalidArgument, "--memfd: "));
  }
  EXPECT_THAT(ParseSize("--memfd", "4KB"),
              StatusIs(Code::kInvalidArgument, "ambiguous: write 4Ki (2^10 bytes) or 4k"));
  EXPECT_THAT(ParseSize("--memfd", "2m"),
              StatusIs(Code::kInvalidArgument, "write 2Mi (2^20 bytes) or 2M"));
  EXPECT_THAT(ParseSize("--memfd", "99999999999999999999"),
              StatusIs(Code::kInvalidArgument, "too large"));
  EXPECT_THAT(ParseSize("--memfd", "17179869184Gi"), StatusIs(Code::kInvalidArgument, "too large"));
}

TEST(ParseMapSpecTest, ParsesRangeIovaAndAccess) {
  absl::StatusOr<MapSpec> m = ParseMapSpec("0:2Mi@0x100000");
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->offset, 0u);
  EXPECT_EQ(m->length, 2u << 20);
  EXPECT_EQ(m->iova, 0x100000u);
  EXPECT_TRUE(m->readable && m->writable);
  m = ParseMapSpec("4Ki:4Ki@1Mi:r");
  ASSERT_TRUE(m.ok());
  EXPECT_TRUE(m->readable);
  EXPECT_FALSE(m->writable);
  m = ParseMapSpec("0:4Ki@1Mi:w");
  ASSERT_TRUE(m.ok());
  EXPECT_FALSE(m->readable);
  EXPECT_TRUE(m->writable);
}

TEST(ParseMapSpecTest, RejectsMalformedSpecs) {
  EXPECT_THAT(ParseMapSpec("0:4Ki"), StatusIs(Code::kInvalidArgument, "want OFFSET:LENGTH@IOVA"));
  EXPECT_THAT(ParseMapSpec("0@1Mi"), StatusIs(Code::kInvalidArgument, "want OFFSET:LENGTH@IOVA"));
  EXPECT_THAT(ParseMapSpec("0:4Ki@1Mi:rw:x"), StatusIs(Code::kInvalidArgument, "want"));
  EXPECT_THAT(ParseMapSpec("0:0@1Mi"),
              StatusIs(Code::kInvalidArgument, "--map length: must not be 0"));
  EXPECT_THAT(ParseMapSpec("x:4Ki@1Mi"), StatusIs(Code::kInvalidArgument, "--map offset"));
  EXPECT_THAT(ParseMapSpec("0:4Ki@1Mi:x"), StatusIs(Code::kInvalidArgument, "--map access"));
}

TEST(ParseUnmapSpecTest, ParsesAndRejects) {
  absl::StatusOr<UnmapSpec> u = ParseUnmapSpec("0x100000:2Mi");
  ASSERT_TRUE(u.ok());
  EXPECT_EQ(u->iova, 0x100000u);
  EXPECT_EQ(u->length, 2u << 20);
  EXPECT_THAT(ParseUnmapSpec("1Mi"), StatusIs(Code::kInvalidArgument, "want IOVA:LENGTH"));
  EXPECT_THAT(ParseUnmapSpec("1Mi:0"), StatusIs(Code::kInvalidArgument, "must not be 0"));
}

TEST(ParseArgsTest, ParsesEveryFlagAndRepeats) {
  absl::StatusOr<CliOptions> o = ParseArgs(
      {"--socket=/s", "--token-file", "/t", "--memfd=4Mi", "--map=0:1Mi@1Mi", "--map",
       "1Mi:1Mi@2Mi:r", "--unmap=1Mi:1Mi", "--list", "--devices", "--hold"},
      nullptr);
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_EQ(o->socket, "/s");
  EXPECT_EQ(o->token_file, "/t");
  EXPECT_EQ(o->token, "");
  EXPECT_EQ(o->memfd_size, 4u << 20);
  ASSERT_EQ(o->maps.size(), 2u);
  EXPECT_FALSE(o->maps[1].writable);
  ASSERT_EQ(o->unmaps.size(), 1u);
  EXPECT_TRUE(o->list && o->devices && o->hold);
}

TEST(ParseArgsTest, TokenComesFromTheEnvironmentUnlessATokenFileIsGiven) {
  absl::StatusOr<CliOptions> o = ParseArgs({"--socket=/s"}, "from-env");
  ASSERT_TRUE(o.ok());
  EXPECT_EQ(o->token, "from-env");
  o = ParseArgs({"--socket=/s", "--token-file=-"}, "from-env");
  ASSERT_TRUE(o.ok());
  EXPECT_EQ(o->token, "");
  EXPECT_EQ(o->token_file, "-");
}

// Regression (issue 11, D): --token=T put the token in /proc/PID/cmdline for
// every local user to read and replay before the launcher used it.
TEST(ParseArgsTest, TokenOnTheCommandLineIsRefusedNamingTheAlternatives) {
  for (const std::vector<std::string>& args :
       {std::vector<std::string>{"--socket=/s", "--token=t"},
        std::vector<std::string>{"--socket=/s", "--token", "t"},
        std::vector<std::string>{"--token"}}) {
    EXPECT_THAT(
        ParseArgs(args, "from-env"),
        StatusIs(Code::kInvalidArgument,
                 "--token: removed, because a token on the command line is readable by every "
                 "local user through /proc/PID/cmdline; set $IOMMU_LAUNCHER_TOKEN, or pass "
                 "--token-file=PATH (--token-file=- reads stdin)"));
  }
}

TEST(ReadTokenFileTest, ReadsAFileOrOneLineOfStdinWithoutSurroundingSpace) {
  const std::string path = absl::StrCat(std::getenv("TEST_TMPDIR"), "/token");
  std::FILE* f = std::fopen(path.c_str(), "w");
  ASSERT_NE(f, nullptr);
  std::fputs("  v1.abc.def\n", f);
  std::fclose(f);
  absl::StatusOr<std::string> t = ReadTokenFile(path, -1);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(*t, "v1.abc.def");

  int p[2];
  ASSERT_EQ(pipe2(p, O_CLOEXEC), 0);
  ASSERT_EQ(write(p[1], "v1.x.y\nrest", 11), 11);
  t = ReadTokenFile("-", p[0]);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(*t, "v1.x.y");
  char rest[8] = {};
  EXPECT_EQ(read(p[0], rest, sizeof(rest)), 4) << "only the first line is consumed";
  close(p[0]);
  close(p[1]);
}

TEST(ReadTokenFileTest, RefusesMissingEmptyAndOversizeFiles) {
  EXPECT_THAT(ReadTokenFile("/nonexistent/token", -1),
              StatusIs(Code::kNotFound, "--token-file: open /nonexistent/token"));
  const std::string path = absl::StrCat(std::getenv("TEST_TMPDIR"), "/empty-token");
  std::FILE* f = std::fopen(path.c_str(), "w");
  ASSERT_NE(f, nullptr);
  std::fputs(" \n", f);
  std::fclose(f);
  EXPECT_THAT(ReadTokenFile(path, -1), StatusIs(Code::kInvalidArgument, "holds no token"));
  f = std::fopen(path.c_str(), "w");
  std::fputs(std::string(5000, 'a').c_str(), f);
  std::fclose(f);
  EXPECT_THAT(ReadTokenFile(path, -1), StatusIs(Code::kInvalidArgument, "more than 4096 bytes"));
  // A token of the longest size with a line end is a token.
  f = std::fopen(path.c_str(), "w");
  std::fputs((std::string(4096, 'a') + "\r\n").c_str(), f);
  std::fclose(f);
  absl::StatusOr<std::string> longest = ReadTokenFile(path, -1);
  ASSERT_TRUE(longest.ok()) << longest.status();
  EXPECT_EQ(longest->size(), 4096u);
}

TEST(ParseArgsTest, RejectsBadCombinationsNamingTheFlag) {
  EXPECT_THAT(ParseArgs({}, "t"), StatusIs(Code::kInvalidArgument, "--socket: required"));
  EXPECT_THAT(ParseArgs({"--socket=/s"}, nullptr),
              StatusIs(Code::kInvalidArgument, "token: required; set $IOMMU_LAUNCHER_TOKEN"));
  EXPECT_THAT(ParseArgs({"--socket=/s", "--token-file="}, nullptr),
              StatusIs(Code::kInvalidArgument, "--token-file: needs a path or -"));
  EXPECT_THAT(ParseArgs({"--socket=/s", "--memfd=4Ki", "--file=/f"}, "t"),
              StatusIs(Code::kInvalidArgument, "--memfd and --file"));
  EXPECT_THAT(ParseArgs({"--socket=/s", "--map=0:4Ki@1Mi"}, "t"),
              StatusIs(Code::kInvalidArgument, "--map: needs memory"));
  EXPECT_THAT(ParseArgs({"--socket=/s", "--bogus"}, nullptr),
              StatusIs(Code::kInvalidArgument, "unknown flag --bogus"));
  EXPECT_THAT(ParseArgs({"--socket=/s", "--token-file"}, nullptr),
              StatusIs(Code::kInvalidArgument, "--token-file: needs a value"));
  EXPECT_THAT(ParseArgs({"--socket=/s", "--list=yes"}, nullptr),
              StatusIs(Code::kInvalidArgument, "--list: takes no value"));
  EXPECT_THAT(ParseArgs({"--socket=/s", "--memfd=0"}, nullptr),
              StatusIs(Code::kInvalidArgument, "--memfd: must not be 0"));
  EXPECT_THAT(ParseArgs({"stray"}, nullptr),
              StatusIs(Code::kInvalidArgument, "unexpected argument"));
}

// The launcher's flags go through common/cli_flags.h, iommuctl's parser:
// a mistyped flag names the closest one.
TEST(ParseArgsTest, MistypedFlagSuggestsTheClosest) {
  EXPECT_THAT(ParseArgs({"--sockt=/s"}, "t"),
              StatusIs(Code::kInvalidArgument, "unknown flag --sockt (did you mean --socket?)"));
  EXPECT_THAT(ParseArgs({"--socket=/s", "--hodl"}, "t"),
              StatusIs(Code::kInvalidArgument, "unknown flag --hodl (did you mean --hold?)"));
}

TEST(ParseArgsTest, SwitchesTakeOnlyTrueOrFalse) {
  absl::StatusOr<CliOptions> o =
      ParseArgs({"--socket=/s", "--hold=false", "--list=true", "--devices"}, "t");
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_FALSE(o->hold);
  EXPECT_TRUE(o->list && o->devices);
  EXPECT_THAT(
      ParseArgs({"--socket=/s", "--hold=x"}, "t"),
      StatusIs(Code::kInvalidArgument, "--hold: takes no value (or =true / =false), got \"x\""));
}

TEST(UsageTest, ListsEveryFlagFromTheTableButTheRemovedToken) {
  const std::string usage = Usage();
  for (const char* flag : {"--socket=PATH", "--token-file=PATH|-", "--memfd=SIZE", "--file=PATH",
                           "--map=SPEC", "--unmap=IOVA:LENGTH", "--list",
                           "--devices", "--hold", "--help"}) {
    EXPECT_THAT(usage, HasSubstr(absl::StrCat("\n  ", flag, " "))) << flag;
  }
  EXPECT_THAT(usage, Not(HasSubstr("--token=")));
  EXPECT_THAT(usage, HasSubstr("Ki Mi Gi Ti"));
  EXPECT_THAT(usage, HasSubstr("Exit status 0 on success"));
  for (absl::string_view line : absl::StrSplit(usage, '\n')) EXPECT_LE(line.size(), 80u) << line;
}

class RunCliTest : public testing::FakeAgentSocketTest {
 protected:
  // Runs the CLI, returning its status and what it printed.
  // `token` stands in for $IOMMU_LAUNCHER_TOKEN.
  absl::Status Run(const std::vector<std::string>& args, std::string* printed,
                   const char* token = "good") {
    std::vector<std::string> all = {SocketFlag()};
    all.insert(all.end(), args.begin(), args.end());
    absl::StatusOr<CliOptions> options = ParseArgs(all, token);
    if (!options.ok()) return options.status();
    char* buf = nullptr;
    size_t len = 0;
    std::FILE* out = open_memstream(&buf, &len);
    absl::Status status = RunCli(*options, out);
    std::fclose(out);
    printed->assign(buf, len);
    std::free(buf);
    return status;
  }
};

TEST_F(RunCliTest, PrintsEachStepAsKeyValueLines) {
  std::string out;
  absl::Status status =
      Run({"--memfd=2Mi", "--map=0:1Mi@1Mi", "--map=1Mi:64Ki@0x200000:r",
           "--unmap=0x200000:64Ki", "--list", "--devices"},
          &out);
  ASSERT_TRUE(status.ok()) << status;
  EXPECT_THAT(out, HasSubstr("step=open_session session_id=s-1 container_id=c-0123456789abcdef "
                             "tenant_id=acme"));
  EXPECT_THAT(out, HasSubstr("step=window window_id=w-0000000000000001 base=0x100000 "
                             "size=0x200000\n"));
  EXPECT_THAT(out, HasSubstr("size=0x200000 owner_tenant=acme shared=false\n"));
  EXPECT_THAT(out, HasSubstr("offset=0x0 length=0x100000 iova=0x100000 access=rw\n"));
  EXPECT_THAT(out, HasSubstr("offset=0x100000 length=0x10000 iova=0x200000 access=r\n"));
  EXPECT_THAT(out, HasSubstr("step=unmap iova=0x200000 length=0x10000 bytes=0x10000\n"));
  EXPECT_THAT(out, HasSubstr("step=list count=1\n"));
  EXPECT_THAT(out, HasSubstr("step=device address=0000:00:04.0 fd="));
}

TEST_F(RunCliTest, ReturnsTheAgentsError) {
  std::string out;
  absl::Status status = Run({}, &out, "bad");
  EXPECT_EQ(status.code(), Code::kUnauthenticated);
  EXPECT_THAT(std::string(status.message()), HasSubstr("token: bad signature"));
  EXPECT_EQ(out, "");
}

TEST_F(RunCliTest, HoldPrintsReadyAndReleasesOnStdinEof) {
  // Swap stdin for a pipe whose writer is already closed.
  int p[2];
  ASSERT_EQ(pipe2(p, O_CLOEXEC), 0);
  close(p[1]);
  const int saved = dup(STDIN_FILENO);
  ASSERT_EQ(dup2(p[0], STDIN_FILENO), STDIN_FILENO);
  close(p[0]);
  std::string out;
  absl::Status status = Run({"--hold"}, &out);
  dup2(saved, STDIN_FILENO);
  close(saved);
  ASSERT_TRUE(status.ok()) << status;
  EXPECT_THAT(out, HasSubstr("\nready\nstep=release reason=stdin-eof\n"));
  // The session stayed open until release: the connection closes only now.
  EXPECT_TRUE(handler_.WaitForEvents("disconnect", 1, absl::Seconds(10)));
}

}  // namespace
}  // namespace launcher
}  // namespace iommu
