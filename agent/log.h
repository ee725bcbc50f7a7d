// Structured logging for the node agent: one event per line on stderr, as
// key=value pairs, e.g.
//   ts=2024-05-01T12:00:00.123Z level=info src=agent event=registered node=n1
// (the same shape as common/log.h's lines, which the broker writes). Unlike
// common/log.h it takes fields as pairs and quotes values itself.
// Values with spaces, quotes or '=' are quoted and escaped so that lines stay
// machine-parseable.
//
// Thread-safe: the level is an atomic and each line is written with a single
// fwrite, so lines from different threads never interleave.
#ifndef AGENT_LOG_H_
#define AGENT_LOG_H_

#include <string>
#include <type_traits>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace iommu {
namespace agent {

enum class LogLevel { kDebug = 0, kInfo = 1, kWarning = 2, kError = 3 };

// "debug", "info", "warning" or "error". INVALID_ARGUMENT otherwise.
absl::StatusOr<LogLevel> ParseLogLevel(absl::string_view name);

// Events below `level` are dropped. Default: kInfo.
void SetMinLogLevel(LogLevel level);

// One key=value pair. Accepts anything absl::StrCat accepts, and bool.
struct LogField {
  LogField(absl::string_view k, const absl::AlphaNum& v)
      : key(k), value(v.Piece()) {}
  // A template so that only a real bool picks it: integers would otherwise
  // prefer the standard conversion to bool over AlphaNum.
  template <typename T,
            typename = std::enable_if_t<std::is_same_v<T, bool>>>
  LogField(absl::string_view k, T v) : key(k), value(v ? "true" : "false") {}
  absl::string_view key;
  std::string value;
};

// Formats one line without writing it (for tests): no trailing newline.
std::string FormatLogLine(LogLevel level, absl::string_view event,
                          const std::vector<LogField>& fields);

// Writes one line to stderr when `level` is at or above the minimum.
void LogEvent(LogLevel level, absl::string_view event,
              const std::vector<LogField>& fields = {});

}  // namespace agent
}  // namespace iommu

#endif  // AGENT_LOG_H_
