// CertExpiryGauge: a daemon's `<prefix>_tls_cert_expiry_timestamp_seconds`
// gauge (docs/METRICS.md), one sample per certificate file it uses,
// labelled cert="<the flag naming the file>", valued at the earliest
// notAfter in that file (seconds since the Unix epoch), so an alert can
// fire well before any certificate in it expires.
//
// What the value reflects: the certificate the daemon will use. Files the
// daemon re-reads while it runs (--tls_cert and --tls_ca, and the broker's
// --etcd_cert/--etcd_ca, every --tls-reload-seconds) are read again at each
// scrape, so a rotation shows up without a restart. Files a daemon would
// read only at start (none today; WatchedCertFile::reloaded false) are read
// once, at Watch(): after rotating them the gauge, like the connection,
// would keep the old certificate until the daemon is restarted.
//
// A file that cannot be used (unreadable, not PEM, half-written, or a
// certificate that does not match its key) is exported as 0, "expired": the
// daemon refuses to load it and keeps its last good set (common/tls_mirror.h),
// but would not start with it, so this is as urgent as an expired certificate
// and fires the same alert. The change is logged (event=tls_cert_unreadable).
//
// Thread-safe: Watch() and Collect() may be called from any thread,
// Collect() from the HTTP server's threads concurrently.
#ifndef COMMON_CERT_EXPIRY_GAUGE_H_
#define COMMON_CERT_EXPIRY_GAUGE_H_

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "common/tls.h"
#include "prometheus/metric_family.h"

namespace iommu {

// One certificate file a daemon uses.
struct WatchedCertFile {
  std::string label;  // The `cert` label: the flag naming the file, e.g. "tls_cert".
  std::string path;
  // Whether the daemon re-reads the file while it runs (see above).
  bool reloaded = true;
  // The private key used with this certificate (empty for a CA bundle): the
  // file's first certificate must match it.
  std::string key_path;
};

// The files of `config` as watched files: tls_cert (with tls_key) and
// tls_ca, both re-read while running. None with --insecure.
std::vector<WatchedCertFile> TransportCertFiles(const TransportConfig& config);

// The earliest notAfter in `file` (common/cert_expiry.h), after checking
// that it matches `file.key_path` when one is given. Errors name the file.
absl::StatusOr<int64_t> ReadCertFileExpiry(const WatchedCertFile& file);

class CertExpiryGauge final {
 public:
  using Reader = std::function<absl::StatusOr<int64_t>(const WatchedCertFile& file)>;

  // `name` and `help` of the family. `reader` defaults to ReadCertFileExpiry;
  // tests pass their own.
  CertExpiryGauge(std::string name, std::string help, Reader reader = nullptr);

  CertExpiryGauge(const CertExpiryGauge&) = delete;
  CertExpiryGauge& operator=(const CertExpiryGauge&) = delete;

  // Replaces the files watched and reads each one now, logging its expiry
  // (event=tls_cert_expiry; at warning level within 14 days of it) or why
  // it cannot be used (event=tls_cert_unreadable, a warning).
  void Watch(std::vector<WatchedCertFile> files) ABSL_LOCKS_EXCLUDED(mu_);

  // The family: one sample per watched file, 0 for one that cannot be used.
  // Re-reads the reloaded files first. Without files (--insecure) the
  // family has no samples and still lists its HELP and TYPE.
  prometheus::MetricFamily Collect() ABSL_LOCKS_EXCLUDED(mu_);

 private:
  struct Entry {
    WatchedCertFile file;
    std::optional<int64_t> not_after;  // The last value read, for the log.
    std::string error;                 // Why the last read failed; empty if it did not.
  };

  // Records the outcome of reading entry `index`'s file (read without mu_:
  // it is I/O), logging only changes (a new notAfter, a new error), so a
  // broken file logs once, not per scrape. A result for an older
  // `generation` of the list is dropped.
  void Record(size_t index, uint64_t generation, const absl::StatusOr<int64_t>& read)
      ABSL_LOCKS_EXCLUDED(mu_);

  // Constant after construction.
  const std::string name_;
  const std::string help_;
  const Reader reader_;

  absl::Mutex mu_;
  std::vector<Entry> entries_ ABSL_GUARDED_BY(mu_);
  // Bumped by Watch(), so that a scrape's late result for a replaced list
  // of files is dropped.
  uint64_t generation_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace iommu

#endif  // COMMON_CERT_EXPIRY_GAUGE_H_
