#include "common/pem_files.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/errno_status.h"
#include "common/unique_fd.h"

namespace iommu {

absl::StatusOr<std::string> ReadPemFile(const std::string& path) {
  UniqueFd fd(open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) return ErrnoStatus(errno, "open");
  std::string out;
  char buf[16384];
  for (;;) {
    const ssize_t n = read(fd.get(), buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return ErrnoStatus(errno, "read");
    if (n == 0) return out;
    if (out.size() + static_cast<size_t>(n) > kMaxPemBytes) {
      return absl::InvalidArgumentError(
          absl::StrCat("larger than ", kMaxPemBytes, " bytes, not a PEM file"));
    }
    out.append(buf, static_cast<size_t>(n));
  }
}

BioPtr MemBio(absl::string_view pem) {
  return BioPtr(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
}

int NoPassPhrase(char* /*buf*/, int /*size*/, int /*rwflag*/, void* /*u*/) { return -1; }

}  // namespace iommu
