// The embedded store: one SQLite database file in WAL mode with
// synchronous=FULL, so a commit that returned OK is on disk. The schema is
// versioned (table `meta`, key `schema_version`) and migrated forward step by
// step at open; a database written by a newer release is refused rather than
// misread.
//
// The file holds every node's token-signing key, so it is created 0600
// whatever the umask (SQLite gives -wal and -shm the same mode) and a file
// open to group or others is refused. One broker per file: the file's inode
// is locked (store_file_lock.h), so no other name of it gets in. Every row
// carries a checksum verified on each read, and the whole file is checked
// at open, so damage is refused as DATA_LOSS instead of being served. The
// WAL is checkpointed by a thread of its own and stays bounded
// (wal_checkpointer.h), also after a crash.
//
// Thread-safety: safe; writes are serialized on one connection, reads use a
// second one.
#ifndef SERVER_SQLITE_STORE_H_
#define SERVER_SQLITE_STORE_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "server/store.h"
#include "server/wal_checkpointer.h"

namespace iommu {

// The schema version this build writes.
// 1: objects and requests. 2: a CRC32C column (`sum`) on both.
inline constexpr int kSqliteSchemaVersion = 2;

struct SqliteStoreOptions {
  WalCheckpointOptions checkpoint;
};

// Opens (creating if needed, mode 0600) the database at `path`, checks it and
// migrates it to kSqliteSchemaVersion. Errors:
// - FAILED_PRECONDITION when another broker holds the file (under any name;
//   the message names the holder's pid), when the file, its -wal or its -shm
//   is open to group or others (the message says which, its mode and the
//   chmod that fixes it), or when its schema is newer than this build;
// - DATA_LOSS when it is not a database, fails SQLite's integrity check or
//   holds a row whose checksum does not match (the message names the file
//   and what is wrong);
// - UNAVAILABLE when the file cannot be opened.
absl::StatusOr<std::unique_ptr<Store>> OpenSqliteStore(const std::string& path,
                                                       SqliteStoreOptions options = {});

}  // namespace iommu

#endif  // SERVER_SQLITE_STORE_H_
