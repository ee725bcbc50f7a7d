// Which store the broker runs on, from its --store flag (and the older
// --db, which names the default store's file):
//
//   sqlite:PATH            the embedded record store in one SQLite file (the
//                          default, PATH from --db when --store is empty)
//   sqlite-kv:PATH         the versioned, transactional store (etcd's data
//                          model: revisions, txns, watches, leases) in one
//                          SQLite file
//   etcd://HOST:PORT,...   an etcd v3 cluster, like etcdctl's --endpoints
//                          ("etcd://" may repeat before each endpoint)
//
// Pure: parsing only.
#ifndef SERVER_STORE_SPEC_H_
#define SERVER_STORE_SPEC_H_

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace iommu {

struct StoreSpec {
  enum class Kind { kSqlite, kSqliteKv, kEtcd };
  Kind kind = Kind::kSqlite;
  std::string path;       // kSqlite, kSqliteKv.
  std::string endpoints;  // kEtcd: "host:port,host:port".
};

// INVALID_ARGUMENT naming --store and the rule for anything else.
absl::StatusOr<StoreSpec> ParseStoreSpec(absl::string_view store_flag, absl::string_view db_flag);

// "sqlite:/var/lib/iommu-broker/broker.db", "etcd://a:2379,b:2379": for logs.
std::string DescribeStoreSpec(const StoreSpec& spec);

}  // namespace iommu

#endif  // SERVER_STORE_SPEC_H_
