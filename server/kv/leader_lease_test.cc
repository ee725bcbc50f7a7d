// Leadership over one KvStore (the embedded SQLite one; //tests:broker_ha_test
// runs it on etcd): one leader at a time, a waiting replica sees who leads
// and takes over when the leader stops, a lost lease is reported and fences
// the old leader's writes.
#include "server/kv/leader_lease.h"

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "gtest/gtest.h"
#include "server/kv/kv_backed_store.h"
#include "server/kv/sqlite_kv_store.h"
#include "server/store_test_files.h"

namespace iommu {
namespace kv {
namespace {

class LeaderLeaseTest : public ::testing::Test {
 protected:
  void SetUp() override {
    static int n = 0;
    absl::StatusOr<std::unique_ptr<KvStore>> kv =
        OpenSqliteKvStore(TempPath(absl::StrCat("leader_lease_", n++, ".db")));
    ASSERT_TRUE(kv.ok()) << kv.status();
    kv_ = std::move(*kv);
  }
  LeaderLeaseOptions Options(const std::string& holder) {
    LeaderLeaseOptions o;
    o.holder = holder;
    o.ttl_seconds = 2;
    o.poll = absl::Milliseconds(20);
    return o;
  }
  std::unique_ptr<KvStore> kv_;
};

TEST_F(LeaderLeaseTest, OneLeadsTheOtherWaitsAndTakesOverWhenItStops) {
  auto a = LeaderLease::Campaign(kv_.get(), Options("a"), nullptr, nullptr);
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ((*kv_->Get("/leader"))->value, "a");
  EXPECT_TRUE((*a)->lost().ok());

  // b waits while a leads, and is told who leads.
  std::string seen;
  int polls = 0;
  auto gave_up = LeaderLease::Campaign(kv_.get(), Options("b"),
                                       [&](absl::string_view leader) {
                                         seen = std::string(leader);
                                         return ++polls < 3;
                                       },
                                       nullptr);
  EXPECT_EQ(gave_up.status().code(), absl::StatusCode::kCancelled) << gave_up.status();
  EXPECT_EQ(seen, "a");

  const int64_t a_fence = (*a)->fence_revision();
  a->reset();  // a stops: its lease is revoked and the key goes with it.
  auto b = LeaderLease::Campaign(kv_.get(), Options("b"), [](absl::string_view) { return true; },
                                 nullptr);
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_EQ((*kv_->Get("/leader"))->value, "b");
  EXPECT_GT((*b)->fence_revision(), a_fence);
}

// The standby watches the key: it takes over when the key goes, not at its
// next poll (an hour here, so only the watch can end this test in time).
TEST_F(LeaderLeaseTest, AWaitingReplicaTakesOverWhenTheKeyGoesNotAtItsNextPoll) {
  auto a = LeaderLease::Campaign(kv_.get(), Options("a"), nullptr, nullptr);
  ASSERT_TRUE(a.ok()) << a.status();
  LeaderLeaseOptions slow = Options("b");
  slow.poll = absl::Hours(1);
  absl::Notification waiting;
  absl::StatusOr<std::unique_ptr<LeaderLease>> b;
  std::thread campaign([&] {
    b = LeaderLease::Campaign(kv_.get(), slow,
                              [&](absl::string_view leader) {
                                EXPECT_EQ(leader, "a");
                                if (!waiting.HasBeenNotified()) waiting.Notify();
                                return true;
                              },
                              nullptr);
  });
  waiting.WaitForNotification();
  // As if a's lease expired: the key is deleted with it.
  ASSERT_TRUE(kv_->LeaseRevoke((*a)->lease_id()).ok());
  campaign.join();
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_EQ((*kv_->Get("/leader"))->value, "b");
}

// A KvStore that counts the watches started through it.
class WatchCountingKv final : public KvStore {
 public:
  explicit WatchCountingKv(KvStore* kv) : kv_(kv) {}
  int watches() const { return watches_.load(); }
  absl::StatusOr<TxnResponse> Txn(const TxnRequest& txn) override { return kv_->Txn(txn); }
  absl::StatusOr<RangeResponse> Range(const RangeRequest& r) override { return kv_->Range(r); }
  absl::StatusOr<std::unique_ptr<WatchHandle>> Watch(const WatchRequest& r,
                                                     WatchCallback callback) override {
    ++watches_;
    return kv_->Watch(r, std::move(callback));
  }
  absl::Status Compact(int64_t revision) override { return kv_->Compact(revision); }
  int64_t CompactedRevision() override { return kv_->CompactedRevision(); }
  absl::StatusOr<int64_t> LeaseGrant(int64_t ttl) override { return kv_->LeaseGrant(ttl); }
  absl::StatusOr<int64_t> LeaseKeepAlive(int64_t id) override { return kv_->LeaseKeepAlive(id); }
  absl::StatusOr<int64_t> LeaseRevoke(int64_t id) override { return kv_->LeaseRevoke(id); }
  absl::StatusOr<LeaseStatus> LeaseTimeToLive(int64_t id) override {
    return kv_->LeaseTimeToLive(id);
  }

