#include "server/kv/etcd_channel.h"

#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "common/status_macros.h"
#include "common/tls.h"
#include "grpcpp/security/tls_certificate_provider.h"
#include "grpcpp/security/tls_certificate_verifier.h"
#include "grpcpp/security/tls_credentials_options.h"

namespace iommu {
namespace kv {

absl::StatusOr<ChannelSecurity> MakeChannelSecurity(const EtcdKvOptions& options) {
  ChannelSecurity out;
  if (options.tls_cert_file.empty() && options.tls_key_file.empty() &&
      options.tls_ca_file.empty()) {
    out.creds = grpc::InsecureChannelCredentials();
    return out;
  }
  if (options.tls_cert_file.empty() != options.tls_key_file.empty()) {
    return absl::InvalidArgumentError(
        "etcd TLS: a client certificate and its key go together; give both or neither");
  }
  ASSIGN_OR_RETURN(
      std::unique_ptr<TlsMirror> mirror,
      TlsMirror::Create({options.tls_key_file, options.tls_cert_file, options.tls_ca_file}));
  // Create loaded the files, and logged a refusal; the refusal is returned
  // again here without another log line.
  if (absl::Status s = mirror->Reload(); !s.ok()) {
    return absl::Status(s.code(), absl::StrCat("etcd TLS: ", s.message()));
  }
  grpc::experimental::TlsChannelCredentialsOptions tls;
  tls.set_certificate_provider(WatchMirror(*mirror));
  // Without a CA file no roots are watched: the system's are used.
  if (!mirror->ca_path().empty()) tls.watch_root_certs();
  if (!mirror->identity_path().empty()) tls.watch_identity_key_cert_pairs();
  // gRPC's defaults, spelled out: they are the whole of etcd's
  // authentication, and must not change under us.
  tls.set_verify_server_certs(true);
  tls.set_certificate_verifier(std::make_shared<grpc::experimental::HostNameCertificateVerifier>());
  tls.set_check_call_host(true);
  out.creds = grpc::experimental::TlsCredentials(tls);
  if (out.creds == nullptr) return absl::InternalError("etcd TLS: gRPC made no TLS credentials");
  if (options.tls_reload_interval > absl::ZeroDuration()) {
    mirror->StartReloading(options.tls_reload_interval);
  }
  out.mirror = std::move(mirror);
  return out;
}

}  // namespace kv
}  // namespace iommu
