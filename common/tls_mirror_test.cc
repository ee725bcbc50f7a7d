#include "common/tls_mirror.h"

#include <openssl/bio.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <cstdlib>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "common/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace iommu {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::StartsWith;

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void WriteAll(const std::string& path, const std::string& content) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << content;
  ASSERT_TRUE(out.good()) << path;
}

void Shell(const std::string& cmd) { ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd; }

// Whether the first private key and the first certificate in `pem` (one
// file, as gRPC reads the mirror's identity file) are a pair.
bool KeyMatchesCertificate(const std::string& pem) {
  BIO* key_bio = BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size()));
  BIO* cert_bio = BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size()));
  EVP_PKEY* key = PEM_read_bio_PrivateKey(key_bio, nullptr, nullptr, const_cast<char*>(""));
  X509* cert = PEM_read_bio_X509_AUX(cert_bio, nullptr, nullptr, nullptr);
  const bool match = key != nullptr && cert != nullptr && X509_check_private_key(cert, key) == 1;
  X509_free(cert);
  EVP_PKEY_free(key);
  BIO_free(cert_bio);
  BIO_free(key_bio);
  return match;
}

// Two generations of certificates from one CA (deploy/make-dev-certs.sh),
// made once; each test mirrors its own copy of the files under `files_`.
class TlsMirrorTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    root_ = new std::string(std::string(std::getenv("TEST_TMPDIR")) + "/tls_mirror");
    Shell("deploy/make-dev-certs.sh --out " + *root_ + "/gen1 >/dev/null");
    // The second generation: the same CA, every leaf re-issued.
    Shell(absl::StrCat("mkdir -p ", *root_, "/gen2 && cp ", *root_, "/gen1/ca.crt ", *root_,
                       "/gen1/ca.key ", *root_, "/gen2/"));
    Shell("deploy/make-dev-certs.sh --out " + *root_ + "/gen2 --days 5 >/dev/null");
  }
  static void TearDownTestSuite() { delete root_; }

  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = absl::StrCat(*root_, "/", info->name());
    Shell("mkdir -p " + dir_);
    files_ = {dir_ + "/broker.key", dir_ + "/broker.crt", dir_ + "/ca.crt"};
    Install("gen1", "broker.key", "broker.key");
    Install("gen1", "broker.crt", "broker.crt");
    Install("gen1", "ca.crt", "ca.crt");
  }

  // Copies `from` of generation `gen` over this test's file `to`.
  void Install(const std::string& gen, const std::string& from, const std::string& to) {
    WriteAll(dir_ + "/" + to, ReadAll(absl::StrCat(*root_, "/", gen, "/", from)));
  }
  static std::string Gen(const std::string& gen, const std::string& file) {
    return ReadAll(absl::StrCat(*root_, "/", gen, "/", file));
  }

  // Asserts that `mirror` serves generation `gen`'s broker pair and CA.
  static void ExpectServes(const TlsMirror& mirror, const std::string& gen) {
    const std::string identity = ReadAll(mirror.identity_path());
    EXPECT_TRUE(absl::EndsWith(identity, Gen(gen, "broker.crt"))) << identity;
    EXPECT_TRUE(KeyMatchesCertificate(identity)) << identity;
    EXPECT_EQ(ReadAll(mirror.ca_path()), Gen(gen, "ca.crt"));
  }

  static std::string* root_;
  std::string dir_;
  TlsFiles files_;
};
std::string* TlsMirrorTest::root_ = nullptr;

TEST_F(TlsMirrorTest, ServesAValidSetAsOneIdentityFileAndTheCa) {
  ASSERT_OK_AND_ASSIGN(mirror, TlsMirror::Create(files_));
  EXPECT_THAT(mirror->identity_path(), StartsWith("/proc/self/fd/"));
  EXPECT_THAT(mirror->ca_path(), StartsWith("/proc/self/fd/"));
  ExpectServes(*mirror, "gen1");
  // The key is published as one PEM block, before the chain.
  EXPECT_THAT(ReadAll(mirror->identity_path()), StartsWith("-----BEGIN PRIVATE KEY-----"));
  EXPECT_OK(mirror->Reload());  // Unchanged files: nothing to do.
}

TEST_F(TlsMirrorTest, RefusesAKeyThatDoesNotMatchAndKeepsTheOldPair) {
  ASSERT_OK_AND_ASSIGN(mirror, TlsMirror::Create(files_));
  const std::string path = mirror->identity_path();
  Install("gen1", "operator-admin.key", "broker.key");
  EXPECT_THAT(mirror->Reload(), StatusIs(absl::StatusCode::kInvalidArgument,
                                         files_.key_file + ": does not match the certificate in " +
                                             files_.cert_file));
  EXPECT_EQ(mirror->identity_path(), path);
  ExpectServes(*mirror, "gen1");
}

