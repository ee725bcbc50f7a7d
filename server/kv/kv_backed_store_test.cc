// The broker's Store on a KvStore (kv_backed_store.h), on the embedded SQLite
// KvStore: record order, folded and split commit groups, remembered answers,
// expiry, damage, compaction and reopening. //tests:etcd_kv_store_test runs
// the broker's Store on a real etcd.
#include "server/kv/kv_backed_store.h"

#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "server/kv/kv_conformance.h"
#include "server/kv/sqlite_kv_store.h"
#include "server/request_digest.h"
#include "server/store_test_files.h"

namespace iommu {
namespace kv {
namespace {

class KvBackedStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    static int n = 0;
    path_ = TempPath(absl::StrCat("kv_backed_", n++, ".db"));
    Open(KvBackedStoreOptions{});
  }
  void Open(KvBackedStoreOptions options) {
    store_.reset();
    kv_.reset();
    SqliteKvOptions o;
    o.limits.max_txn_ops = options.max_txn_ops;
    o.clock = &clock_;
    o.lease_sweep_period = absl::Milliseconds(5);
    absl::StatusOr<std::unique_ptr<KvStore>> kv = OpenSqliteKvStore(path_, o);
    ASSERT_TRUE(kv.ok()) << kv.status();
    kv_ = std::move(*kv);
    store_ = std::make_unique<KvBackedStore>(kv_.get(), options);
  }
  std::vector<StoreRecord> Load() {
    absl::StatusOr<std::vector<StoreRecord>> r = store_->LoadAll();
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? *r : std::vector<StoreRecord>();
  }
  static std::string Describe(const std::vector<StoreRecord>& records) {
    std::string out;
    for (const StoreRecord& r : records) absl::StrAppend(&out, r.kind, "/", r.id, "=", r.value, " ");
    return out;
  }

  // Answers kept an hour, a new lease every 10 minutes, on the fake clock
  // that also drives the KvStore's lease expiry.
  KvBackedStoreOptions Leased() {
    KvBackedStoreOptions o;
    o.answer_ttl = absl::Hours(1);
    o.answer_lease_span = absl::Minutes(10);
    o.now = [this] { return clock_.Now(); };
    return o;
  }
  absl::Status Answer(const std::string& id, int64_t time_ms) {
    WriteBatch b;
    b.request = RequestRecord{id, "fp-" + id, "resp", time_ms};
    return store_->Commit(b);
  }
  int64_t LeaseOf(const std::string& id) {
    absl::StatusOr<std::optional<KeyValue>> kv = kv_->Get(RequestKey(id));
    return kv.ok() && kv->has_value() ? (*kv)->lease : -1;
  }

