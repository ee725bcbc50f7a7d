// Conformance: watches (replay, order, filtering, cancel, backlog), leases
// on the injected clock, and concurrent compare-and-swap.
#include <algorithm>
#include <atomic>
#include <cstdint>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/synchronization/notification.h"
#include "common/status_matchers.h"
#include "server/kv/kv_conformance.h"

namespace iommu {
namespace kv {
namespace {

const std::string kAll("\0", 1);
// How long a test waits for something asynchronous before it fails; never
// a measurement.
constexpr absl::Duration kPatience = absl::Seconds(20);

// Collects what a watch delivers.
class Collector {
 public:
  WatchCallback Callback() {
    return [this](const absl::StatusOr<WatchBatch>& b) {
      absl::MutexLock l(&mu_);
      if (b.ok()) {
        batches_.push_back(*b);
      } else {
        errors_.push_back(b.status());
      }
    };
  }
  // Waits until `n` batches (or an error) arrived; false on timeout.
  bool WaitForBatches(size_t n) {
    absl::MutexLock l(&mu_);
    wanted_ = n;
    return mu_.AwaitWithTimeout(absl::Condition(this, &Collector::EnoughLocked), kPatience);
  }
  bool WaitForError() { return WaitForBatches(SIZE_MAX); }
  std::vector<WatchBatch> batches() {
    absl::MutexLock l(&mu_);
    return batches_;
  }
  std::vector<absl::Status> errors() {
    absl::MutexLock l(&mu_);
    return errors_;
  }

 private:
  bool EnoughLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return batches_.size() >= wanted_ || !errors_.empty();
  }

