// When certificates expire: the notAfter of every certificate in a PEM file
// (a leaf with its chain, or a CA bundle), for the daemons' expiry gauges
// (common/cert_expiry_gauge.h) and the alerts on them.
//
// Thread-safe: no shared state (OpenSSL's error queue is per thread).
#ifndef COMMON_CERT_EXPIRY_H_
#define COMMON_CERT_EXPIRY_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace iommu {

// The notAfter of each certificate in the PEM text `pem`, in file order, as
// seconds since the Unix epoch. PEM blocks of other kinds (e.g. a private
// key in the same file) are skipped. `file` names the source in errors.
// INVALID_ARGUMENT naming `file` when the text holds no certificate, or when
// any CERTIFICATE block does not parse (garbage, a truncated or half-written
// file): all of it must parse, so a file caught mid-write is an error rather
// than a shorter chain.
absl::StatusOr<std::vector<int64_t>> PemCertificateExpiries(absl::string_view pem,
                                                            absl::string_view file);

// The earliest notAfter (seconds since the Unix epoch) of the certificates
// in the PEM file at `path`: when the first of them to expire expires.
// Errors name the file: the errno's code (NOT_FOUND, PERMISSION_DENIED, ...)
// when it cannot be read, INVALID_ARGUMENT as PemCertificateExpiries.
absl::StatusOr<int64_t> EarliestCertificateExpiry(const std::string& path);

// OK when the first certificate in `cert_path` and the PEM private key in
// `key_path` are a pair. gRPC refuses a new pair that is not (and then fails
// new handshakes), so a renewed certificate beside an old key is as bad as no
// certificate. Errors name the file at fault: as EarliestCertificateExpiry for
// unreadable files, INVALID_ARGUMENT for a key that does not parse or does
// not match.
absl::Status CheckCertificateMatchesKey(const std::string& cert_path, const std::string& key_path);

}  // namespace iommu

#endif  // COMMON_CERT_EXPIRY_H_
