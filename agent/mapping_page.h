// Page tokens for the agent's lists of mappings (the launcher socket's
// ListMappings, the agent RPC GetContainer): a token names the IOVA of the
// last mapping of the previous page, and the next page starts after it.
// Mappings are keyed by IOVA inside one container, so the order is total and
// a token stays meaningful while mappings come and go.
//
// The token is opaque to clients ("v1." + 16 lowercase hex digits) but
// checked: anything else is INVALID_ARGUMENT naming the field.
//
// Pure functions; thread-safe.
#ifndef AGENT_MAPPING_PAGE_H_
#define AGENT_MAPPING_PAGE_H_

#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace iommu {
namespace agent {

// The launcher socket's ListMappings page size: the default (for 0) and the
// largest accepted. 1000 worst-case entries fit one 65536-byte packet (see
// proto/launcher.proto, ListMappings.page_size).
inline constexpr uint32_t kDefaultLauncherMappingPage = 1000;
inline constexpr uint32_t kMaxLauncherMappingPage = 1000;

// The token resuming after the mapping at `last_iova`.
std::string MappingPageToken(uint64_t last_iova);

// The IOVA a token resumes after: nullopt for "" (the first page).
// INVALID_ARGUMENT "<field>: ..." for a token MappingPageToken did not make.
absl::StatusOr<std::optional<uint64_t>> ParseMappingPageToken(absl::string_view field,
                                                              absl::string_view token);

}  // namespace agent
}  // namespace iommu

#endif  // AGENT_MAPPING_PAGE_H_
