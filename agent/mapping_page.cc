#include "agent/mapping_page.h"

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace iommu {
namespace agent {
namespace {

constexpr absl::string_view kPrefix = "v1.";
constexpr size_t kHexDigits = 16;

}  // namespace

std::string MappingPageToken(uint64_t last_iova) {
  return absl::StrFormat("%s%016x", kPrefix, last_iova);
}

absl::StatusOr<std::optional<uint64_t>> ParseMappingPageToken(absl::string_view field,
                                                              absl::string_view token) {
  if (token.empty()) return std::optional<uint64_t>();
  const auto bad = [&] {
    return absl::InvalidArgumentError(absl::StrCat(
        field, ": not a token this agent issued; pass the previous answer's "
               "next_page_token, or nothing for the first page"));
  };
  if (token.size() != kPrefix.size() + kHexDigits || !absl::StartsWith(token, kPrefix)) {
    return bad();
  }
  const absl::string_view hex = token.substr(kPrefix.size());
  for (char c : hex) {
    if (!absl::ascii_isxdigit(c) || absl::ascii_isupper(c)) return bad();
  }
  uint64_t iova = 0;
  if (!absl::SimpleHexAtoi(hex, &iova)) return bad();
  return std::optional<uint64_t>(iova);
}

}  // namespace agent
}  // namespace iommu
