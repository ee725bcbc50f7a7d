#include "common/tls_flags.h"

#include <cstdint>
#include <string>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"

ABSL_FLAG(std::string, tls_cert, "",
          "PEM certificate of this daemon; its SAN URI is its identity "
          "(spiffe://<trust_domain>/broker or .../agent/<node>). Re-read every "
          "--tls-reload-seconds, so rotating is replacing the files; a key that does not match "
          "it, or another identity, is refused (logged) and the last good pair stays in use");
ABSL_FLAG(std::string, tls_key, "", "PEM private key of --tls-cert (unencrypted, mode 0600)");
ABSL_FLAG(std::string, tls_ca, "",
          "PEM bundle of the CA(s) that sign every peer's certificate (re-read like --tls-cert)");
ABSL_FLAG(int64_t, tls_reload_seconds, 60,
          "how often --tls-cert, --tls-key and --tls-ca (and the broker's --etcd-cert, "
          "--etcd-key and --etcd-ca) are re-read (1..3600 seconds)");
ABSL_FLAG(std::string, trust_domain, "iommu.local",
          "SPIFFE trust domain of every identity (spiffe://<trust_domain>/...)");
ABSL_FLAG(bool, insecure, false,
          "plaintext gRPC with no identities (every caller is treated as an operator). "
          "Development only; logs a warning at start");

namespace iommu {
namespace {

// Each reload reads and checks three small files: more often than every
// second buys nothing. At most an hour, so that a rotation never waits long
// behind a forgotten setting.
constexpr int64_t kMinReloadSeconds = 1;
constexpr int64_t kMaxReloadSeconds = 3600;

}  // namespace

absl::StatusOr<TransportConfig> TransportConfigFromFlags(const Identity& self) {
  TransportConfig config;
  config.insecure = absl::GetFlag(FLAGS_insecure);
  config.cert_file = absl::GetFlag(FLAGS_tls_cert);
  config.key_file = absl::GetFlag(FLAGS_tls_key);
  config.ca_file = absl::GetFlag(FLAGS_tls_ca);
  config.trust_domain = absl::GetFlag(FLAGS_trust_domain);
  const int64_t reload = absl::GetFlag(FLAGS_tls_reload_seconds);
  if (reload < kMinReloadSeconds || reload > kMaxReloadSeconds) {
    return absl::InvalidArgumentError(absl::StrCat("--tls-reload-seconds: must be ",
                                                   kMinReloadSeconds, "..", kMaxReloadSeconds,
                                                   " (seconds), got ", reload));
  }
  config.reload_interval = absl::Seconds(reload);
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
