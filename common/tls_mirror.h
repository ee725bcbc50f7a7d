// TlsMirror: in-memory copies of a process's TLS files (private key,
// certificate chain, CA bundle) that change only to another whole, valid
// set, for gRPC's FileWatcherCertificateProvider to watch instead of the
// operator's files.
//
// gRPC (1.51) loads whatever its watcher reads without checking that the key
// matches the certificate, so a mismatched pair, a garbage CA file, or even a
// rotation read between its two renames (new key, old certificate) would
// make it serve no certificate at all. The mirror reads the operator's files
// itself, checks the set (below), and only then publishes it; otherwise it
// keeps the last good set and logs event=tls_reload_refused once per
// distinct bad content (paths and reasons, never key material).
//
// Publication: each file is a memfd at a path that never changes,
// "/proc/self/fd/N". A new version is written, sealed, into a new memfd,
// which dup3() then puts at fd N in one step, so a reader that opens the path
// gets either the old or the new file, never a mix. Key and certificate chain
// share one file (the key's PEM block, then the chain's), passed to gRPC as
// both its key and its certificate path, so they can only change together.
//
// A set is published when: every certificate block of the certificate file
// parses, the key file holds an unencrypted PEM private key that matches the
// first (leaf) certificate, the leaf's spiffe:// SAN URIs equal those of the
// leaf being served (a rotation must not change who the process is; the
// first set may name anyone), and every certificate block of the CA file
// parses, at least one. Without a certificate file (a client with no
// identity) only the CA bundle is mirrored; without a CA file (a client that
// trusts the system's roots) only the identity.
//
// Thread-safe: Reload() may be called from any thread, and runs on its own
// thread after StartReloading().
#ifndef COMMON_TLS_MIRROR_H_
#define COMMON_TLS_MIRROR_H_

#include <openssl/x509.h>

#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/unique_fd.h"

namespace iommu {

// The operator's files. key_file and cert_file are both set or both empty;
// ca_file may be empty only when they are set.
struct TlsFiles {
  std::string key_file;
  std::string cert_file;
  std::string ca_file;
};

class TlsMirror final {
 public:
  // Creates the memfds and loads `files` once, as Reload() does. A first set
  // that is refused leaves empty files at the paths (gRPC then has nothing
  // to serve and handshakes fail, as they would have with those files) until
  // a reload finds a good one. Errors: memfd_create()'s errno (e.g.
  // RESOURCE_EXHAUSTED for EMFILE), INVALID_ARGUMENT when only one of
  // key_file and cert_file is given, or none of the three files.
  static absl::StatusOr<std::unique_ptr<TlsMirror>> Create(TlsFiles files);

  TlsMirror(const TlsMirror&) = delete;
  TlsMirror& operator=(const TlsMirror&) = delete;

  // Stops the reload thread, then closes the memfds: the paths stop
  // resolving, so whoever watches them must be gone first.
  ~TlsMirror();

  // The key and certificate chain in one PEM file, for both of gRPC's key and
  // certificate paths; empty without a certificate file.
  const std::string& identity_path() const { return identity_path_; }
  // The CA bundle; empty without a CA file.
  const std::string& ca_path() const { return ca_path_; }

  // Reads the operator's files and, when their bytes differ from both the
  // served set and the last refused one, checks the set and publishes it
  // (logging event=tls_reloaded) or refuses it (logging
  // event=tls_reload_refused). OK when the served set is the files' content
  // (published now or before). Otherwise the refusal, also when it was
  // already logged, as "<file at fault>: <why>": INVALID_ARGUMENT for
  // content, the errno's code for a file that cannot be read or a memfd that
  // cannot be made (the old set is still served).
  absl::Status Reload() ABSL_LOCKS_EXCLUDED(mu_);

  // Calls Reload() every `interval` on a thread of its own, until the mirror
  // is destroyed. Call at most once.
  void StartReloading(absl::Duration interval) ABSL_LOCKS_EXCLUDED(mu_);

 private:
  struct Pems {
    std::string key, cert, ca;
    bool operator==(const Pems& o) const { return key == o.key && cert == o.cert && ca == o.ca; }
  };
  struct Checked {
    std::string identity;             // The key's PEM block, then the certificate file.
    std::vector<std::string> spiffe;  // Sorted.
  };
  // Why a set is refused: the file at fault, and a message not naming it.
  struct Fault {
    std::string file;
    absl::Status why;
  };

  TlsMirror(TlsFiles files, UniqueFd identity_fd, UniqueFd ca_fd);

  std::optional<Fault> ReadFiles(Pems* out) const;
  std::optional<Fault> Check(const Pems& pems, Checked* out) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Replaces the file at `fd` by a new memfd named `name` holding `content`;
  // on error `fd` is unchanged.
  absl::Status Publish(const UniqueFd& fd, const char* name, const std::string& content)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Logs `fault` unless `seen` is what the last refusal saw, and remembers
  // `seen` (nullopt: nothing, so the same files are tried again); returns the
  // refusal.
  absl::Status Refuse(const Fault& fault, std::optional<std::string> seen)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void ReloadLoop(absl::Duration interval) ABSL_LOCKS_EXCLUDED(mu_);

  // Constant after construction.
  const TlsFiles files_;
  const UniqueFd identity_fd_;  // Invalid without a certificate file.
  const UniqueFd ca_fd_;        // Invalid without a CA file.
  const std::string identity_path_;
  const std::string ca_path_;

  absl::Mutex mu_;
  // The operator's bytes behind the published files, once a set was.
  std::optional<Pems> served_ ABSL_GUARDED_BY(mu_);
  std::vector<std::string> served_spiffe_ ABSL_GUARDED_BY(mu_);
  // What the last refusal saw (the files' bytes, or the read error) and why.
  std::optional<std::string> refused_seen_ ABSL_GUARDED_BY(mu_);
  absl::Status refusal_ ABSL_GUARDED_BY(mu_);
  // The mtime (whole seconds) given to the last published file; see Publish.
  int64_t last_mtime_ ABSL_GUARDED_BY(mu_) = 0;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;
};

// The spiffe:// SAN URIs of `x509`, in certificate order. Only URI SANs
// count: a DNS or email SAN that spells a SPIFFE ID is not one (a CA may
// issue those to anyone who controls a host name or a mailbox).
std::vector<std::string> SpiffeUriSans(X509* x509);

}  // namespace iommu

#endif  // COMMON_TLS_MIRROR_H_
