#include "common/cert_expiry.h"

#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <cstdlib>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/pem_files.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace iommu {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

using Pkey = PkeyPtr;

// 2033-05-18T03:33:20Z: UTCTime in a certificate.
constexpr int64_t kIn2033 = 2000000000;
// 2049-04-26T14:13:20Z and 2065-01-24T05:20:00Z: either side of 2050, where
// certificates switch from UTCTime to GeneralizedTime.
constexpr int64_t kIn2049 = 2500000000;
constexpr int64_t kIn2065 = 3000000000;

std::string BioContents(BIO* bio) {
  char* data = nullptr;
  const long n = BIO_get_mem_data(bio, &data);
  return std::string(data, static_cast<size_t>(n));
}

Pkey NewKey() { return Pkey(EVP_EC_gen("P-256")); }

// A self-signed certificate valid until `not_after` (seconds since the
// epoch), as PEM.
std::string CertPem(EVP_PKEY* key, int64_t not_after) {
  X509Ptr x509(X509_new());
  X509_set_version(x509.get(), 2);
  ASN1_INTEGER_set(X509_get_serialNumber(x509.get()), 1);
  ASN1_TIME_set(X509_getm_notBefore(x509.get()), static_cast<time_t>(not_after - 86400));
  ASN1_TIME_set(X509_getm_notAfter(x509.get()), static_cast<time_t>(not_after));
  X509_set_pubkey(x509.get(), key);
  X509_NAME* name = X509_get_subject_name(x509.get());
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                             reinterpret_cast<const unsigned char*>("cert-expiry-test"), -1, -1, 0);
  X509_set_issuer_name(x509.get(), name);
  EXPECT_GT(X509_sign(x509.get(), key, EVP_sha256()), 0);
  BioPtr bio(BIO_new(BIO_s_mem()));
  EXPECT_EQ(PEM_write_bio_X509(bio.get(), x509.get()), 1);
  return BioContents(bio.get());
}

std::string KeyPem(EVP_PKEY* key) {
  BioPtr bio(BIO_new(BIO_s_mem()));
  EXPECT_EQ(PEM_write_bio_PrivateKey(bio.get(), key, nullptr, nullptr, 0, nullptr, nullptr), 1);
  return BioContents(bio.get());
}

class CertExpiryTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_NE(key_, nullptr); }

  // Writes `content` to a file under TEST_TMPDIR; returns its path.
  static std::string WriteFile(const std::string& name, const std::string& content) {
    const std::string path = absl::StrCat(std::getenv("TEST_TMPDIR"), "/", name);
    std::ofstream(path, std::ios::binary | std::ios::trunc) << content;
    return path;
  }

  Pkey key_ = NewKey();
};

TEST_F(CertExpiryTest, ReadsTheNotAfterOfOneCertificate) {
  const std::string path = WriteFile("one.crt", CertPem(key_.get(), kIn2033));
  absl::StatusOr<int64_t> got = EarliestCertificateExpiry(path);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(*got, kIn2033);
}

TEST_F(CertExpiryTest, ReadsEveryCertificateOfAChainAndReturnsTheEarliest) {
  const std::string chain =
      CertPem(key_.get(), kIn2065) + CertPem(key_.get(), kIn2033) + CertPem(key_.get(), kIn2049);
  absl::StatusOr<std::vector<int64_t>> all = PemCertificateExpiries(chain, "chain.crt");
  ASSERT_TRUE(all.ok()) << all.status();
  EXPECT_THAT(*all, ElementsAre(kIn2065, kIn2033, kIn2049));
  absl::StatusOr<int64_t> earliest = EarliestCertificateExpiry(WriteFile("chain.crt", chain));
  ASSERT_TRUE(earliest.ok()) << earliest.status();
  EXPECT_EQ(*earliest, kIn2033);
}

TEST_F(CertExpiryTest, ReadsGeneralizedTimeAfter2050) {
  absl::StatusOr<std::vector<int64_t>> got =
      PemCertificateExpiries(CertPem(key_.get(), kIn2065), "late.crt");
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_THAT(*got, ElementsAre(kIn2065));
}

TEST_F(CertExpiryTest, SkipsOtherPemBlocksAndTextAroundThem) {
  const std::string pem =
      "a comment line\n" + KeyPem(key_.get()) + CertPem(key_.get(), kIn2049) + "trailing words\n";
  absl::StatusOr<std::vector<int64_t>> got = PemCertificateExpiries(pem, "combined.pem");
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_THAT(*got, ElementsAre(kIn2049));
}

