#include "common/cert_expiry_gauge.h"

#include <utility>

#include "absl/time/time.h"
#include "common/cert_expiry.h"
#include "common/log.h"
#include "common/metrics.h"

namespace iommu {
namespace {

// Printed the way log lines print their own time, so the two compare at a glance.
std::string Rfc3339(int64_t unix_seconds) {
  return absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", absl::FromUnixSeconds(unix_seconds),
                          absl::UTCTimeZone());
}

// At start or after a rotation, a certificate this close to its end is
// worth a warning in the log as well as the alert.
constexpr int64_t kWarnDaysLeft = 14;

// Whole days from now until `unix_seconds`, rounded down (negative once expired).
int64_t DaysLeft(int64_t unix_seconds) {
  return absl::ToInt64Seconds(absl::FromUnixSeconds(unix_seconds) - absl::Now()) / 86400;
}

}  // namespace

std::vector<WatchedCertFile> TransportCertFiles(const TransportConfig& config) {
  if (config.insecure) return {};
  std::vector<WatchedCertFile> out;
  if (!config.cert_file.empty()) {
    out.push_back({"tls_cert", config.cert_file, /*reloaded=*/true, config.key_file});
  }
  if (!config.ca_file.empty()) out.push_back({"tls_ca", config.ca_file, /*reloaded=*/true, ""});
  return out;
}

absl::StatusOr<int64_t> ReadCertFileExpiry(const WatchedCertFile& file) {
  absl::StatusOr<int64_t> not_after = EarliestCertificateExpiry(file.path);
  if (!not_after.ok() || file.key_path.empty()) return not_after;
  if (absl::Status s = CheckCertificateMatchesKey(file.path, file.key_path); !s.ok()) return s;
  return not_after;
}

CertExpiryGauge::CertExpiryGauge(std::string name, std::string help, Reader reader)
    : name_(std::move(name)),
      help_(std::move(help)),
      reader_(reader ? std::move(reader) : Reader(ReadCertFileExpiry)) {}

void CertExpiryGauge::Watch(std::vector<WatchedCertFile> files) {
  uint64_t generation = 0;
  {
    absl::MutexLock l(&mu_);
    entries_.clear();
    for (const WatchedCertFile& f : files) entries_.push_back(Entry{f, std::nullopt, ""});
    generation = ++generation_;
  }
  for (size_t i = 0; i < files.size(); ++i) Record(i, generation, reader_(files[i]));
}

void CertExpiryGauge::Record(size_t index, uint64_t generation,
                             const absl::StatusOr<int64_t>& read) {
  LogLevel level = LogLevel::kInfo;
  std::vector<LogField> fields;
  {
    absl::MutexLock l(&mu_);
    if (generation != generation_ || index >= entries_.size()) return;
    Entry& e = entries_[index];
    if (read.ok()) {
      if (e.not_after == *read && e.error.empty()) return;
      const int64_t days_left = DaysLeft(*read);
      if (days_left < kWarnDaysLeft) level = LogLevel::kWarning;
      fields = {{"cert", e.file.label},
                {"file", e.file.path},
                {"not_after", Rfc3339(*read)},
                {"days_left", days_left}};
      if (e.not_after.has_value()) fields.push_back({"previous", Rfc3339(*e.not_after)});
      e.not_after = *read;
      e.error.clear();
    } else {
      if (e.error == read.status().message()) return;
      e.error = std::string(read.status().message());
      level = LogLevel::kWarning;
      fields = {{"cert", e.file.label},
                {"file", e.file.path},
                {"error", e.error},
                {"exported", "0 (as expired)"}};
    }
  }
  LogEvent(level, read.ok() ? "tls_cert_expiry" : "tls_cert_unreadable", fields);
}

prometheus::MetricFamily CertExpiryGauge::Collect() {
  std::vector<std::pair<size_t, WatchedCertFile>> reread;
  uint64_t generation = 0;
  {
    absl::MutexLock l(&mu_);
    generation = generation_;
    for (size_t i = 0; i < entries_.size(); ++i) {
      if (entries_[i].file.reloaded) reread.emplace_back(i, entries_[i].file);
    }
  }
  // Outside the lock: a slow file system delays this scrape, not others'
  // use of the values already read.
  for (const auto& [index, file] : reread) Record(index, generation, reader_(file));

  prometheus::MetricFamily family = metrics::NewFamily(name_, help_, prometheus::MetricType::Gauge);
  absl::MutexLock l(&mu_);
  for (const Entry& e : entries_) {
    const double value = e.error.empty() && e.not_after.has_value() ? *e.not_after : 0;
    metrics::AddGauge(&family, {{"cert", e.file.label}}, value);
  }
  return family;
}

}  // namespace iommu
