#include "common/tls.h"

#include <openssl/bio.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <map>
#include <optional>
#include <tuple>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "common/identity_cache.h"
#include "common/log.h"
#include "common/pem_files.h"
#include "common/tls_mirror.h"
#include "grpcpp/security/tls_certificate_provider.h"
#include "grpcpp/security/tls_certificate_verifier.h"
#include "grpcpp/security/tls_credentials_options.h"

namespace iommu {
namespace {

absl::StatusOr<std::string> ReadFile(const std::string& flag, const std::string& path) {
  if (path.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(flag, ": required unless --insecure (a PEM file)"));
  }
  absl::StatusOr<std::string> pem = ReadPemFile(path);
  if (!pem.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat(flag, ": cannot read ", path, ": ", pem.status().message()));
  }
  return pem;
}

X509Ptr ParseCert(const std::string& pem) {
  BioPtr bio = MemBio(pem);
  return X509Ptr(PEM_read_bio_X509(bio.get(), nullptr, NoPassPhrase, nullptr));
}

// The client side's check of the server's identity, after gRPC has verified
// the chain against the CA bundle.
class SpiffeIdVerifier final : public grpc::experimental::ExternalCertificateVerifier {
 public:
  explicit SpiffeIdVerifier(std::string expected) : expected_(std::move(expected)) {}

  bool Verify(grpc::experimental::TlsCustomVerificationCheckRequest* request,
              std::function<void(grpc::Status)> /*callback*/,
              grpc::Status* sync_status) override {
    std::vector<std::string> seen;
    for (const grpc::string_ref& uri : request->uri_names()) {
      const std::string u(uri.data(), uri.size());
      if (u == expected_) {
        *sync_status = grpc::Status::OK;
        return true;
      }
      seen.push_back(u);
    }
    *sync_status = grpc::Status(
        grpc::StatusCode::UNAUTHENTICATED,
        absl::StrCat("server certificate: expected SAN URI ", expected_, ", got [",
                     absl::StrJoin(seen, ", "), "]"));
    return true;
  }

  void Cancel(grpc::experimental::TlsCustomVerificationCheckRequest*) override {}

 private:
  const std::string expected_;
};

// A file watcher over a TlsMirror of `config`'s files, or (when the mirror
// cannot be made) over the files themselves.
struct SharedTls {
  std::unique_ptr<TlsMirror> mirror;
  std::shared_ptr<grpc::experimental::FileWatcherCertificateProvider> provider;
};

SharedTls MakeSharedTls(const TransportConfig& config) {
  using grpc::experimental::FileWatcherCertificateProvider;
  SharedTls out;
  absl::StatusOr<std::unique_ptr<TlsMirror>> mirror =
      TlsMirror::Create({config.key_file, config.cert_file, config.ca_file});
  if (!mirror.ok()) {
    // Out of fds or memory at start: serving the files unchecked, as gRPC
    // alone would, beats serving nothing.
    LogEvent(LogLevel::kError, "tls_mirror_unavailable",
             {{"error", mirror.status().message()}, {"reading", "the files directly"}});
    const auto seconds = static_cast<unsigned>(absl::ToInt64Seconds(config.reload_interval));
    out.provider = config.cert_file.empty()
                       ? std::make_shared<FileWatcherCertificateProvider>(config.ca_file, seconds)
                       : std::make_shared<FileWatcherCertificateProvider>(
                             config.key_file, config.cert_file, config.ca_file, seconds);
    return out;
  }
  out.mirror = *std::move(mirror);
  out.mirror->StartReloading(config.reload_interval);
  out.provider = WatchMirror(*out.mirror);
  return out;
}

