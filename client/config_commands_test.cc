// `iommuctl config ...` and --context through the whole program
// (RunIommuctl), on a config file in the test's temporary directory.
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>

#include <sys/stat.h>

#include "absl/strings/str_cat.h"
#include "client/commands_fixture.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace iommu {
namespace client {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;

class ConfigCommandsTest : public CommandsTest {
 protected:
  ConfigCommandsTest() {
    dir_ = absl::StrCat(std::getenv("TEST_TMPDIR"), "/",
                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    env_.config_path = absl::StrCat(dir_, "/sub/config");
    env_.default_broker = "";
  }

  std::string ReadConfig() {
    std::ifstream in(env_.config_path);
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
  }

  std::string dir_;
};

TEST_F(ConfigCommandsTest, SetAndUseContextsThenCommandsReachTheirBroker) {
  // No file yet: no contexts, and the default broker.
  ASSERT_EQ(Run({"config", "get-contexts"}), 0) << err_;
  EXPECT_EQ(out_, "CURRENT  NAME  BROKER  TRUST-DOMAIN  AUTH\n");
  ASSERT_EQ(Run({"tenant", "list"}), 0) << err_;
  EXPECT_EQ(addresses_.back(), "127.0.0.1:7400");

  ASSERT_EQ(Run({"config", "set-context", "prod", "--broker=b1:7400,b2:7400", "--cert=op.pem",
                 "--key=op.key", "--ca=ca.pem", "--trust-domain=prod.example"}),
            0)
      << err_;
  EXPECT_EQ(out_, "Context \"prod\" created.\n");
  ASSERT_EQ(Run({"config", "set-context", "dev", "--broker=127.0.0.1:7500", "--insecure"}), 0);
  ASSERT_EQ(Run({"config", "use-context", "prod"}), 0) << err_;
  EXPECT_EQ(out_, "Switched to context \"prod\".\n");

  // The file is private, in a directory made for it.
  struct stat st;
  ASSERT_EQ(stat(env_.config_path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  EXPECT_THAT(ReadConfig(), HasSubstr("\"current_context\": \"prod\""));

  ASSERT_EQ(Run({"config", "get-contexts"}), 0) << err_;
  EXPECT_EQ(out_,
            "CURRENT  NAME  BROKER           TRUST-DOMAIN  AUTH\n"
            "*        prod  b1:7400,b2:7400  prod.example  mtls (op.pem)\n"
            "         dev   127.0.0.1:7500   -             insecure\n");
  ASSERT_EQ(Run({"config", "current-context"}), 0);
  EXPECT_EQ(out_, "prod\n");

  // The current context reaches the stub factory.
  ASSERT_EQ(Run({"tenant", "list"}), 0) << err_;
  EXPECT_EQ(globals_.back().broker, "b1:7400,b2:7400");
  EXPECT_EQ(globals_.back().cert, "op.pem");
  EXPECT_EQ(globals_.back().trust_domain, "prod.example");
  // --context picks another; a flag still wins over it.
  ASSERT_EQ(Run({"--context=dev", "tenant", "list"}), 0) << err_;
  EXPECT_EQ(globals_.back().broker, "127.0.0.1:7500");
  EXPECT_TRUE(globals_.back().insecure);
  ASSERT_EQ(Run({"--context", "dev", "--broker=x:1", "tenant", "list"}), 0) << err_;
  EXPECT_EQ(globals_.back().broker, "x:1");
  // The environment beats the current context but not an explicit one.
  env_.default_broker = "env:7400";
  ASSERT_EQ(Run({"tenant", "list"}), 0) << err_;
  EXPECT_EQ(globals_.back().broker, "env:7400");
  EXPECT_EQ(globals_.back().cert, "op.pem");
  ASSERT_EQ(Run({"--context=prod", "tenant", "list"}), 0) << err_;
  EXPECT_EQ(globals_.back().broker, "b1:7400,b2:7400");
}

TEST_F(ConfigCommandsTest, SetContextChangesOnlyTheFieldsGiven) {
  ASSERT_EQ(Run({"config", "set-context", "prod", "--broker=b1:7400", "--cert=op.pem"}), 0);
  ASSERT_EQ(Run({"config", "set-context", "prod", "--trust-domain=t.example"}), 0) << err_;
  EXPECT_EQ(out_, "Context \"prod\" modified.\n");
  ASSERT_EQ(Run({"config", "view", "-o", "yaml"}), 0) << err_;
  EXPECT_EQ(out_,
            "current_context: \"\"\ncontexts:\n- name: prod\n  broker: b1:7400\n"
            "  cert: op.pem\n  key: \"\"\n  ca: \"\"\n  trust_domain: t.example\n"
            "  insecure: false\n");
  ASSERT_EQ(Run({"config", "get-contexts", "-o", "name"}), 0);
  EXPECT_EQ(out_, "context/prod\n");
}

TEST_F(ConfigCommandsTest, DeletingTheCurrentContextLeavesNoneCurrent) {
  ASSERT_EQ(Run({"config", "set-context", "a", "--broker=a:1"}), 0);
  ASSERT_EQ(Run({"config", "use-context", "a"}), 0);
  ASSERT_EQ(Run({"config", "delete-context", "a"}), 0) << err_;
  EXPECT_EQ(out_, "Deleted context \"a\".\n");
  EXPECT_EQ(Run({"config", "current-context"}), 1);
  EXPECT_THAT(err_, StartsWith("error: FAILED_PRECONDITION: no current context in "));
  ASSERT_EQ(Run({"tenant", "list"}), 0);
  EXPECT_EQ(addresses_.back(), "127.0.0.1:7400");
}

TEST_F(ConfigCommandsTest, MistakesAreUsageErrorsAndChangeNothing) {
  ASSERT_EQ(Run({"config", "set-context", "prod", "--broker=b1:7400", "--cert=op.pem"}), 0);
  const std::string before = ReadConfig();
  const struct {
    std::vector<std::string> args;
    const char* message;
  } cases[] = {
      {{"config", "use-context", "nope"}, "error: no context named \"nope\" (have: prod)"},
      {{"config", "delete-context", "nope"}, "error: no context named \"nope\""},
      {{"config", "set-context", "a b"}, "error: NAME: a context name has only letters"},
      {{"config", "set-context", "prod", "--broker=no-port"}, "error: --broker"},
      {{"config", "set-context", "prod", "--insecure"},
       "error: --insecure: context \"prod\" would have both a certificate and --insecure"},
      {{"--context=nope", "tenant", "list"}, "error: --context: no context named \"nope\""},
  };
  for (const auto& c : cases) {
    EXPECT_EQ(Run(c.args), 2) << c.args.back();
    EXPECT_THAT(err_, StartsWith(c.message)) << c.args.back();
    EXPECT_EQ(ReadConfig(), before) << c.args.back();
  }
  EXPECT_TRUE(fake_->calls().empty());
}

TEST_F(ConfigCommandsTest, AMalformedFileIsReportedWithItsPathAndNothingIsSent) {
  ASSERT_EQ(Run({"config", "set-context", "prod", "--broker=b1:7400"}), 0);
  std::ofstream(env_.config_path) << "{\"contexts\": [{\"name\": \"prod\", \"brokr\": \"x\"}]}";
  EXPECT_EQ(Run({"tenant", "list"}), 2);
  EXPECT_THAT(err_, StartsWith(absl::StrCat("error: ", env_.config_path,
                                            ": contexts[0].brokr: unknown field")));
  EXPECT_EQ(Run({"config", "get-contexts"}), 2);
  EXPECT_THAT(err_, HasSubstr("contexts[0].brokr: unknown field"));
  EXPECT_TRUE(fake_->calls().empty());
}

TEST_F(ConfigCommandsTest, WithoutAConfigPathOnlyContextFlagsFail) {
  env_.config_path = "";
  EXPECT_EQ(Run({"--context=prod", "tenant", "list"}), 2);
  EXPECT_THAT(err_, StartsWith("error: --context: no config file"));
  EXPECT_EQ(Run({"config", "get-contexts"}), 2);
  EXPECT_THAT(err_, StartsWith("error: no config file: set $IOMMUCTL_CONFIG"));
  ASSERT_EQ(Run({"tenant", "list"}), 0) << err_;
  EXPECT_EQ(addresses_.back(), "127.0.0.1:7400");
}

}  // namespace
}  // namespace client
}  // namespace iommu
