#include "server/store_spec.h"

#include "gtest/gtest.h"

namespace iommu {
namespace {

TEST(StoreSpecTest, EmptyStoreMeansTheSqliteFileOfDb) {
  absl::StatusOr<StoreSpec> s = ParseStoreSpec("", "/var/lib/b.db");
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->kind, StoreSpec::Kind::kSqlite);
  EXPECT_EQ(s->path, "/var/lib/b.db");
  EXPECT_EQ(DescribeStoreSpec(*s), "sqlite:/var/lib/b.db");
}

TEST(StoreSpecTest, SchemesNameTheStore) {
  absl::StatusOr<StoreSpec> s = ParseStoreSpec("sqlite-kv:/data/kv.db", "/ignored");
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->kind, StoreSpec::Kind::kSqliteKv);
  EXPECT_EQ(s->path, "/data/kv.db");

  s = ParseStoreSpec("sqlite:rel.db", "/ignored");
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->kind, StoreSpec::Kind::kSqlite);
  EXPECT_EQ(s->path, "rel.db");

  s = ParseStoreSpec("etcd://10.0.0.1:2379,etcd://[::1]:2379,etcd-2.example:2379", "");
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->kind, StoreSpec::Kind::kEtcd);
  EXPECT_EQ(s->endpoints, "10.0.0.1:2379,[::1]:2379,etcd-2.example:2379");
  EXPECT_EQ(DescribeStoreSpec(*s), "etcd://10.0.0.1:2379,[::1]:2379,etcd-2.example:2379");
}

TEST(StoreSpecTest, BadSpecsAreRefusedNamingTheFlagAndTheRule) {
  for (const char* bad : {"mysql://x:1", "sqlite:", "sqlite-kv:", "etcd://", "etcd://host",
                          "etcd://host:0", "etcd://host:70000", "etcd://a:1,,b:2",
                          "etcd://user@h:1", "/just/a/path"}) {
    absl::StatusOr<StoreSpec> s = ParseStoreSpec(bad, "/db");
    EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_NE(s.status().message().find("--store"), std::string::npos) << s.status();
    EXPECT_NE(s.status().message().find("expected sqlite:PATH"), std::string::npos) << s.status();
  }
  EXPECT_EQ(ParseStoreSpec("", "").status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace iommu
