// What both SQLite-backed stores (sqlite_store.h, kv/kv_sqlite_file.h) need
// from SQLite's C API: errors as statuses and columns as strings.
//
// Thread-compatible: each call touches only the connection or statement given.
#ifndef SERVER_SQLITE_UTIL_H_
#define SERVER_SQLITE_UTIL_H_

#include <string>

#include <sqlite3.h>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace iommu {

// The connection's last error as "<prefix>: <what>: <sqlite message>
// (sqlite <code>)". Corruption is DATA_LOSS, a full disk RESOURCE_EXHAUSTED,
// anything else (busy, locked, I/O) UNAVAILABLE: never FAILED_PRECONDITION,
// so a read that failed cannot look like an answer about the state.
absl::Status SqliteError(sqlite3* db, absl::string_view prefix, absl::string_view what);

// Column `col` of the current row; empty for NULL.
std::string SqliteColumnText(sqlite3_stmt* st, int col);
std::string SqliteColumnBlob(sqlite3_stmt* st, int col);

}  // namespace iommu

#endif  // SERVER_SQLITE_UTIL_H_
