#include "common/tls_flags.h"

#include <string>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"

ABSL_FLAG(std::string, tls_cert, "",
          "PEM certificate of this daemon; its SAN URI is its identity "
          "(spiffe://<trust_domain>/broker or .../agent/<node>). Re-read from disk every "
          "minute, so rotating is replacing the file");
ABSL_FLAG(std::string, tls_key, "", "PEM private key of --tls-cert (unencrypted, mode 0600)");
ABSL_FLAG(std::string, tls_ca, "",
          "PEM bundle of the CA(s) that sign every peer's certificate (re-read like --tls-cert)");
ABSL_FLAG(std::string, trust_domain, "iommu.local",
          "SPIFFE trust domain of every identity (spiffe://<trust_domain>/...)");
ABSL_FLAG(bool, insecure, false,
          "plaintext gRPC with no identities (every caller is treated as an operator). "
          "Development only; logs a warning at start");

namespace iommu {

absl::StatusOr<TransportConfig> TransportConfigFromFlags(const Identity& self) {
  TransportConfig config;
  config.insecure = absl::GetFlag(FLAGS_insecure);
  config.cert_file = absl::GetFlag(FLAGS_tls_cert);
  config.key_file = absl::GetFlag(FLAGS_tls_key);
  config.ca_file = absl::GetFlag(FLAGS_tls_ca);
  config.trust_domain = absl::GetFlag(FLAGS_trust_domain);
  if (absl::Status s = ValidateTransportConfig(config); !s.ok()) return s;
  if (config.insecure) return config;
  absl::StatusOr<Identity> mine = CertificateIdentity(config.cert_file, config.trust_domain);
  if (!mine.ok()) return mine.status();
  if (!(*mine == self)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--tls-cert: ", config.cert_file, " is the certificate of ", mine->ToString(),
        ", but this daemon is ", self.ToString(), " (", SpiffeId(config.trust_domain, self),
        ")"));
  }
  return config;
}

}  // namespace iommu
