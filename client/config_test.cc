#include "client/config.h"

#include "absl/status/status.h"
#include "client/args.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace iommu {
namespace client {
namespace {

using ::testing::HasSubstr;

constexpr char kConfig[] = R"({
  "current_context": "dev",
  "contexts": [
    {"name": "dev", "broker": "127.0.0.1:7400", "insecure": true},
    {"name": "prod", "broker": "b1:7400,b2:7400", "cert": "op.pem", "key": "op.key",
     "ca": "ca.pem", "trust_domain": "prod.example"}
  ]
})";

iommu::ctl::CliConfig Config(const char* json = kConfig) {
  absl::StatusOr<iommu::ctl::CliConfig> c = ParseConfig(json, "cfg");
  EXPECT_TRUE(c.ok()) << c.status();
  return c.ok() ? *c : iommu::ctl::CliConfig();
}

TEST(ConfigTest, ParsesAndRendersBackTheSameConfig) {
  const iommu::ctl::CliConfig c = Config();
  ASSERT_EQ(c.contexts_size(), 2);
  EXPECT_EQ(c.current_context(), "dev");
  EXPECT_TRUE(c.contexts(0).insecure());
  EXPECT_EQ(c.contexts(1).trust_domain(), "prod.example");
  absl::StatusOr<iommu::ctl::CliConfig> again = ParseConfig(RenderConfig(c), "cfg");
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->SerializeAsString(), c.SerializeAsString());
  EXPECT_EQ(ParseConfig("  \n", "cfg")->contexts_size(), 0);
}

TEST(ConfigTest, MalformedFilesAreInvalidArgumentNamingThePathAndField) {
  const struct {
    const char* json;
    const char* message;
  } cases[] = {
      {"{", "cfg: JSON at byte 1"},
      {"[]", "cfg: the file: must be a JSON object"},
      {R"({"current": "x"})", "cfg: current: unknown field"},
      {R"({"contexts": {}})", "cfg: contexts: must be an array"},
      {R"({"contexts": [{"name": "a", "brokr": "x"}]})", "cfg: contexts[0].brokr: unknown field"},
      {R"({"contexts": [{"name": "a", "insecure": "yes"}]})",
       "contexts[0].insecure: must be true or false"},
      {R"({"contexts": [{"name": 7}]})", "contexts[0].name: must be a string"},
      {R"({"contexts": [{"broker": "x"}]})", "contexts[0].name: a context name is 1-63"},
      {R"({"contexts": [{"name": "a b"}]})", "only letters, digits"},
      {R"({"contexts": [{"name": "a"}, {"name": "a"}]})", "contexts[1].name: context \"a\" is "
                                                          "defined twice"},
      {R"({"current_context": "x", "contexts": []})", "current_context: names no context"},
  };
  for (const auto& c : cases) {
    absl::StatusOr<iommu::ctl::CliConfig> got = ParseConfig(c.json, "cfg");
    EXPECT_EQ(got.status().code(), absl::StatusCode::kInvalidArgument) << c.json;
    EXPECT_THAT(std::string(got.status().message()), HasSubstr(c.message)) << c.json;
  }
}

TEST(ConfigTest, FlagsThenExplicitContextThenEnvironmentThenCurrentContextThenDefaults) {
  const iommu::ctl::CliConfig config = Config();
  GlobalOptions flags;
  EnvSettings env;

  // Nothing but the file: the current context.
  absl::StatusOr<GlobalOptions> got = ResolveSettings(flags, "", env, config);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->broker, "127.0.0.1:7400");
  EXPECT_TRUE(got->insecure);

  // The environment beats the current context, field by field.
  env.broker = "env:1";
  got = ResolveSettings(flags, "", env, config);
  EXPECT_EQ(got->broker, "env:1");
  EXPECT_TRUE(got->insecure);

  // An explicit --context beats the environment.
  env.cert = "env.pem";
  got = ResolveSettings(flags, "prod", env, config);
  EXPECT_EQ(got->broker, "b1:7400,b2:7400");
  EXPECT_EQ(got->cert, "op.pem");
  EXPECT_EQ(got->trust_domain, "prod.example");
  EXPECT_FALSE(got->insecure);

  // Flags beat everything.
  flags.broker = "flag:2";
  flags.cert = "flag.pem";
  got = ResolveSettings(flags, "prod", env, config);
  EXPECT_EQ(got->broker, "flag:2");
  EXPECT_EQ(got->cert, "flag.pem");
  EXPECT_EQ(got->key, "op.key");

  // Nothing anywhere: the default address.
  got = ResolveSettings(GlobalOptions(), "", EnvSettings(), iommu::ctl::CliConfig());
  EXPECT_EQ(got->broker, kDefaultBrokerAddress);
  EXPECT_FALSE(got->insecure);
}

TEST(ConfigTest, AnUnknownContextIsRefusedListingTheKnownOnes) {
  absl::StatusOr<GlobalOptions> got =
      ResolveSettings(GlobalOptions(), "staging", EnvSettings(), Config());
  EXPECT_EQ(got.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(got.status().message()),
              HasSubstr("--context: no context named \"staging\" (have: dev, prod)"));
  got = ResolveSettings(GlobalOptions(), "x", EnvSettings(), iommu::ctl::CliConfig());
  EXPECT_THAT(std::string(got.status().message()), HasSubstr("have: none"));
}

}  // namespace
}  // namespace client
}  // namespace iommu
