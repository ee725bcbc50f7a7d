#include "agent/state_dir_check.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <string>

#include "absl/strings/str_cat.h"
#include "common/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace iommu {
namespace agent {
namespace {

using Code = absl::StatusCode;

// nobody: a uid other than the test's own when the test runs as root.
constexpr uid_t kOtherUid = 65534;

// Gives `path` (not a link's target) to kOtherUid; false where even root
// may not (a sandbox's user namespace without that uid).
bool GiveAway(const std::string& path) { return lchown(path.c_str(), kOtherUid, kOtherUid) == 0; }

struct stat StatOf(mode_t mode, uid_t uid) {
  struct stat st = {};
  st.st_mode = mode;
  st.st_uid = uid;
  return st;
}

TEST(CheckStatePathTest, PrivateDirectoryAndFilesOfTheAgentPass) {
  EXPECT_OK(CheckStatePath("/s", StatOf(S_IFDIR | 0700, 0), 0, /*directory=*/true));
  EXPECT_OK(CheckStatePath("/s", StatOf(S_IFDIR | 0755, 0), 0, /*directory=*/true));
  EXPECT_OK(CheckStatePath("/s/journal.db", StatOf(S_IFREG | 0600, 0), 0, false));
  EXPECT_OK(CheckStatePath("/s/journal.db", StatOf(S_IFREG | 0644, 1000), 1000, false));
}

TEST(CheckStatePathTest, ADirectoryWritableByOthersIsRefusedWithTheFix) {
  EXPECT_THAT(CheckStatePath("/s", StatOf(S_IFDIR | 0777, 0), 0, true),
              StatusIs(Code::kFailedPrecondition,
                       "state_dir: /s is owned by uid 0 with mode 0777 (writable by group and "
                       "others)"));
  EXPECT_THAT(CheckStatePath("/s", StatOf(S_IFDIR | 0777, 0), 0, true),
              StatusIs(Code::kFailedPrecondition, "chown root /s && chmod 0700 /s"));
  EXPECT_THAT(CheckStatePath("/s", StatOf(S_IFDIR | 0770, 0), 0, true),
              StatusIs(Code::kFailedPrecondition, "(writable by its group)"));
  EXPECT_THAT(CheckStatePath("/s", StatOf(S_IFDIR | 01703, 0), 0, true),
              StatusIs(Code::kFailedPrecondition, "mode 1703 (writable by others)"));
}

TEST(CheckStatePathTest, AnotherUsersDirectoryOrJournalIsRefused) {
  EXPECT_THAT(CheckStatePath("/s", StatOf(S_IFDIR | 0700, 1000), 0, true),
              StatusIs(Code::kFailedPrecondition,
                       "/s is owned by uid 1000 with mode 0700 (not the agent's uid 0)"));
  EXPECT_THAT(
      CheckStatePath("/s/journal.db", StatOf(S_IFREG | 0666, 1000), 0, false),
      StatusIs(Code::kFailedPrecondition, "chown root /s/journal.db && chmod 0600 /s/journal.db"));
  EXPECT_THAT(CheckStatePath("/s/journal.db", StatOf(S_IFREG | 0620, 0), 0, false),
              StatusIs(Code::kFailedPrecondition, "writable by its group"));
  // A non-root agent is told to chown to its own uid.
  EXPECT_THAT(CheckStatePath("/s", StatOf(S_IFDIR | 0700, 0), 1000, true),
              StatusIs(Code::kFailedPrecondition, "chown 1000 /s"));
}

TEST(CheckStatePathTest, WrongTypesAreRefused) {
  EXPECT_THAT(CheckStatePath("/s", StatOf(S_IFREG | 0600, 0), 0, true),
              StatusIs(Code::kFailedPrecondition, "/s is a regular file, expected a directory"));
  EXPECT_THAT(CheckStatePath("/s/journal.db", StatOf(S_IFLNK | 0777, 0), 0, false),
              StatusIs(Code::kFailedPrecondition, "is a symlink, expected a regular file"));
}

class CheckStateDirTest : public ::testing::Test {
 protected:
  void SetUp() override {
    base_ = absl::StrCat(std::getenv("TEST_TMPDIR"), "/sdXXXXXX");
    ASSERT_NE(mkdtemp(base_.data()), nullptr);
    dir_ = base_ + "/state";
    ASSERT_EQ(mkdir(dir_.c_str(), 0700), 0);
  }

  void Touch(const std::string& name, mode_t mode) {
    const std::string path = absl::StrCat(dir_, "/", name);
    const int fd = open(path.c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, mode);
    ASSERT_GE(fd, 0);
    close(fd);
    ASSERT_EQ(chmod(path.c_str(), mode), 0);  // Past the umask.
  }

