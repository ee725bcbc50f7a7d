#include "common/tls_mirror.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <climits>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/errno_status.h"
#include "common/log.h"
#include "common/pem_files.h"

namespace iommu {
namespace {

// Every certificate in `pem`, in order; INVALID_ARGUMENT (`why` only, the
// caller names the file) when there is none or any certificate block does
// not parse: a file caught half-written must not read as a shorter chain.
absl::StatusOr<std::vector<X509Ptr>> ParseCertificates(const std::string& pem) {
  // The queue may hold another caller's leftovers; what is read below must
  // be this parse's own.
  ERR_clear_error();
  BioPtr bio = MemBio(pem);
  if (bio == nullptr) return absl::ResourceExhaustedError("cannot allocate an OpenSSL BIO");
  std::vector<X509Ptr> out;
  for (;;) {
    X509Ptr x509(PEM_read_bio_X509(bio.get(), nullptr, NoPassPhrase, nullptr));
    if (x509 == nullptr) break;
    out.push_back(std::move(x509));
  }
  // The loop ends at the first block that is not a certificate: a clean end
  // of input is "no start line"; anything else is a broken block.
  const unsigned long err = ERR_peek_last_error();
  ERR_clear_error();
  if (ERR_GET_LIB(err) != ERR_LIB_PEM || ERR_GET_REASON(err) != PEM_R_NO_START_LINE) {
    char text[256] = {};
    ERR_error_string_n(err, text, sizeof(text));
    return absl::InvalidArgumentError(absl::StrCat("certificate ", out.size() + 1,
                                                   " does not parse (garbage, or a file caught "
                                                   "half-written): ",
                                                   text));
  }
  if (out.empty()) return absl::InvalidArgumentError("holds no PEM certificate");
  return out;
}

// The key re-encoded as one PEM block (PKCS#8), so the published file holds
// no other block of the key file (a certificate there would come before the
// chain's leaf).
absl::StatusOr<std::string> KeyPem(EVP_PKEY* key) {
  BioPtr out(BIO_new(BIO_s_mem()));
  if (out == nullptr ||
      PEM_write_bio_PrivateKey(out.get(), key, nullptr, nullptr, 0, nullptr, nullptr) != 1) {
    ERR_clear_error();
    return absl::InternalError("cannot encode the private key as PEM");
  }
  char* data = nullptr;
  const long n = BIO_get_mem_data(out.get(), &data);
  return std::string(data, static_cast<size_t>(n));
}

// "/proc/self/fd/N" names the file open at fd N for whichever thread of this
// process opens it, whatever that file is at the time.
std::string FdPath(const UniqueFd& fd) { return absl::StrCat("/proc/self/fd/", fd.get()); }

absl::StatusOr<UniqueFd> NewMemfd(const char* name) {
  UniqueFd fd(memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING));
  if (!fd.valid()) return ErrnoStatus(errno, absl::StrCat("memfd_create ", name));
  return fd;
}

absl::Status WriteAll(int fd, const std::string& content) {
  size_t done = 0;
  while (done < content.size()) {
    const ssize_t n = write(fd, content.data() + done, content.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return ErrnoStatus(errno, "write memfd");
    done += static_cast<size_t>(n);
  }
  return absl::OkStatus();
}

}  // namespace

std::vector<std::string> SpiffeUriSans(X509* x509) {
  auto* names =
      static_cast<GENERAL_NAMES*>(X509_get_ext_d2i(x509, NID_subject_alt_name, nullptr, nullptr));
  std::vector<std::string> spiffe;
  for (int i = 0; names != nullptr && i < sk_GENERAL_NAME_num(names); ++i) {
    const GENERAL_NAME* n = sk_GENERAL_NAME_value(names, i);
    if (n->type != GEN_URI) continue;
    const ASN1_IA5STRING* uri = n->d.uniformResourceIdentifier;
    std::string v(reinterpret_cast<const char*>(ASN1_STRING_get0_data(uri)),
                  static_cast<size_t>(ASN1_STRING_length(uri)));
    if (absl::StartsWith(v, "spiffe://")) spiffe.push_back(std::move(v));
  }
  GENERAL_NAMES_free(names);
  return spiffe;
}

absl::StatusOr<std::unique_ptr<TlsMirror>> TlsMirror::Create(TlsFiles files) {
  if (files.key_file.empty() != files.cert_file.empty() ||
      (files.cert_file.empty() && files.ca_file.empty())) {
    return absl::InvalidArgumentError(
        "TLS files: a key and a certificate go together, and without them a CA bundle is "
        "required");
  }
  UniqueFd identity_fd;
  if (!files.cert_file.empty()) {
    absl::StatusOr<UniqueFd> fd = NewMemfd("tls-identity");
    if (!fd.ok()) return fd.status();
    identity_fd = std::move(*fd);
  }
  UniqueFd ca_fd;
  if (!files.ca_file.empty()) {
    absl::StatusOr<UniqueFd> fd = NewMemfd("tls-ca");
    if (!fd.ok()) return fd.status();
    ca_fd = std::move(*fd);
  }
  std::unique_ptr<TlsMirror> mirror(
      new TlsMirror(std::move(files), std::move(identity_fd), std::move(ca_fd)));
  // A refusal is logged, and leaves the files empty: see the header.
  mirror->Reload().IgnoreError();
  return mirror;
}

TlsMirror::TlsMirror(TlsFiles files, UniqueFd identity_fd, UniqueFd ca_fd)
    : files_(std::move(files)),
      identity_fd_(std::move(identity_fd)),
      ca_fd_(std::move(ca_fd)),
      identity_path_(identity_fd_.valid() ? FdPath(identity_fd_) : ""),
      ca_path_(ca_fd_.valid() ? FdPath(ca_fd_) : "") {}

TlsMirror::~TlsMirror() {
  {
    absl::MutexLock l(&mu_);
    stop_ = true;
  }
  if (thread_.joinable()) thread_.join();
}

void TlsMirror::StartReloading(absl::Duration interval) {
  thread_ = std::thread([this, interval] { ReloadLoop(interval); });
}

void TlsMirror::ReloadLoop(absl::Duration interval) {
  for (;;) {
    {
      absl::MutexLock l(&mu_);
      if (mu_.AwaitWithTimeout(absl::Condition(&stop_), interval)) return;
    }
    // Refusals are logged by Reload itself; the old set stays served.
    Reload().IgnoreError();
  }
}

std::optional<TlsMirror::Fault> TlsMirror::ReadFiles(Pems* out) const {
  const std::vector<std::pair<const std::string*, std::string*>> files = {
      {&files_.key_file, &out->key}, {&files_.cert_file, &out->cert}, {&files_.ca_file, &out->ca}};
  for (const auto& [path, content] : files) {
    if (path->empty()) continue;  // No identity (CA only), or no CA (identity only).
    absl::StatusOr<std::string> read = ReadPemFile(*path);
    if (!read.ok()) return Fault{*path, read.status()};
    *content = *std::move(read);
  }
  return std::nullopt;
}

absl::Status TlsMirror::Reload() {
  absl::MutexLock l(&mu_);
  Pems pems;
  if (std::optional<Fault> f = ReadFiles(&pems)) {
    return Refuse(*f, absl::StrCat("unreadable:", f->file, ":", f->why.message()));
  }
  if (served_ == pems) {
    refused_seen_.reset();  // The same fault again later is news again.
    return absl::OkStatus();
  }
  // Lengths make the encoding unambiguous; a digit first keeps it apart
  // from "unreadable:".
  const std::string seen =
      absl::StrCat(pems.key.size(), ":", pems.key, pems.cert.size(), ":", pems.cert, pems.ca);
  if (refused_seen_ == seen) return refusal_;
  Checked checked;
  if (std::optional<Fault> f = Check(pems, &checked)) return Refuse(*f, seen);
  // Identity first: a reader that then sees the old CA still has a valid set
  // (each file is whole and valid on its own; rotations never need the two
  // to change at once). Only a changed file is replaced. A failure here is
  // the process's (out of fds or memory), not the content's: not remembered,
  // so the next reload tries again.
  const bool identity_changed =
      !served_.has_value() || served_->key != pems.key || served_->cert != pems.cert;
  if (identity_fd_.valid() && identity_changed) {
    if (absl::Status s = Publish(identity_fd_, "tls-identity", checked.identity); !s.ok()) {
      return Refuse(Fault{files_.cert_file, s}, std::nullopt);
    }
  }
  if (ca_fd_.valid() && (!served_.has_value() || served_->ca != pems.ca)) {
    if (absl::Status s = Publish(ca_fd_, "tls-ca", pems.ca); !s.ok()) {
      return Refuse(Fault{files_.ca_file, s}, std::nullopt);
    }
  }
  std::vector<LogField> fields;
  if (identity_fd_.valid()) {
    fields = {{"cert", files_.cert_file},
              {"key", files_.key_file},
              {"spiffe_id", absl::StrJoin(checked.spiffe, ",")}};
  }
  if (ca_fd_.valid()) fields.push_back({"ca", files_.ca_file});
  LogEvent(LogLevel::kInfo, "tls_reloaded", fields);
  served_ = std::move(pems);
  served_spiffe_ = std::move(checked.spiffe);
  refused_seen_.reset();
  refusal_ = absl::OkStatus();
  return absl::OkStatus();
}

std::optional<TlsMirror::Fault> TlsMirror::Check(const Pems& pems, Checked* out) const {
  auto bad = [](const std::string& file, absl::string_view why) {
    return Fault{file, absl::InvalidArgumentError(why)};
  };
  if (identity_fd_.valid()) {
    absl::StatusOr<std::vector<X509Ptr>> chain = ParseCertificates(pems.cert);
    if (!chain.ok()) return Fault{files_.cert_file, chain.status()};
    X509* leaf = (*chain)[0].get();
    ERR_clear_error();
    BioPtr key_bio = MemBio(pems.key);
    PkeyPtr key(key_bio == nullptr
                    ? nullptr
                    : PEM_read_bio_PrivateKey(key_bio.get(), nullptr, NoPassPhrase, nullptr));
    const bool match = key != nullptr && X509_check_private_key(leaf, key.get()) == 1;
    ERR_clear_error();
    if (key == nullptr) return bad(files_.key_file, "holds no unencrypted PEM private key");
    if (!match) {
      return bad(files_.key_file,
                 absl::StrCat("does not match the certificate in ", files_.cert_file));
    }
    out->spiffe = SpiffeUriSans(leaf);
    std::sort(out->spiffe.begin(), out->spiffe.end());
    if (served_.has_value() && out->spiffe != served_spiffe_) {
      return bad(files_.cert_file,
                 absl::StrCat("names [", absl::StrJoin(out->spiffe, ", "), "], but the served ",
                              "certificate names [", absl::StrJoin(served_spiffe_, ", "),
                              "] (a rotation keeps the identity; a restart changes it)"));
    }
    absl::StatusOr<std::string> key_pem = KeyPem(key.get());
    if (!key_pem.ok()) return Fault{files_.key_file, key_pem.status()};
    // OpenSSL's PEM readers skip blocks of other kinds, so gRPC finds the key
    // and then the chain in the one file.
    out->identity = absl::StrCat(*key_pem, pems.cert);
  }
  if (ca_fd_.valid()) {
    absl::StatusOr<std::vector<X509Ptr>> cas = ParseCertificates(pems.ca);
    if (!cas.ok()) return Fault{files_.ca_file, cas.status()};
  }
  return std::nullopt;
}

absl::Status TlsMirror::Publish(const UniqueFd& fd, const char* name, const std::string& content) {
  absl::StatusOr<UniqueFd> next = NewMemfd(name);
  if (!next.ok()) return next.status();
  if (absl::Status s = WriteAll(next->get(), content); !s.ok()) return s;
  // gRPC's watcher reads the key path and then the certificate path (the
  // same file here) and retries when either's mtime, in whole seconds,
  // changed meanwhile. A strictly increasing mtime makes that check see
  // every replacement, even two within one second.
  last_mtime_ = std::max<int64_t>(last_mtime_ + 1, absl::ToUnixSeconds(absl::Now()));
  const struct timespec times[2] = {{static_cast<time_t>(last_mtime_), 0},
                                    {static_cast<time_t>(last_mtime_), 0}};
  if (futimens(next->get(), times) != 0) return ErrnoStatus(errno, "futimens memfd");
  // Sealed, so nothing can change a published file; readers only read.
  if (fcntl(next->get(), F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL) !=
      0) {
    return ErrnoStatus(errno, "F_ADD_SEALS memfd");
  }
  if (dup3(next->get(), fd.get(), O_CLOEXEC) < 0) {
    return ErrnoStatus(errno, absl::StrCat("dup3 onto fd ", fd.get()));
  }
  return absl::OkStatus();  // `next` closes its own fd; `fd` now holds the file.
}

absl::Status TlsMirror::Refuse(const Fault& fault, std::optional<std::string> seen) {
  if (seen.has_value() && refused_seen_ == seen) return refusal_;
  refused_seen_ = std::move(seen);
  refusal_ = absl::Status(fault.why.code(), absl::StrCat(fault.file, ": ", fault.why.message()));
  LogEvent(LogLevel::kError, "tls_reload_refused",
           {{"file", fault.file},
            {"error", fault.why.message()},
            {"serving", served_.has_value() ? "previous set" : "nothing"}});
  return refusal_;
}

}  // namespace iommu
