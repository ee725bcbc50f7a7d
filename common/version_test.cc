#include "common/version.h"

#include <string>

#include "absl/strings/match.h"
#include "gtest/gtest.h"

namespace iommu {
namespace {

TEST(VersionTest, LineNamesProgramVersionAndCommit) {
  const std::string commit = BuildCommit();
  ASSERT_FALSE(commit.empty());
  for (char c : commit) {
    EXPECT_TRUE((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || c == '-') << commit;
  }
  EXPECT_EQ(VersionLine("iommu-broker"),
            std::string("iommu-broker ") + kVersion + " (commit " + commit + ")");
}

}  // namespace
}  // namespace iommu
