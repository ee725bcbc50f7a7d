#include "server/model/model_follower.h"

#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "server/kv/sqlite_kv_store.h"
#include "server/model/test_records.h"

namespace iommu {
namespace model {
namespace {

constexpr char kPrefix[] = "/iommu";

std::unique_ptr<kv::KvStore> OpenStore(const std::string& name) {
  absl::StatusOr<std::unique_ptr<kv::KvStore>> s =
      kv::OpenSqliteKvStore(absl::StrCat(std::getenv("TEST_TMPDIR"), "/", name));
  EXPECT_TRUE(s.ok()) << s.status();
  return s.ok() ? *std::move(s) : nullptr;
}

// A writer that checks each change against its own model (as the broker's
// planners do) and commits only what applies; followers started before,
// midway and after must all end equal to the writer's model.
TEST(ModelFollowerTest, FollowersEqualTheWritersModelWheneverTheyStart) {
  std::unique_ptr<kv::KvStore> store = OpenStore("follow.db");
  ASSERT_NE(store, nullptr);
  // Someone else's keys share the store.
  ASSERT_TRUE(store->Put("/other/x", "y").ok());
  absl::StatusOr<std::unique_ptr<ModelFollower>> early = ModelFollower::Start(store.get(), kPrefix);
  ASSERT_TRUE(early.ok()) << early.status();
  FleetState writer;
  std::unique_ptr<ModelFollower> midway;
  std::mt19937 rng(99);
  int64_t last = 0;
  int committed = 0;
  for (int step = 0; step < 600; ++step) {
    WriteBatch change = RandomChange(&rng, /*one_write_per_key=*/true);
    if (!writer.Apply(change).ok()) continue;
    absl::StatusOr<kv::TxnResponse> r = store->Txn(ChangeToTxn(change, kPrefix));
    ASSERT_TRUE(r.ok()) << r.status();
    ASSERT_TRUE(r->succeeded);
    last = r->revision;
    ++committed;
    if (midway == nullptr && step >= 300) {  // The first commit past halfway.
      auto f = ModelFollower::Start(store.get(), kPrefix);
      ASSERT_TRUE(f.ok()) << f.status();
      midway = *std::move(f);
    }
  }
  ASSERT_GT(committed, 100);
  ASSERT_NE(midway, nullptr) << "no commit after step 300";
  auto late = ModelFollower::Start(store.get(), kPrefix);
  ASSERT_TRUE(late.ok()) << late.status();
  for (ModelFollower* f : {early->get(), midway.get(), late->get()}) {
    ASSERT_TRUE(f->WaitFor(last, absl::Seconds(30)).ok()) << f->health();
    f->Read([&](const FleetState& s, int64_t revision) {
      EXPECT_EQ(revision, last);
      EXPECT_EQ(Dump(s), Dump(writer));
    });
  }
}

TEST(ModelFollowerTest, ARefusedChangeStopsTheFollowerLoudly) {
  std::unique_ptr<kv::KvStore> store = OpenStore("refused.db");
  ASSERT_NE(store, nullptr);
  auto f = ModelFollower::Start(store.get(), kPrefix);
  ASSERT_TRUE(f.ok()) << f.status();
  // Written around the model: a window whose container does not exist.
  absl::StatusOr<kv::TxnResponse> r =
      store->Txn(ChangeToTxn(Puts({WindowRec("w1", "c404", "t", 0, 0x1000)}), kPrefix));
  ASSERT_TRUE(r.ok()) << r.status();
  absl::Status waited = (*f)->WaitFor(r->revision, absl::Seconds(10));
  EXPECT_EQ(waited.code(), absl::StatusCode::kDataLoss) << waited;
  EXPECT_NE(std::string(waited.message()).find("missing container c404"), std::string::npos)
      << waited;
  // A new follower cannot list that state either.
  auto again = ModelFollower::Start(store.get(), kPrefix);
  EXPECT_EQ(again.status().code(), absl::StatusCode::kDataLoss);
}

TEST(ChangeFromEventsTest, KeepsItsPrefixAndRefusesMalformedKeys) {
  kv::WatchBatch b;
  b.revision = 7;
  b.events.push_back({kv::EventType::kPut, {"/iommu/tenant/acme", "v", 7, 7, 1, 0}, std::nullopt});
  b.events.push_back({kv::EventType::kDelete, {"/iommu/window/w1", "", 0, 7, 0, 0}, std::nullopt});
  b.events.push_back({kv::EventType::kPut, {"/iommux/tenant/x", "v", 7, 7, 1, 0}, std::nullopt});
  b.events.push_back({kv::EventType::kPut, {"/other/tenant/x", "v", 7, 7, 1, 0}, std::nullopt});
  absl::StatusOr<WriteBatch> c = ChangeFromEvents(b, kPrefix);
  ASSERT_TRUE(c.ok()) << c.status();
  ASSERT_EQ(c->puts.size(), 1u);
  EXPECT_EQ(c->puts[0].kind, "tenant");
  EXPECT_EQ(c->puts[0].id, "acme");
  ASSERT_EQ(c->deletes.size(), 1u);
  EXPECT_EQ(c->deletes[0], std::make_pair(std::string("window"), std::string("w1")));
  b.events.push_back({kv::EventType::kPut, {"/iommu/noid", "v", 7, 7, 1, 0}, std::nullopt});
  EXPECT_EQ(ChangeFromEvents(b, kPrefix).status().code(), absl::StatusCode::kDataLoss);
}

}  // namespace
}  // namespace model
}  // namespace iommu
