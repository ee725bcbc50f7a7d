// Test helpers for the fd store and holder tests: files to pass around and
// ways to tell them apart, a hermetic directory, an fd count. Not
// thread-safe (tests call them from one thread).
#ifndef AGENT_FD_TEST_UTIL_H_
#define AGENT_FD_TEST_UTIL_H_

#include <dirent.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/unique_fd.h"

namespace iommu {
namespace agent {

// A new memfd (the kind of fd guest memory is); -1 on failure.
inline UniqueFd NewMemfd(const std::string& name) {
  return UniqueFd(::memfd_create(name.c_str(), MFD_CLOEXEC));
}

// The file `fd` refers to, as (device, inode); {0, 0} for a bad fd.
inline std::pair<dev_t, ino_t> FileId(int fd) {
  struct stat st;
  if (::fstat(fd, &st) != 0) return {0, 0};
  return {st.st_dev, st.st_ino};
}

inline bool IsCloexec(int fd) {
  const int flags = ::fcntl(fd, F_GETFD);
  return flags >= 0 && (flags & FD_CLOEXEC) != 0;
}

// Open fds of this process (entries of /proc/self/fd, less the one the
// count itself opens).
inline int CountOpenFds() {
  DIR* dir = ::opendir("/proc/self/fd");
  if (dir == nullptr) return -1;
  int n = 0;
  while (::readdir(dir) != nullptr) ++n;
  ::closedir(dir);
  return n - 3;  // ".", ".." and the directory's own fd.
}

// A new empty directory under $TEST_TMPDIR (or /tmp).
inline std::string NewTestDir(const std::string& name) {
  static std::atomic<int> counter{0};
  const char* base = std::getenv("TEST_TMPDIR");
  const std::string dir = absl::StrCat(base != nullptr ? base : "/tmp", "/", name, "-",
                                       ::getpid(), "-", counter++);
  ::mkdir(dir.c_str(), 0700);
  return dir;
}

}  // namespace agent
}  // namespace iommu

#endif  // AGENT_FD_TEST_UTIL_H_