  absl::Mutex mu_;
  size_t wanted_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<WatchBatch> batches_ ABSL_GUARDED_BY(mu_);
  std::vector<absl::Status> errors_ ABSL_GUARDED_BY(mu_);
};

// Polls `pred` until true or kPatience passes (for lease expiry, which the
// store acts on asynchronously once its clock says so).
template <typename Pred>
bool Eventually(Pred pred) {
  const absl::Time deadline = absl::Now() + kPatience;
  while (absl::Now() < deadline) {
    if (pred()) return true;
    absl::SleepFor(absl::Milliseconds(5));
  }
  return pred();
}

TEST_P(KvConformanceTest, WatchReplaysHistoryThenDeliversLiveChangesInOrder) {
  MustPut("w/a", "1");  // rev0+1
  TxnRequest two;
  two.then_ops.emplace_back(PutOp{"w/a", "2"});
  two.then_ops.emplace_back(PutOp{"w/b", "1"});
  MustTxn(two);  // rev0+2: one batch of two events
  Collector c;
  auto watch = store_->Watch({"w/", "w0", rev0_ + 1}, c.Callback());
  ASSERT_TRUE(watch.ok()) << watch.status();
  ASSERT_TRUE(store_->DeleteRange("w/a").ok());  // rev0+3
  MustPut("other", "x");                         // rev0+4: outside the range
  MustPut("w/c", "1");                           // rev0+5
  ASSERT_TRUE(c.WaitForBatches(4));
  const std::vector<WatchBatch> b = c.batches();
  ASSERT_EQ(b.size(), 4u);
  EXPECT_EQ(b[0].revision, rev0_ + 1);
  EXPECT_EQ(b[1].revision, rev0_ + 2);
  ASSERT_EQ(b[1].events.size(), 2u);
  EXPECT_EQ(b[1].events[0].kv.key, "w/a");
  EXPECT_EQ(b[1].events[1].kv.key, "w/b");
  ASSERT_TRUE(b[1].events[0].prev_kv.has_value());
  EXPECT_EQ(b[1].events[0].prev_kv->value, "1");
  EXPECT_EQ(b[1].events[0].kv.version, 2);
  EXPECT_EQ(b[2].revision, rev0_ + 3);
  EXPECT_EQ(b[2].events[0].type, EventType::kDelete);
  EXPECT_EQ(b[2].events[0].kv.mod_revision, rev0_ + 3);
  ASSERT_TRUE(b[2].events[0].prev_kv.has_value());
  EXPECT_EQ(b[2].events[0].prev_kv->value, "2");
  EXPECT_EQ(b[3].revision, rev0_ + 5);
  EXPECT_TRUE(c.errors().empty());
}

TEST_P(KvConformanceTest, WatchFromZeroSeesOnlyLaterChanges) {
  MustPut("a", "old");
  Collector c;
  auto watch = store_->Watch({"a", "", 0}, c.Callback());
  ASSERT_TRUE(watch.ok()) << watch.status();
  MustPut("a", "new");
  ASSERT_TRUE(c.WaitForBatches(1));
  ASSERT_EQ(c.batches().size(), 1u);
  EXPECT_EQ(c.batches()[0].events[0].kv.value, "new");
}

TEST_P(KvConformanceTest, WatchOfAFutureRevisionStartsThere) {
  Collector c;
  auto watch = store_->Watch({"a", "", rev0_ + 2}, c.Callback());
  ASSERT_TRUE(watch.ok()) << watch.status();
  MustPut("a", "1");
  MustPut("a", "2");
  ASSERT_TRUE(c.WaitForBatches(1));
  EXPECT_EQ(c.batches()[0].revision, rev0_ + 2);
}

TEST_P(KvConformanceTest, DestroyingTheHandleStopsDelivery) {
  Collector c;
  auto watch = store_->Watch({"a", "", 0}, c.Callback());
  ASSERT_TRUE(watch.ok()) << watch.status();
  MustPut("a", "1");
  ASSERT_TRUE(c.WaitForBatches(1));
  watch->reset();  // Returns only once no callback runs.
  MustPut("a", "2");
  // Another watch on the same key seeing the put proves it was published.
  Collector witness;
  auto w2 = store_->Watch({"a", "", rev0_ + 2}, witness.Callback());
  ASSERT_TRUE(w2.ok());
  ASSERT_TRUE(witness.WaitForBatches(1));
  EXPECT_EQ(c.batches().size(), 1u);
}

TEST_P(KvConformanceTest, WatchThatFallsTooFarBehindGetsAClearError) {
  KvStoreConfig config;
  config.watch_max_pending_events = 8;
  store_ = Make(config);
  ASSERT_NE(store_, nullptr);
  absl::Notification release;
  std::atomic<int> delivered{0};
  Collector errors;
  WatchCallback record_error = errors.Callback();
  auto watch = store_->Watch({"k", "", 0}, [&](const absl::StatusOr<WatchBatch>& b) {
    if (!b.ok()) return record_error(b);
    if (delivered++ == 0) release.WaitForNotification();  // Stall on the first.
  });
  ASSERT_TRUE(watch.ok()) << watch.status();
  for (int i = 0; i < 40; ++i) MustPut("k", std::to_string(i));
  release.Notify();
  ASSERT_TRUE(errors.WaitForError());
  EXPECT_THAT(errors.errors()[0], StatusIs(absl::StatusCode::kResourceExhausted, "fell behind"));
}

TEST_P(KvConformanceTest, ConcurrentWritersAreSeenByAWatchGaplessAndInOrder) {
  Collector c;
  auto watch = store_->Watch({"c/", "c0", 0}, c.Callback());
  ASSERT_TRUE(watch.ok()) << watch.status();
  constexpr int kThreads = 8, kEach = 25;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kEach; ++i) {
        EXPECT_TRUE(store_->Put("c/" + std::to_string(t), std::to_string(i)).ok());
      }
    });
  }
  for (auto& th : threads) th.join();
  ASSERT_TRUE(c.WaitForBatches(kThreads * kEach));
  const std::vector<WatchBatch> b = c.batches();
  ASSERT_EQ(b.size(), static_cast<size_t>(kThreads * kEach));
  for (size_t i = 0; i < b.size(); ++i) EXPECT_EQ(b[i].revision, rev0_ + 1 + i);
}

