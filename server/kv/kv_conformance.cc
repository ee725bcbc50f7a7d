// Conformance: keys, revisions, txns and compares, ranges, history and
// compaction, bad input. Watches, leases and concurrency are in
// kv_conformance_watch.cc.
#include "common/status_matchers.h"
#include "server/kv/kv_conformance.h"

#include <string>
#include <utility>

namespace iommu {
namespace kv {

void KvConformanceTest::SetUp() {
  store_ = Make(KvStoreConfig{});
  ASSERT_NE(store_, nullptr);
  rev0_ = Revision();
}

std::unique_ptr<KvStore> KvConformanceTest::Make(KvStoreConfig config) {
  config.clock = &clock_;
  absl::StatusOr<std::unique_ptr<KvStore>> s = GetParam().factory(config);
  EXPECT_TRUE(s.ok()) << s.status();
  return s.ok() ? std::move(*s) : nullptr;
}

TxnResponse KvConformanceTest::MustPut(const std::string& key, const std::string& value,
                                       int64_t lease) {
  absl::StatusOr<TxnResponse> r = store_->Put(key, value, lease);
  EXPECT_TRUE(r.ok()) << r.status();
  return r.ok() ? *r : TxnResponse{};
}

TxnResponse KvConformanceTest::MustTxn(const TxnRequest& txn) {
  absl::StatusOr<TxnResponse> r = store_->Txn(txn);
  EXPECT_TRUE(r.ok()) << r.status();
  return r.ok() ? *r : TxnResponse{};
}

RangeResponse KvConformanceTest::MustRange(const std::string& key, const std::string& range_end,
                                           int64_t revision, int64_t limit) {
  absl::StatusOr<RangeResponse> r = store_->Range({key, range_end, revision, limit});
  EXPECT_TRUE(r.ok()) << r.status();
  return r.ok() ? *r : RangeResponse{};
}

std::vector<std::string> Keys(const RangeResponse& r) {
  std::vector<std::string> out;
  for (const KeyValue& kv : r.kvs) out.push_back(kv.key);
  return out;
}

int64_t KvConformanceTest::Revision() { return MustRange("\x01", "\0").revision; }

// Tests that link this library only for FakeClock do not instantiate it.
GTEST_ALLOW_UNINSTANTIATED_PARAMETERIZED_TEST(KvConformanceTest);

namespace {

const std::string kAll("\0", 1);  // range_end: every key >= key.

TEST_P(KvConformanceTest, PutTracksCreateModRevisionAndVersion) {
  EXPECT_EQ(MustPut("a", "1").revision, rev0_ + 1);
  EXPECT_EQ(MustPut("a", "2").revision, rev0_ + 2);
  const RangeResponse r = MustRange("a");
  ASSERT_EQ(r.kvs.size(), 1u);
  EXPECT_EQ(r.revision, rev0_ + 2);
  EXPECT_EQ(r.kvs[0].value, "2");
  EXPECT_EQ(r.kvs[0].create_revision, rev0_ + 1);
  EXPECT_EQ(r.kvs[0].mod_revision, rev0_ + 2);
  EXPECT_EQ(r.kvs[0].version, 2);
  EXPECT_EQ(r.kvs[0].lease, 0);
}

TEST_P(KvConformanceTest, RecreatedKeyStartsAFreshGeneration) {
  MustPut("a", "1");
  ASSERT_TRUE(store_->DeleteRange("a").ok());
  MustPut("a", "2");
  const RangeResponse r = MustRange("a");
  ASSERT_EQ(r.kvs.size(), 1u);
  EXPECT_EQ(r.kvs[0].create_revision, rev0_ + 3);
  EXPECT_EQ(r.kvs[0].version, 1);
}

TEST_P(KvConformanceTest, BinaryKeysAndValuesRoundTrip) {
  const std::string key("k\0\xff", 3), value("\0\x01\xfe", 3);
  MustPut(key, value);
  const RangeResponse r = MustRange(key);
  ASSERT_EQ(r.kvs.size(), 1u);
  EXPECT_EQ(r.kvs[0].value, value);
}

TEST_P(KvConformanceTest, RangeCoversOneKeyHalfOpenIntervalOrEverythingAbove) {
  for (const char* k : {"a", "b", "ba", "c", "d"}) MustPut(k, "v");
  EXPECT_EQ(Keys(MustRange("b")), (std::vector<std::string>{"b"}));
  EXPECT_EQ(Keys(MustRange("b", "d")), (std::vector<std::string>{"b", "ba", "c"}));
  EXPECT_EQ(Keys(MustRange("c", kAll)), (std::vector<std::string>{"c", "d"}));
  EXPECT_TRUE(MustRange("zz").kvs.empty());
  const RangeResponse limited = MustRange("a", kAll, 0, 2);
  EXPECT_EQ(Keys(limited), (std::vector<std::string>{"a", "b"}));
  EXPECT_TRUE(limited.more);
  EXPECT_EQ(limited.count, 5);
  EXPECT_FALSE(MustRange("a", kAll, 0, 5).more);
}

TEST_P(KvConformanceTest, DeleteRangeDeletesAtOneRevisionAndReturnsPrevKvs) {
  for (const char* k : {"a", "b", "c"}) MustPut(k, k);
  TxnRequest txn;
  txn.then_ops.emplace_back(DeleteRangeOp{"a", "c", true});
  const TxnResponse r = MustTxn(txn);
  EXPECT_EQ(r.revision, rev0_ + 4);
  const auto& del = std::get<DeleteRangeResponse>(r.responses[0]);
  EXPECT_EQ(del.deleted, 2);
  ASSERT_EQ(del.prev_kvs.size(), 2u);
  EXPECT_EQ(del.prev_kvs[1].value, "b");
  EXPECT_EQ(Keys(MustRange("a", kAll)), (std::vector<std::string>{"c"}));
}

TEST_P(KvConformanceTest, TxnThatChangesNothingKeepsTheRevision) {
  MustPut("a", "1");
  absl::StatusOr<TxnResponse> del = store_->DeleteRange("missing");
  ASSERT_TRUE(del.ok()) << del.status();
  EXPECT_EQ(del->revision, rev0_ + 1);
  EXPECT_EQ(std::get<DeleteRangeResponse>(del->responses[0]).deleted, 0);
  TxnRequest read;
  read.then_ops.emplace_back(RangeOp{"a", "", 0});
  EXPECT_EQ(MustTxn(read).revision, rev0_ + 1);
  EXPECT_EQ(Revision(), rev0_ + 1);
}

TEST_P(KvConformanceTest, PutReturnsPrevKvWhenAsked) {
  MustPut("a", "old");
  TxnRequest txn;
  txn.then_ops.emplace_back(PutOp{"a", "new", 0, true});
  txn.then_ops.emplace_back(PutOp{"b", "new", 0, true});
  const TxnResponse r = MustTxn(txn);
  const auto& first = std::get<PutResponse>(r.responses[0]);
  ASSERT_TRUE(first.prev_kv.has_value());
  EXPECT_EQ(first.prev_kv->value, "old");
  EXPECT_FALSE(std::get<PutResponse>(r.responses[1]).prev_kv.has_value());
}

TEST_P(KvConformanceTest, MissingKeyComparesAsZeroAndNeverMatchesOnValue) {
  const auto holds = [&](const Compare& c) {
    TxnRequest txn;
    txn.compares.push_back(c);
    return MustTxn(txn).succeeded;
  };
  EXPECT_TRUE(holds(Compare::Version("nope", CompareOp::kEqual, 0)));
  EXPECT_TRUE(holds(Compare::CreateRevision("nope", CompareOp::kEqual, 0)));
  EXPECT_TRUE(holds(Compare::ModRevision("nope", CompareOp::kEqual, 0)));
  EXPECT_TRUE(holds(Compare::Lease("nope", CompareOp::kEqual, 0)));
  EXPECT_FALSE(holds(Compare::Version("nope", CompareOp::kGreater, 0)));
  for (CompareOp op :
       {CompareOp::kEqual, CompareOp::kNotEqual, CompareOp::kLess, CompareOp::kGreater}) {
    EXPECT_FALSE(holds(Compare::Value("nope", op, ""))) << static_cast<int>(op);
  }
}

TEST_P(KvConformanceTest, CompareOperatorsOnEveryTarget) {
  MustPut("k", "m");  // create = mod = rev0+1, version 1
  MustPut("k", "m");  // mod = rev0+2, version 2
  const int64_t mod = rev0_ + 2, create = rev0_ + 1;
  const auto holds = [&](const Compare& c) {
    TxnRequest txn;
    txn.compares.push_back(c);
    return MustTxn(txn).succeeded;
  };
  EXPECT_TRUE(holds(Compare::Value("k", CompareOp::kEqual, "m")));
  EXPECT_TRUE(holds(Compare::Value("k", CompareOp::kNotEqual, "x")));
  EXPECT_TRUE(holds(Compare::Value("k", CompareOp::kLess, "n")));
  EXPECT_TRUE(holds(Compare::Value("k", CompareOp::kGreater, "l")));
  EXPECT_FALSE(holds(Compare::Value("k", CompareOp::kGreater, "m")));
  EXPECT_TRUE(holds(Compare::Version("k", CompareOp::kEqual, 2)));
  EXPECT_TRUE(holds(Compare::Version("k", CompareOp::kLess, 3)));
  EXPECT_FALSE(holds(Compare::Version("k", CompareOp::kLess, 2)));
  EXPECT_TRUE(holds(Compare::ModRevision("k", CompareOp::kEqual, mod)));
  EXPECT_TRUE(holds(Compare::ModRevision("k", CompareOp::kGreater, create)));
  EXPECT_FALSE(holds(Compare::ModRevision("k", CompareOp::kNotEqual, mod)));
  EXPECT_TRUE(holds(Compare::CreateRevision("k", CompareOp::kEqual, create)));
  EXPECT_TRUE(holds(Compare::CreateRevision("k", CompareOp::kLess, mod)));
  // All compares must hold.
  TxnRequest both;
  both.compares = {Compare::Version("k", CompareOp::kEqual, 2),
                   Compare::Version("k", CompareOp::kEqual, 3)};
  EXPECT_FALSE(MustTxn(both).succeeded);
}

TEST_P(KvConformanceTest, FailedCompareRunsElseBranchAndOpsSeeEarlierOps) {
  MustPut("k", "1");
  TxnRequest txn;
  txn.compares.push_back(Compare::Value("k", CompareOp::kEqual, "2"));
  txn.then_ops.emplace_back(PutOp{"then", "x"});
  txn.else_ops.emplace_back(PutOp{"else", "y"});
  txn.else_ops.emplace_back(RangeOp{"else", "", 0});
  const TxnResponse r = MustTxn(txn);
  EXPECT_FALSE(r.succeeded);
  EXPECT_EQ(r.revision, rev0_ + 2);
  ASSERT_EQ(r.responses.size(), 2u);
  const auto& range = std::get<RangeResponse>(r.responses[1]);
  ASSERT_EQ(range.kvs.size(), 1u);
  EXPECT_EQ(range.kvs[0].value, "y");
  EXPECT_TRUE(MustRange("then").kvs.empty());
}

TEST_P(KvConformanceTest, EveryWriteOfOneTxnSharesItsRevision) {
  TxnRequest txn;
  txn.then_ops.emplace_back(PutOp{"a", "1"});
  txn.then_ops.emplace_back(PutOp{"b", "2"});
  EXPECT_EQ(MustTxn(txn).revision, rev0_ + 1);
  for (const KeyValue& kv : MustRange("a", kAll).kvs) EXPECT_EQ(kv.mod_revision, rev0_ + 1);
}

TEST_P(KvConformanceTest, RangeAtAnOlderRevisionSeesTheStoreAsItWas) {
  MustPut("a", "1");
  MustPut("b", "1");
  MustPut("a", "2");
  ASSERT_TRUE(store_->DeleteRange("b").ok());
  const RangeResponse at2 = MustRange("a", kAll, rev0_ + 2);
  EXPECT_EQ(at2.revision, rev0_ + 2);
  ASSERT_EQ(Keys(at2), (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(at2.kvs[0].value, "1");
  EXPECT_EQ(at2.kvs[0].mod_revision, rev0_ + 1);
  EXPECT_EQ(Keys(MustRange("a", kAll, rev0_ + 4)), (std::vector<std::string>{"a"}));
  EXPECT_EQ(MustRange("a", kAll, rev0_ + 3).kvs[0].value, "2");
  EXPECT_THAT(store_->Range({"a", "", rev0_ + 5, 0}).status(),
              StatusIs(absl::StatusCode::kOutOfRange, "future revision"));
}

TEST_P(KvConformanceTest, CompactionRefusesOlderReadsAndKeepsNewerOnes) {
  MustPut("a", "1");                              // rev0+1
  MustPut("a", "2");                              // rev0+2
  MustPut("gone", "x");                           // rev0+3
  ASSERT_TRUE(store_->DeleteRange("gone").ok());  // rev0+4
  MustPut("b", "1");                              // rev0+5
  ASSERT_TRUE(store_->Compact(rev0_ + 3).ok());
  EXPECT_EQ(store_->CompactedRevision(), rev0_ + 3);
  EXPECT_THAT(store_->Range({"a", "", rev0_ + 2, 0}).status(),
              StatusIs(absl::StatusCode::kOutOfRange, "compacted"));
  const RangeResponse at3 = MustRange("a", kAll, rev0_ + 3);
  EXPECT_EQ(Keys(at3), (std::vector<std::string>{"a", "gone"}));
  EXPECT_EQ(at3.kvs[0].value, "2");
  EXPECT_EQ(Keys(MustRange("a", kAll, rev0_ + 4)), (std::vector<std::string>{"a"}));
  EXPECT_EQ(Keys(MustRange("a", kAll)), (std::vector<std::string>{"a", "b"}));
  EXPECT_THAT(store_->Compact(rev0_ + 3), StatusIs(absl::StatusCode::kOutOfRange, "compacted"));
  EXPECT_THAT(store_->Compact(rev0_ + 99),
              StatusIs(absl::StatusCode::kOutOfRange, "future revision"));
  EXPECT_THAT(store_->Watch({"a", "", rev0_ + 2}, [](const auto&) {}).status(),
              StatusIs(absl::StatusCode::kOutOfRange, "compacted"));
  // Compacting everything leaves the latest state whole.
  ASSERT_TRUE(store_->Compact(Revision()).ok());
  EXPECT_EQ(Keys(MustRange("a", kAll)), (std::vector<std::string>{"a", "b"}));
}

TEST_P(KvConformanceTest, BadInputIsRefusedWithTheFieldAndRuleAndChangesNothing) {
  MustPut("a", "1");
  const int64_t before = Revision();
  EXPECT_THAT(store_->Put("", "v").status(),
              StatusIs(absl::StatusCode::kInvalidArgument, "key is empty"));
  EXPECT_THAT(store_->DeleteRange("b", "a").status(),
              StatusIs(absl::StatusCode::kInvalidArgument, "range_end is below key"));
  EXPECT_THAT(store_->Range({"b", "a", 0, 0}).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, "range_end is below key"));
  EXPECT_THAT(store_->Range({"a", "", -1, 0}).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, "range.revision"));
  EXPECT_THAT(store_->Range({"a", "", 0, -1}).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, "range.limit"));
  EXPECT_THAT(store_->Watch({"a", "", -1}, [](const auto&) {}).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, "watch.start_revision"));
  EXPECT_THAT(store_->Compact(-1),
              StatusIs(absl::StatusCode::kInvalidArgument, "compact.revision"));
  TxnRequest dup;
  dup.then_ops.emplace_back(PutOp{"x", "1"});
  dup.then_ops.emplace_back(DeleteRangeOp{"w", "y"});
  EXPECT_THAT(store_->Txn(dup).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, "written twice"));
  TxnRequest bad_compare;
  bad_compare.compares.push_back(Compare::Version("", CompareOp::kEqual, 0));
  EXPECT_THAT(store_->Txn(bad_compare).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, "compares[0].key"));
  TxnRequest bad_lease;
  bad_lease.then_ops.emplace_back(PutOp{"x", "1", 987654321});
  EXPECT_THAT(store_->Txn(bad_lease).status(),
              StatusIs(absl::StatusCode::kNotFound, "lease 987654321 not found"));
  EXPECT_THAT(store_->LeaseGrant(0).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, "ttl_seconds"));
  EXPECT_THAT(store_->LeaseRevoke(-3).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, "lease id"));
  EXPECT_THAT(store_->LeaseRevoke(987654321).status(),
              StatusIs(absl::StatusCode::kNotFound, "not found"));
  EXPECT_THAT(store_->LeaseKeepAlive(987654321).status(),
              StatusIs(absl::StatusCode::kNotFound, "not found"));
  EXPECT_EQ(Revision(), before);
  EXPECT_TRUE(MustRange("x").kvs.empty());
}

TEST_P(KvConformanceTest, RequestsOverTheConfiguredLimitsAreRefused) {
  KvStoreConfig config;
  config.limits.max_txn_ops = 4;
  config.limits.max_value_bytes = 16;
  store_ = Make(config);
  ASSERT_NE(store_, nullptr);
  const int64_t before = Revision();
  EXPECT_THAT(store_->Put("a", std::string(17, 'v')).status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "then_ops[0].value: 17 bytes is over the limit"));
  TxnRequest big;
  for (int i = 0; i < 5; ++i) big.then_ops.emplace_back(PutOp{"k" + std::to_string(i), "v"});
  EXPECT_THAT(store_->Txn(big).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, "over the limit of 4"));
  EXPECT_EQ(Revision(), before);
  big.then_ops.pop_back();
  EXPECT_TRUE(store_->Txn(big).ok());
}

}  // namespace
}  // namespace kv
}  // namespace iommu
