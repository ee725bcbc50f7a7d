// Transport security for every gRPC channel of the product: mutual TLS with
// SPIFFE identities, or plaintext when --insecure says so.
//
// Certificates are PEM files re-read every reload_interval (--tls-reload-seconds,
// a minute by default), so a rotation is: write the new files in place
// (rename over the old ones); new connections use them, established ones keep
// going. A set that does not hold together (a key that does not match its
// certificate, another SPIFFE ID, a broken file, or a rotation read between
// its renames) is not loaded: the last good set stays in use and the refusal
// is logged (common/tls_mirror.h). Servers verify client
// certificates against the CA bundle when a client presents one and refuse
// the handshake for a certificate from another CA; a client without a
// certificate gets through the handshake and is then refused per RPC with
// UNAUTHENTICATED by the authorization layer (so the error says why, and
// health checks work without a certificate). Clients verify the server's
// chain against the CA and then its SPIFFE ID, not its host name: the broker
// reaches agents by address, and the identity is what matters.
#ifndef COMMON_TLS_H_
#define COMMON_TLS_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/identity.h"
#include "common/tls_mirror.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/security/server_credentials.h"
#include "grpcpp/security/tls_certificate_provider.h"
#include "grpcpp/server_context.h"

namespace iommu {

struct TransportConfig {
  bool insecure = false;  // Plaintext, no identities: every caller is an operator.
  std::string cert_file;  // PEM certificate (chain) of this process.
  std::string key_file;   // PEM private key of cert_file.
  std::string ca_file;    // PEM bundle of CAs that sign peers' certificates.
  std::string trust_domain = "iommu.local";
  // How often the files are re-read. The first configuration to use a set of
  // files sets it for the process (one reloader per set of files).
  absl::Duration reload_interval = absl::Seconds(60);
};

// Checks the flags and the files: INVALID_ARGUMENT naming the three flags
// when neither they nor --insecure are given, naming the flag when one is
// missing, unreadable or not PEM, when the key does not match the
// certificate, when --trust-domain breaks its rule, or when both --insecure
// and TLS files are given. `names` are the flag names to put in messages
// (the daemons' --tls-cert/--tls-key/--tls-ca by default; iommuctl passes
// --cert/--key/--ca).
struct TransportFlagNames {
  std::string cert = "--tls-cert";
  std::string key = "--tls-key";
  std::string ca = "--tls-ca";
  // Appended to the error when none of the three is given: where to get them.
  std::string hint = "; deploy/make-dev-certs.sh makes a dev CA and certificates";
};
absl::Status ValidateTransportConfig(const TransportConfig& config,
                                     const TransportFlagNames& names = {});

// The identity in a certificate file's SAN URI (exactly one spiffe:// URI in
// config.trust_domain), so a daemon can refuse to start with the wrong
// certificate instead of being refused by every peer.
absl::StatusOr<Identity> CertificateIdentity(const std::string& cert_file,
                                             absl::string_view trust_domain);

// One line for the start-up log: "mtls spiffe://td/broker" or "plaintext".
std::string DescribeTransport(const TransportConfig& config);

// gRPC's file watcher over `mirror`'s files: its identity (key and chain in
// one file) when it has one, its CA bundle (none: gRPC's default roots).
// They are memory and change only to a whole, checked set, so the watcher
// re-reads them every second. `mirror` must outlive the provider.
std::shared_ptr<grpc::experimental::FileWatcherCertificateProvider> WatchMirror(
    const TlsMirror& mirror);

// Server credentials: mTLS (client certificate requested and verified if
// presented) or, with insecure, plaintext. Call after ValidateTransportConfig.
std::shared_ptr<grpc::ServerCredentials> MakeServerCredentials(const TransportConfig& config);

// Channel credentials to a server that must prove `expected_peer` (checked
// against the SPIFFE ID in its certificate after the chain is verified).
// With an empty cert_file the client presents no certificate.
std::shared_ptr<grpc::ChannelCredentials> MakeChannelCredentials(const TransportConfig& config,
                                                                 const Identity& expected_peer);

// Who called this RPC. Insecure servers: Identity::InsecureOperator().
// Otherwise the single SPIFFE ID in the verified client certificate, or
// UNAUTHENTICATED (no certificate; no or several SPIFFE IDs; another trust
// domain; a malformed role or name).
absl::StatusOr<Identity> PeerIdentity(const grpc::ServerContext& ctx,
                                      const TransportConfig& config);

}  // namespace iommu

#endif  // COMMON_TLS_H_
