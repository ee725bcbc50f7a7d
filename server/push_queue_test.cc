#include "server/push_queue.h"

#include <atomic>
#include <string>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "gtest/gtest.h"

namespace iommu {
namespace {

TEST(PushQueueTest, StalledShardDoesNotDelayOthers) {
  PushQueue q(2);
  absl::Notification release_stalled;
  absl::Notification other_ran;
  q.Enqueue("stalled-node", "w", [&] { release_stalled.WaitForNotification(); });
  q.Enqueue("stalled-node", "b", [] {});
  q.Enqueue("live-node", "w", [&] { other_ran.Notify(); });
  // Runs while the stalled shard's first item still blocks a worker.
  other_ran.WaitForNotification();
  EXPECT_GE(q.pending(), 2u);  // The stalled item and the one queued behind it.
  release_stalled.Notify();
  q.WaitIdle();
  EXPECT_EQ(q.pending(), 0u);
}

TEST(PushQueueTest, OneShardRunsOneItemAtATimeInOrder) {
  PushQueue q(4);
  absl::Mutex mu;
  std::vector<std::string> ran;
  std::atomic<int> running{0};
  std::atomic<bool> overlapped{false};
  for (const char* key : {"a", "b", "c", "d"}) {
    q.Enqueue("node", key, [&, key] {
      if (running.fetch_add(1) != 0) overlapped = true;
      {
        absl::MutexLock l(&mu);
        ran.push_back(key);
      }
      running.fetch_sub(1);
    });
  }
  q.WaitIdle();
  EXPECT_FALSE(overlapped);
  EXPECT_EQ(ran, (std::vector<std::string>{"a", "b", "c", "d"}));
}

TEST(PushQueueTest, RequeuedKeyReplacesTheQueuedItem) {
  PushQueue q(1);
  absl::Notification release;
  std::vector<int> ran;  // Only the worker writes, WaitIdle orders the read.
  q.Enqueue("node", "block", [&] { release.WaitForNotification(); });
  for (int v = 1; v <= 100; ++v) q.Enqueue("node", "windows/c-1", [&ran, v] { ran.push_back(v); });
  EXPECT_EQ(q.pending(), 2u);  // Bounded by keys, not by changes.
  release.Notify();
  q.WaitIdle();
  EXPECT_EQ(ran, std::vector<int>{100});
}

}  // namespace
}  // namespace iommu
