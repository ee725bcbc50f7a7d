#include "server/store_migration.h"

#include "gtest/gtest.h"
#include "server/fake_store.h"

namespace iommu {
namespace {

void Put(Store* s, std::vector<StoreRecord> records) {
  WriteBatch b;
  b.puts = std::move(records);
  ASSERT_TRUE(s->Commit(b).ok());
}

TEST(StoreMigrationTest, MovesEveryRecordAndSaysWhat) {
  FakeStore from, to;
  Put(&from, {{"tenant", "acme", "t1"}, {"tenant", "beta", "t2"}, {"node", "n1", std::string("\0x", 2)},
              {"container", "c1", "c"}, {"window", "w1", "w"}});
  absl::StatusOr<MigrationReport> r = MigrateStore(&from, &to, 2);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->records, 5);
  EXPECT_EQ(r->batches, 3);
  EXPECT_EQ(DescribeMigration(*r),
            "moved 5 records (container: 1, node: 1, tenant: 2, window: 1) in 3 batches");
  EXPECT_EQ(to.LoadAll()->size(), 5u);
  EXPECT_EQ((*to.LoadAll())[1].value, std::string("\0x", 2));
}

TEST(StoreMigrationTest, RefusesANonEmptyDestinationAndChangesNothing) {
  FakeStore from, to;
  Put(&from, {{"tenant", "acme", "t1"}});
  Put(&to, {{"tenant", "other", "x"}});
  absl::StatusOr<MigrationReport> r = MigrateStore(&from, &to, 10);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(r.status().message().find("other"), std::string::npos) << r.status();
  EXPECT_EQ(to.LoadAll()->size(), 1u);
  EXPECT_EQ(MigrateStore(&from, &to, 0).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(StoreMigrationTest, AFailedWriteIsReported) {
  FakeStore from, to;
  Put(&from, {{"tenant", "a", "1"}, {"tenant", "b", "2"}});
  to.set_commit_error_after(1, absl::UnavailableError("etcd: no leader"));
  absl::StatusOr<MigrationReport> r = MigrateStore(&from, &to, 1);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kUnavailable);
}

TEST(StoreMigrationTest, AnEmptySourceMovesNothing) {
  FakeStore from, to;
  absl::StatusOr<MigrationReport> r = MigrateStore(&from, &to, 10);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(DescribeMigration(*r), "moved 0 records () in 0 batches");
}

}  // namespace
}  // namespace iommu
