#include "agent/log.h"

#include <atomic>
#include <cstdio>

#include "absl/strings/escaping.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace iommu {
namespace agent {
namespace {

std::atomic<int> min_level{static_cast<int>(LogLevel::kInfo)};

absl::string_view LevelName(LogLevel level) {
  switch (level) {
    case LogLevel::kDebug:
      return "debug";
    case LogLevel::kInfo:
      return "info";
    case LogLevel::kWarning:
      return "warning";
    case LogLevel::kError:
      return "error";
  }
  return "unknown";
}

void AppendValue(std::string* out, absl::string_view v) {
  bool plain = !v.empty();
  for (char c : v) {
    if (c == ' ' || c == '"' || c == '=' || c == '\\' || c < 0x21 || c > 0x7e) {
      plain = false;
      break;
    }
  }
  if (plain) {
    out->append(v.data(), v.size());
  } else {
    absl::StrAppend(out, "\"", absl::CEscape(v), "\"");
  }
}

}  // namespace

absl::StatusOr<LogLevel> ParseLogLevel(absl::string_view name) {
  for (LogLevel l : {LogLevel::kDebug, LogLevel::kInfo, LogLevel::kWarning,
                     LogLevel::kError}) {
    if (name == LevelName(l)) return l;
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "log_level: must be debug, info, warning or error, got \"",
      absl::CEscape(name), "\""));
}

void SetMinLogLevel(LogLevel level) {
  min_level.store(static_cast<int>(level), std::memory_order_relaxed);
}

std::string FormatLogLine(LogLevel level, absl::string_view event,
                          const std::vector<LogField>& fields) {
  std::string line = absl::StrCat(
      "ts=", absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ", absl::Now(), absl::UTCTimeZone()),
      " level=", LevelName(level), " src=agent event=");
  AppendValue(&line, event);
  for (const LogField& f : fields) {
    absl::StrAppend(&line, " ", f.key, "=");
    AppendValue(&line, f.value);
  }
  return line;
}

void LogEvent(LogLevel level, absl::string_view event,
              const std::vector<LogField>& fields) {
  if (static_cast<int>(level) < min_level.load(std::memory_order_relaxed)) return;
  std::string line = FormatLogLine(level, event, fields);
  line.push_back('\n');
  std::fwrite(line.data(), 1, line.size(), stderr);
}

}  // namespace agent
}  // namespace iommu
