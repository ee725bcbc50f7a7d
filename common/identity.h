// Who is calling: the role and name carried in a peer certificate's SPIFFE ID
// (its SAN URI). Pure parsing and formatting, no I/O, thread-safe.
//
//   spiffe://<trust-domain>/broker            the broker (calls agents)
//   spiffe://<trust-domain>/agent/<node>      the node agent of <node>
//   spiffe://<trust-domain>/operator/<name>   a person or tool with full access
//   spiffe://<trust-domain>/tenant/<id>       a tenant (or an orchestrator acting for it)
#ifndef COMMON_IDENTITY_H_
#define COMMON_IDENTITY_H_

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace iommu {

enum class Role {
  kAnonymous,  // No verified certificate (only possible on an --insecure server: see below).
  kOperator,
  kTenant,
  kAgent,
  kBroker,
};

// "anonymous", "operator", "tenant", "agent", "broker": the metric label and log value.
absl::string_view RoleName(Role role);

struct Identity {
  Role role = Role::kAnonymous;
  // Tenant id, node name or operator name; empty for the broker and anonymous.
  std::string name;

  // An --insecure daemon has no way to tell callers apart; it treats every
  // caller as this operator (full access). Only for development.
  static Identity InsecureOperator() { return {Role::kOperator, "insecure"}; }

  std::string ToString() const;  // "tenant/acme", "broker", "anonymous".
  friend bool operator==(const Identity& a, const Identity& b) {
    return a.role == b.role && a.name == b.name;
  }
};

// The SPIFFE ID of an identity in `trust_domain`.
std::string SpiffeId(absl::string_view trust_domain, const Identity& id);

// Parses a SPIFFE ID. UNAUTHENTICATED (the peer proved a name we cannot use)
// when it is not "spiffe://<trust_domain>/<role>[/<name>]" with a known role
// and a well-formed name (tenant ids and node names follow validation.h;
// operator names the node-name rule).
absl::StatusOr<Identity> ParseSpiffeId(absl::string_view uri, absl::string_view trust_domain);

// Trust domains: 1-255 characters of [a-z0-9.-].
absl::Status ValidateTrustDomain(absl::string_view field, absl::string_view value);

}  // namespace iommu

#endif  // COMMON_IDENTITY_H_
