// Test helper for the store's unit tests: fresh database paths under
// TEST_TMPDIR and the permission bits of a file.
// Thread-compatible (plain functions; the paths are the caller's to share).
#ifndef SERVER_STORE_TEST_FILES_H_
#define SERVER_STORE_TEST_FILES_H_

#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <string>

#include "gtest/gtest.h"

namespace iommu {

// <TEST_TMPDIR>/<name>, with any database, -wal and -shm left by an earlier
// run removed.
inline std::string TempPath(const std::string& name) {
  const char* dir = std::getenv("TEST_TMPDIR");
  std::string path = std::string(dir ? dir : "/tmp") + "/" + name;
  unlink(path.c_str());
  unlink((path + "-wal").c_str());
  unlink((path + "-shm").c_str());
  return path;
}

// The permission bits (07777) of `path`; records a failure if it is missing.
inline mode_t ModeOf(const std::string& path) {
  struct stat st;
  EXPECT_EQ(stat(path.c_str(), &st), 0) << path;
  return st.st_mode & 07777;
}

}  // namespace iommu

#endif  // SERVER_STORE_TEST_FILES_H_