  std::string base_;
  std::string dir_;
};

TEST_F(CheckStateDirTest, APrivateDirectoryPassesAndIsReturnedOpen) {
  Touch("journal.db", 0600);
  Touch("journal.db-wal", 0600);
  ASSERT_OK_AND_ASSIGN(fd, CheckStateDir(dir_));
  struct stat st;
  ASSERT_EQ(fstat(fd.get(), &st), 0);
  EXPECT_TRUE(S_ISDIR(st.st_mode));
}

TEST_F(CheckStateDirTest, AWorldWritableDirectoryIsRefused) {
  ASSERT_EQ(chmod(dir_.c_str(), 0777), 0);
  EXPECT_THAT(CheckStateDir(dir_).status(),
              StatusIs(Code::kFailedPrecondition,
                       absl::StrCat(dir_, " is owned by uid ", geteuid(), " with mode 0777")));
}

TEST_F(CheckStateDirTest, AJournalFileWritableByOthersIsRefused) {
  for (const char* name : kStateFiles) {
    SCOPED_TRACE(name);
    Touch(name, 0666);
    EXPECT_THAT(CheckStateDir(dir_).status(),
                StatusIs(Code::kFailedPrecondition, absl::StrCat(dir_, "/", name)));
    ASSERT_EQ(chmod(absl::StrCat(dir_, "/", name).c_str(), 0600), 0);
  }
  EXPECT_OK(CheckStateDir(dir_).status());
}

TEST_F(CheckStateDirTest, ASymlinkedJournalIsRefused) {
  Touch("elsewhere", 0600);
  ASSERT_EQ(symlink("elsewhere", (dir_ + "/journal.db").c_str()), 0);
  EXPECT_THAT(CheckStateDir(dir_).status(),
              StatusIs(Code::kFailedPrecondition, "journal.db is a symlink"));
}

TEST_F(CheckStateDirTest, ASymlinkToAPrivateDirectoryOfTheAgentIsFollowed) {
  const std::string link = base_ + "/link";
  ASSERT_EQ(symlink(dir_.c_str(), link.c_str()), 0);
  EXPECT_OK(CheckStateDir(link).status());
}

TEST_F(CheckStateDirTest, AnotherUsersDirectoryIsRefusedEvenThroughASymlink) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root to give the directory to uid " << kOtherUid;
  if (!GiveAway(dir_)) GTEST_SKIP() << "cannot chown to uid " << kOtherUid << " here";
  EXPECT_THAT(CheckStateDir(dir_).status(),
              StatusIs(Code::kFailedPrecondition,
                       absl::StrCat(dir_, " is owned by uid ", kOtherUid, " with mode 0700")));
  const std::string link = base_ + "/link";
  ASSERT_EQ(symlink(dir_.c_str(), link.c_str()), 0);
  EXPECT_THAT(CheckStateDir(link).status(),
              StatusIs(Code::kFailedPrecondition, absl::StrCat(" is owned by uid ", kOtherUid)));
}

TEST_F(CheckStateDirTest, ASymlinkMadeByAnotherUserIsRefused) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root to give the link to uid " << kOtherUid;
  const std::string link = base_ + "/link";
  ASSERT_EQ(symlink(dir_.c_str(), link.c_str()), 0);
  if (!GiveAway(link)) GTEST_SKIP() << "cannot chown to uid " << kOtherUid << " here";
  EXPECT_THAT(CheckStateDir(link).status(),
              StatusIs(Code::kFailedPrecondition,
                       absl::StrCat(link, " is a symlink owned by uid ", kOtherUid)));
}

TEST_F(CheckStateDirTest, AJournalOfAnotherUserIsRefused) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root to give the journal to uid " << kOtherUid;
  Touch("journal.db", 0600);
  if (!GiveAway(dir_ + "/journal.db")) {
    GTEST_SKIP() << "cannot chown to uid " << kOtherUid << " here";
  }
  EXPECT_THAT(CheckStateDir(dir_).status(),
              StatusIs(Code::kFailedPrecondition,
                       absl::StrCat(dir_, "/journal.db is owned by uid ", kOtherUid)));
}

TEST_F(CheckStateDirTest, AMissingDirectoryIsAnErrorNamingIt) {
  EXPECT_THAT(CheckStateDir(base_ + "/missing").status(),
              StatusIs(Code::kNotFound, base_ + "/missing"));
}

}  // namespace
}  // namespace agent
}  // namespace iommu