 private:
  KvStore* const kv_;
  std::atomic<int> watches_{0};
};

// A standby may wait for days: it keeps one watch of the leader key, not one
// per poll (each would be a watch created and cancelled on etcd).
TEST_F(LeaderLeaseTest, AWaitingReplicaKeepsOneWatchForItsWholeWait) {
  auto a = LeaderLease::Campaign(kv_.get(), Options("a"), nullptr, nullptr);
  ASSERT_TRUE(a.ok()) << a.status();
  WatchCountingKv counting(kv_.get());
  int polls = 0;
  auto gave_up = LeaderLease::Campaign(
      &counting, Options("b"), [&](absl::string_view) { return ++polls < 10; }, nullptr);
  EXPECT_EQ(gave_up.status().code(), absl::StatusCode::kCancelled) << gave_up.status();
  EXPECT_EQ(polls, 10);
  EXPECT_EQ(counting.watches(), 1);
}

TEST_F(LeaderLeaseTest, ALostLeaseIsReportedAndTheOldLeaderIsFenced) {
  absl::Notification lost;
  auto a = LeaderLease::Campaign(kv_.get(), Options("a"), nullptr,
                                 [&](const absl::Status&) { lost.Notify(); });
  ASSERT_TRUE(a.ok()) << a.status();
  KvBackedStoreOptions o;
  o.fence_key = (*a)->key();
  o.fence_revision = (*a)->fence_revision();
  KvBackedStore store(kv_.get(), o);
  WriteBatch w;
  w.puts = {{"tenant", "t", "1"}};
  ASSERT_TRUE(store.Commit(w).ok());

  // As if the lease expired during a pause: it is gone from the store.
  ASSERT_TRUE(kv_->LeaseRevoke((*a)->lease_id()).ok());
  lost.WaitForNotification();
  EXPECT_EQ((*a)->lost().code(), absl::StatusCode::kUnavailable);
  auto b = LeaderLease::Campaign(kv_.get(), Options("b"), [](absl::string_view) { return true; },
                                 nullptr);
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_EQ(store.Commit(w).code(), absl::StatusCode::kUnavailable);
}

TEST_F(LeaderLeaseTest, BadOptionsAreRefused) {
  LeaderLeaseOptions o = Options("a");
  o.key = "";
  EXPECT_EQ(LeaderLease::Campaign(kv_.get(), o, nullptr, nullptr).status().code(),
            absl::StatusCode::kInvalidArgument);
  o = Options("a");
  o.ttl_seconds = 1;
  EXPECT_EQ(LeaderLease::Campaign(kv_.get(), o, nullptr, nullptr).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace kv
}  // namespace iommu
