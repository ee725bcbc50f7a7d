// gRPC's reconnect settings for a channel, set together.
//
// GRPC_ARG_MIN_RECONNECT_BACKOFF_MS is, despite its name, gRPC's minimum
// connect timeout: the least time one connection attempt (TCP connect and
// the HTTP/2 handshake) is given before it is cut off. Set as low as a
// backoff (100 ms), a loaded host cuts attempt after attempt off
// mid-handshake ("tcp handshaker shutdown") and a channel stays down for
// many seconds after its server is back, e.g. after a broker failover.
// Left at gRPC's default (20 s), one attempt at a paused server holds the
// channel for 20 s. SetReconnectBackoff keeps it at kMinConnectTimeout.
#ifndef COMMON_RECONNECT_H_
#define COMMON_RECONNECT_H_

#include <grpcpp/support/channel_arguments.h>

#include "absl/time/time.h"

namespace iommu {

inline constexpr absl::Duration kMinConnectTimeout = absl::Seconds(2);

// Retries to connect after `initial`, growing to at most `max` between
// attempts; each attempt may take kMinConnectTimeout (or longer, up to its
// backoff). Both durations are clamped to [1 ms, 1 h].
void SetReconnectBackoff(absl::Duration initial, absl::Duration max,
                         grpc::ChannelArguments* args);

}  // namespace iommu

#endif  // COMMON_RECONNECT_H_
