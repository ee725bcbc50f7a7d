// The embedded store: one SQLite database file in WAL mode with
// synchronous=FULL, so a commit that returned OK is on disk. The schema is
// versioned (table `meta`, key `schema_version`) and migrated forward step by
// step at open; a database written by a newer release is refused rather than
// misread.
//
// Thread-safety: safe; calls are serialized on one connection.
#ifndef SERVER_SQLITE_STORE_H_
#define SERVER_SQLITE_STORE_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "server/store.h"

namespace iommu {

// The schema version this build writes.
inline constexpr int kSqliteSchemaVersion = 1;

// Opens (creating if needed) the database at `path` and migrates it to
// kSqliteSchemaVersion. Errors: UNAVAILABLE when the file cannot be opened or
// is locked by another broker, FAILED_PRECONDITION when its schema is newer
// than this build, DATA_LOSS when it is not a valid database.
absl::StatusOr<std::unique_ptr<Store>> OpenSqliteStore(const std::string& path);

}  // namespace iommu

#endif  // SERVER_SQLITE_STORE_H_
