#include "common/cert_expiry.h"

#include <openssl/asn1.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <algorithm>
#include <climits>
#include <ctime>
#include <memory>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "common/pem_files.h"

namespace iommu {
namespace {

// The whole file, or an error naming it as `what`.
absl::StatusOr<std::string> ReadSmallFile(absl::string_view what, const std::string& path) {
  absl::StatusOr<std::string> pem = ReadPemFile(path);
  if (!pem.ok()) {
    return absl::Status(pem.status().code(),
                        absl::StrCat(what, " ", path, ": ", pem.status().message()));
  }
  return pem;
}

// OpenSSL's description of the newest error on this thread's queue.
std::string OpenSslReason(unsigned long err) {
  char text[256] = {};
  ERR_error_string_n(err, text, sizeof(text));
  return text;
}

}  // namespace

absl::StatusOr<std::vector<int64_t>> PemCertificateExpiries(absl::string_view pem,
                                                            absl::string_view file) {
  if (pem.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("certificate file ", file, ": empty, holds no PEM certificate"));
  }
  if (pem.size() > static_cast<size_t>(INT_MAX)) {
    return absl::InvalidArgumentError(absl::StrCat("certificate file ", file, ": too large"));
  }
  // The queue may hold another caller's leftovers; what is read below must
  // be this parse's own.
  ERR_clear_error();
  BioPtr bio = MemBio(pem);
  if (bio == nullptr) {
    ERR_clear_error();
    return absl::ResourceExhaustedError(
        absl::StrCat("certificate file ", file, ": cannot allocate an OpenSSL BIO"));
  }
  std::vector<int64_t> out;
  for (;;) {
    X509Ptr x509(PEM_read_bio_X509(bio.get(), nullptr, NoPassPhrase, nullptr));
    if (x509 == nullptr) break;
    const ASN1_TIME* not_after = X509_get0_notAfter(x509.get());
    struct tm tm = {};
    if (not_after == nullptr || ASN1_TIME_to_tm(not_after, &tm) != 1) {
      ERR_clear_error();
      return absl::InvalidArgumentError(absl::StrCat("certificate file ", file, ": certificate ",
                                                     out.size() + 1, " has no valid notAfter"));
    }
    out.push_back(absl::ToUnixSeconds(absl::FromTM(tm, absl::UTCTimeZone())));
  }
  // The loop ends at the first block that is not a certificate: a clean end
  // of input is "no start line"; anything else is a block that is broken.
  const unsigned long err = ERR_peek_last_error();
  const bool clean_end =
      ERR_GET_LIB(err) == ERR_LIB_PEM && ERR_GET_REASON(err) == PEM_R_NO_START_LINE;
  ERR_clear_error();
  if (!clean_end) {
    return absl::InvalidArgumentError(absl::StrCat(
        "certificate file ", file, ": certificate ", out.size() + 1,
        " does not parse (garbage, or a file caught half-written): ", OpenSslReason(err)));
  }
  if (out.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("certificate file ", file, ": holds no PEM certificate"));
  }
  return out;
}

absl::StatusOr<int64_t> EarliestCertificateExpiry(const std::string& path) {
  absl::StatusOr<std::string> pem = ReadSmallFile("certificate file", path);
  if (!pem.ok()) return pem.status();
  absl::StatusOr<std::vector<int64_t>> expiries = PemCertificateExpiries(*pem, path);
  if (!expiries.ok()) return expiries.status();
  return *std::min_element(expiries->begin(), expiries->end());
}

absl::Status CheckCertificateMatchesKey(const std::string& cert_path, const std::string& key_path) {
  absl::StatusOr<std::string> cert_pem = ReadSmallFile("certificate file", cert_path);
  if (!cert_pem.ok()) return cert_pem.status();
  absl::StatusOr<std::string> key_pem = ReadSmallFile("key file", key_path);
  if (!key_pem.ok()) return key_pem.status();
  // Both are at most kMaxPemBytes, so their sizes fit an int; an empty
  // buffer reads as "no PEM" below.
  ERR_clear_error();
  BioPtr cert_bio = MemBio(*cert_pem);
  BioPtr key_bio = MemBio(*key_pem);
  X509Ptr x509(cert_bio == nullptr
                   ? nullptr
                   : PEM_read_bio_X509(cert_bio.get(), nullptr, NoPassPhrase, nullptr));
  PkeyPtr key(key_bio == nullptr
                  ? nullptr
                  : PEM_read_bio_PrivateKey(key_bio.get(), nullptr, NoPassPhrase, nullptr));
  const bool match =
      x509 != nullptr && key != nullptr && X509_check_private_key(x509.get(), key.get()) == 1;
  ERR_clear_error();
  if (x509 == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("certificate file ", cert_path, ": holds no PEM certificate"));
  }
  if (key == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("key file ", key_path, ": holds no unencrypted PEM private key"));
  }
  if (!match) {
    return absl::InvalidArgumentError(absl::StrCat("key file ", key_path,
                                                   " does not match the certificate in ", cert_path,
                                                   " (renew both, key first)"));
  }
  return absl::OkStatus();
}

}  // namespace iommu
