// Validation of request fields shared by the broker, the agent and the CLI.
// Pure functions, no I/O, thread-safe. Every error is INVALID_ARGUMENT with a
// message that starts with the field name and states the rule, e.g.
// "size: must be a multiple of the IOMMU page size 0x1000".
#ifndef COMMON_VALIDATION_H_
#define COMMON_VALIDATION_H_

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace iommu {

// Largest page_size a list RPC accepts, and the default when 0 is passed.
inline constexpr uint32_t kMaxPageSize = 1000;
inline constexpr uint32_t kDefaultPageSize = 100;

// Tenant ids: 1-63 characters, [a-z0-9-], starting with a letter.
absl::Status ValidateTenantId(absl::string_view field, absl::string_view value);

// Node names: 1-63 characters, [a-z0-9.-], starting with a letter or digit.
absl::Status ValidateNodeName(absl::string_view field, absl::string_view value);

// Request ids: empty (no idempotency), or 1-128 characters from
// [A-Za-z0-9._:-].
absl::Status ValidateRequestId(absl::string_view field, absl::string_view value);

// PCI addresses in sysfs form: "DDDD:BB:DD.F", lowercase hex, device <= 0x1f,
// function <= 7.
absl::Status ValidatePciAddress(absl::string_view field, absl::string_view value);

// Broker-chosen ids: `prefix` ("c-" or "w-") followed by 16 lowercase hex
// digits.
absl::Status ValidateObjectId(absl::string_view field, absl::string_view value,
                              absl::string_view prefix);

// Page tokens: at most 256 characters (they are opaque ids of the last item).
absl::Status ValidatePageToken(absl::string_view field, absl::string_view token);

// A tenant quota: pinned bytes > 0, and both pinned and window bytes
// multiples of 4096 (a host page). Fields are named "quota.pinned_bytes" and
// "quota.window_bytes".
absl::Status ValidateQuota(uint64_t pinned_bytes, uint64_t window_bytes);

// Returns the list page size to use: `requested`, or the default for 0.
// Error when above kMaxPageSize.
absl::StatusOr<uint32_t> EffectivePageSize(absl::string_view field,
                                           uint32_t requested);

// True when v is a power of two (0 is not).
constexpr bool IsPowerOfTwo(uint64_t v) { return v != 0 && (v & (v - 1)) == 0; }

// The smallest page size in a page-size bitmap (bit n = 2^n bytes), or 0 for
// an empty bitmap.
uint64_t MinPageSize(uint64_t page_size_bitmap);

// Checks an IOVA window request against the container's IOMMU page size and
// returns the alignment to use (0 becomes page_size):
//  * size > 0 and a multiple of page_size;
//  * alignment 0, or a power of two >= page_size;
//  * with fixed_base: base a multiple of the alignment and base + size - 1
//    does not overflow 64 bits.
absl::StatusOr<uint64_t> ValidateWindowRequest(uint64_t size, uint64_t alignment,
                                               bool fixed_base, uint64_t base,
                                               uint64_t page_size);

// Formats v as "0x..." lowercase hex, for error messages and tables.
std::string Hex(uint64_t v);

}  // namespace iommu

#endif  // COMMON_VALIDATION_H_
