#include "server/store_migration.h"

#include "gtest/gtest.h"
#include "server/fake_store.h"
#include "server/model/test_records.h"

namespace iommu {
namespace {

using model::Container;
using model::Dev;
using model::NodeRec;
using model::Rec;
using model::TenantRec;
using model::WindowRec;

void Put(Store* s, std::vector<StoreRecord> records) {
  WriteBatch b;
  b.puts = std::move(records);
  ASSERT_TRUE(s->Commit(b).ok());
}

TEST(StoreMigrationTest, MovesEveryRecordAndSaysWhat) {
  FakeStore from, to;
  const StoreRecord node = NodeRec("n1");
  Put(&from,
      {TenantRec("acme"), TenantRec("beta"), node, Rec(Container("c1", "acme", "n1", {Dev(0)})),
       WindowRec("w1", "c1", "acme", 0, 0x1000)});
  absl::StatusOr<MigrationReport> r = MigrateStore(&from, &to, 2);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->records, 5);
  EXPECT_EQ(r->batches, 3);
  EXPECT_EQ(DescribeMigration(*r),
            "moved 5 records (container: 1, node: 1, tenant: 2, window: 1) in 3 batches");
  EXPECT_EQ(to.LoadAll()->size(), 5u);
  EXPECT_EQ((*to.LoadAll())[1].value, node.value);
}

TEST(StoreMigrationTest, RefusesANonEmptyDestinationAndChangesNothing) {
  FakeStore from, to;
  Put(&from, {TenantRec("acme")});
  Put(&to, {TenantRec("other")});
  absl::StatusOr<MigrationReport> r = MigrateStore(&from, &to, 10);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(r.status().message().find("other"), std::string::npos) << r.status();
  EXPECT_EQ(to.LoadAll()->size(), 1u);
  EXPECT_EQ(MigrateStore(&from, &to, 0).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(StoreMigrationTest, AFailedWriteIsReported) {
  FakeStore from, to;
  Put(&from, {TenantRec("a"), TenantRec("b")});
  to.set_commit_error_after(1, absl::UnavailableError("etcd: no leader"));
  absl::StatusOr<MigrationReport> r = MigrateStore(&from, &to, 1);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kUnavailable);
}

// A state no broker would load (here a device held by two containers) is
// refused before anything is written.
TEST(StoreMigrationTest, ASourceThatBreaksTheStatesInvariantsIsRefusedAndNothingMoves) {
  FakeStore from, to;
  Put(&from, {TenantRec("acme"), NodeRec("n1"), Rec(Container("c1", "acme", "n1", {Dev(0)})),
              Rec(Container("c2", "acme", "n1", {Dev(0)}))});
  absl::StatusOr<MigrationReport> r = MigrateStore(&from, &to, 10);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(r.status().message().find("containers c1 and c2 both hold device n1/0000:00:00.0"),
            std::string::npos)
      << r.status();
  EXPECT_NE(r.status().message().find("nothing was moved"), std::string::npos) << r.status();
  EXPECT_TRUE(to.LoadAll()->empty());
}

TEST(StoreMigrationTest, AnEmptySourceMovesNothing) {
  FakeStore from, to;
  absl::StatusOr<MigrationReport> r = MigrateStore(&from, &to, 10);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(DescribeMigration(*r), "moved 0 records () in 0 batches");
}

}  // namespace
}  // namespace iommu
