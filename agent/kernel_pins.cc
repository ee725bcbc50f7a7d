#include "agent/kernel_pins.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <optional>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/match.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "common/errno_status.h"

namespace iommu {
namespace agent {
namespace {

// The value of the first line starting with `key` (which ends in its
// separator, "VmLck:" or "nr_foll_pin_acquired "), stripped; nullopt if none.
std::optional<absl::string_view> FindLine(absl::string_view text, absl::string_view key) {
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    if (absl::StartsWith(line, key)) {
      return absl::StripAsciiWhitespace(line.substr(key.size()));
    }
  }
  return std::nullopt;
}

absl::Status Bad(absl::string_view file, absl::string_view field, absl::string_view rule) {
  return absl::InvalidArgumentError(absl::StrCat(file, ": ", field, " ", rule));
}

// "<n> kB" -> n * 1024 bytes.
absl::StatusOr<uint64_t> KilobytesField(absl::string_view text, absl::string_view file,
                                        absl::string_view field) {
  std::optional<absl::string_view> v = FindLine(text, absl::StrCat(field, ":"));
  if (!v.has_value()) return Bad(file, field, "is missing");
  uint64_t kb = 0;
  if (!absl::ConsumeSuffix(&*v, "kB") ||
      !absl::SimpleAtoi(absl::StripAsciiWhitespace(*v), &kb)) {
    return Bad(file, field, absl::StrCat("must be \"<number> kB\", got \"", *v, "\""));
  }
  if (kb > UINT64_MAX / 1024) return Bad(file, field, "overflows 64 bits in bytes");
  return kb * 1024;
}

absl::StatusOr<uint64_t> CounterField(absl::string_view text, absl::string_view file,
                                      absl::string_view field) {
  std::optional<absl::string_view> v = FindLine(text, absl::StrCat(field, " "));
  if (!v.has_value()) return Bad(file, field, "is missing");
  uint64_t n = 0;
  if (!absl::SimpleAtoi(*v, &n)) {
    return Bad(file, field, absl::StrCat("must be a number, got \"", *v, "\""));
  }
  return n;
}

absl::StatusOr<std::string> ReadWholeFile(const std::string& path) {
  int fd;
  do {
    fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  } while (fd < 0 && errno == EINTR);
  if (fd < 0) return ErrnoStatus(errno, absl::StrCat("open ", path));
  std::string out;
  char buf[4096];
  for (;;) {
    const ssize_t n = read(fd, buf, sizeof(buf));
    if (n < 0) {
      if (errno == EINTR) continue;
      const int err = errno;
      close(fd);
      return ErrnoStatus(err, absl::StrCat("read ", path));
    }
    if (n == 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  close(fd);
  return out;
}

}  // namespace

absl::StatusOr<ProcessPins> ParseProcStatusPins(absl::string_view text, absl::string_view file) {
  ProcessPins out;
  absl::StatusOr<uint64_t> locked = KilobytesField(text, file, "VmLck");
  if (!locked.ok()) return locked.status();
  absl::StatusOr<uint64_t> pinned = KilobytesField(text, file, "VmPin");
  if (!pinned.ok()) return pinned.status();
  out.locked_bytes = *locked;
  out.pinned_bytes = *pinned;
  return out;
}

absl::StatusOr<uint64_t> ParseVmstatFollPinOutstanding(absl::string_view text,
                                                      absl::string_view file) {
  absl::StatusOr<uint64_t> acquired = CounterField(text, file, "nr_foll_pin_acquired");
  if (!acquired.ok()) return acquired.status();
  absl::StatusOr<uint64_t> released = CounterField(text, file, "nr_foll_pin_released");
  if (!released.ok()) return released.status();
  if (*released > *acquired) {
    return Bad(file, "nr_foll_pin_released",
               absl::StrCat(*released, " is more than nr_foll_pin_acquired ", *acquired));
  }
  return *acquired - *released;
}

absl::StatusOr<ProcessPins> ReadProcessPins(const std::string& path) {
  absl::StatusOr<std::string> text = ReadWholeFile(path);
  if (!text.ok()) return text.status();
  return ParseProcStatusPins(*text, path);
}

absl::StatusOr<uint64_t> ReadFollPinOutstanding(const std::string& path) {
  absl::StatusOr<std::string> text = ReadWholeFile(path);
  if (!text.ok()) return text.status();
  return ParseVmstatFollPinOutstanding(*text, path);
}

}  // namespace agent
}  // namespace iommu
