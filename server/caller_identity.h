// Who a call to the broker is for. A caller is identified by the verified
// certificate it presents (common/tls.h), with one exception: a replica that
// does not lead forwards the calls it takes to the leader (leader_forwarder.h)
// over its own connection, so the leader sees the broker's certificate and
// reads the original caller from the call's metadata. Only a peer proving the
// broker's identity may name another caller that way: every replica holds
// the broker's key, which is already the fleet's most powerful identity.
//
// Thread-safe: pure functions of the call.
#ifndef SERVER_CALLER_IDENTITY_H_
#define SERVER_CALLER_IDENTITY_H_

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/identity.h"
#include "common/tls.h"
#include "grpcpp/client_context.h"
#include "grpcpp/server_context.h"

namespace iommu {

// Metadata of a forwarded call: the SPIFFE ID of the caller the forwarding
// replica identified (with mTLS), and that replica's name.
inline constexpr char kForwardedForKey[] = "iommu-forwarded-for";
inline constexpr char kForwardedByKey[] = "iommu-forwarded-by";

struct Caller {
  Identity identity;
  // The replica that forwarded the call; empty for a call made directly.
  std::string forwarded_by;
};

// The caller of `ctx`. UNAUTHENTICATED when the certificate does not name a
// usable identity (PeerIdentity), when a caller other than the broker sends
// kForwardedForKey, or when its value is not a SPIFFE ID of the trust
// domain. With --insecure every caller is the insecure operator, forwarded
// or not.
absl::StatusOr<Caller> IdentifyCaller(const grpc::ServerContext& ctx,
                                      const TransportConfig& transport);

// Marks `ctx`, a call about to be forwarded by `replica` for `caller`, so
// that IdentifyCaller on the leader finds `caller`.
void MarkForwarded(const Caller& caller, absl::string_view replica,
                   const TransportConfig& transport, grpc::ClientContext* ctx);

}  // namespace iommu

#endif  // SERVER_CALLER_IDENTITY_H_
