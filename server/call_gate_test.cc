#include "server/call_gate.h"

#include <atomic>
#include <thread>

#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace iommu {
namespace {

using ::testing::HasSubstr;

TEST(CallGateTest, AnOpenGateLetsCallsInAndAClosedOneRefusesThemAsRetryable) {
  CallGate gate;
  {
    absl::StatusOr<CallGate::Pass> pass = gate.Enter();
    ASSERT_TRUE(pass.ok()) << pass.status();
  }
  gate.Close("broker replica b0 is stopping");
  EXPECT_TRUE(gate.closed());
  absl::StatusOr<CallGate::Pass> refused = gate.Enter();
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(refused.status().message(), HasSubstr("b0 is stopping; retry"));
  // A second close keeps the first reason.
  gate.Close("other");
  EXPECT_THAT(gate.Enter().status().message(), HasSubstr("b0 is stopping"));
}

TEST(CallGateTest, AwaitIdleWaitsForTheCallsTakenBeforeTheClose) {
  CallGate gate;
  absl::Notification in, release;
  std::atomic<bool> finished{false};
  std::thread call([&] {
    absl::StatusOr<CallGate::Pass> pass = gate.Enter();
    ASSERT_TRUE(pass.ok());
    in.Notify();
    release.WaitForNotification();
    finished = true;
  });
  in.WaitForNotification();
  gate.Close("stopping");
  // Still running: a short wait gives up and says how many.
  EXPECT_EQ(gate.AwaitIdle(absl::Now() + absl::Milliseconds(20)), 1);
  release.Notify();
  EXPECT_EQ(gate.AwaitIdle(absl::InfiniteFuture()), 0);
  EXPECT_TRUE(finished);
  call.join();
}

TEST(CallGateTest, AListenerRunsOnceAtTheCloseOrAtOnceIfClosedAndNeverAfterItIsGone) {
  CallGate gate;
  int ran = 0;
  int gone_ran = 0;
  auto listener = gate.OnClose([&ran] { ++ran; });
  gate.OnClose([&gone_ran] { ++gone_ran; });  // Destroyed at once.
  EXPECT_EQ(ran, 0);
  gate.Close("stopping");
  gate.Close("again");
  EXPECT_EQ(ran, 1);
  EXPECT_EQ(gone_ran, 0);
  int late = 0;
  auto after = gate.OnClose([&late] { ++late; });
  EXPECT_EQ(late, 1);
}

TEST(CallGateTest, AMovedPassLeavesOnce) {
  CallGate gate;
  {
    absl::StatusOr<CallGate::Pass> pass = gate.Enter();
    ASSERT_TRUE(pass.ok());
    CallGate::Pass moved = *std::move(pass);
  }
  EXPECT_EQ(gate.AwaitIdle(absl::Now()), 0);
}

}  // namespace
}  // namespace iommu
