// Byte counts on command lines: the one parser iommuctl and iommu-launcher
// share, so that "1Gi" means the same in both.
//
// Accepted forms (Kubernetes resource quantities, whole bytes only):
//   plain bytes    4096
//   binary units   4Ki 2Mi 1Gi 1Ti 1Pi 1Ei    (powers of 1024)
//   decimal units  4k  2M  1G  1T  1P  1E     (powers of 1000)
//   hex bytes      0x1000                     (no unit: addresses, offsets)
// Units are case-sensitive, as in Kubernetes. Refused, with a message naming
// the two readings to choose from: "1GB", "1GiB", "1K", "1g", "1m" (milli in
// Kubernetes) and every other suffix; fractions ("1.5Gi": write 1536Mi);
// signs, spaces and anything past 2^64-1.
//
// Pure and thread-safe.
#ifndef COMMON_BYTE_SIZE_H_
#define COMMON_BYTE_SIZE_H_

#include <cstdint>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace iommu {

// One line for help text listing the accepted forms.
inline constexpr char kByteSizeForms[] =
    "bytes (4096), binary units Ki Mi Gi Ti (1Gi = 2^30), decimal units k M G T "
    "(1G = 10^9), or 0x hex bytes";

// Parses `text` as a byte count. On success returns it. On failure returns
// INVALID_ARGUMENT whose message starts with `field` and ": ", quotes `text`
// and says what to write instead, e.g.
//   --size: "1GB" is ambiguous: write 1Gi (2^30 bytes) or 1G (10^9 bytes)
absl::StatusOr<uint64_t> ParseByteSize(absl::string_view field, absl::string_view text);

}  // namespace iommu

#endif  // COMMON_BYTE_SIZE_H_
