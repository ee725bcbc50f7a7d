#include "agent/sim_devices.h"

#include <cerrno>
#include <cstdio>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/errno_status.h"
#include "common/status_macros.h"
#include "common/validation.h"

namespace iommu {
namespace agent {
namespace {

absl::Status BadSpec(absl::string_view spec, absl::string_view rule) {
  return absl::InvalidArgumentError(
      absl::StrCat("sim device \"", absl::CEscape(spec), "\": ", rule,
                   " (expected ADDRESS=VENDOR:DEVICE@GROUP[!DRIVER], e.g. "
                   "0000:00:04.0=1234:11e8@5)"));
}

bool ParseHex16(absl::string_view s, uint32_t* out) {
  if (s.empty() || s.size() > 4) return false;
  for (char c : s) {
    if (!absl::ascii_isxdigit(c)) return false;
  }
  return absl::SimpleHexAtoi(s, out);
}

absl::StatusOr<SimDeviceSpec> ParseOneSpec(absl::string_view raw) {
  const absl::string_view spec = absl::StripAsciiWhitespace(raw);
  SimDeviceSpec out;
  const size_t eq = spec.find('=');
  if (eq == absl::string_view::npos) return BadSpec(spec, "missing '='");
  out.address = std::string(spec.substr(0, eq));
  if (absl::Status s = ValidatePciAddress("address", out.address); !s.ok()) {
    return BadSpec(spec, s.message());
  }
  absl::string_view rest = spec.substr(eq + 1);
  const size_t at = rest.find('@');
  if (at == absl::string_view::npos) return BadSpec(spec, "missing '@GROUP'");
  const absl::string_view ids = rest.substr(0, at);
  absl::string_view group = rest.substr(at + 1);
  const size_t bang = group.find('!');
  if (bang != absl::string_view::npos) {
    out.host_driver = std::string(group.substr(bang + 1));
    group = group.substr(0, bang);
    if (out.host_driver.empty()) {
      return BadSpec(spec, "'!' must be followed by the host driver's name");
    }
    if (out.host_driver == kVfioPci) {
      return BadSpec(spec, "'!' marks a host driver; vfio-pci is the default");
    }
  }
  const size_t colon = ids.find(':');
  if (colon == absl::string_view::npos || !ParseHex16(ids.substr(0, colon), &out.vendor_id) ||
      !ParseHex16(ids.substr(colon + 1), &out.device_id)) {
    return BadSpec(spec, "VENDOR:DEVICE must be two hex ids of 1-4 digits");
  }
  for (char c : group) {
    if (!absl::ascii_isdigit(c)) {
      return BadSpec(spec, "GROUP must be a decimal number");
    }
  }
  if (group.empty() || !absl::SimpleAtoi(group, &out.iommu_group)) {
    return BadSpec(spec, "GROUP must be a decimal number");
  }
  return out;
}

}  // namespace

absl::StatusOr<std::vector<SimDeviceSpec>> ParseSimDevices(absl::string_view specs) {
  std::vector<SimDeviceSpec> out;
  if (absl::StripAsciiWhitespace(specs).empty()) return out;
  for (absl::string_view spec : absl::StrSplit(specs, ',')) {
    ASSIGN_OR_RETURN(SimDeviceSpec parsed, ParseOneSpec(spec));
    out.push_back(std::move(parsed));
  }
  return out;
}

absl::StatusOr<std::vector<SimDeviceSpec>> ParseSimConfig(absl::string_view text) {
  std::vector<SimDeviceSpec> out;
  int line_number = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    ++line_number;
    const size_t hash = line.find('#');
    if (hash != absl::string_view::npos) line = line.substr(0, hash);
    line = absl::StripAsciiWhitespace(line);
    if (line.empty()) continue;
    absl::StatusOr<SimDeviceSpec> parsed = ParseOneSpec(line);
    if (!parsed.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("line ", line_number, ": ", parsed.status().message()));
    }
    out.push_back(*std::move(parsed));
  }
  return out;
}

absl::StatusOr<std::vector<SimDeviceSpec>> ReadSimConfigFile(const std::string& path) {
  std::FILE* f = std::fopen(path.c_str(), "re");
  if (f == nullptr) return ErrnoStatus(errno, absl::StrCat("open sim config ", path));
  std::string text;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof(buf), f)) > 0) text.append(buf, n);
  const bool failed = std::ferror(f) != 0;
  const int read_errno = errno;
  std::fclose(f);
  if (failed) return ErrnoStatus(read_errno, absl::StrCat("read sim config ", path));
  absl::StatusOr<std::vector<SimDeviceSpec>> parsed = ParseSimConfig(text);
  if (!parsed.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": ", parsed.status().message()));
  }
  return parsed;
}

}  // namespace agent
}  // namespace iommu