TEST_P(KvConformanceTest, CompareAndSwapIncrementsFromManyThreadsLoseNothing) {
  MustPut("counter", "0");
  constexpr int kThreads = 8, kAttempts = 40;
  std::atomic<int> successes{0};
  absl::Mutex mu;
  std::vector<int64_t> revisions;  // Guarded by mu.
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      int64_t last = 0;
      for (int i = 0; i < kAttempts; ++i) {
        absl::StatusOr<std::optional<KeyValue>> cur = store_->Get("counter");
        ASSERT_TRUE(cur.ok() && cur->has_value()) << cur.status();
        int64_t n = 0;
        ASSERT_TRUE(absl::SimpleAtoi((*cur)->value, &n));
        TxnRequest cas;
        cas.compares.push_back(
            Compare::ModRevision("counter", CompareOp::kEqual, (*cur)->mod_revision));
        cas.then_ops.emplace_back(PutOp{"counter", std::to_string(n + 1)});
        absl::StatusOr<TxnResponse> r = store_->Txn(cas);
        ASSERT_TRUE(r.ok()) << r.status();
        EXPECT_GE(r->revision, last) << "revisions went backwards for one client";
        last = r->revision;
        if (!r->succeeded) continue;
        ++successes;
        absl::MutexLock l(&mu);
        revisions.push_back(r->revision);
      }
    });
  }
  for (auto& th : threads) th.join();
  const RangeResponse r = MustRange("counter");
  ASSERT_EQ(r.kvs.size(), 1u);
  EXPECT_EQ(r.kvs[0].value, std::to_string(successes.load()));
  EXPECT_GT(successes.load(), 0);
  absl::MutexLock l(&mu);
  std::sort(revisions.begin(), revisions.end());
  for (size_t i = 0; i < revisions.size(); ++i) {
    EXPECT_EQ(revisions[i], rev0_ + 2 + static_cast<int64_t>(i)) << "a gap or a repeat";
  }
  EXPECT_EQ(r.revision, rev0_ + 1 + successes.load());
}

TEST_P(KvConformanceTest, LeaseTimeToLiveFollowsTheClockAndKeepAliveRenews) {
  if (!GetParam().leases_follow_injected_clock) {
    GTEST_SKIP() << "leases follow the store's own clock; see the RealTime variant";
  }
  absl::StatusOr<int64_t> id = store_->LeaseGrant(10);
  ASSERT_TRUE(id.ok()) << id.status();
  EXPECT_GT(*id, 0);
  MustPut("l/a", "1", *id);
  clock_.Advance(absl::Seconds(4));
  absl::StatusOr<LeaseStatus> ttl = store_->LeaseTimeToLive(*id);
  ASSERT_TRUE(ttl.ok()) << ttl.status();
  EXPECT_EQ(ttl->granted_ttl_seconds, 10);
  EXPECT_EQ(ttl->remaining, absl::Seconds(6));
  EXPECT_EQ(ttl->keys, (std::vector<std::string>{"l/a"}));
  absl::StatusOr<int64_t> renewed = store_->LeaseKeepAlive(*id);
  ASSERT_TRUE(renewed.ok()) << renewed.status();
  EXPECT_EQ(*renewed, 10);
  EXPECT_EQ(store_->LeaseTimeToLive(*id)->remaining, absl::Seconds(10));
  EXPECT_EQ(MustRange("l/a").kvs[0].lease, *id);
}

TEST_P(KvConformanceTest, RevokeDeletesTheLeasesKeysAtOneNewRevision) {
  absl::StatusOr<int64_t> id = store_->LeaseGrant(60);
  ASSERT_TRUE(id.ok()) << id.status();
  MustPut("l/a", "1", *id);
  MustPut("l/b", "1", *id);
  MustPut("l/c", "1");
  Collector c;
  auto watch = store_->Watch({"l/", "l0", 0}, c.Callback());
  ASSERT_TRUE(watch.ok());
  absl::StatusOr<int64_t> rev = store_->LeaseRevoke(*id);
  ASSERT_TRUE(rev.ok()) << rev.status();
  EXPECT_EQ(*rev, rev0_ + 4);
  EXPECT_EQ(Keys(MustRange("l/", "l0")), (std::vector<std::string>{"l/c"}));
  ASSERT_TRUE(c.WaitForBatches(1));
  ASSERT_EQ(c.batches()[0].events.size(), 2u);
  EXPECT_EQ(c.batches()[0].events[0].type, EventType::kDelete);
  EXPECT_THAT(store_->LeaseTimeToLive(*id).status(),
              StatusIs(absl::StatusCode::kNotFound, "not found"));
  EXPECT_THAT(store_->Put("l/d", "1", *id).status(),
              StatusIs(absl::StatusCode::kNotFound, "not found"));
}

