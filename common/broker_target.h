// The gRPC target for a list of broker replicas, as every client of the
// broker takes it (--broker, $IOMMU_BROKER): "host:port" or a comma-separated
// "host:port,host:port,...", like etcdctl's --endpoints.
//
// Only the leading replica listens (standbys wait without serving), so the
// channel's pick_first policy, which tries the addresses in order and moves
// on when one refuses, finds the leader, and finds the next one after a
// failover. One "host:port" is passed through: gRPC's DNS resolver then
// uses every address record of the name and re-resolves after a failure.
// A list is resolved once, here, into one ipv4: or ipv6: target.
#ifndef COMMON_BROKER_TARGET_H_
#define COMMON_BROKER_TARGET_H_

#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace iommu {

// The numeric addresses of a host name (getaddrinfo; I/O).
using HostResolver =
    std::function<absl::StatusOr<std::vector<std::string>>(const std::string& host)>;
HostResolver SystemHostResolver();

// INVALID_ARGUMENT naming `flag` for an entry that is not host:port, or a
// list mixing IPv4 and IPv6; UNAVAILABLE for a name that does not resolve.
absl::StatusOr<std::string> BrokerTarget(absl::string_view flag, absl::string_view list,
                                         const HostResolver& resolve = SystemHostResolver());

}  // namespace iommu

#endif  // COMMON_BROKER_TARGET_H_
