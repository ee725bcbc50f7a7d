#include "agent/state_journal.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sqlite3.h>
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

using ::testing::ElementsAre;
using ::testing::IsEmpty;

std::string TempPath(const std::string& name) {
  const char* dir = std::getenv("TEST_TMPDIR");
  return absl::StrCat(dir != nullptr ? dir : "/tmp", "/", name);
}

JournalMapping Mapping(const std::string& container, uint64_t iova, const std::string& session) {
  JournalMapping m;
  m.container_id = container;
  m.iova = iova;
  m.size = 0x1000;
  m.readable = true;
  m.writable = iova % 0x2000 == 0;
  m.session_id = session;
  m.memory_id = "m-1";
  m.offset = iova - 0x100000;
  m.owner = "acme";
  m.tenant = "acme";
  return m;
}

// Everything written before a reopen (a restarted agent) is read back as it
// was, with 64-bit values intact.
TEST(StateJournalTest, WhatIsWrittenIsReadBackAfterReopen) {
  const std::string path = TempPath("roundtrip.db");
  {
    ASSERT_OK_AND_ASSIGN(journal, StateJournal::Open(path));
    ASSERT_OK(journal->PutContainer({"c-0000000000000001", "acme", {"0000:00:01.0", "0000:00:02.0"},
                                     "iommufd", "ioas=3", {"c1.iommufd", "c1.device.a"}}));
    ASSERT_OK(journal->PutSession({"s-1", "c-0000000000000001", "acme",
                                   {{0x100000, 0x1fffff}, {0xffffffffffff0000, 0xffffffffffffffff}},
                                   "abcd"}));
    ASSERT_OK(journal->PutMemory({"m-1", "s-1", "acme", "ram", ObjectKey{7, 0xffffffffffffff01},
                                  0x200000, "mem.m-1"}));
    ASSERT_OK(journal->PutMapping(Mapping("c-0000000000000001", 0x101000, "s-1")));
    ASSERT_OK(journal->PutMapping(Mapping("c-0000000000000001", 0x100000, "s-1")));
  }
  ASSERT_OK_AND_ASSIGN(journal, StateJournal::Open(path));
  ASSERT_OK_AND_ASSIGN(state, journal->Load());
  ASSERT_EQ(state.containers.size(), 1u);
  EXPECT_EQ(state.containers[0].backend_state, "ioas=3");
  EXPECT_THAT(state.containers[0].devices, ElementsAre("0000:00:01.0", "0000:00:02.0"));
  EXPECT_THAT(state.containers[0].fd_names, ElementsAre("c1.iommufd", "c1.device.a"));
  ASSERT_EQ(state.sessions.size(), 1u);
  ASSERT_EQ(state.sessions[0].grant_windows.size(), 2u);
  EXPECT_EQ(state.sessions[0].grant_windows[1].last, 0xffffffffffffffffULL);
  ASSERT_EQ(state.memory.size(), 1u);
  EXPECT_EQ(state.memory[0].key.ino, 0xffffffffffffff01ULL);
  ASSERT_EQ(state.mappings.size(), 2u);
  EXPECT_EQ(state.mappings[0].iova, 0x100000u);  // Sorted by iova.
  EXPECT_TRUE(state.mappings[0].writable);
  EXPECT_FALSE(state.mappings[1].writable);

  struct stat st;
  ASSERT_EQ(stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
}

TEST(StateJournalTest, ForgettingASessionTakesItsMemoryAndMappingsOnly) {
  ASSERT_OK_AND_ASSIGN(journal, StateJournal::Open(TempPath("session.db")));
  ASSERT_OK(journal->PutContainer({"c-1", "acme", {"0000:00:01.0"}, "sim", "", {"x"}}));
  ASSERT_OK(journal->PutSession({"s-1", "c-1", "acme", {}, ""}));
  ASSERT_OK(journal->PutSession({"s-2", "c-1", "acme", {}, ""}));
  ASSERT_OK(journal->PutMemory({"m-1", "s-1", "acme", "", ObjectKey{1, 2}, 0x1000, "mem.m-1"}));
  ASSERT_OK(journal->PutMapping(Mapping("c-1", 0x100000, "s-1")));
  ASSERT_OK(journal->PutMapping(Mapping("c-1", 0x200000, "s-2")));
  ASSERT_OK(journal->DeleteSession("s-1"));
  ASSERT_OK_AND_ASSIGN(state, journal->Load());
  ASSERT_EQ(state.sessions.size(), 1u);
  EXPECT_EQ(state.sessions[0].id, "s-2");
  EXPECT_THAT(state.memory, IsEmpty());
  ASSERT_EQ(state.mappings.size(), 1u);
  EXPECT_EQ(state.mappings[0].session_id, "s-2");

  ASSERT_OK(journal->DeleteMappings("c-1", {0x200000, 0x300000}));  // Unknown iova: no-op.
  ASSERT_OK_AND_ASSIGN(after, journal->Load());
  EXPECT_THAT(after.mappings, IsEmpty());

  ASSERT_OK(journal->DeleteContainer("c-1"));
  ASSERT_OK_AND_ASSIGN(empty, journal->Load());
  EXPECT_THAT(empty.containers, IsEmpty());
  EXPECT_THAT(empty.sessions, IsEmpty());
}

// A damaged file is refused with the path named, and left as it is for the
// operator: the agent never starts empty over what the kernel may hold.
TEST(StateJournalTest, ADamagedJournalIsRefusedAndLeftInPlace) {
  const std::string path = TempPath("damaged.db");
  {
    ASSERT_OK_AND_ASSIGN(journal, StateJournal::Open(path));
    ASSERT_OK(journal->PutContainer({"c-1", "acme", {"0000:00:01.0"}, "sim", "", {}}));
  }
  // A torn header: the first page overwritten with garbage.
  const int fd = ::open(path.c_str(), O_WRONLY);
  ASSERT_GE(fd, 0);
  const std::string garbage(100, 'x');
  ASSERT_EQ(::pwrite(fd, garbage.data(), garbage.size(), 0), static_cast<ssize_t>(garbage.size()));
  ::close(fd);
  ::unlink((path + "-wal").c_str());
  absl::StatusOr<std::unique_ptr<StateJournal>> reopened = StateJournal::Open(path);
  EXPECT_THAT(reopened.status(), StatusIs(absl::StatusCode::kFailedPrecondition, path));
  struct stat st;
  ASSERT_EQ(stat(path.c_str(), &st), 0);
  EXPECT_GT(st.st_size, 0);
}

TEST(StateJournalTest, AJournalOfAnotherVersionIsRefused) {
  const std::string path = TempPath("version.db");
  { ASSERT_OK_AND_ASSIGN(journal, StateJournal::Open(path)); }
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(db, "PRAGMA user_version=99", nullptr, nullptr, nullptr), SQLITE_OK);
  sqlite3_close(db);
  EXPECT_THAT(StateJournal::Open(path).status(),
              StatusIs(absl::StatusCode::kFailedPrecondition, "schema version 99"));
}

TEST(StateJournalTest, AnUnopenablePathIsAnErrorNamingIt) {
  const std::string dir = TempPath("a-directory.db");
  ASSERT_EQ(::mkdir(dir.c_str(), 0700), 0);
  absl::Status s = StateJournal::Open(dir).status();
  EXPECT_FALSE(s.ok());
  EXPECT_THAT(std::string(s.message()), ::testing::HasSubstr("a-directory.db: open"));
}

}  // namespace
}  // namespace agent
}  // namespace iommu