  FakeClock clock_;
  std::string path_;
  std::unique_ptr<KvStore> kv_;
  std::unique_ptr<KvBackedStore> store_;
};

TEST_F(KvBackedStoreTest, LoadsRecordsInKindThenIdOrder) {
  EXPECT_TRUE(Load().empty());
  WriteBatch b;
  // "a-b" sorts before "a/" as a key but after "a" as a kind.
  b.puts = {{"a-b", "x", "3"}, {"a", "z", "2"}, {"a", "y", "1"}, {"b", "q", "4"}};
  ASSERT_TRUE(store_->Commit(b).ok());
  EXPECT_EQ(Describe(Load()), "a/y=1 a/z=2 a-b/x=3 b/q=4 ");
  // The records sit where a model follower on "/state" finds them.
  absl::StatusOr<std::optional<KeyValue>> kv = kv_->Get("/state/a/y");
  ASSERT_TRUE(kv.ok() && kv->has_value());
  EXPECT_EQ((*kv)->value, "1");
}

TEST_F(KvBackedStoreTest, AGroupAppliesItsBatchesInOrderAsOneRevision) {
  WriteBatch first;
  first.puts = {{"container", "c1", "v1"}, {"window", "w1", "x"}};
  WriteBatch second;
  second.puts = {{"container", "c1", "v2"}};
  second.deletes = {{"window", "w1"}, {"window", "never-existed"}};
  RequestRecord req{"tenant-a|r1", std::string("fp:\0:1", 6), std::string("re\0sp:", 6), 42};
  second.request = req;
  const int64_t before = kv_->Range({"/", std::string(1, '\0')})->revision;
  ASSERT_TRUE(store_->CommitGroup({first, second}).ok());
  EXPECT_EQ(kv_->Range({"/", std::string(1, '\0')})->revision, before + 1);
  EXPECT_EQ(Describe(Load()), "container/c1=v2 ");

  absl::StatusOr<std::optional<RequestRecord>> found = store_->FindRequest("tenant-a|r1");
  ASSERT_TRUE(found.ok()) << found.status();
  ASSERT_TRUE(found->has_value());
  EXPECT_EQ((*found)->request_id, req.request_id);
  EXPECT_EQ((*found)->fingerprint, req.fingerprint);
  EXPECT_EQ((*found)->response, req.response);
  EXPECT_EQ((*found)->time_ms, 42);
  EXPECT_FALSE(store_->FindRequest("tenant-b|r1")->has_value());
}

TEST_F(KvBackedStoreTest, AGroupPastTheTxnLimitSplitsBetweenBatchesNeverInside) {
  KvBackedStoreOptions o;
  o.max_txn_ops = 4;
  Open(o);
  std::vector<WriteBatch> group(5);
  for (int i = 0; i < 5; ++i) {
    group[i].puts = {{"k", absl::StrCat(i, "a"), "v"}, {"k", absl::StrCat(i, "b"), "v"}};
  }
  ASSERT_TRUE(store_->CommitGroup(group).ok());
  EXPECT_EQ(Load().size(), 10u);

  WriteBatch too_big;
  for (int i = 0; i < 5; ++i) too_big.puts.push_back({"big", absl::StrCat(i), "v"});
  absl::Status s = store_->Commit(too_big);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
  EXPECT_NE(s.message().find("limit of 4"), std::string::npos) << s;
  EXPECT_EQ(Load().size(), 10u);  // Nothing of it applied.
}

// The remembered answers as ListRequests reports them: id -> (digest, time).
std::map<std::string, std::pair<uint64_t, int64_t>> Listed(Store* store) {
  std::map<std::string, std::pair<uint64_t, int64_t>> out;
  absl::StatusOr<std::vector<RequestSummary>> listed = store->ListRequests();
  EXPECT_TRUE(listed.ok()) << listed.status();
  if (!listed.ok()) return out;
  for (const RequestSummary& r : *listed) out[r.request_id] = {r.fingerprint_digest, r.time_ms};
  return out;
}

TEST_F(KvBackedStoreTest, ExpiryForgetsOnlyOlderAnswersAndTheRestAreListed) {
  for (auto [id, t] : std::vector<std::pair<std::string, int64_t>>{
           {"a|1", 10}, {"a|2", 20}, {"b|1", 30}, {"bare", 5}}) {
    WriteBatch b;
    b.request = RequestRecord{id, "fp-" + id, "resp", t};
    ASSERT_TRUE(store_->Commit(b).ok());
  }
  using Listing = std::map<std::string, std::pair<uint64_t, int64_t>>;
  EXPECT_EQ(Listed(store_.get()), (Listing{{"a|1", {FingerprintDigest("fp-a|1"), 10}},
                                           {"a|2", {FingerprintDigest("fp-a|2"), 20}},
                                           {"b|1", {FingerprintDigest("fp-b|1"), 30}},
                                           {"bare", {FingerprintDigest("fp-bare"), 5}}}));

  absl::StatusOr<int64_t> expired = store_->ExpireRequests(25);
  ASSERT_TRUE(expired.ok()) << expired.status();
  EXPECT_EQ(*expired, 3);
  EXPECT_FALSE(store_->FindRequest("a|2")->has_value());
  EXPECT_TRUE(store_->FindRequest("b|1")->has_value());
  EXPECT_EQ(Listed(store_.get()), (Listing{{"b|1", {FingerprintDigest("fp-b|1"), 30}}}));
}

// With answer_ttl the store forgets answers by itself: each is under a lease
// that keeps it at least answer_ttl, and the sweep leaves them alone.
TEST_F(KvBackedStoreTest, LeasedAnswersAreForgottenByTheStoreAfterTheirTtl) {
  Open(Leased());
  ASSERT_TRUE(Answer("a|1", 10).ok());
  const int64_t first = LeaseOf("a|1");
  ASSERT_GT(first, 0);
  absl::StatusOr<LeaseStatus> status = kv_->LeaseTimeToLive(first);
  ASSERT_TRUE(status.ok()) << status.status();
  EXPECT_EQ(status->granted_ttl_seconds, 70 * 60) << "answer_ttl plus one span";
  // Within the span answers share the lease; after it, a new one.
  clock_.Advance(absl::Minutes(5));
  ASSERT_TRUE(Answer("a|2", 20).ok());
  EXPECT_EQ(LeaseOf("a|2"), first);
  clock_.Advance(absl::Minutes(6));
  ASSERT_TRUE(Answer("b|1", 30).ok());
  EXPECT_NE(LeaseOf("b|1"), first);
  EXPECT_GT(LeaseOf("b|1"), 0);

  // The sweep reads nothing and deletes nothing: the leases do.
  absl::StatusOr<int64_t> swept = store_->ExpireRequests(/*before_ms=*/1000);
  ASSERT_TRUE(swept.ok()) << swept.status();
  EXPECT_EQ(*swept, 0);
  EXPECT_TRUE(store_->FindRequest("a|1")->has_value());

  // 70 minutes after the first grant: a|1 and a|2 (written at most one span
  // after it, so kept at least their hour) go; b|1's lease is younger.
  clock_.Advance(absl::Minutes(70) - absl::Minutes(11));
  while (store_->FindRequest("a|2")->has_value()) absl::SleepFor(absl::Milliseconds(5));
  EXPECT_FALSE(store_->FindRequest("a|1")->has_value());
  EXPECT_TRUE(store_->FindRequest("b|1")->has_value());
}

// Answers written without a lease (an older broker) are swept once; after
// that the sweep reads nothing at all.
TEST_F(KvBackedStoreTest, AnswersWithoutALeaseAreSweptOnceThenNothingIsRead) {
  ASSERT_TRUE(Answer("old|1", 10).ok());
  ASSERT_EQ(LeaseOf("old|1"), 0);
  Open(Leased());
  absl::StatusOr<int64_t> swept = store_->ExpireRequests(25);
  ASSERT_TRUE(swept.ok()) << swept.status();
  EXPECT_EQ(*swept, 1);
  EXPECT_FALSE(store_->FindRequest("old|1")->has_value());
  // An unleased answer that appears now (none would: every write carries a
  // lease) is not even seen: the sweep no longer reads.
  ASSERT_TRUE(kv_->Put(RequestKey("old|2"), EncodeRequest({"old|2", "fp", "r", 10})).ok());
  swept = store_->ExpireRequests(25);
  ASSERT_TRUE(swept.ok()) << swept.status();
  EXPECT_EQ(*swept, 0);
  EXPECT_TRUE(store_->FindRequest("old|2")->has_value());
}

// A lease that vanished before its time (revoked by hand, a restored
// backup) costs the next commit nothing: it is replaced.
TEST_F(KvBackedStoreTest, AnAnswerLeaseGoneEarlyIsReplacedAndTheCommitLands) {
  Open(Leased());
  ASSERT_TRUE(Answer("a|1", 10).ok());
  const int64_t first = LeaseOf("a|1");
  ASSERT_TRUE(kv_->LeaseRevoke(first).ok());
  WriteBatch b;
  b.puts = {{"tenant", "acme", "1"}};
  b.request = RequestRecord{"a|2", "fp", "resp", 20};
  ASSERT_TRUE(store_->Commit(b).ok());
  EXPECT_GT(LeaseOf("a|2"), 0);
  EXPECT_NE(LeaseOf("a|2"), first);
  EXPECT_EQ(store_->answer_lease(), LeaseOf("a|2"));
  EXPECT_EQ(Describe(Load()), "tenant/acme=1 ");
}

TEST_F(KvBackedStoreTest, ADamagedAnswerOrKeyIsDataLoss) {
  ASSERT_TRUE(kv_->Put("/requests/x|1", "not an answer").ok());
  EXPECT_EQ(store_->FindRequest("x|1").status().code(), absl::StatusCode::kDataLoss);
  ASSERT_TRUE(kv_->Put("/requests/x|2", "5:99:short").ok());
  EXPECT_EQ(store_->FindRequest("x|2").status().code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(store_->ExpireRequests(100).status().code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(store_->ListRequests().status().code(), absl::StatusCode::kDataLoss);

  ASSERT_TRUE(kv_->Put("/state/kind-without-id", "v").ok());
  absl::StatusOr<std::vector<StoreRecord>> r = store_->LoadAll();
  EXPECT_EQ(r.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(r.status().message().find("kind-without-id"), std::string::npos) << r.status();
}

TEST_F(KvBackedStoreTest, HistoryIsCompactedBehindTheKeptRevisions) {
  KvBackedStoreOptions o;
  o.keep_revisions = 10;
  Open(o);
  for (int i = 0; i < 60; ++i) {
    WriteBatch b;
    b.puts = {{"counter", "c", absl::StrCat(i)}};
    ASSERT_TRUE(store_->Commit(b).ok());
  }
  const int64_t latest = kv_->Range({"/", std::string(1, '\0')})->revision;
  EXPECT_GT(kv_->CompactedRevision(), 1);
  EXPECT_GE(kv_->CompactedRevision(), latest - 20);
  EXPECT_LE(kv_->CompactedRevision(), latest - 10);
  EXPECT_EQ(Describe(Load()), "counter/c=59 ");
}

TEST_F(KvBackedStoreTest, WhatWasCommittedIsThereAfterReopening) {
  WriteBatch b;
  b.puts = {{"tenant", "acme", "t"}, {"node", "n1", "n"}};
  b.request = RequestRecord{"acme|create", "fp", "resp", 7};
  ASSERT_TRUE(store_->Commit(b).ok());
  Open(KvBackedStoreOptions{});
  EXPECT_EQ(Describe(Load()), "node/n1=n tenant/acme=t ");
  EXPECT_TRUE(store_->FindRequest("acme|create")->has_value());
}

TEST_F(KvBackedStoreTest, AFencedStoreLandsNothingOnceTheLeaderKeyChanged) {
  absl::StatusOr<TxnResponse> leader = kv_->Put("/leader", "replica-a");
  ASSERT_TRUE(leader.ok());
  KvBackedStoreOptions o;
  o.fence_key = "/leader";
  o.fence_revision = leader->revision;
  int refused = 0;
  o.on_fenced = [&refused] { ++refused; };
  KvBackedStore fenced(kv_.get(), o);
  WriteBatch b;
  b.puts = {{"tenant", "acme", "1"}};
  ASSERT_TRUE(fenced.Commit(b).ok());
  EXPECT_EQ(refused, 0);

  // Another replica took over: the key was deleted and created again.
  ASSERT_TRUE(kv_->DeleteRange("/leader").ok());
  ASSERT_TRUE(kv_->Put("/leader", "replica-b").ok());
  b.puts = {{"tenant", "acme", "2"}};
  b.request = RequestRecord{"acme|1", "fp", "resp", 1};
  absl::Status s = fenced.Commit(b);
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable) << s;
  EXPECT_NE(s.message().find("fenced"), std::string::npos) << s;
  EXPECT_EQ(refused, 1) << "the metrics hook counts each refused commit";
  EXPECT_EQ(Describe(Load()), "tenant/acme=1 ");
  EXPECT_FALSE(store_->FindRequest("acme|1")->has_value());
}

}  // namespace
}  // namespace kv
}  // namespace iommu