// One mirror and one file watcher per set of files for the whole process:
// each runs a thread, and the broker opens a channel per agent (a thousand
// agents must not mean a thousand threads re-reading the same three files).
// Never destroyed: the watchers' threads read the mirrors' fds until exit.
std::shared_ptr<grpc::experimental::FileWatcherCertificateProvider> SharedProvider(
    const TransportConfig& config) {
  static absl::Mutex mu(absl::kConstInit);  // Guards *shared.
  static auto* shared =
      new std::map<std::tuple<std::string, std::string, std::string>, SharedTls>();
  absl::MutexLock l(&mu);
  SharedTls& s = (*shared)[{config.key_file, config.cert_file, config.ca_file}];
  if (s.provider == nullptr) s = MakeSharedTls(config);
  return s.provider;
}

}  // namespace

std::shared_ptr<grpc::experimental::FileWatcherCertificateProvider> WatchMirror(
    const TlsMirror& mirror) {
  using grpc::experimental::FileWatcherCertificateProvider;
  // Memory, so cheap: a change reaches new connections about a reload
  // interval after the operator made it.
  constexpr unsigned kRefreshSeconds = 1;
  const std::string& identity = mirror.identity_path();
  if (identity.empty()) {
    return std::make_shared<FileWatcherCertificateProvider>(mirror.ca_path(), kRefreshSeconds);
  }
  return std::make_shared<FileWatcherCertificateProvider>(identity, identity, mirror.ca_path(),
                                                          kRefreshSeconds);
}

absl::Status ValidateTransportConfig(const TransportConfig& config,
                                     const TransportFlagNames& names) {
  if (absl::Status s = ValidateTrustDomain("--trust-domain", config.trust_domain); !s.ok()) {
    return s;
  }
  if (!config.insecure && config.cert_file.empty() && config.key_file.empty() &&
      config.ca_file.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(names.cert, ", ", names.key, ", ", names.ca,
                                                   ": required (mutual TLS), or --insecure for "
                                                   "plaintext (development only)",
                                                   names.hint));
  }
  if (config.insecure) {
    if (!config.cert_file.empty() || !config.key_file.empty() || !config.ca_file.empty()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--insecure: cannot be combined with ", names.cert, "/", names.key, "/", names.ca,
          " (choose plaintext or mTLS)"));
    }
    return absl::OkStatus();
  }
  absl::StatusOr<std::string> cert = ReadFile(names.cert, config.cert_file);
  if (!cert.ok()) return cert.status();
  absl::StatusOr<std::string> key = ReadFile(names.key, config.key_file);
  if (!key.ok()) return key.status();
  absl::StatusOr<std::string> ca = ReadFile(names.ca, config.ca_file);
  if (!ca.ok()) return ca.status();

  auto x509 = ParseCert(*cert);
  if (x509 == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat(names.cert, ": ", config.cert_file, " holds no PEM certificate"));
  }
  if (ParseCert(*ca) == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat(names.ca, ": ", config.ca_file, " holds no PEM certificate"));
  }
  BioPtr bio = MemBio(*key);
  PkeyPtr pkey(PEM_read_bio_PrivateKey(bio.get(), nullptr, NoPassPhrase, nullptr));
  if (pkey == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(
        names.key, ": ", config.key_file, " holds no unencrypted PEM private key"));
  }
  if (X509_check_private_key(x509.get(), pkey.get()) != 1) {
    return absl::InvalidArgumentError(absl::StrCat(names.key, ": ", config.key_file,
                                                   " does not match the certificate in ",
                                                   config.cert_file));
  }
  return absl::OkStatus();
}

absl::StatusOr<Identity> CertificateIdentity(const std::string& cert_file,
                                             absl::string_view trust_domain) {
  absl::StatusOr<std::string> pem = ReadFile("--tls-cert", cert_file);
  if (!pem.ok()) return pem.status();
  auto x509 = ParseCert(*pem);
  if (x509 == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat("--tls-cert: ", cert_file, " holds no PEM certificate"));
  }
  const std::vector<std::string> spiffe = SpiffeUriSans(x509.get());
  if (spiffe.size() != 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--tls-cert: ", cert_file, " must carry exactly one spiffe:// SAN URI, found ",
        spiffe.size()));
  }
  absl::StatusOr<Identity> id = ParseSpiffeId(spiffe[0], trust_domain);
  if (!id.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("--tls-cert: ", id.status().message()));
  }
  return id;
}

