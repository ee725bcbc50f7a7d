#include "client/args.h"

#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace iommu {
namespace client {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

absl::StatusOr<Invocation> Parse(const std::vector<std::string>& args) {
  return ParseCommandLine(args, "broker.example:7400");
}

void ExpectUsageError(const std::vector<std::string>& args, const std::string& substring) {
  absl::StatusOr<Invocation> inv = Parse(args);
  ASSERT_FALSE(inv.ok()) << "parsed: " << absl::StrJoin(args, " ");
  EXPECT_EQ(inv.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(inv.status().message()), HasSubstr(substring));
}

// ---------------------------------------------------------------- values

// The parser itself is common/byte_size_test.cc's; here, that size flags
// read Kubernetes quantities and refuse the ambiguous units iommuctl used to
// read as binary (issue 15: "1GB" meant 2^30).
TEST(ParseSizeTest, ReadsKubernetesQuantities) {
  struct Case {
    const char* text;
    uint64_t want;
  } cases[] = {
      {"4096", 4096},       {"0x1000", 0x1000},   {"4Ki", 4096},        {"2Mi", 2u << 20},
      {"1Gi", 1ull << 30},  {"1Ti", 1ull << 40},  {"4k", 4000},         {"2M", 2000000},
      {"1G", 1000000000},   {"1T", 1000000000000}, {"0", 0},
  };
  for (const Case& c : cases) {
    absl::StatusOr<uint64_t> v = ParseSize("--size", c.text);
    ASSERT_TRUE(v.ok()) << c.text << ": " << v.status();
    EXPECT_EQ(*v, c.want) << c.text;
  }
}

TEST(ParseSizeTest, RefusesAmbiguousUnitsSuggestingBoth) {
  ExpectUsageError({"tenant", "create", "acme", "--pinned=1GB"},
                   "--pinned: \"1GB\" is ambiguous: write 1Gi (2^30 bytes) or 1G (10^9 bytes)");
  ExpectUsageError({"window", "allocate", "c-0123456789abcdef", "--size=4K"},
                   "--size: \"4K\" is ambiguous: write 4Ki (2^10 bytes) or 4k");
  ExpectUsageError({"window", "allocate", "c-0123456789abcdef", "--size=1.5Gi"},
                   "not a whole number: use a smaller unit");
}

TEST(ParseSizeTest, HelpSaysWhichUnitsAreBinaryAndWhichDecimal) {
  for (std::string help :
       {RenderHelp("", nullptr), RenderHelp("tenant", FindCommand("tenant", "set-quota"))}) {
    help = absl::StrReplaceAll(help, {{"\n", " "}});
    EXPECT_THAT(help, HasSubstr("binary units Ki Mi Gi Ti (1Gi = 2^30)"));
    EXPECT_THAT(help, HasSubstr("decimal units k M G T (1G = 10^9)"));
  }
}

// Issue 15: --vendor=8086 was read as decimal (0x1f96).
TEST(ParsePciIdTest, HexAsLspciWritesItWith0xOptional) {
  EXPECT_EQ(*ParsePciId("--vendor", "8086"), 0x8086u);
  EXPECT_EQ(*ParsePciId("--vendor", "0x8086"), 0x8086u);
  EXPECT_EQ(*ParsePciId("--vendor", "10DE"), 0x10deu);
  EXPECT_EQ(*ParsePciId("--vendor", "0XabCd"), 0xabcdu);
  EXPECT_EQ(*ParsePciId("--device-id", "0"), 0u);
  EXPECT_EQ(*ParsePciId("--device-id", "1533"), 0x1533u);
}

TEST(ParsePciIdTest, RefusesWhatIsNotFourHexDigits) {
  for (const char* bad : {"", "0x", "32902", "0x12345", "80 86", "-1", "xyz", "0x8086h"}) {
    absl::StatusOr<uint32_t> v = ParsePciId("--vendor", bad);
    ASSERT_FALSE(v.ok()) << bad;
    EXPECT_EQ(v.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(v.status().message()),
                HasSubstr(absl::StrCat("--vendor: \"", bad, "\" is not a PCI id: want 1-4 hex "
                                       "digits as lspci shows them, 0x optional")));
  }
}

TEST(ParseCommandLineTest, VendorTakesVendorColonDevice) {
  absl::StatusOr<Invocation> inv =
      Parse({"container", "create", "--tenant=a", "--vendor=10de:2330"});
  ASSERT_TRUE(inv.ok()) << inv.status();
  const FlagValue& v = inv->flags.at("vendor").back();
  EXPECT_EQ(v.number, 0x10deu);
  EXPECT_TRUE(v.has_second);
  EXPECT_EQ(v.second, 0x2330u);
  inv = Parse({"container", "create", "--tenant=a", "--vendor=8086"});
  ASSERT_TRUE(inv.ok()) << inv.status();
  EXPECT_FALSE(inv->flags.at("vendor").back().has_second);
  ExpectUsageError({"container", "create", "--tenant=a", "--vendor=10de:"},
                   "--vendor (device after ':'): \"\" is not a PCI id");
  ExpectUsageError({"container", "create", "--tenant=a", "--vendor=10de:2330:1"},
                   "--vendor (device after ':'): \"2330:1\" is not a PCI id");
  ExpectUsageError({"container", "create", "--tenant=a", "--device-id=11e8:1"},
                   "--device-id: \"11e8:1\" is not a PCI id");
}

TEST(ParseUintTest, AcceptsDecimalAndHexWithinMax) {
  EXPECT_EQ(*ParseUint("--count", "12", 0xffffffff), 12u);
  EXPECT_EQ(*ParseUint("--base", "0x100000000", ~0ull), 0x100000000ull);
}

TEST(ParseUintTest, RejectsGarbageAndValuesAboveMax) {
  absl::StatusOr<uint64_t> v = ParseUint("--vendor", "0x10000", 0xffff);
  ASSERT_FALSE(v.ok());
  EXPECT_THAT(std::string(v.status().message()), HasSubstr("--vendor: \"0x10000\" is too large"));
  v = ParseUint("--count", "12abc", 0xffffffff);
  ASSERT_FALSE(v.ok());
  EXPECT_THAT(std::string(v.status().message()), HasSubstr("--count: expected an unsigned integer"));
  EXPECT_FALSE(ParseUint("--count", "", 10).ok());
  EXPECT_FALSE(ParseUint("--count", "-3", 10).ok());
  EXPECT_FALSE(ParseUint("--base", "99999999999999999999", ~0ull).ok());
}

TEST(ParseTimeoutTest, AcceptsDurationsAndBareSeconds) {
  EXPECT_EQ(*ParseTimeout("--timeout", "5s"), absl::Seconds(5));
  EXPECT_EQ(*ParseTimeout("--timeout", "250ms"), absl::Milliseconds(250));
  EXPECT_EQ(*ParseTimeout("--timeout", "7"), absl::Seconds(7));
  absl::StatusOr<absl::Duration> d = ParseTimeout("--timeout", "soon");
  ASSERT_FALSE(d.ok());
  EXPECT_THAT(std::string(d.status().message()), HasSubstr("--timeout: invalid duration"));
  EXPECT_FALSE(ParseTimeout("--timeout", "0s").ok());
  EXPECT_FALSE(ParseTimeout("--timeout", "-1s").ok());
  EXPECT_FALSE(ParseTimeout("--timeout", "inf").ok());
}

// ---------------------------------------------------------------- commands

TEST(ParseCommandLineTest, TenantCreateWithAllFlags) {
  absl::StatusOr<Invocation> inv = Parse(
      {"tenant", "create", "acme", "--pinned=64Gi", "--max-containers", "8", "--window-bytes=1Ti"});
  ASSERT_TRUE(inv.ok()) << inv.status();
  ASSERT_NE(inv->command, nullptr);
  EXPECT_EQ(inv->command->FullName(), "tenant create");
  EXPECT_TRUE(inv->command->mutation);
  EXPECT_EQ(inv->positional, "acme");
  EXPECT_EQ(inv->Number("pinned"), 64ull << 30);
  EXPECT_EQ(inv->Number("max-containers"), 8u);
  EXPECT_EQ(inv->Number("window-bytes"), 1ull << 40);
  EXPECT_FALSE(inv->help);
}

TEST(ParseCommandLineTest, GlobalFlagsBeforeAndAfterTheCommand) {
  absl::StatusOr<Invocation> inv =
      Parse({"--broker=10.0.0.1:9000", "-o", "json", "node", "list", "--timeout=2s",
             "--request-id", "r-1"});
  ASSERT_TRUE(inv.ok()) << inv.status();
  EXPECT_EQ(inv->global.broker, "10.0.0.1:9000");
  EXPECT_EQ(inv->global.output, OutputFormat::kJson);
  EXPECT_EQ(inv->global.timeout, absl::Seconds(2));
  EXPECT_EQ(inv->global.request_id, "r-1");

  inv = Parse({"node", "list", "-ojson"});
  ASSERT_TRUE(inv.ok()) << inv.status();
  EXPECT_EQ(inv->global.output, OutputFormat::kJson);
  inv = Parse({"--output=table", "node", "list"});
  ASSERT_TRUE(inv.ok()) << inv.status();
  EXPECT_EQ(inv->global.output, OutputFormat::kTable);
}

TEST(ParseCommandLineTest, DefaultsComeFromTheCaller) {
  absl::StatusOr<Invocation> inv = Parse({"usage"});
  ASSERT_TRUE(inv.ok()) << inv.status();
  EXPECT_EQ(inv->global.broker, "broker.example:7400");
  EXPECT_EQ(inv->global.output, OutputFormat::kTable);
  EXPECT_EQ(inv->global.timeout, absl::Seconds(5));
  EXPECT_EQ(inv->global.request_id, "");
}

TEST(ParseCommandLineTest, RepeatedDeviceFlagKeepsOrder) {
  absl::StatusOr<Invocation> inv =
      Parse({"container", "create", "--tenant=acme", "--node=n1", "--device=0000:00:04.0",
             "--device", "0000:00:05.0"});
  ASSERT_TRUE(inv.ok()) << inv.status();
  EXPECT_EQ(inv->Strings("device"),
            (std::vector<std::string>{"0000:00:04.0", "0000:00:05.0"}));
}

TEST(ParseCommandLineTest, SwitchesTakeNoValueOrABoolean) {
  absl::StatusOr<Invocation> inv = Parse({"node", "drain", "n1", "--delete-containers"});
  ASSERT_TRUE(inv.ok()) << inv.status();
  EXPECT_EQ(inv->Number("delete-containers"), 1u);
  inv = Parse({"node", "drain", "n1", "--delete-containers=false"});
  ASSERT_TRUE(inv.ok()) << inv.status();
  EXPECT_EQ(inv->Number("delete-containers"), 0u);
  ExpectUsageError({"node", "drain", "n1", "--delete-containers=maybe"},
                   "--delete-containers: takes no value");
}

TEST(ParseCommandLineTest, HexAddressesAndIds) {
  absl::StatusOr<Invocation> inv = Parse(
      {"window", "allocate", "c-0123456789abcdef", "--size=1Gi", "--base=0x100000000",
       "--align=2Mi"});
  ASSERT_TRUE(inv.ok()) << inv.status();
  EXPECT_EQ(inv->Number("base"), 0x100000000ull);
  EXPECT_EQ(inv->Number("align"), 2u << 20);
  inv = Parse({"container", "create", "--tenant=a", "--vendor=0x1234", "--device-id=11e8"});
  ASSERT_TRUE(inv.ok()) << inv.status();
  EXPECT_EQ(inv->Number("vendor"), 0x1234u);
  EXPECT_EQ(inv->Number("device-id"), 0x11e8u);
}

TEST(ParseCommandLineTest, ContainerBudgetFlagsAreSizes) {
  absl::StatusOr<Invocation> inv =
      Parse({"container", "create", "--tenant=acme", "--vendor=0x1234", "--budget=16Gi"});
  ASSERT_TRUE(inv.ok()) << inv.status();
  EXPECT_EQ(inv->Number("budget"), 16ull << 30);

  inv = Parse({"container", "set-budget", "c-0123456789abcdef", "--budget", "0x200000"});
  ASSERT_TRUE(inv.ok()) << inv.status();
  ASSERT_NE(inv->command, nullptr);
  EXPECT_EQ(inv->command->FullName(), "container set-budget");
  EXPECT_TRUE(inv->command->mutation);
  EXPECT_EQ(inv->positional, "c-0123456789abcdef");
  EXPECT_EQ(inv->Number("budget"), 0x200000u);

  ExpectUsageError({"container", "set-budget", "c-1"},
                   "--budget: required by \"container set-budget\" (--budget=SIZE)");
  ExpectUsageError({"container", "set-budget", "--budget=1Gi"},
                   "\"container set-budget\": missing ID");
  ExpectUsageError({"container", "set-budget", "c-1", "--budget=lots"},
                   "--budget: \"lots\" does not start with a digit");
}

TEST(ParseCommandLineTest, ContainerGrantTakesTtlAndTokenOnly) {
  absl::StatusOr<Invocation> inv =
      Parse({"container", "grant", "c-0123456789abcdef", "--ttl=5m", "--token-only"});
  ASSERT_TRUE(inv.ok()) << inv.status();
  ASSERT_NE(inv->command, nullptr);
  EXPECT_EQ(inv->command->FullName(), "container grant");
  // A grant issues a token; it carries no request id.
  EXPECT_FALSE(inv->command->mutation);
  EXPECT_EQ(inv->Duration("ttl"), absl::Minutes(5));
  EXPECT_EQ(inv->Number("token-only"), 1u);

  inv = Parse({"container", "grant", "c-1", "--ttl", "90"});
  ASSERT_TRUE(inv.ok()) << inv.status();
  EXPECT_EQ(inv->Duration("ttl"), absl::Seconds(90));
  EXPECT_FALSE(inv->Has("token-only"));

  inv = Parse({"container", "grant", "c-1"});
  ASSERT_TRUE(inv.ok()) << inv.status();
  EXPECT_FALSE(inv->Has("ttl"));
  EXPECT_EQ(inv->Duration("ttl"), absl::ZeroDuration());

  ExpectUsageError({"container", "grant", "c-1", "--ttl=soon"}, "--ttl: invalid duration \"soon\"");
  ExpectUsageError({"container", "grant", "c-1", "--ttl=0"},
                   "--ttl: must be a positive, finite duration");
  ExpectUsageError({"container", "grant"}, "\"container grant\": missing ID");
}

TEST(ParseCommandLineTest, DescribeTakesAKindAndAnIdAndTopAWatchInterval) {
  absl::StatusOr<Invocation> inv = Parse({"-o", "json", "describe", "container", "c-1"});
  ASSERT_TRUE(inv.ok()) << inv.status();
  EXPECT_EQ(inv->command->FullName(), "describe container");
  EXPECT_EQ(inv->positional, "c-1");
  EXPECT_FALSE(inv->command->mutation);
  EXPECT_EQ(inv->global.output, OutputFormat::kJson);
  for (const char* kind : {"tenant", "node", "window"}) {
    inv = Parse({"describe", kind, "x"});
    ASSERT_TRUE(inv.ok()) << kind << ": " << inv.status();
  }
  inv = Parse({"top", "--watch=2s"});
  ASSERT_TRUE(inv.ok()) << inv.status();
  EXPECT_EQ(inv->Duration("watch"), absl::Seconds(2));
  inv = Parse({"top"});
  ASSERT_TRUE(inv.ok()) << inv.status();
  EXPECT_FALSE(inv->Has("watch"));

  ExpectUsageError({"describe"},
                   "\"describe\" needs a command: one of tenant, node, container, window");
  ExpectUsageError({"describe", "container"}, "\"describe container\": missing ID");
  ExpectUsageError({"describe", "pod", "x"}, "unknown command \"describe pod\"");
  ExpectUsageError({"top", "--watch=often"}, "--watch: invalid duration \"often\"");
  ExpectUsageError({"top", "extra"}, "\"top\" takes no arguments");
}

TEST(ParseCommandLineTest, DoubleDashEndsFlags) {
  absl::StatusOr<Invocation> inv = Parse({"tenant", "get", "--", "acme"});
  ASSERT_TRUE(inv.ok()) << inv.status();
  EXPECT_EQ(inv->positional, "acme");
}

TEST(ParseCommandLineTest, EveryCommandParsesWithItsRequiredArguments) {
  for (const CommandSpec& c : Commands()) {
    std::vector<std::string> args = absl::StrSplit(c.FullName(), ' ');
    if (!c.positional.empty() && !c.positional_optional) args.push_back("x");
    for (const FlagSpec& f : c.flags) {
      if (f.required) args.push_back("--" + f.name + "=1");
    }
    absl::StatusOr<Invocation> inv = Parse(args);
    ASSERT_TRUE(inv.ok()) << c.FullName() << ": " << inv.status();
  }
}

// ---------------------------------------------------------------- errors

TEST(ParseCommandLineTest, UnknownCommandSuggestsTheClosest) {
  ExpectUsageError({"contianer", "list"}, "unknown command \"contianer\" (did you mean container?)");
  ExpectUsageError({"container", "lst"}, "unknown command \"container lst\" (did you mean list?)");
  ExpectUsageError({"container", "frob"},
                   "container commands are: create, get, list, delete, set-budget, label, grant");
  ExpectUsageError({}, "missing command");
  ExpectUsageError({"container"}, "\"container\" needs a command");
}

TEST(ParseCommandLineTest, UnknownFlagSuggestsTheClosest) {
  ExpectUsageError({"container", "create", "--tenant=a", "--devcie=0000:00:04.0"},
                   "unknown flag --devcie for \"container create\" (did you mean --device?)");
  ExpectUsageError({"--tenant=a", "container", "list"}, "command flags go after the command");
  ExpectUsageError({"node", "list", "-x"}, "unknown flag \"-x\"");
}

TEST(ParseCommandLineTest, BadValuesNameTheFlag) {
  ExpectUsageError({"tenant", "create", "acme", "--pinned=lots"},
                   "--pinned: \"lots\" does not start with a digit");
  ExpectUsageError({"container", "create", "--tenant=a", "--vendor=0x12345"},
                   "--vendor: \"0x12345\" is not a PCI id: want 1-4 hex digits");
  ExpectUsageError({"container", "list", "--limit=ten"}, "--limit: expected an unsigned integer");
  ExpectUsageError({"-o", "xml", "node", "list"},
                   "--output: must be table, wide, json, yaml, name or jsonpath=TEMPLATE, "
                   "got \"xml\"");
  ExpectUsageError({"-o", "jsonpath={.nodes[}", "node", "list"},
                   "--output=jsonpath: at character 9: expected an index");
  ExpectUsageError({"-o", "jsonpath=", "node", "list"}, "--output=jsonpath: the template is empty");
  ExpectUsageError({"--context=a/b", "node", "list"},
                   "--context: a context name has only letters, digits");
  ExpectUsageError({"--timeout=forever", "node", "list"}, "--timeout: invalid duration");
  ExpectUsageError({"node", "list", "--broker="}, "--broker: must not be empty");
}

TEST(ParseCommandLineTest, MissingRequiredFlagAndArgument) {
  ExpectUsageError({"tenant", "create", "acme"}, "--pinned: required by \"tenant create\"");
  ExpectUsageError({"tenant", "create", "--pinned=1Gi"}, "\"tenant create\": missing ID");
  ExpectUsageError({"device", "list"}, "--node: required by \"device list\"");
  ExpectUsageError({"window", "allocate", "c-1"}, "--size: required");
  ExpectUsageError({"tenant", "list", "extra"}, "\"tenant list\" takes no arguments");
  ExpectUsageError({"tenant", "get", "a", "b"}, "takes one ID, got also \"b\"");
  ExpectUsageError({"window", "allocate", "c-1", "--size"}, "--size: needs a value");
  ExpectUsageError({"tenant", "create", "a", "--pinned=1Gi", "--pinned=2Gi"},
                   "--pinned: given more than once");
}

// ---------------------------------------------------------------- help

TEST(ParseCommandLineTest, HelpAtEveryLevel) {
  absl::StatusOr<Invocation> inv = Parse({"--help"});
  ASSERT_TRUE(inv.ok()) << inv.status();
  EXPECT_TRUE(inv->help);
  EXPECT_EQ(inv->help_noun, "");
  EXPECT_EQ(inv->help_command, nullptr);

  inv = Parse({"container", "-h"});
  ASSERT_TRUE(inv.ok()) << inv.status();
  EXPECT_TRUE(inv->help);
  EXPECT_EQ(inv->help_noun, "container");
  EXPECT_EQ(inv->help_command, nullptr);

  // Help wins over missing required flags.
  inv = Parse({"container", "create", "--help"});
  ASSERT_TRUE(inv.ok()) << inv.status();
  ASSERT_NE(inv->help_command, nullptr);
  EXPECT_EQ(inv->help_command->FullName(), "container create");

  inv = Parse({"help", "window", "allocate"});
  ASSERT_TRUE(inv.ok()) << inv.status();
  ASSERT_NE(inv->help_command, nullptr);
  EXPECT_EQ(inv->help_command->FullName(), "window allocate");

  inv = Parse({"help"});
  ASSERT_TRUE(inv.ok()) << inv.status();
  EXPECT_TRUE(inv->help);
  ExpectUsageError({"help", "nonsense"}, "unknown command \"nonsense\"");
}

TEST(RenderHelpTest, TopLevelListsEveryCommandAndGlobalFlag) {
  const std::string help = RenderHelp("", nullptr);
  for (const CommandSpec& c : Commands()) EXPECT_THAT(help, HasSubstr(c.FullName())) << c.FullName();
  for (const char* flag : {"--broker", "--output", "--timeout", "--request-id", "--help"}) {
    EXPECT_THAT(help, HasSubstr(flag));
  }
  EXPECT_THAT(help, HasSubstr("Examples:"));
}

TEST(RenderHelpTest, NounListsItsCommands) {
  const std::string help = RenderHelp("container", nullptr);
  for (const char* verb : {"create", "get", "list", "delete", "set-budget", "grant"}) {
    EXPECT_THAT(help, HasSubstr(verb));
  }
  EXPECT_THAT(help, HasSubstr("iommuctl container <command>"));
  EXPECT_THAT(help, Not(HasSubstr("window allocate")));
}

TEST(RenderHelpTest, CommandShowsUsageFlagsAndExample) {
  const std::string help = RenderHelp("container", FindCommand("container", "create"));
  EXPECT_THAT(help, HasSubstr("iommuctl container create --tenant=ID"));
  EXPECT_THAT(help, HasSubstr("--device=ADDR"));
  EXPECT_THAT(help, HasSubstr("--vendor=ID"));
  EXPECT_THAT(help, HasSubstr("Examples:\n  iommuctl container create"));
  EXPECT_THAT(help, HasSubstr("Global flags"));
}

TEST(RenderHelpTest, BudgetAndGrantCommandsShowTheirFlagsAndExamples) {
  std::string help = RenderHelp("container", FindCommand("container", "create"));
  EXPECT_THAT(help, HasSubstr("[--budget=SIZE]"));
  // The flag column is as wide as the widest flag, --vendor=ID[:DEVICE].
  EXPECT_THAT(help, HasSubstr("--budget=SIZE         Bytes of the tenant's pinned quota set aside"));

  help = RenderHelp("container", FindCommand("container", "set-budget"));
  EXPECT_THAT(help, HasSubstr("iommuctl container set-budget ID --budget=SIZE\n"));
  EXPECT_THAT(help, HasSubstr("Examples:\n  iommuctl container set-budget c-"));

  help = RenderHelp("container", FindCommand("container", "grant"));
  EXPECT_THAT(help, HasSubstr("iommuctl container grant ID [--ttl=DURATION] [--launcher-uid=UID]\n"
                              "    [--token-only]\n"));
  EXPECT_THAT(help, HasSubstr("--ttl=DURATION      How long the token may be presented"));
  EXPECT_THAT(help, HasSubstr("--launcher-uid=UID  Bind the token to the launcher's uid"));
  EXPECT_THAT(help, HasSubstr("--token-only        Print only the token and a newline"));
  EXPECT_THAT(help, HasSubstr("  TOKEN=$(iommuctl container grant c-0123456789abcdef "
                              "--token-only)\n"));
}

TEST(RenderHelpTest, LinesFitEightyColumns) {
  std::vector<std::string> texts = {RenderHelp("", nullptr)};
  for (const CommandSpec& c : Commands()) {
    texts.push_back(RenderHelp(c.noun, nullptr));
    texts.push_back(RenderHelp(c.noun, &c));
  }
  for (const std::string& text : texts) {
    for (absl::string_view line : absl::StrSplit(text, '\n')) {
      // Example command lines may be long; prose must wrap.
      if (absl::StartsWith(line, "  iommuctl ")) continue;
      EXPECT_LE(line.size(), 80u) << line;
    }
  }
}

TEST(UsageHintTest, NamesTheDeepestKnownCommand) {
  EXPECT_EQ(UsageHint({"container", "create", "--bogus"}),
            "Run 'iommuctl container create --help' for usage.");
  EXPECT_EQ(UsageHint({"container", "frob"}), "Run 'iommuctl container --help' for usage.");
  EXPECT_EQ(UsageHint({"frob"}), "Run 'iommuctl --help' for usage.");
}

TEST(UsageHintTest, SkipsTheValuesOfFlagsGivenAsSeparateArguments) {
  // Regression: "-o json" made "json" the first word, so the hint fell back to
  // the top level.
  EXPECT_EQ(UsageHint({"-o", "json", "container", "grant", "c-1", "--token-only"}),
            "Run 'iommuctl container grant --help' for usage.");
  EXPECT_EQ(UsageHint({"--broker", "h:1", "--timeout", "2s", "container", "list", "--tenant",
                       "acme", "--bogus"}),
            "Run 'iommuctl container list --help' for usage.");
  EXPECT_EQ(UsageHint({"node", "drain", "--delete-containers", "n1", "--bogus"}),
            "Run 'iommuctl node drain --help' for usage.");
}

TEST(BashCompletionTest, ComesFromTheCommandTable) {
  const std::string script = RenderBashCompletion();
  for (const CommandSpec& c : Commands()) {
    EXPECT_THAT(script, HasSubstr(absl::StrCat("\"", c.FullName(), "\") flags=\"")))
        << c.FullName();
    for (const FlagSpec& f : c.flags) {
      EXPECT_THAT(script, HasSubstr(absl::StrCat("--", f.name))) << c.FullName();
    }
  }
  EXPECT_THAT(script, HasSubstr("--no-headers"));
}

TEST(GlobalFlagsTest, OutputNameAndNoHeaders) {
  absl::StatusOr<Invocation> inv = ParseCommandLine({"-o", "name", "node", "list"}, "b:1");
  ASSERT_TRUE(inv.ok()) << inv.status();
  EXPECT_EQ(inv->global.output, OutputFormat::kName);
  EXPECT_FALSE(inv->global.no_headers);
  inv = ParseCommandLine({"node", "list", "--no-headers"}, "b:1");
  ASSERT_TRUE(inv.ok()) << inv.status();
  EXPECT_TRUE(inv->global.no_headers);
  EXPECT_EQ(inv->global.output, OutputFormat::kTable);
  inv = ParseCommandLine({"-o", "xml", "node", "list"}, "b:1");
  EXPECT_EQ(inv.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(inv.status().message()),
              HasSubstr("--output: must be table, wide, json, yaml, name or jsonpath=TEMPLATE, "
                        "got \"xml\""));
  inv = ParseCommandLine({"-o", "name", "top"}, "b:1");
  EXPECT_EQ(inv.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(inv.status().message()),
              HasSubstr("--output=name: \"top\" prints no objects to name"));
}

}  // namespace
}  // namespace client
}  // namespace iommu