TEST_P(KvConformanceTest, ExpiredLeaseTakesItsKeysWithIt) {
  if (!GetParam().leases_follow_injected_clock) {
    GTEST_SKIP() << "leases follow the store's own clock; see the RealTime variant";
  }
  absl::StatusOr<int64_t> id = store_->LeaseGrant(5);
  ASSERT_TRUE(id.ok()) << id.status();
  MustPut("e/a", "1", *id);
  clock_.Advance(absl::Seconds(4));
  ASSERT_TRUE(store_->LeaseKeepAlive(*id).ok());
  clock_.Advance(absl::Seconds(4));  // 4 s after the renewal: still alive.
  EXPECT_EQ(MustRange("e/a").kvs.size(), 1u);
  clock_.Advance(absl::Seconds(2));  // 6 s after: expired.
  EXPECT_THAT(store_->LeaseKeepAlive(*id).status(),
              StatusIs(absl::StatusCode::kNotFound, "not found"));
  EXPECT_THAT(store_->LeaseTimeToLive(*id).status(),
              StatusIs(absl::StatusCode::kNotFound, "not found"));
  EXPECT_TRUE(Eventually([&] { return MustRange("e/a").kvs.empty(); }));
  EXPECT_EQ(Revision(), rev0_ + 2);  // One DELETE revision.
}

// The variants of the two FakeClock tests above for a store whose leases run
// on its own real clock (etcd): short real TTLs, bounds instead of exact
// remaining times. They take a few seconds of wall time.
TEST_P(KvConformanceTest, LeaseTimeToLiveCountsDownInRealTimeAndKeepAliveRenews) {
  if (GetParam().leases_follow_injected_clock) {
    GTEST_SKIP() << "covered exactly by LeaseTimeToLiveFollowsTheClockAndKeepAliveRenews";
  }
  absl::StatusOr<int64_t> id = store_->LeaseGrant(10);
  ASSERT_TRUE(id.ok()) << id.status();
  EXPECT_GT(*id, 0);
  MustPut("l/a", "1", *id);
  absl::SleepFor(absl::Milliseconds(1100));
  absl::StatusOr<LeaseStatus> ttl = store_->LeaseTimeToLive(*id);
  ASSERT_TRUE(ttl.ok()) << ttl.status();
  EXPECT_EQ(ttl->granted_ttl_seconds, 10);
  EXPECT_LE(ttl->remaining, absl::Seconds(9));
  EXPECT_GE(ttl->remaining, absl::Seconds(7));
  EXPECT_EQ(ttl->keys, (std::vector<std::string>{"l/a"}));
  absl::StatusOr<int64_t> renewed = store_->LeaseKeepAlive(*id);
  ASSERT_TRUE(renewed.ok()) << renewed.status();
  EXPECT_EQ(*renewed, 10);
  EXPECT_GE(store_->LeaseTimeToLive(*id)->remaining, absl::Seconds(9));
  EXPECT_EQ(MustRange("l/a").kvs[0].lease, *id);
}

TEST_P(KvConformanceTest, ExpiredLeaseTakesItsKeysWithItInRealTime) {
  if (GetParam().leases_follow_injected_clock) {
    GTEST_SKIP() << "covered exactly by ExpiredLeaseTakesItsKeysWithIt";
  }
  // 3 s: above etcd's minimum TTL (1.5 x its election timeout, 2 s by
  // default), with 1.5 s of slack for a loaded machine below.
  absl::StatusOr<int64_t> id = store_->LeaseGrant(3);
  ASSERT_TRUE(id.ok()) << id.status();
  MustPut("e/a", "1", *id);
  absl::SleepFor(absl::Seconds(1));
  ASSERT_TRUE(store_->LeaseKeepAlive(*id).ok());
  absl::SleepFor(absl::Milliseconds(1500));  // 1.5 s after the renewal: still alive.
  EXPECT_EQ(MustRange("e/a").kvs.size(), 1u);
  EXPECT_TRUE(Eventually([&] { return MustRange("e/a").kvs.empty(); }));
  EXPECT_THAT(store_->LeaseKeepAlive(*id).status(),
              StatusIs(absl::StatusCode::kNotFound, "not found"));
  EXPECT_THAT(store_->LeaseTimeToLive(*id).status(),
              StatusIs(absl::StatusCode::kNotFound, "not found"));
  EXPECT_EQ(Revision(), rev0_ + 2);  // One DELETE revision.
}

}  // namespace

}  // namespace kv
}  // namespace iommu
