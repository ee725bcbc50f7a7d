#include "server/store_file_lock.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/status_macros.h"
#include "server/private_file.h"

namespace iommu {
namespace {

// Creates `path` with mode 0600, or opens it if it exists. The mode is set
// with fchmod as well because the umask may have removed the owner's bits.
absl::StatusOr<int> OpenOrCreatePrivate(const std::string& path) {
  // A few rounds cover a file removed between the two opens; a dangling
  // symlink fails both forever (EEXIST, then ENOENT) and is reported.
  for (int attempt = 0; attempt < 8; ++attempt) {
    int fd = open(path.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd >= 0) {
      if (fchmod(fd, 0600) != 0) {
        const int err = errno;
        close(fd);
        return absl::UnavailableError(
            absl::StrCat("store: chmod 600 ", path, ": ", std::strerror(err)));
      }
      return fd;
    }
    if (errno == EINTR) continue;
    if (errno != EEXIST) break;
    fd = open(path.c_str(), O_RDWR | O_CLOEXEC);
    if (fd >= 0) return fd;
    if (errno != ENOENT && errno != EINTR) break;  // ENOENT: removed meanwhile; create it.
  }
  return absl::UnavailableError(absl::StrCat("store: open ", path, ": ", std::strerror(errno),
                                             errno == ENOENT ? " (a dangling symlink?)" : ""));
}

std::string ReadProcLocks() {
  std::ifstream in("/proc/locks");
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace

std::optional<pid_t> FindFlockHolder(absl::string_view proc_locks, dev_t dev, ino_t ino) {
  // Lines look like "12: FLOCK  ADVISORY  WRITE 4242 fd:01:1234567 0 EOF";
  // a waiter's line has "->" after the number. The device is MAJOR:MINOR in
  // hex, the inode decimal.
  std::optional<pid_t> inode_only;
  int inode_only_count = 0;
  for (absl::string_view line : absl::StrSplit(proc_locks, '\n')) {
    std::vector<absl::string_view> f = absl::StrSplit(line, ' ', absl::SkipEmpty());
    if (f.size() < 6 || f[1] != "FLOCK") continue;
    const std::vector<absl::string_view> where = absl::StrSplit(f[5], ':');
    int pid = 0;
    uint64_t inode = 0;
    if (where.size() != 3 || !absl::SimpleAtoi(f[4], &pid) ||
        !absl::SimpleAtoi(where[2], &inode) || inode != ino) {
      continue;
    }
    uint32_t maj = 0, min = 0;
    if (absl::SimpleHexAtoi(where[0], &maj) && absl::SimpleHexAtoi(where[1], &min) &&
        maj == major(dev) && min == minor(dev)) {
      return pid;
    }
    inode_only = pid;
    ++inode_only_count;
  }
  if (inode_only_count == 1) return inode_only;
  return std::nullopt;
}

absl::StatusOr<std::unique_ptr<StoreFileLock>> StoreFileLock::Acquire(const std::string& path) {
  ASSIGN_OR_RETURN(int fd, OpenOrCreatePrivate(path));
  std::unique_ptr<StoreFileLock> lock(new StoreFileLock(fd));
  int rc;
  do {
    rc = flock(fd, LOCK_EX | LOCK_NB);
  } while (rc != 0 && errno == EINTR);
  if (rc != 0) {
    const int err = errno;
    if (err != EWOULDBLOCK) {
      return absl::UnavailableError(absl::StrCat("store: lock ", path, ": ", std::strerror(err)));
    }
    struct stat st;
    std::optional<pid_t> holder;
    std::string inode = "?";
    if (fstat(fd, &st) == 0) {
      holder = FindFlockHolder(ReadProcLocks(), st.st_dev, st.st_ino);
      inode = absl::StrCat(st.st_ino);
    }
    return absl::FailedPreconditionError(absl::StrCat(
        "store: ", path, " (inode ", inode, ") is in use by another broker",
        holder.has_value() ? absl::StrCat(", pid ", *holder) : std::string(" (pid unknown)"),
        ", perhaps through another name (symlink or hard link); stop that broker first"));
  }
  // Checked after locking, so that no broker is creating -wal or -shm
  // meanwhile.
  RETURN_IF_ERROR(CheckPrivateFd("store file", path, fd));
  RETURN_IF_ERROR(CheckPrivateFile("store file", path + "-wal", /*must_exist=*/false));
  RETURN_IF_ERROR(CheckPrivateFile("store file", path + "-shm", /*must_exist=*/false));
  return lock;
}

StoreFileLock::~StoreFileLock() { close(fd_); }

}  // namespace iommu
