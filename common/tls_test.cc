#include "common/tls.h"

#include <cstdlib>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace iommu {
namespace {

using ::testing::HasSubstr;

// Certificates from deploy/make-dev-certs.sh, made once for the suite.
class TlsTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new std::string(std::string(std::getenv("TEST_TMPDIR")) + "/certs");
    const std::string cmd = "deploy/make-dev-certs.sh --out " + *dir_ +
                            " --agent node-1 --tenant acme >/dev/null";
    ASSERT_EQ(std::system(cmd.c_str()), 0);
  }
  static void TearDownTestSuite() { delete dir_; }

  static TransportConfig Config(const std::string& stem) {
    TransportConfig c;
    c.cert_file = *dir_ + "/" + stem + ".crt";
    c.key_file = *dir_ + "/" + stem + ".key";
    c.ca_file = *dir_ + "/ca.crt";
    return c;
  }
  static std::string* dir_;
};
std::string* TlsTest::dir_ = nullptr;

TEST_F(TlsTest, AcceptsAMatchingSet) {
  EXPECT_TRUE(ValidateTransportConfig(Config("broker")).ok());
  TransportConfig insecure;
  insecure.insecure = true;
  EXPECT_TRUE(ValidateTransportConfig(insecure).ok());
}

TEST_F(TlsTest, RefusalsNameTheFlag) {
  TransportConfig c = Config("broker");
  c.key_file = *dir_ + "/tenant-acme.key";
  EXPECT_THAT(ValidateTransportConfig(c).message(), HasSubstr("--tls-key: "));
  EXPECT_THAT(ValidateTransportConfig(c).message(), HasSubstr("does not match the certificate"));

  c = Config("broker");
  c.ca_file = *dir_ + "/nope.crt";
  EXPECT_THAT(ValidateTransportConfig(c).message(), HasSubstr("--tls-ca: cannot read"));

  c = Config("broker");
  c.cert_file = *dir_ + "/broker.key";  // A key where a certificate belongs.
  EXPECT_THAT(ValidateTransportConfig(c).message(), HasSubstr("holds no PEM certificate"));

  c = Config("broker");
  c.insecure = true;
  EXPECT_THAT(ValidateTransportConfig(c).message(), HasSubstr("--insecure: cannot be combined"));

  c = Config("broker");
  c.trust_domain = "Bad Domain";
  EXPECT_THAT(ValidateTransportConfig(c).message(), HasSubstr("--trust-domain"));

  EXPECT_THAT(ValidateTransportConfig(TransportConfig{}).message(),
              HasSubstr("--tls-cert, --tls-key, --tls-ca: required (mutual TLS), or --insecure"));

  TransportFlagNames cli{"--cert", "--key", "--ca", ""};
  c = Config("broker");
  c.cert_file.clear();
  EXPECT_THAT(ValidateTransportConfig(c, cli).message(), HasSubstr("--cert: required"));
}

TEST_F(TlsTest, ReadsTheIdentityOfACertificate) {
  EXPECT_EQ(*CertificateIdentity(*dir_ + "/broker.crt", "iommu.local"),
            (Identity{Role::kBroker, ""}));
  EXPECT_EQ(*CertificateIdentity(*dir_ + "/agent-node-1.crt", "iommu.local"),
            (Identity{Role::kAgent, "node-1"}));
  EXPECT_EQ(*CertificateIdentity(*dir_ + "/tenant-acme.crt", "iommu.local"),
            (Identity{Role::kTenant, "acme"}));
  // Another trust domain is not ours.
  EXPECT_THAT(CertificateIdentity(*dir_ + "/broker.crt", "other.domain").status().message(),
              HasSubstr("not in trust domain"));
  // The CA has no SPIFFE ID at all.
  EXPECT_THAT(CertificateIdentity(*dir_ + "/ca.crt", "iommu.local").status().message(),
              HasSubstr("exactly one spiffe:// SAN URI, found 0"));
}

}  // namespace
}  // namespace iommu
