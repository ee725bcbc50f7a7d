#include "agent/fd_name.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace iommu {
namespace agent {
namespace {

bool IsNameChar(char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
         (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-';
}

}  // namespace

absl::Status ValidateFdName(absl::string_view name) {
  if (name.empty()) {
    return absl::InvalidArgumentError("fd name: must not be empty");
  }
  if (name.size() > kMaxFdNameLength) {
    return absl::InvalidArgumentError(
        absl::StrCat("fd name: ", name.size(), " characters exceeds the limit of ",
                     kMaxFdNameLength));
  }
  for (size_t i = 0; i < name.size(); ++i) {
    if (!IsNameChar(name[i])) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "fd name: character 0x%02x at position %d is not one of [A-Za-z0-9._-]",
          static_cast<unsigned char>(name[i]), i));
    }
  }
  return absl::OkStatus();
}

}  // namespace agent
}  // namespace iommu