// docs/OPERATIONS.md renames the key first, then the certificate: a reload
// between the two sees the new key beside the old certificate.
TEST_F(TlsMirrorTest, RotationReadBetweenItsRenamesKeepsTheOldPairThenTakesTheNew) {
  ASSERT_OK_AND_ASSIGN(mirror, TlsMirror::Create(files_));
  Install("gen2", "broker.key", "broker.key");
  EXPECT_THAT(mirror->Reload(),
              StatusIs(absl::StatusCode::kInvalidArgument, "does not match the certificate"));
  ExpectServes(*mirror, "gen1");
  Install("gen2", "broker.crt", "broker.crt");
  EXPECT_OK(mirror->Reload());
  ExpectServes(*mirror, "gen2");
}

TEST_F(TlsMirrorTest, RefusesACertificateOfAnotherIdentity) {
  ASSERT_OK_AND_ASSIGN(mirror, TlsMirror::Create(files_));
  // A whole, matching pair, but the operator's: the daemon would stop being
  // the broker.
  Install("gen1", "operator-admin.key", "broker.key");
  Install("gen1", "operator-admin.crt", "broker.crt");
  EXPECT_THAT(
      mirror->Reload(),
      StatusIs(absl::StatusCode::kInvalidArgument,
               files_.cert_file + ": names [spiffe://iommu.local/operator/admin], but the served "
                                  "certificate names [spiffe://iommu.local/broker]"));
  ExpectServes(*mirror, "gen1");
}

TEST_F(TlsMirrorTest, RefusesAGarbageCaBundle) {
  ASSERT_OK_AND_ASSIGN(mirror, TlsMirror::Create(files_));
  WriteAll(files_.ca_file, "not a certificate\n");
  EXPECT_THAT(mirror->Reload(), StatusIs(absl::StatusCode::kInvalidArgument,
                                         files_.ca_file + ": holds no PEM certificate"));
  ExpectServes(*mirror, "gen1");
}

TEST_F(TlsMirrorTest, RefusesATruncatedCertificate) {
  ASSERT_OK_AND_ASSIGN(mirror, TlsMirror::Create(files_));
  const std::string crt = Gen("gen2", "broker.crt");
  Install("gen2", "broker.key", "broker.key");
  WriteAll(files_.cert_file, crt.substr(0, crt.size() / 2));
  EXPECT_THAT(mirror->Reload(), StatusIs(absl::StatusCode::kInvalidArgument,
                                         files_.cert_file + ": certificate 1 does not parse"));
  ExpectServes(*mirror, "gen1");
}

TEST_F(TlsMirrorTest, RefusesAMissingFileWithItsErrno) {
  ASSERT_OK_AND_ASSIGN(mirror, TlsMirror::Create(files_));
  ASSERT_EQ(std::remove(files_.ca_file.c_str()), 0);
  EXPECT_THAT(mirror->Reload(),
              StatusIs(absl::StatusCode::kNotFound, files_.ca_file + ": open: ENOENT"));
  ExpectServes(*mirror, "gen1");
}

TEST_F(TlsMirrorTest, PublishesAReissuedSetAtTheSamePaths) {
  ASSERT_OK_AND_ASSIGN(mirror, TlsMirror::Create(files_));
  const std::string identity = mirror->identity_path();
  const std::string ca = mirror->ca_path();
  // A reader that opened the old file keeps reading the old file whole.
  std::ifstream old_reader(identity, std::ios::binary);
  Install("gen2", "broker.key", "broker.key");
  Install("gen2", "broker.crt", "broker.crt");
  EXPECT_OK(mirror->Reload());
  EXPECT_EQ(mirror->identity_path(), identity);
  EXPECT_EQ(mirror->ca_path(), ca);
  ExpectServes(*mirror, "gen2");
  std::stringstream old;
  old << old_reader.rdbuf();
  EXPECT_TRUE(absl::EndsWith(old.str(), Gen("gen1", "broker.crt")));
}

