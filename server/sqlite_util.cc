#include "server/sqlite_util.h"

#include "absl/strings/str_cat.h"

namespace iommu {

absl::Status SqliteError(sqlite3* db, absl::string_view prefix, absl::string_view what) {
  const int code = sqlite3_extended_errcode(db);
  const std::string msg =
      absl::StrCat(prefix, ": ", what, ": ", sqlite3_errmsg(db), " (sqlite ", code, ")");
  switch (code & 0xff) {
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB:
      return absl::DataLossError(msg);
    case SQLITE_FULL:
      return absl::ResourceExhaustedError(msg);
    default:
      return absl::UnavailableError(msg);
  }
}

std::string SqliteColumnText(sqlite3_stmt* st, int col) {
  const unsigned char* p = sqlite3_column_text(st, col);
  return p == nullptr ? std::string()
                      : std::string(reinterpret_cast<const char*>(p), sqlite3_column_bytes(st, col));
}

std::string SqliteColumnBlob(sqlite3_stmt* st, int col) {
  const void* p = sqlite3_column_blob(st, col);
  return p == nullptr ? std::string()
                      : std::string(static_cast<const char*>(p), sqlite3_column_bytes(st, col));
}

}  // namespace iommu
