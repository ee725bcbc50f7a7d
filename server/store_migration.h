// Moves a broker's whole state from one store to another (e.g. from the
// embedded SQLite file to etcd), for `iommu-store-migrate`. Works on the
// Store interface, so every pair of stores is covered.
//
// The destination must be empty (nothing is merged or overwritten); the
// records are written in batches of at most `batch_records`, then read back
// and compared with the source, so a move that reports success moved
// everything, byte for byte. Remembered answers to past requests are not
// moved: a retry of a request acknowledged before the move is treated as a
// new request.
#ifndef SERVER_STORE_MIGRATION_H_
#define SERVER_STORE_MIGRATION_H_

#include <cstdint>
#include <map>
#include <string>

#include "absl/status/statusor.h"
#include "server/store.h"

namespace iommu {

struct MigrationReport {
  std::map<std::string, int64_t> records_by_kind;
  int64_t records = 0;
  int64_t batches = 0;
};

// FAILED_PRECONDITION when `to` holds records already; DATA_LOSS, before
// anything is written, when `from`'s records break what a broker checks at
// load (model::CheckStoredRecords), and when what `to` holds afterwards
// differs from `from`; the stores' errors otherwise.
absl::StatusOr<MigrationReport> MigrateStore(Store* from, Store* to, int64_t batch_records);

// "moved 42 records (node: 3, tenant: 2, ...) in 1 batch".
std::string DescribeMigration(const MigrationReport& report);

}  // namespace iommu

#endif  // SERVER_STORE_MIGRATION_H_
