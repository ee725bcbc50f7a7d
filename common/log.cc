#include "common/log.h"

#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>

#include "absl/strings/escaping.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/message_text.h"

namespace iommu {
namespace {

std::atomic<int> g_min_level{static_cast<int>(LogLevel::kInfo)};
std::atomic<const char*> g_source{"iommu"};

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

std::string Prefix(LogLevel level) {
  return absl::StrCat("ts=",
                      absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ", absl::Now(), absl::UTCTimeZone()),
                      " level=", LevelName(level), " src=", g_source.load(), " ");
}

bool Enabled(LogLevel level) {
  return static_cast<int>(level) >= g_min_level.load(std::memory_order_relaxed);
}

// systemd's journal takes "<N>" at the start of a line on a service's
// stdout/stderr as its syslog priority (sd-daemon(3)), so `journalctl -p err`
// finds errors. Elsewhere the prefix would be noise: it is added only when
// stderr is the journal stream $JOURNAL_STREAM names ("<dev>:<inode>").
bool StderrIsJournal() {
  static const bool journal = [] {
    const char* stream = std::getenv("JOURNAL_STREAM");
    struct stat st;
    if (stream == nullptr || fstat(STDERR_FILENO, &st) != 0) return false;
    return absl::StrCat(st.st_dev, ":", st.st_ino) == stream;
  }();
  return journal;
}

// One write(2) per line: concurrent lines do not interleave.
void WriteLine(LogLevel level, std::string line) {
  if (StderrIsJournal()) line.insert(0, SyslogPriorityPrefix(level));
  line.push_back('\n');
  const char* p = line.data();
  size_t left = line.size();
  while (left > 0) {
    ssize_t n = write(STDERR_FILENO, p, left);
    if (n <= 0) return;
    p += n;
    left -= static_cast<size_t>(n);
  }
}

}  // namespace

const char* SyslogPriorityPrefix(LogLevel level) {
  switch (level) {
    case LogLevel::kDebug: return "<7>";
    case LogLevel::kInfo: return "<6>";
    case LogLevel::kWarning: return "<4>";
    case LogLevel::kError: return "<3>";
  }
  return "<6>";
}

absl::StatusOr<LogLevel> ParseLogLevel(absl::string_view name) {
  for (LogLevel l : {LogLevel::kDebug, LogLevel::kInfo, LogLevel::kWarning, LogLevel::kError}) {
    if (name == LevelName(l)) return l;
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "log_level: must be debug, info, warning or error, got \"", absl::CEscape(name), "\""));
}

void SetMinLogLevel(LogLevel level) {
  g_min_level.store(static_cast<int>(level), std::memory_order_relaxed);
}

void SetLogSource(const char* source) { g_source.store(source); }

std::string FormatLogLine(LogLevel level, absl::string_view event,
                          const std::vector<LogField>& fields) {
  std::string line = absl::StrCat(Prefix(level), "event=");
  AppendValue(&line, event);
  for (const LogField& f : fields) {
    absl::StrAppend(&line, " ", f.key, "=");
    // A value may repeat what a caller sent: each is bounded, so a refusal's
    // line is too. Only a long one is copied to cut it.
    if (f.value.size() > kMaxMessageBytes) {
      AppendValue(&line, ElideMiddle(f.value));
    } else {
      AppendValue(&line, f.value);
    }
  }
  return line;
}

void LogEvent(LogLevel level, absl::string_view event, const std::vector<LogField>& fields) {
  if (!Enabled(level)) return;
  WriteLine(level, FormatLogLine(level, event, fields));
}

}  // namespace iommu
