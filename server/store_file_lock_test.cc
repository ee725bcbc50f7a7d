#include "server/store_file_lock.h"

#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/private_file.h"
#include "server/store_test_files.h"

namespace iommu {
namespace {

using ::testing::HasSubstr;

TEST(StoreFileLockTest, CreatesTheFile0600WhateverTheUmask) {
  for (mode_t mask : {0022, 0000, 0277}) {
    const std::string path = TempPath("create.db");
    const mode_t old = umask(mask);
    auto lock = StoreFileLock::Acquire(path);
    umask(old);
    ASSERT_TRUE(lock.ok()) << lock.status();
    EXPECT_EQ(ModeOf(path), 0600u) << "umask " << mask;
  }
}

TEST(StoreFileLockTest, RefusesEveryOtherNameOfALockedFile) {
  const std::string path = TempPath("names.db");
  auto first = StoreFileLock::Acquire(path);
  ASSERT_TRUE(first.ok()) << first.status();
  const std::string symlink_path = TempPath("names-symlink.db");
  const std::string hardlink_path = TempPath("names-hardlink.db");
  ASSERT_EQ(symlink(path.c_str(), symlink_path.c_str()), 0);
  ASSERT_EQ(link(path.c_str(), hardlink_path.c_str()), 0);
  for (const std::string& name : {path, symlink_path, hardlink_path}) {
    auto second = StoreFileLock::Acquire(name);
    EXPECT_EQ(second.status().code(), absl::StatusCode::kFailedPrecondition) << name;
    EXPECT_THAT(second.status().message(), HasSubstr(name + " (inode "));
    EXPECT_THAT(second.status().message(), HasSubstr("is in use by another broker"));
    // flock is per open file: this process holds it, so it is named.
    EXPECT_THAT(second.status().message(), HasSubstr(", pid " + std::to_string(getpid()) + ","));
  }
  first->reset();
  EXPECT_TRUE(StoreFileLock::Acquire(hardlink_path).ok());
}

TEST(StoreFileLockTest, RefusesAStoreFileOpenToGroupOrOthersNamingModeAndFix) {
  const std::string path = TempPath("mode.db");
  std::ofstream(path) << "";
  ASSERT_EQ(chmod(path.c_str(), 0644), 0);
  auto lock = StoreFileLock::Acquire(path);
  EXPECT_EQ(lock.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(lock.status().message(),
              HasSubstr("store file " + path + " has mode 0644: it is open to group and others"));
  EXPECT_THAT(lock.status().message(), HasSubstr("chmod 600 " + path));

  ASSERT_EQ(chmod(path.c_str(), 0600), 0);
  std::ofstream(path + "-wal") << "";
  ASSERT_EQ(chmod((path + "-wal").c_str(), 0640), 0);
  lock = StoreFileLock::Acquire(path);
  EXPECT_EQ(lock.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(lock.status().message(),
              HasSubstr("store file " + path + "-wal has mode 0640: it is open to group "));

  ASSERT_EQ(chmod((path + "-wal").c_str(), 0600), 0);
  std::ofstream(path + "-shm") << "";
  ASSERT_EQ(chmod((path + "-shm").c_str(), 0604), 0);
  lock = StoreFileLock::Acquire(path);
  EXPECT_EQ(lock.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(lock.status().message(), HasSubstr(path + "-shm has mode 0604: it is open to others"));

  ASSERT_EQ(chmod((path + "-shm").c_str(), 0600), 0);
  EXPECT_TRUE(StoreFileLock::Acquire(path).ok());
}

TEST(StoreFileLockTest, DanglingSymlinkIsUnavailableNotAHang) {
  const std::string path = TempPath("dangling.db");
  ASSERT_EQ(symlink((path + "-nowhere/x.db").c_str(), path.c_str()), 0);
  auto lock = StoreFileLock::Acquire(path);
  EXPECT_EQ(lock.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(lock.status().message(), HasSubstr("store: open " + path));
}

TEST(StoreFileLockTest, FindsTheHolderInProcLocksByDeviceAndInode) {
  const dev_t dev = makedev(0xfd, 0x01);
  const std::string locks =
      "1: POSIX  ADVISORY  WRITE 111 fd:01:1234 0 EOF\n"
      "2: FLOCK  ADVISORY  WRITE 222 08:02:1234 0 EOF\n"
      "3: FLOCK  ADVISORY  WRITE 333 fd:01:1234 0 EOF\n"
      "3: -> FLOCK  ADVISORY  WRITE 444 fd:01:1234 0 EOF\n";
  EXPECT_EQ(FindFlockHolder(locks, dev, 1234), 333);
  EXPECT_EQ(FindFlockHolder(locks, dev, 99), std::nullopt);
  // Another device but the only FLOCK line with that inode: taken (overlay).
  EXPECT_EQ(FindFlockHolder("2: FLOCK  ADVISORY  WRITE 222 00:2a:77 0 EOF\n", dev, 77), 222);
}

TEST(PrivateFileTest, KeyMayBeReadByTheProcesssOwnGroupOnly) {
  const std::string path = TempPath("broker.key");
  std::ofstream(path) << "key";
  struct stat st;
  ASSERT_EQ(stat(path.c_str(), &st), 0);
  const gid_t own = st.st_gid;
  for (mode_t ok : {0600, 0400, 0640, 0440}) {
    ASSERT_EQ(chmod(path.c_str(), ok), 0);
    EXPECT_TRUE(CheckKeyFile("--tls-key", path, own).ok()) << ModeString(ok);
  }
  for (mode_t bad : {0644, 0604, 0660, 0620}) {
    ASSERT_EQ(chmod(path.c_str(), bad), 0);
    absl::Status s = CheckKeyFile("--tls-key", path, own);
    EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << ModeString(bad);
    EXPECT_THAT(s.message(), HasSubstr("--tls-key " + path + " has mode " + ModeString(bad)));
    EXPECT_THAT(s.message(), HasSubstr("chmod 600 " + path));
  }
  // Group-readable is fine only for the process's own group.
  ASSERT_EQ(chmod(path.c_str(), 0640), 0);
  absl::Status s = CheckKeyFile("--tls-key", path, own + 1);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(s.message(), HasSubstr("open to a group other than the broker's own"));
}

TEST(PrivateFileTest, MissingFileIsOkOnlyWhenOptional) {
  const std::string path = TempPath("absent.key");
  EXPECT_TRUE(CheckPrivateFile("key", path, /*must_exist=*/false).ok());
  absl::Status s = CheckPrivateFile("--tls-key", path, /*must_exist=*/true);
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(s.message(), HasSubstr("--tls-key " + path + ": stat: No such file"));
}

}  // namespace
}  // namespace iommu
