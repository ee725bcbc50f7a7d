// One structured log line per event on stderr, key=value:
//   ts=2026-11-25T08:35:01.123Z level=info src=broker event=tenant_created tenant=acme
// Thread-safe: each line is written with one call, so lines never interleave.
#ifndef COMMON_LOG_H_
#define COMMON_LOG_H_

#include "absl/strings/string_view.h"

namespace iommu {

enum class LogLevel { kDebug = 0, kInfo = 1, kWarning = 2, kError = 3 };

// Lines below `level` are dropped. Default: kInfo.
void SetLogLevel(LogLevel level);
// Parses "debug", "info", "warning", "error"; false if unknown.
bool ParseLogLevel(absl::string_view text, LogLevel* level);

// `fields` is the rest of the line, already key=value formatted; values with
// spaces must be quoted by the caller.
void LogLine(LogLevel level, absl::string_view source, absl::string_view fields);

}  // namespace iommu

#endif  // COMMON_LOG_H_
