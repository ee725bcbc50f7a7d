#include "common/cert_expiry_gauge.h"

#include <cstdlib>
#include <map>
#include <string>

#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace iommu {
namespace {

using ::testing::ElementsAre;
using ::testing::FieldsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Pair;

constexpr char kName[] = "iommu_test_tls_cert_expiry_timestamp_seconds";

// Files as a map: what each path reads as now, and how often it was read.
class FakeFiles final {
 public:
  void Set(const std::string& path, absl::StatusOr<int64_t> value) {
    absl::MutexLock l(&mu_);
    files_.insert_or_assign(path, std::move(value));
  }
  int reads(const std::string& path) {
    absl::MutexLock l(&mu_);
    return reads_[path];
  }
  CertExpiryGauge::Reader reader() {
    return [this](const WatchedCertFile& file) -> absl::StatusOr<int64_t> {
      absl::MutexLock l(&mu_);
      ++reads_[file.path];
      auto it = files_.find(file.path);
      if (it == files_.end()) return absl::NotFoundError(file.path + ": no such file");
      return it->second;
    };
  }

 private:
  absl::Mutex mu_;
  std::map<std::string, absl::StatusOr<int64_t>> files_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, int> reads_ ABSL_GUARDED_BY(mu_);
};

// (cert label, value) of each sample.
std::vector<std::pair<std::string, double>> Samples(const prometheus::MetricFamily& f) {
  std::vector<std::pair<std::string, double>> out;
  for (const prometheus::ClientMetric& m : f.metric) {
    EXPECT_EQ(m.label.size(), 1u);
    EXPECT_EQ(m.label[0].name, "cert");
    out.emplace_back(m.label[0].value, m.gauge.value);
  }
  return out;
}

TEST(TransportCertFilesTest, CertificateAndCaOnlyWithTls) {
  TransportConfig insecure;
  insecure.insecure = true;
  EXPECT_THAT(TransportCertFiles(insecure), IsEmpty());
  TransportConfig tls;
  tls.cert_file = "/etc/tls/broker.crt";
  tls.key_file = "/etc/tls/broker.key";
  tls.ca_file = "/etc/tls/ca.crt";
  EXPECT_THAT(TransportCertFiles(tls),
              ElementsAre(FieldsAre("tls_cert", "/etc/tls/broker.crt", true, "/etc/tls/broker.key"),
                          FieldsAre("tls_ca", "/etc/tls/ca.crt", true, "")));
}

TEST(CertExpiryGaugeTest, WithoutFilesListsTheFamilyWithoutSamples) {
  FakeFiles files;
  CertExpiryGauge gauge(kName, "help text", files.reader());
  prometheus::MetricFamily f = gauge.Collect();
  EXPECT_EQ(f.name, kName);
  EXPECT_EQ(f.help, "help text");
  EXPECT_EQ(f.type, prometheus::MetricType::Gauge);
  EXPECT_THAT(f.metric, IsEmpty());
}

TEST(CertExpiryGaugeTest, ReadsAtWatchAndRereadsReloadedFilesAtEachScrape) {
  FakeFiles files;
  files.Set("/tls/cert", 1000);
  files.Set("/tls/ca", 5000);
  files.Set("/etcd/cert", 2000);
  CertExpiryGauge gauge(kName, "h", files.reader());
  gauge.Watch({{"tls_cert", "/tls/cert", true},
               {"tls_ca", "/tls/ca", true},
               {"etcd_cert", "/etcd/cert", false}});
  EXPECT_EQ(files.reads("/tls/cert"), 1);
  EXPECT_EQ(files.reads("/etcd/cert"), 1);
  EXPECT_THAT(Samples(gauge.Collect()),
              ElementsAre(Pair("tls_cert", 1000), Pair("tls_ca", 5000), Pair("etcd_cert", 2000)));

  // Rotated on disk: gRPC reloads --tls-cert, so the gauge follows it; the
  // etcd client keeps what it read at start, and so does the gauge.
  files.Set("/tls/cert", 9000);
  files.Set("/etcd/cert", 9000);
  EXPECT_THAT(Samples(gauge.Collect()),
              ElementsAre(Pair("tls_cert", 9000), Pair("tls_ca", 5000), Pair("etcd_cert", 2000)));
  EXPECT_EQ(files.reads("/tls/cert"), 3);
  EXPECT_EQ(files.reads("/etcd/cert"), 1);
}

// After a reload that fails gRPC serves no certificate, so a file turned
// bad reads as expired (0) until it is whole again.
TEST(CertExpiryGaugeTest, AFileThatTurnsBadReadsAsExpiredUntilItIsWholeAgain) {
  FakeFiles files;
  files.Set("/tls/cert", 1000);
  files.Set("/tls/ca", 5000);
  CertExpiryGauge gauge(kName, "h", files.reader());
  gauge.Watch({{"tls_cert", "/tls/cert", true}, {"tls_ca", "/tls/ca", true}});
  files.Set("/tls/cert", absl::InvalidArgumentError("/tls/cert: holds no PEM certificate"));
  EXPECT_THAT(Samples(gauge.Collect()), ElementsAre(Pair("tls_cert", 0), Pair("tls_ca", 5000)));
  EXPECT_THAT(Samples(gauge.Collect()), ElementsAre(Pair("tls_cert", 0), Pair("tls_ca", 5000)));
  files.Set("/tls/cert", 7000);
  EXPECT_THAT(Samples(gauge.Collect()), ElementsAre(Pair("tls_cert", 7000), Pair("tls_ca", 5000)));
}

TEST(CertExpiryGaugeTest, AFileUnreadableAtStartReadsAsExpired) {
  FakeFiles files;
  files.Set("/etcd/ca", 5000);
  CertExpiryGauge gauge(kName, "h", files.reader());
  gauge.Watch({{"etcd_cert", "/etcd/cert", false}, {"etcd_ca", "/etcd/ca", false}});
  EXPECT_THAT(Samples(gauge.Collect()), ElementsAre(Pair("etcd_cert", 0), Pair("etcd_ca", 5000)));
}

TEST(CertExpiryGaugeTest, WatchReplacesTheFiles) {
  FakeFiles files;
  files.Set("/a", 1);
  files.Set("/b", 2);
  CertExpiryGauge gauge(kName, "h", files.reader());
  gauge.Watch({{"tls_cert", "/a", true}});
  gauge.Watch({{"etcd_ca", "/b", false}});
  EXPECT_THAT(Samples(gauge.Collect()), ElementsAre(Pair("etcd_ca", 2)));
  gauge.Watch({});
  EXPECT_THAT(gauge.Collect().metric, IsEmpty());
}

// The real reader, on the certificates deploy/make-dev-certs.sh makes: a
// certificate must match its key, as gRPC requires of a new pair.
TEST(ReadCertFileExpiryTest, ChecksTheKeyWhenGivenOne) {
  const std::string dir = std::string(std::getenv("TEST_TMPDIR")) + "/certs";
  ASSERT_EQ(
      std::system(("deploy/make-dev-certs.sh --out " + dir + " --tenant acme >/dev/null").c_str()),
      0);
  absl::StatusOr<int64_t> alone = ReadCertFileExpiry({"tls_cert", dir + "/broker.crt", true, ""});
  ASSERT_TRUE(alone.ok()) << alone.status();
  absl::StatusOr<int64_t> paired =
      ReadCertFileExpiry({"tls_cert", dir + "/broker.crt", true, dir + "/broker.key"});
  ASSERT_TRUE(paired.ok()) << paired.status();
  EXPECT_EQ(*paired, *alone);

  absl::StatusOr<int64_t> mismatched =
      ReadCertFileExpiry({"tls_cert", dir + "/broker.crt", true, dir + "/tenant-acme.key"});
  EXPECT_EQ(mismatched.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(mismatched.status().message(),
              HasSubstr("key file " + dir + "/tenant-acme.key does not match the certificate in " +
                        dir + "/broker.crt"));
  absl::StatusOr<int64_t> not_a_key =
      ReadCertFileExpiry({"tls_cert", dir + "/broker.crt", true, dir + "/ca.crt"});
  EXPECT_EQ(not_a_key.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(not_a_key.status().message(),
              HasSubstr(dir + "/ca.crt: holds no unencrypted PEM private key"));
  absl::StatusOr<int64_t> no_key =
      ReadCertFileExpiry({"tls_cert", dir + "/broker.crt", true, dir + "/missing.key"});
  EXPECT_EQ(no_key.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(no_key.status().message(), HasSubstr(dir + "/missing.key"));
}

}  // namespace
}  // namespace iommu
