#include "common/labels.h"

#include <map>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace iommu {
namespace {

using ::testing::HasSubstr;

TEST(ContainerName, AcceptsDnsLabels) {
  EXPECT_TRUE(ValidateContainerName("name", "vm-42").ok());
  EXPECT_TRUE(ValidateContainerName("name", "7").ok());
  EXPECT_TRUE(ValidateContainerName("name", std::string(63, 'a')).ok());
}

TEST(ContainerName, RefusesWhatIsNotADnsLabelOrLooksLikeAnId) {
  for (const char* bad : {"", "-vm", "vm-", "VM", "vm_1", "vm.1", "vm/1"}) {
    absl::Status s = ValidateContainerName("name", bad);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_THAT(std::string(s.message()), HasSubstr("name: ")) << bad;
  }
  EXPECT_FALSE(ValidateContainerName("name", std::string(64, 'a')).ok());
  absl::Status s = ValidateContainerName("name", "c-0123456789abcdef");
  EXPECT_THAT(std::string(s.message()), HasSubstr("form of a container id"));
}

TEST(Labels, AcceptsKubernetesKeysAndValues) {
  std::map<std::string, std::string> ok = {
      {"team", "ml"}, {"example.com/owner", "Jo_Do.e-1"}, {"empty", ""}, {"A.b_c-9", "x"}};
  EXPECT_TRUE(ValidateLabels("labels", ok).ok());
}

TEST(Labels, RefusalsNameTheKeyAndTheRule) {
  absl::Status s = ValidateLabel("labels", "team", "has space");
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), HasSubstr("labels[\"team\"]: a value must be empty"));
  EXPECT_FALSE(ValidateLabel("labels", "", "x").ok());
  EXPECT_FALSE(ValidateLabel("labels", "-team", "x").ok());
  EXPECT_FALSE(ValidateLabel("labels", "Example.com/team", "x").ok());
  EXPECT_FALSE(ValidateLabel("labels", "example.com/", "x").ok());
  EXPECT_FALSE(ValidateLabel("labels", "a/b/c", "x").ok());
  EXPECT_FALSE(ValidateLabel("labels", std::string(64, 'k'), "x").ok());
  EXPECT_FALSE(ValidateLabel("labels", "k", std::string(64, 'v')).ok());
}

TEST(Labels, AtMost32) {
  std::map<std::string, std::string> many;
  for (int i = 0; i < 33; ++i) many["k" + std::to_string(i)] = "v";
  absl::Status s = ValidateLabels("labels", many);
  EXPECT_THAT(std::string(s.message()), HasSubstr("labels: at most 32 labels, got 33"));
  many.erase("k0");
  EXPECT_TRUE(ValidateLabels("labels", many).ok());
}

TEST(Labels, TextIsSortedByKey) {
  std::map<std::string, std::string> m = {{"z", "1"}, {"a", ""}, {"m", "x"}};
  EXPECT_EQ(LabelsText(m), "a=,m=x,z=1");
  EXPECT_EQ(LabelsText(std::map<std::string, std::string>{}), "");
}

TEST(ContainerRef, ReadsIdsNamesAndTenantQualifiedNames) {
  absl::StatusOr<ParsedContainerRef> id = ParseContainerRef("container_id", "c-00000000000000ff");
  ASSERT_TRUE(id.ok());
  EXPECT_EQ(id->id, "c-00000000000000ff");
  EXPECT_TRUE(id->name.empty());

  absl::StatusOr<ParsedContainerRef> name = ParseContainerRef("container_id", "vm-42");
  ASSERT_TRUE(name.ok());
  EXPECT_EQ(name->name, "vm-42");
  EXPECT_TRUE(name->tenant.empty());

  absl::StatusOr<ParsedContainerRef> qualified = ParseContainerRef("container_id", "acme/vm-42");
  ASSERT_TRUE(qualified.ok());
  EXPECT_EQ(qualified->tenant, "acme");
  EXPECT_EQ(qualified->name, "vm-42");
}

TEST(ContainerRef, RefusalsSayWhichFormsAreAccepted) {
  for (const char* bad : {"", "Acme/vm", "acme/", "/vm", "acme/vm/1", "vm 1"}) {
    absl::StatusOr<ParsedContainerRef> r = ParseContainerRef("container_id", bad);
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_THAT(std::string(r.status().message()), HasSubstr("container_id: ")) << bad;
  }
  EXPECT_THAT(std::string(ParseContainerRef("container_id", "Vm").status().message()),
              HasSubstr("a container id (\"c-\" and 16 hex digits), a NAME or TENANT/NAME"));
}

}  // namespace
}  // namespace iommu

namespace iommu {
namespace {

TEST(EditLabels, SetsOverwritesAndRemoves) {
  std::map<std::string, std::string> labels = {{"team", "ml"}, {"env", "dev"}, {"old", "x"}};
  ASSERT_TRUE(EditLabels(std::map<std::string, std::string>{{"env", "prod"}, {"new", "1"}},
                         std::vector<std::string>{"old", "missing"}, &labels)
                  .ok());
  EXPECT_EQ(labels, (std::map<std::string, std::string>{
                        {"team", "ml"}, {"env", "prod"}, {"new", "1"}}));
}

TEST(EditLabels, RefusalsChangeNothing) {
  const std::map<std::string, std::string> before = {{"team", "ml"}};
  std::map<std::string, std::string> labels = before;
  absl::Status s = EditLabels(std::map<std::string, std::string>{{"team", "web"}},
                              std::vector<std::string>{"team"}, &labels);
  EXPECT_THAT(std::string(s.message()), ::testing::HasSubstr("remove_keys: key \"team\" is also"));
  s = EditLabels(std::map<std::string, std::string>{{"ok", "bad value"}},
                 std::vector<std::string>{}, &labels);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  s = EditLabels(std::map<std::string, std::string>{}, std::vector<std::string>{"-bad"}, &labels);
  EXPECT_THAT(std::string(s.message()), ::testing::HasSubstr("remove_keys[\"-bad\"]"));
  std::map<std::string, std::string> more;
  for (int i = 0; i < 32; ++i) more["k" + std::to_string(i)] = "v";
  s = EditLabels(more, std::vector<std::string>{}, &labels);
  EXPECT_THAT(std::string(s.message()), ::testing::HasSubstr("labels: at most 32 labels, got 33"));
  EXPECT_EQ(labels, before);
}

}  // namespace
}  // namespace iommu
