// The production StubFactory of iommuctl: a gRPC channel to the broker.
// Thread-safe (the returned factory holds no state).
#ifndef CLIENT_CHANNEL_H_
#define CLIENT_CHANNEL_H_

#include "client/commands.h"

namespace iommu {
namespace client {

// Returns a factory that opens an insecure (plaintext) gRPC channel to the
// given host:port and wraps it in a Broker stub. Opening never fails: a
// broker that cannot be reached shows up as UNAVAILABLE on the first call.
StubFactory GrpcStubFactory();

}  // namespace client
}  // namespace iommu

#endif  // CLIENT_CHANNEL_H_
