// Test-only gMock matchers and assertions for absl::Status and
// absl::StatusOr<T>, which Debian's Abseil (20220623) does not ship. Every
// test in the tree uses these rather than a local copy:
//   EXPECT_THAT(s, StatusIs(absl::StatusCode::kNotFound, "ENODEV"));
//   EXPECT_THAT(ParseSize("2Gi"), IsOkAndHolds(2ULL << 30));
//   ASSERT_OK(s);
//   ASSERT_OK_AND_ASSIGN(fd, ConnectUnix(path));  // Declares `auto fd`.
// Thread-safe (pure functions).
#ifndef COMMON_STATUS_MATCHERS_H_
#define COMMON_STATUS_MATCHERS_H_

#include <ostream>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace iommu {
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
  const absl::Status& s = ::iommu::testing_internal::GetStatus(arg);
  *result_listener << "got " << s;
  return s.code() == code && absl::StrContains(s.message(), substring);
}

// Matches an OK status (or StatusOr).
MATCHER(IsOk, "is OK") {
  const absl::Status& s = ::iommu::testing_internal::GetStatus(arg);
  *result_listener << "got " << s;
  return s.ok();
}

// Matches an OK StatusOr whose value matches `value` (a matcher or a value).
MATCHER_P(IsOkAndHolds, value, "is OK and holds a value that matches") {
  if (!arg.ok()) {
    *result_listener << "status " << arg.status();
    return false;
  }
  return ::testing::ExplainMatchResult(value, *arg, result_listener);
}

}  // namespace iommu

// Fail the test (ASSERT_: and return) unless `expr`, a status or StatusOr, is
// OK; the failure prints the status.
#define ASSERT_OK(expr) ASSERT_THAT((expr), ::iommu::IsOk())
#define EXPECT_OK(expr) EXPECT_THAT((expr), ::iommu::IsOk())

// Declares `lhs` holding the value of the StatusOr `expr`, or fails the test
// (and returns) printing `expr` and its status.
#define ASSERT_OK_AND_ASSIGN(lhs, expr)                             \
  auto lhs##_or = (expr);                                           \
  ASSERT_TRUE(lhs##_or.ok()) << #expr << ": " << lhs##_or.status(); \
  auto lhs = *std::move(lhs##_or)

#endif  // COMMON_STATUS_MATCHERS_H_
