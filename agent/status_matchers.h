// Test-only gMock matchers for absl::Status and absl::StatusOr<T>, which
// Debian's Abseil (20220623) does not ship:
//   EXPECT_THAT(s, StatusIs(absl::StatusCode::kNotFound, "ENODEV"));
//   ASSERT_OK(s);
// Thread-safe (pure functions).
#ifndef AGENT_STATUS_MATCHERS_H_
#define AGENT_STATUS_MATCHERS_H_

#include <ostream>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace iommu {
namespace agent {
namespace testing_internal {

inline const absl::Status& GetStatus(const absl::Status& s) { return s; }
template <typename T>
const absl::Status& GetStatus(const absl::StatusOr<T>& s) {
  return s.status();
}

}  // namespace testing_internal

// Matches a status (or StatusOr) with exactly `code` whose message contains
// `substring`.
MATCHER_P2(StatusIs, code, substring,
           ::testing::PrintToString(code) + " containing \"" +
               std::string(substring) + "\"") {
  const absl::Status& s = testing_internal::GetStatus(arg);
  *result_listener << "got " << s;
  return s.code() == code && absl::StrContains(s.message(), substring);
}

MATCHER(IsOk, "is OK") {
  const absl::Status& s = testing_internal::GetStatus(arg);
  *result_listener << "got " << s;
  return s.ok();
}

}  // namespace agent
}  // namespace iommu

#define ASSERT_OK(expr) ASSERT_THAT((expr), ::iommu::agent::IsOk())
#define EXPECT_OK(expr) EXPECT_THAT((expr), ::iommu::agent::IsOk())

// Declares `lhs` holding the value of the StatusOr `expr`, or fails the test.
#ifndef ASSERT_OK_AND_ASSIGN
#define ASSERT_OK_AND_ASSIGN(lhs, expr)                             \
  auto lhs##_or = (expr);                                           \
  ASSERT_TRUE(lhs##_or.ok()) << #expr << ": " << lhs##_or.status(); \
  auto lhs = *std::move(lhs##_or)
#endif

#endif  // AGENT_STATUS_MATCHERS_H_
