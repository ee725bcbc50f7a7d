// The pure planner and rules, without any store: what a group commit relies
// on (each request of a batch sees the ones before it and gets its own
// revision; nothing is visible before Apply).
#include "server/kv/kv_state.h"

#include "gtest/gtest.h"
#include "server/kv/kv_rules.h"

namespace iommu {
namespace kv {
namespace {

const absl::Time kNow = absl::FromUnixSeconds(1000);

TxnRequest CasPut(const std::string& key, int64_t mod, const std::string& value) {
  TxnRequest t;
  t.compares.push_back(Compare::ModRevision(key, CompareOp::kEqual, mod));
  t.then_ops.emplace_back(PutOp{key, value});
  return t;
}

TEST(BatchPlannerTest, LaterTxnsOfABatchSeeEarlierOnesAndGetTheirOwnRevisions) {
  KvState state;
  BatchPlanner planner(state, KvLimits{});
  auto first = planner.PlanTxn(CasPut("k", 0, "1"));   // Creates k at 1.
  auto stale = planner.PlanTxn(CasPut("k", 0, "x"));   // Sees k at 1: fails.
  auto second = planner.PlanTxn(CasPut("k", 1, "2"));  // Sees k at 1: succeeds at 2.
  ASSERT_TRUE(first.ok() && stale.ok() && second.ok());
  EXPECT_TRUE(first->succeeded);
  EXPECT_FALSE(stale->succeeded);
  EXPECT_EQ(stale->revision, 1);
  EXPECT_TRUE(second->succeeded);
  EXPECT_EQ(second->revision, 2);
  EXPECT_EQ(state.Find("k"), nullptr) << "planned changes leaked into the state";
  const ChangeSet& c = planner.changes();
  ASSERT_EQ(c.txns.size(), 2u);
  EXPECT_EQ(c.revision, 2);
  state.Apply(c, kNow);
  ASSERT_NE(state.Find("k"), nullptr);
  EXPECT_EQ(state.Find("k")->value, "2");
  EXPECT_EQ(state.Find("k")->version, 2);
  EXPECT_EQ(state.revision(), 2);
}

TEST(BatchPlannerTest, RevokeInTheSameBatchDeletesKeysPutThere) {
  KvState state;
  BatchPlanner planner(state, KvLimits{});
  const int64_t lease = planner.PlanGrant(10);
  TxnRequest put;
  put.then_ops.emplace_back(PutOp{"a", "1", lease});
  ASSERT_TRUE(planner.PlanTxn(put).ok());
  auto rev = planner.PlanRevoke(lease);
  ASSERT_TRUE(rev.ok());
  EXPECT_EQ(*rev, 2);
  EXPECT_EQ(planner.PlanTxn(put).status().code(), absl::StatusCode::kNotFound);
  state.Apply(planner.changes(), kNow);
  EXPECT_EQ(state.Find("a"), nullptr);
  EXPECT_EQ(state.FindLease(lease), nullptr);
}

TEST(BatchPlannerTest, RangeMergesCommittedAndPlannedKeys) {
  KvState state;
  {
    BatchPlanner p(state, KvLimits{});
    TxnRequest t;
    for (const char* k : {"a", "c", "e"}) t.then_ops.emplace_back(PutOp{k, "old"});
    ASSERT_TRUE(p.PlanTxn(t).ok());
    state.Apply(p.changes(), kNow);
  }
  BatchPlanner p(state, KvLimits{});
  TxnRequest t;
  t.then_ops.emplace_back(PutOp{"b", "new"});
  t.then_ops.emplace_back(DeleteRangeOp{"c", ""});
  t.then_ops.emplace_back(RangeOp{"a", std::string("\0", 1), 0});
  auto r = p.PlanTxn(t);
  ASSERT_TRUE(r.ok());
  const auto& range = std::get<RangeResponse>(r->responses[2]);
  std::vector<std::string> keys;
  for (const KeyValue& kv : range.kvs) keys.push_back(kv.key);
  EXPECT_EQ(keys, (std::vector<std::string>{"a", "b", "e"}));
}

TEST(KvRulesTest, ADeleteRangeCoveringAPutOfTheSameTxnIsRefused) {
  TxnRequest t;
  t.then_ops.emplace_back(DeleteRangeOp{"a", "z"});
  t.then_ops.emplace_back(PutOp{"m", "1"});
  absl::Status s = ValidateTxn(t, KvLimits{});
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("\"m\" is written twice"), std::string::npos) << s;
  TxnRequest two_deletes;  // Overlapping deletes are fine: the second finds less.
  two_deletes.then_ops.emplace_back(DeleteRangeOp{"a", "z"});
  two_deletes.then_ops.emplace_back(DeleteRangeOp{"b", "c"});
  EXPECT_TRUE(ValidateTxn(two_deletes, KvLimits{}).ok());
}

TEST(KvRulesTest, RangesFollowEtcdConventions) {
  const std::string all("\0", 1);
  EXPECT_TRUE(InRange("a", "a", ""));
  EXPECT_FALSE(InRange("ab", "a", ""));
  EXPECT_TRUE(InRange("ab", "a", "b"));
  EXPECT_FALSE(InRange("b", "a", "b"));
  EXPECT_TRUE(InRange("zzz", "b", all));
  EXPECT_FALSE(InRange("a", "b", all));
}

}  // namespace
}  // namespace kv
}  // namespace iommu
