// Structured logging for both daemons: one event per line on stderr, as
// key=value pairs, e.g.
//   ts=2026-11-25T08:35:01.123Z level=info src=agent event=registered node=n1
// Under systemd (stderr is $JOURNAL_STREAM) each line starts with its syslog
// priority, "<6>ts=...", which the journal strips and records.
// Values with spaces, quotes, '=' or non-printing bytes are quoted and
// escaped so that lines stay machine-parseable, and each is cut to
// kMaxMessageBytes (common/message_text.h). Never log secrets (tokens,
// keys): callers pass ids only.
//
// Thread-safe: the level and source are atomics set once at start, and each
// line is written with a single write, so lines from different threads never
// interleave.
#ifndef COMMON_LOG_H_
#define COMMON_LOG_H_

#include <string>
#include <type_traits>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace iommu {

enum class LogLevel { kDebug = 0, kInfo = 1, kWarning = 2, kError = 3 };

// "debug", "info", "warning" or "error"; INVALID_ARGUMENT naming log_level
// otherwise.
absl::StatusOr<LogLevel> ParseLogLevel(absl::string_view name);

// Events below `level` are dropped. Default: kInfo.
void SetMinLogLevel(LogLevel level);

// The src= of every line ("broker", "agent"). Must be a string literal or
// otherwise outlive the process. Default: "iommu".
void SetLogSource(const char* source);

// One key=value pair. Accepts anything absl::StrCat accepts, and bool.
struct LogField {
  LogField(absl::string_view k, const absl::AlphaNum& v) : key(k), value(v.Piece()) {}
  // A template so that only a real bool picks it: integers would otherwise
  // prefer the standard conversion to bool over AlphaNum.
  template <typename T, typename = std::enable_if_t<std::is_same_v<T, bool>>>
  LogField(absl::string_view k, T v) : key(k), value(v ? "true" : "false") {}

  absl::string_view key;
  std::string value;
};

// The syslog priority prefix ("<3>" for errors ... "<7>" for debug) put
// before each line when stderr is systemd's journal ($JOURNAL_STREAM).
const char* SyslogPriorityPrefix(LogLevel level);

// Formats one line without writing it (for tests): no trailing newline.
std::string FormatLogLine(LogLevel level, absl::string_view event,
                          const std::vector<LogField>& fields);

// Writes one line to stderr when `level` is at or above the minimum.
void LogEvent(LogLevel level, absl::string_view event, const std::vector<LogField>& fields = {});

}  // namespace iommu

#endif  // COMMON_LOG_H_
