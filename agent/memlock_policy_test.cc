#include "agent/memlock_policy.h"

#include "absl/status/status.h"
#include "common/status_matchers.h"
#include "gtest/gtest.h"

namespace iommu {
namespace agent {
namespace {

constexpr uint64_t kMiB = uint64_t{1} << 20;

MemlockFacts Limited(uint64_t limit, uint64_t locked = 0) {
  MemlockFacts f;
  f.limit_bytes = limit;
  f.hard_limit_bytes = limit;
  f.locked_at_start_bytes = locked;
  return f;
}

TEST(DecideMemlockTest, CapIpcLockStartsWithoutBoundsAndSaysTheKernelStillCounts) {
  MemlockFacts f = Limited(64 * 1024);
  f.cap_ipc_lock = true;
  absl::StatusOr<MemlockDecision> d = DecideMemlock(f, std::nullopt);
  ASSERT_OK(d);
  EXPECT_EQ(d->per_tenant_bytes, kUnlimitedBytes);
  EXPECT_EQ(d->node_bytes, kUnlimitedBytes);
  EXPECT_EQ(d->description,
            "CAP_IPC_LOCK: the kernel counts pins per mapping but does not enforce a limit "
            "(CAP_IPC_LOCK / RLIMIT_MEMLOCK infinity)");
}

TEST(DecideMemlockTest, UnlimitedLimitStartsWithoutBounds) {
  absl::StatusOr<MemlockDecision> d = DecideMemlock(MemlockFacts{}, std::nullopt);
  ASSERT_OK(d);
  EXPECT_EQ(d->per_tenant_bytes, kUnlimitedBytes);
  EXPECT_EQ(d->node_bytes, kUnlimitedBytes);
  EXPECT_NE(d->description.find("RLIMIT_MEMLOCK unlimited: the kernel counts pins per mapping"),
            std::string::npos);
}

TEST(DecideMemlockTest, RaisedLimitSaysSo) {
  MemlockFacts f;
  f.raised = true;
  absl::StatusOr<MemlockDecision> d = DecideMemlock(f, std::nullopt);
  ASSERT_OK(d);
  EXPECT_EQ(d->description.rfind("RLIMIT_MEMLOCK raised to unlimited: ", 0), 0u);
}

TEST(DecideMemlockTest, UnenforcedLimitStillAppliesAGivenShare) {
  MemlockFacts f;
  f.cap_ipc_lock = true;
  absl::StatusOr<MemlockDecision> d = DecideMemlock(f, 8 * kMiB);
  ASSERT_OK(d);
  EXPECT_EQ(d->per_tenant_bytes, 8 * kMiB);
  EXPECT_EQ(d->node_bytes, kUnlimitedBytes);
  EXPECT_NE(d->description.find("--kernel-pin-bytes-per-tenant"), std::string::npos);
}

TEST(DecideMemlockTest, RefusesEnforcedFiniteLimitWithoutTheFlagNamingLimitAndFixes) {
  absl::StatusOr<MemlockDecision> d = DecideMemlock(Limited(64 * kMiB), std::nullopt);
  EXPECT_THAT(d, StatusIs(absl::StatusCode::kFailedPrecondition,
                          "memlock: RLIMIT_MEMLOCK is 67108864 bytes (hard 67108864 bytes)"));
  for (const char* fix : {"counts pins per mapping", "LimitMEMLOCK=infinity",
                          "AmbientCapabilities=CAP_IPC_LOCK", "IPC_LOCK] (Kubernetes)",
                          "--kernel-pin-bytes-per-tenant=BYTES (at most 67108864)"}) {
    EXPECT_THAT(d, StatusIs(absl::StatusCode::kFailedPrecondition, fix));
  }
}

TEST(DecideMemlockTest, ShareBoundsTenantsAndTheNodeToTheLimitMinusLockedAtStart) {
  absl::StatusOr<MemlockDecision> d = DecideMemlock(Limited(64 * kMiB, 4096), 16 * kMiB);
  ASSERT_OK(d);
  EXPECT_EQ(d->per_tenant_bytes, 16 * kMiB);
  EXPECT_EQ(d->node_bytes, 64 * kMiB - 4096);
  EXPECT_NE(d->description.find("enforces the limit"), std::string::npos);
}

TEST(DecideMemlockTest, ShareEqualToTheLimitIsAllowed) {
  EXPECT_OK(DecideMemlock(Limited(64 * kMiB), 64 * kMiB));
}

TEST(DecideMemlockTest, RefusesZeroShare) {
  EXPECT_THAT(DecideMemlock(Limited(64 * kMiB), 0),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "kernel-pin-bytes-per-tenant: must be greater than 0"));
  EXPECT_THAT(DecideMemlock(MemlockFacts{}, 0),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "kernel-pin-bytes-per-tenant: must be greater than 0"));
}

TEST(DecideMemlockTest, RefusesShareAboveTheLimit) {
  EXPECT_THAT(DecideMemlock(Limited(64 * kMiB), 64 * kMiB + 1),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "kernel-pin-bytes-per-tenant: must be at most RLIMIT_MEMLOCK "
                       "(67108864 bytes), got 67108865"));
}

TEST(DecideMemlockTest, RefusesWhenLockedAtStartFillsTheLimit) {
  EXPECT_THAT(DecideMemlock(Limited(64 * 1024, 64 * 1024), 4096),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       "already has 65536 bytes locked (VmLck)"));
}

}  // namespace
}  // namespace agent
}  // namespace iommu
