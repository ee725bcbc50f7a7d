#include "agent/state_dir_check.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/errno_status.h"
#include "common/status_macros.h"

namespace iommu {
namespace agent {
namespace {

std::string ModeString(mode_t mode) { return absl::StrFormat("%04o", mode & 07777); }

const char* TypeName(mode_t mode) {
  if (S_ISDIR(mode)) return "a directory";
  if (S_ISREG(mode)) return "a regular file";
  if (S_ISLNK(mode)) return "a symlink";
  return "neither a directory nor a regular file";
}

absl::Status Refuse(const std::string& path, const struct stat& st, uid_t euid, bool directory,
                    absl::string_view problem) {
  const std::string owner = euid == 0 ? "root" : absl::StrCat(euid);
  const std::string fix =
      absl::StrCat("chown ", owner, " ", path, " && chmod ", directory ? "0700 " : "0600 ", path);
  return absl::FailedPreconditionError(
      absl::StrCat("state_dir: ", path, " is owned by uid ", st.st_uid, " with mode ",
                   ModeString(st.st_mode), " (", problem,
                   "); whoever can write the state directory decides what this agent "
                   "restores at its next start, so it must belong to the agent's user (uid ",
                   euid, ") and be writable by no one else: check its contents, then ", fix,
                   ", or point --state-dir elsewhere"));
}

}  // namespace

absl::Status CheckStatePath(const std::string& path, const struct stat& st, uid_t euid,
                            bool directory) {
  const bool right_type = directory ? S_ISDIR(st.st_mode) : S_ISREG(st.st_mode);
  if (!right_type) {
    return absl::FailedPreconditionError(
        absl::StrCat("state_dir: ", path, " is ", TypeName(st.st_mode), ", expected ",
                     directory ? "a directory" : "a regular file", " owned by uid ", euid,
                     "; remove it or point --state-dir elsewhere"));
  }
  if (st.st_uid != euid) {
    return Refuse(path, st, euid, directory, absl::StrCat("not the agent's uid ", euid));
  }
  if ((st.st_mode & (S_IWGRP | S_IWOTH)) != 0) {
    const bool group = (st.st_mode & S_IWGRP) != 0;
    const bool others = (st.st_mode & S_IWOTH) != 0;
    return Refuse(path, st, euid, directory,
                  absl::StrCat("writable by ", group && others ? "group and others"
                                               : group         ? "its group"
                                                               : "others"));
  }
  return absl::OkStatus();
}

absl::StatusOr<UniqueFd> CheckStateDir(const std::string& dir) {
  const uid_t euid = ::geteuid();
  struct stat link;
  if (::lstat(dir.c_str(), &link) != 0) {
    return ErrnoStatus(errno, absl::StrCat("state_dir: lstat ", dir));
  }
  int flags = O_RDONLY | O_DIRECTORY | O_CLOEXEC;
  if (S_ISLNK(link.st_mode)) {
    // A link's target is only as trustworthy as whoever made the link.
    if (link.st_uid != euid && link.st_uid != 0) {
      return absl::FailedPreconditionError(absl::StrCat(
          "state_dir: ", dir, " is a symlink owned by uid ", link.st_uid, ", not the agent's uid ",
          euid,
          " or root; whoever made it chooses the journal this "
          "agent restores from. Point --state-dir at the real directory, owned by uid ",
          euid, " with mode 0700"));
    }
  } else {
    // Not a link when looked at: it must not become one before the open.
    flags |= O_NOFOLLOW;
  }
  UniqueFd fd(::open(dir.c_str(), flags));
  if (!fd) return ErrnoStatus(errno, absl::StrCat("state_dir: open ", dir));
  struct stat st;
  if (::fstat(fd.get(), &st) != 0) {
    return ErrnoStatus(errno, absl::StrCat("state_dir: fstat ", dir));
  }
  RETURN_IF_ERROR(CheckStatePath(dir, st, euid, /*directory=*/true));
  // Relative to the checked directory, and without following a link.
  for (const char* name : kStateFiles) {
    const std::string path = absl::StrCat(dir, "/", name);
    struct stat file;
    if (::fstatat(fd.get(), name, &file, AT_SYMLINK_NOFOLLOW) != 0) {
      if (errno == ENOENT) continue;
      return ErrnoStatus(errno, absl::StrCat("state_dir: stat ", path));
    }
    RETURN_IF_ERROR(CheckStatePath(path, file, euid, /*directory=*/false));
  }
  return fd;
}

}  // namespace agent
}  // namespace iommu
