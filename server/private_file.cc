#include "server/private_file.h"

#include <sys/stat.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace iommu {
namespace {

absl::Status CheckMode(absl::string_view what, const std::string& path, mode_t mode) {
  if ((mode & 077) == 0) return absl::OkStatus();
  return absl::FailedPreconditionError(absl::StrCat(
      what, " ", path, " has mode ", ModeString(mode), ": it is open to ",
      (mode & 070) && (mode & 07) ? "group and others" : (mode & 070) ? "group" : "others",
      " and holds secrets; make it private to the broker's user (chmod 600 ", path,
      ") and check who could have read it"));
}

}  // namespace

std::string ModeString(mode_t mode) { return absl::StrFormat("%04o", mode & 07777); }

absl::Status CheckPrivateFile(absl::string_view what, const std::string& path, bool must_exist) {
  struct stat st;
  if (stat(path.c_str(), &st) != 0) {
    if (errno == ENOENT && !must_exist) return absl::OkStatus();
    return absl::UnavailableError(
        absl::StrCat(what, " ", path, ": stat: ", std::strerror(errno)));
  }
  return CheckMode(what, path, st.st_mode);
}

absl::Status CheckKeyFile(absl::string_view what, const std::string& path, gid_t own_gid) {
  struct stat st;
  if (stat(path.c_str(), &st) != 0) {
    return absl::UnavailableError(
        absl::StrCat(what, " ", path, ": stat: ", std::strerror(errno)));
  }
  const bool own_group_reads_only = (st.st_mode & 070) == 040 && st.st_gid == own_gid;
  if ((st.st_mode & 07) == 0 && (own_group_reads_only || (st.st_mode & 070) == 0)) {
    return absl::OkStatus();
  }
  return absl::FailedPreconditionError(absl::StrCat(
      what, " ", path, " has mode ", ModeString(st.st_mode), " (group ", st.st_gid,
      "): it is open to ", (st.st_mode & 07) ? "others" : "a group other than the broker's own",
      " and holds a private key; make it private (chmod 600 ", path,
      ", or chmod 640 with the broker's group) and check who could have read it"));
}

absl::Status CheckPrivateFd(absl::string_view what, const std::string& path, int fd) {
  struct stat st;
  if (fstat(fd, &st) != 0) {
    return absl::UnavailableError(
        absl::StrCat(what, " ", path, ": fstat: ", std::strerror(errno)));
  }
  return CheckMode(what, path, st.st_mode);
}

}  // namespace iommu
