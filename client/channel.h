// The production StubFactory of iommuctl: a gRPC channel to the broker, over
// mutual TLS (the broker must prove spiffe://<trust-domain>/broker) or, with
// --insecure, plaintext. Thread-safe (the returned factory holds no state).
#ifndef CLIENT_CHANNEL_H_
#define CLIENT_CHANNEL_H_

#include "absl/status/statusor.h"
#include "client/commands.h"
#include "common/tls.h"

namespace iommu {
namespace client {

// The transport the global options ask for: INVALID_ARGUMENT naming --cert,
// --key, --ca or --insecure when it is incomplete, unreadable or
// contradictory.
absl::StatusOr<TransportConfig> ClientTransport(const GlobalOptions& global);

// Returns a factory that opens a channel to the broker and wraps it in a
// Broker stub. A broker that cannot be reached shows up as UNAVAILABLE on the
// first call; a bad transport configuration fails at once.
StubFactory GrpcStubFactory();

}  // namespace client
}  // namespace iommu

#endif  // CLIENT_CHANNEL_H_
