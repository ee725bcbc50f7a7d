// OpenSSL objects as RAII pointers and PEM files read whole, for the code
// that checks certificate files (cert_expiry, tls_mirror, tls): one bound on
// what a path may make it read, one rule for pass phrases.
//
// Thread-safe (pure functions).
#ifndef COMMON_PEM_FILES_H_
#define COMMON_PEM_FILES_H_

#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/x509.h>

#include <cstddef>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace iommu {

struct BioDeleter {
  void operator()(BIO* b) const { BIO_free(b); }
};
struct X509Deleter {
  void operator()(X509* x) const { X509_free(x); }
};
struct PkeyDeleter {
  void operator()(EVP_PKEY* k) const { EVP_PKEY_free(k); }
};
using BioPtr = std::unique_ptr<BIO, BioDeleter>;
using X509Ptr = std::unique_ptr<X509, X509Deleter>;
using PkeyPtr = std::unique_ptr<EVP_PKEY, PkeyDeleter>;

// Certificate and key files are a few kilobytes; a path that leads to
// something far larger (a flag pointing at a disk image, /dev/zero) is
// refused rather than read without end.
inline constexpr size_t kMaxPemBytes = 1 << 20;

// The whole file. Errors do not name it (the caller does): errno's code and
// name for open/read, INVALID_ARGUMENT past kMaxPemBytes.
absl::StatusOr<std::string> ReadPemFile(const std::string& path);

// A read-only memory BIO over `pem`, which must outlive it and be at most
// kMaxPemBytes (so that its size fits OpenSSL's int). Null on OpenSSL's
// allocation failure.
BioPtr MemBio(absl::string_view pem);

// A pem_password_cb that never gives a pass phrase: OpenSSL's default would
// prompt on the terminal and block a reload or a scrape on an encrypted key
// dropped in by a rotation; with this, such a key fails to load instead.
int NoPassPhrase(char* buf, int size, int rwflag, void* u);

}  // namespace iommu

#endif  // COMMON_PEM_FILES_H_