TEST_F(CertExpiryTest, RefusesAnEmptyFileNamingIt) {
  const std::string path = WriteFile("empty.crt", "");
  absl::StatusOr<int64_t> got = EarliestCertificateExpiry(path);
  EXPECT_EQ(got.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(got.status().message(), HasSubstr(path + ": empty, holds no PEM certificate"));
}

TEST_F(CertExpiryTest, RefusesGarbageNamingTheFile) {
  const std::string path =
      WriteFile("garbage.crt", std::string("\x01\xff not a certificate\n", 21));
  absl::StatusOr<int64_t> got = EarliestCertificateExpiry(path);
  EXPECT_EQ(got.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(got.status().message(), HasSubstr(path + ": holds no PEM certificate"));
}

TEST_F(CertExpiryTest, RefusesAKeyWithoutACertificate) {
  absl::StatusOr<std::vector<int64_t>> got = PemCertificateExpiries(KeyPem(key_.get()), "k.pem");
  EXPECT_EQ(got.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(got.status().message(), HasSubstr("k.pem: holds no PEM certificate"));
}

TEST_F(CertExpiryTest, RefusesACertificateBlockOfGarbage) {
  const std::string pem =
      "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGUgYXQgYWxs\n-----END CERTIFICATE-----\n";
  absl::StatusOr<std::vector<int64_t>> got = PemCertificateExpiries(pem, "bad.crt");
  EXPECT_EQ(got.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(got.status().message(), HasSubstr("bad.crt: certificate 1 does not parse"));
}

// A rotation caught mid-write: the first certificate is whole, the second
// is cut off. The file is refused, not read as a chain of one.
TEST_F(CertExpiryTest, RefusesAHalfWrittenChain) {
  const std::string second = CertPem(key_.get(), kIn2033);
  const std::string pem = CertPem(key_.get(), kIn2049) + second.substr(0, second.size() / 2);
  absl::StatusOr<std::vector<int64_t>> got = PemCertificateExpiries(pem, "half.crt");
  EXPECT_EQ(got.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(got.status().message(), HasSubstr("half.crt: certificate 2 does not parse"));
}

TEST_F(CertExpiryTest, UnreadableFilesNameThePath) {
  const std::string missing = absl::StrCat(std::getenv("TEST_TMPDIR"), "/no-such.crt");
  absl::StatusOr<int64_t> got = EarliestCertificateExpiry(missing);
  EXPECT_EQ(got.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(got.status().message(), HasSubstr(missing));

  got = EarliestCertificateExpiry(std::getenv("TEST_TMPDIR"));  // A directory.
  EXPECT_FALSE(got.ok());
  EXPECT_THAT(got.status().message(), HasSubstr(std::getenv("TEST_TMPDIR")));

  got = EarliestCertificateExpiry("/dev/zero");  // Endless: refused, not read forever.
  EXPECT_EQ(got.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(got.status().message(), HasSubstr("/dev/zero: larger than"));
}

TEST_F(CertExpiryTest, ChecksThatACertificateMatchesItsKey) {
  Pkey other = NewKey();
  const std::string cert = WriteFile("pair.crt", CertPem(key_.get(), kIn2033));
  const std::string key = WriteFile("pair.key", KeyPem(key_.get()));
  const std::string other_key = WriteFile("other.key", KeyPem(other.get()));
  EXPECT_TRUE(CheckCertificateMatchesKey(cert, key).ok());
  absl::Status s = CheckCertificateMatchesKey(cert, other_key);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(),
              HasSubstr("key file " + other_key + " does not match the certificate in " + cert));
  s = CheckCertificateMatchesKey(key, key);  // A key where the certificate belongs.
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr(key + ": holds no PEM certificate"));
  const std::string empty = WriteFile("empty.key", "");
  s = CheckCertificateMatchesKey(cert, empty);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr(empty + ": holds no unencrypted PEM private key"));
}

// A scrape must not stop to ask for a pass phrase (OpenSSL's default
// callback prompts on the terminal): an encrypted key just does not load.
TEST_F(CertExpiryTest, RefusesAnEncryptedKeyWithoutPrompting) {
  BioPtr bio(BIO_new(BIO_s_mem()));
  static char kPass[] = "secret";
  ASSERT_EQ(PEM_write_bio_PrivateKey(bio.get(), key_.get(), EVP_aes_256_cbc(), nullptr, 0, nullptr,
                                     kPass),
            1);
  const std::string cert = WriteFile("enc.crt", CertPem(key_.get(), kIn2033));
  const std::string key = WriteFile("enc.key", BioContents(bio.get()));
  absl::Status s = CheckCertificateMatchesKey(cert, key);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr(key + ": holds no unencrypted PEM private key"));
}

// The certificates the tests and the demo use: the leaf for --days, the CA
// four times as long, and a leaf+CA bundle expiring with its leaf.
TEST_F(CertExpiryTest, ReadsTheDevCertificates) {
  const std::string dir = absl::StrCat(std::getenv("TEST_TMPDIR"), "/dev-certs");
  ASSERT_EQ(
      std::system(("deploy/make-dev-certs.sh --out " + dir + " --days 10 >/dev/null").c_str()), 0);
  const int64_t now = absl::ToUnixSeconds(absl::Now());
  absl::StatusOr<int64_t> leaf = EarliestCertificateExpiry(dir + "/broker.crt");
  absl::StatusOr<int64_t> ca = EarliestCertificateExpiry(dir + "/ca.crt");
  ASSERT_TRUE(leaf.ok()) << leaf.status();
  ASSERT_TRUE(ca.ok()) << ca.status();
  EXPECT_NEAR(*leaf - now, 10 * 86400, 600);
  EXPECT_NEAR(*ca - now, 40 * 86400, 600);

  std::ifstream leaf_in(dir + "/broker.crt"), ca_in(dir + "/ca.crt");
  std::stringstream bundle;
  bundle << ca_in.rdbuf() << leaf_in.rdbuf();
  absl::StatusOr<int64_t> earliest =
      EarliestCertificateExpiry(WriteFile("bundle.crt", bundle.str()));
  ASSERT_TRUE(earliest.ok()) << earliest.status();
  EXPECT_EQ(*earliest, *leaf);
}

}  // namespace
}  // namespace iommu
