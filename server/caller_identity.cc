#include "server/caller_identity.h"

#include <utility>

#include "absl/strings/str_cat.h"

namespace iommu {
namespace {

// The value of metadata `key`, or empty. A key sent more than once is
// refused: which copy counts must not depend on the reader.
absl::StatusOr<std::string> OneValue(const grpc::ServerContext& ctx, absl::string_view key) {
  auto [first, last] = ctx.client_metadata().equal_range(grpc::string_ref(key.data(), key.size()));
  if (first == last) return std::string();
  if (std::next(first) != last) {
    return absl::UnauthenticatedError(absl::StrCat(key, ": sent more than once"));
  }
  return std::string(first->second.data(), first->second.size());
}

}  // namespace

absl::StatusOr<Caller> IdentifyCaller(const grpc::ServerContext& ctx,
                                      const TransportConfig& transport) {
  absl::StatusOr<Identity> peer = PeerIdentity(ctx, transport);
  if (!peer.ok()) return peer.status();
  Caller caller{*std::move(peer), ""};
  absl::StatusOr<std::string> by = OneValue(ctx, kForwardedByKey);
  if (!by.ok()) return by.status();
  caller.forwarded_by = *std::move(by);
  absl::StatusOr<std::string> for_id = OneValue(ctx, kForwardedForKey);
  if (!for_id.ok()) return for_id.status();
  if (for_id->empty() || transport.insecure) return caller;
  if (caller.identity.role != Role::kBroker) {
    return absl::UnauthenticatedError(absl::StrCat(
        kForwardedForKey, ": only a broker replica may call on behalf of another identity, not ",
        caller.identity.ToString()));
  }
  absl::StatusOr<Identity> original = ParseSpiffeId(*for_id, transport.trust_domain);
  if (!original.ok()) {
    return absl::UnauthenticatedError(
        absl::StrCat(kForwardedForKey, ": ", original.status().message()));
  }
  caller.identity = *std::move(original);
  return caller;
}

void MarkForwarded(const Caller& caller, absl::string_view replica,
                   const TransportConfig& transport, grpc::ClientContext* ctx) {
  ctx->AddMetadata(kForwardedByKey, std::string(replica));
  if (!transport.insecure) {
    ctx->AddMetadata(kForwardedForKey, SpiffeId(transport.trust_domain, caller.identity));
  }
}

}  // namespace iommu
