#include "common/identity.h"

#include <vector>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/validation.h"

namespace iommu {

absl::string_view RoleName(Role role) {
  switch (role) {
    case Role::kAnonymous: return "anonymous";
    case Role::kOperator: return "operator";
    case Role::kTenant: return "tenant";
    case Role::kAgent: return "agent";
    case Role::kBroker: return "broker";
  }
  return "anonymous";
}

std::string Identity::ToString() const {
  if (name.empty()) return std::string(RoleName(role));
  return absl::StrCat(RoleName(role), "/", name);
}

std::string SpiffeId(absl::string_view trust_domain, const Identity& id) {
  return absl::StrCat("spiffe://", trust_domain, "/", id.ToString());
}

absl::Status ValidateTrustDomain(absl::string_view field, absl::string_view value) {
  if (value.empty() || value.size() > 255) {
    return absl::InvalidArgumentError(absl::StrCat(field, ": must be 1-255 characters"));
  }
  for (char c : value) {
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '-')) {
      return absl::InvalidArgumentError(
          absl::StrCat(field, ": only [a-z0-9.-] allowed, got \"", value, "\""));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<Identity> ParseSpiffeId(absl::string_view uri, absl::string_view trust_domain) {
  auto refuse = [&](absl::string_view why) {
    return absl::UnauthenticatedError(
        absl::StrCat("peer certificate: SAN URI \"", uri.substr(0, 300), "\" ", why));
  };
  const std::string prefix = absl::StrCat("spiffe://", trust_domain, "/");
  if (!absl::StartsWith(uri, prefix)) {
    return refuse(absl::StrCat("is not in trust domain spiffe://", trust_domain));
  }
  std::vector<absl::string_view> parts = absl::StrSplit(uri.substr(prefix.size()), '/');
  const absl::string_view role = parts[0];
  if (role == "broker" && parts.size() == 1) return Identity{Role::kBroker, ""};
  if (parts.size() != 2) {
    return refuse("must be .../broker, .../agent/<node>, .../operator/<name> or .../tenant/<id>");
  }
  const absl::string_view name = parts[1];
  if (role == "tenant") {
    if (absl::Status s = ValidateTenantId("tenant", name); !s.ok()) return refuse(s.message());
    return Identity{Role::kTenant, std::string(name)};
  }
  if (role == "agent" || role == "operator") {
    if (absl::Status s = ValidateNodeName(role, name); !s.ok()) return refuse(s.message());
    return Identity{role == "agent" ? Role::kAgent : Role::kOperator, std::string(name)};
  }
  return refuse(absl::StrCat("has unknown role \"", role.substr(0, 64), "\""));
}

}  // namespace iommu