TEST_F(TlsMirrorTest, LogsEachDistinctRefusalOnceWithoutKeyMaterial) {
  ASSERT_OK_AND_ASSIGN(mirror, TlsMirror::Create(files_));
  ::testing::internal::CaptureStderr();
  Install("gen1", "operator-admin.key", "broker.key");
  EXPECT_FALSE(mirror->Reload().ok());
  EXPECT_FALSE(mirror->Reload().ok());  // The same content: not logged again.
  Install("gen1", "broker.key", "broker.key");
  WriteAll(files_.ca_file, "garbage\n");
  EXPECT_FALSE(mirror->Reload().ok());  // New content: logged.
  Install("gen1", "ca.crt", "ca.crt");
  EXPECT_OK(mirror->Reload());  // Back to the served set: nothing to log.
  const std::string log = ::testing::internal::GetCapturedStderr();
  std::vector<std::string> refused;
  for (absl::string_view line : absl::StrSplit(log, '\n')) {
    if (absl::StrContains(line, "event=tls_reload_refused")) refused.emplace_back(line);
  }
  ASSERT_EQ(refused.size(), 2u) << log;
  EXPECT_THAT(refused[0], HasSubstr("file=" + files_.key_file));
  EXPECT_THAT(refused[0], HasSubstr("does not match the certificate"));
  EXPECT_THAT(refused[0], HasSubstr("serving=\"previous set\""));
  EXPECT_THAT(refused[1], HasSubstr("file=" + files_.ca_file));
  EXPECT_THAT(log, Not(HasSubstr("PRIVATE KEY")));
  EXPECT_THAT(log, Not(HasSubstr("event=tls_reloaded")));
}

TEST_F(TlsMirrorTest, ARefusedFirstSetLeavesEmptyFilesUntilAGoodOne) {
  Install("gen1", "operator-admin.key", "broker.key");
  ASSERT_OK_AND_ASSIGN(mirror, TlsMirror::Create(files_));
  EXPECT_EQ(ReadAll(mirror->identity_path()), "");
  EXPECT_EQ(ReadAll(mirror->ca_path()), "");
  // Nothing was served yet, so any identity may come first.
  Install("gen1", "operator-admin.crt", "broker.crt");
  EXPECT_OK(mirror->Reload());
  EXPECT_TRUE(KeyMatchesCertificate(ReadAll(mirror->identity_path())));
}

TEST_F(TlsMirrorTest, WithoutAnIdentityMirrorsOnlyTheCa) {
  ASSERT_OK_AND_ASSIGN(mirror, TlsMirror::Create({"", "", files_.ca_file}));
  EXPECT_EQ(mirror->identity_path(), "");
  EXPECT_EQ(ReadAll(mirror->ca_path()), Gen("gen1", "ca.crt"));
  EXPECT_THAT(TlsMirror::Create({files_.key_file, "", files_.ca_file}),
              StatusIs(absl::StatusCode::kInvalidArgument, "go together"));
}

// A client that trusts the system's roots (the broker's etcd client given
// --etcd-cert and --etcd-key but no --etcd-ca).
TEST_F(TlsMirrorTest, WithoutACaMirrorsOnlyTheIdentity) {
  ASSERT_OK_AND_ASSIGN(mirror, TlsMirror::Create({files_.key_file, files_.cert_file, ""}));
  EXPECT_EQ(mirror->ca_path(), "");
  EXPECT_TRUE(absl::EndsWith(ReadAll(mirror->identity_path()), Gen("gen1", "broker.crt")));
  Install("gen1", "operator-admin.key", "broker.key");
  EXPECT_THAT(mirror->Reload(),
              StatusIs(absl::StatusCode::kInvalidArgument, "does not match the certificate"));
  Install("gen2", "broker.key", "broker.key");
  Install("gen2", "broker.crt", "broker.crt");
  EXPECT_OK(mirror->Reload());
  EXPECT_TRUE(absl::EndsWith(ReadAll(mirror->identity_path()), Gen("gen2", "broker.crt")));
  EXPECT_TRUE(KeyMatchesCertificate(ReadAll(mirror->identity_path())));
  EXPECT_THAT(TlsMirror::Create({"", "", ""}),
              StatusIs(absl::StatusCode::kInvalidArgument, "a CA bundle is required"));
}

TEST_F(TlsMirrorTest, ItsThreadPublishesAChangeWithoutBeingAsked) {
  ASSERT_OK_AND_ASSIGN(mirror, TlsMirror::Create(files_));
  mirror->StartReloading(absl::Milliseconds(20));
  Install("gen2", "broker.crt", "broker.crt");
  Install("gen2", "broker.key", "broker.key");
  const absl::Time deadline = absl::Now() + absl::Seconds(20);
  while (absl::Now() < deadline &&
         !absl::EndsWith(ReadAll(mirror->identity_path()), Gen("gen2", "broker.crt"))) {
    absl::SleepFor(absl::Milliseconds(10));
  }
  ExpectServes(*mirror, "gen2");
}

}  // namespace
}  // namespace iommu
