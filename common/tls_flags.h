// The transport flags both daemons share: --tls-cert, --tls-key, --tls-ca,
// --tls-reload-seconds, --trust-domain and --insecure. Link this library to
// get them.
#ifndef COMMON_TLS_FLAGS_H_
#define COMMON_TLS_FLAGS_H_

#include "absl/status/statusor.h"
#include "common/tls.h"

namespace iommu {

// The flags as a TransportConfig, validated (files readable, key matches
// certificate, not both --insecure and TLS files, one of them given,
// --tls-reload-seconds within 1..3600).
// With mTLS, this daemon's certificate must name `self` (e.g. the broker, or
// the agent of this node): INVALID_ARGUMENT otherwise.
absl::StatusOr<TransportConfig> TransportConfigFromFlags(const Identity& self);

}  // namespace iommu

#endif  // COMMON_TLS_FLAGS_H_