std::string DescribeTransport(const TransportConfig& config) {
  if (config.insecure) return "plaintext";
  return absl::StrCat("mtls trust_domain=", config.trust_domain);
}

std::shared_ptr<grpc::ServerCredentials> MakeServerCredentials(const TransportConfig& config) {
  if (config.insecure) return grpc::InsecureServerCredentials();
  auto provider = SharedProvider(config);
  grpc::experimental::TlsServerCredentialsOptions options(provider);
  options.watch_root_certs();
  options.watch_identity_key_cert_pairs();
  options.set_cert_request_type(GRPC_SSL_REQUEST_CLIENT_CERTIFICATE_AND_VERIFY);
  return grpc::experimental::TlsServerCredentials(options);
}

std::shared_ptr<grpc::ChannelCredentials> MakeChannelCredentials(const TransportConfig& config,
                                                                 const Identity& expected_peer) {
  if (config.insecure) return grpc::InsecureChannelCredentials();
  // Without a certificate of its own the client still verifies the server
  // (e.g. a health probe); servers then refuse it per RPC.
  const bool has_identity = !config.cert_file.empty();
  auto provider = SharedProvider(config);
  grpc::experimental::TlsChannelCredentialsOptions options;
  options.set_certificate_provider(provider);
  options.watch_root_certs();
  if (has_identity) options.watch_identity_key_cert_pairs();
  options.set_verify_server_certs(true);
  options.set_check_call_host(false);
  options.set_certificate_verifier(
      grpc::experimental::ExternalCertificateVerifier::Create<SpiffeIdVerifier>(
          SpiffeId(config.trust_domain, expected_peer)));
  return grpc::experimental::TlsCredentials(options);
}

absl::StatusOr<Identity> PeerIdentity(const grpc::ServerContext& ctx,
                                      const TransportConfig& config) {
  if (config.insecure) return Identity::InsecureOperator();
  std::shared_ptr<const grpc::AuthContext> auth = ctx.auth_context();
  if (auth == nullptr || !auth->IsPeerAuthenticated()) {
    return absl::UnauthenticatedError(
        "peer certificate: none presented (this server requires a client certificate "
        "signed by its CA; iommuctl: --cert/--key/--ca)");
  }
  // gRPC's SAN property mixes every kind of name (DNS, email, IP, URI), so
  // the names are read from the verified leaf certificate itself.
  std::vector<grpc::string_ref> pem = auth->FindPropertyValues(GRPC_X509_PEM_CERT_PROPERTY_NAME);
  if (pem.size() != 1) {
    return absl::UnauthenticatedError("peer certificate: the TLS layer did not expose it");
  }
  const absl::string_view bytes(pem[0].data(), pem[0].size());
  // Every call of a connection presents the same certificate: it is read
  // once (common/identity_cache.h).
  static IdentityCache* const cache = new IdentityCache(4096);
  if (std::optional<Identity> seen = cache->Find(config.trust_domain, bytes)) return *seen;
  auto x509 = ParseCert(std::string(bytes));
  if (x509 == nullptr) {
    return absl::UnauthenticatedError("peer certificate: the TLS layer did not expose it");
  }
  const std::vector<std::string> spiffe = SpiffeUriSans(x509.get());
  if (spiffe.size() != 1) {
    return absl::UnauthenticatedError(absl::StrCat(
        "peer certificate: must carry exactly one spiffe:// SAN URI, found ", spiffe.size()));
  }
  absl::StatusOr<Identity> identity = ParseSpiffeId(spiffe[0], config.trust_domain);
  if (identity.ok()) cache->Insert(config.trust_domain, bytes, *identity);
  return identity;
}

}  // namespace iommu
