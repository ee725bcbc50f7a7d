#include "server/watch_log.h"

#include <string>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace iommu {
namespace {

using ::testing::HasSubstr;

WatchLog::Change Container(const std::string& id, const std::string& tenant) {
  WatchLog::Change c;
  c.event.set_type(v1::WatchEvent::PUT);
  c.event.mutable_container()->set_id(id);
  c.event.mutable_container()->set_tenant_id(tenant);
  c.tenant = tenant;
  return c;
}

// Tenant acme's changes only.
WatchLog::Verdict Acme(const WatchLog::Change& c) {
  return c.tenant == "acme" ? WatchLog::Verdict::kSend : WatchLog::Verdict::kSkip;
}

std::vector<std::string> Ids(const WatchLog::Batch& b) {
  std::vector<std::string> ids;
  for (const v1::WatchEvent& e : b.events) ids.push_back(e.container().id());
  return ids;
}

TEST(WatchLogTest, ResumesAfterTheLastVersionSeen) {
  WatchLog log("run1");
  const std::string start = log.CurrentVersion();
  EXPECT_EQ(start, "run1.0");
  log.Append({Container("a", "acme"), Container("b", "beta")});
  absl::StatusOr<WatchLog::Batch> all = log.Since(start, "", nullptr, 100);
  ASSERT_TRUE(all.ok()) << all.status();
  EXPECT_THAT(Ids(*all), ::testing::ElementsAre("a", "b"));
  EXPECT_EQ(all->events[0].resource_version(), "run1.1");
  EXPECT_EQ(all->resource_version, "run1.2");
  log.Append({Container("c", "acme")});
  absl::StatusOr<WatchLog::Batch> next = log.Since(all->resource_version, "", nullptr, 100);
  EXPECT_THAT(Ids(*next), ::testing::ElementsAre("c"));
  // "" is now: nothing yet.
  EXPECT_TRUE(log.Since("", "", nullptr, 100)->events.empty());
}

TEST(WatchLogTest, FiltersAndPagesWithoutLosingThePosition) {
  WatchLog log("r");
  log.Append({Container("a", "acme"), Container("b", "beta"), Container("c", "acme")});
  const WatchLog::Filter acme = Acme;
  absl::StatusOr<WatchLog::Batch> first = log.Since("r.0", "acme", acme, 1);
  EXPECT_THAT(Ids(*first), ::testing::ElementsAre("a"));
  EXPECT_EQ(first->resource_version, "r.1");
  absl::StatusOr<WatchLog::Batch> rest = log.Since(first->resource_version, "acme", acme, 10);
  EXPECT_THAT(Ids(*rest), ::testing::ElementsAre("c"));
  EXPECT_EQ(rest->resource_version, "r.3");  // Past beta's change too.
}

TEST(WatchLogTest, KeepsPreviousLabelsAndSendsALeaveAsADelete) {
  WatchLog log("r");
  WatchLog::Change relabelled = Container("a", "acme");
  (*relabelled.event.mutable_container()->mutable_labels())["team"] = "web";
  relabelled.prev_labels.emplace();
  (*relabelled.prev_labels)["team"] = "ml";
  log.Append({Container("b", "acme"), relabelled});
  WatchLog::Filter left_ml = [&](const WatchLog::Change& c) {
    const bool was_ml = c.prev_labels.has_value() && c.prev_labels->count("team") &&
                        c.prev_labels->at("team") == "ml";
    return was_ml ? WatchLog::Verdict::kSendAsLeave : WatchLog::Verdict::kSkip;
  };
  absl::StatusOr<WatchLog::Batch> batch = log.Since("r.0", "", left_ml, 10);
  ASSERT_TRUE(batch.ok()) << batch.status();
  ASSERT_EQ(batch->events.size(), 1u);
  const v1::WatchEvent& e = batch->events[0];
  EXPECT_EQ(e.type(), v1::WatchEvent::DELETE);
  EXPECT_TRUE(e.left_selection());
  // The object as it is now, and the log's copy stays a PUT for others.
  EXPECT_EQ(e.container().labels().at("team"), "web");
  EXPECT_EQ(e.resource_version(), "r.2");
  absl::StatusOr<WatchLog::Batch> all = log.Since("r.0", "", nullptr, 10);
  EXPECT_EQ(all->events[1].type(), v1::WatchEvent::PUT);
  EXPECT_FALSE(all->events[1].left_selection());
}

TEST(WatchLogTest, OneTenantsChurnDoesNotMakeAnotherTenantRelist) {
  WatchLog log("r", {/*max_changes=*/100, /*max_per_scope=*/3});
  log.Append({Container("quiet", "acme")});
  const std::string acme_at = "r.1";
  for (int i = 0; i < 10; ++i) log.Append({Container("x" + std::to_string(i), "beta")});
  const WatchLog::Filter acme = Acme;
  EXPECT_TRUE(log.Since("r.0", "acme", acme, 10).ok());
  EXPECT_TRUE(log.Since(acme_at, "acme", acme, 10).ok());
  // Beta's own watcher from the start lost changes: relist.
  absl::StatusOr<WatchLog::Batch> beta = log.Since("r.1", "beta", nullptr, 10);
  EXPECT_EQ(beta.status().code(), absl::StatusCode::kOutOfRange);
  EXPECT_THAT(std::string(beta.status().message()), HasSubstr("too old"));
  // So did a watcher of everything.
  EXPECT_EQ(log.Since("r.0", "", nullptr, 10).status().code(), absl::StatusCode::kOutOfRange);
}

TEST(WatchLogTest, TheTotalIsBoundedToo) {
  WatchLog log("r", {/*max_changes=*/4, /*max_per_scope=*/100});
  for (int i = 0; i < 6; ++i) log.Append({Container("c" + std::to_string(i), "acme")});
  EXPECT_EQ(log.Since("r.1", "", nullptr, 10).status().code(), absl::StatusCode::kOutOfRange);
  EXPECT_THAT(Ids(*log.Since("r.2", "", nullptr, 10)),
              ::testing::ElementsAre("c2", "c3", "c4", "c5"));
}

TEST(WatchLogTest, ForeignMalformedAndFutureVersions) {
  WatchLog log("run1");
  EXPECT_EQ(log.Since("run0.5", "", nullptr, 1).status().code(), absl::StatusCode::kOutOfRange);
  EXPECT_THAT(std::string(log.Since("run0.5", "", nullptr, 1).status().message()),
              HasSubstr("another broker run or replica"));
  for (const char* bad : {"garbage", ".3", "run1.", "run1.x"}) {
    EXPECT_EQ(log.Since(bad, "", nullptr, 1).status().code(),
              absl::StatusCode::kInvalidArgument)
        << bad;
  }
  EXPECT_EQ(log.Since("run1.9", "", nullptr, 1).status().code(), absl::StatusCode::kOutOfRange);
}

TEST(WatchLogTest, WaitForChangeWakesOnAppend) {
  WatchLog log("r");
  EXPECT_FALSE(log.WaitForChange("r.0", absl::Milliseconds(1)));
  std::thread writer([&] { log.Append({Container("a", "acme")}); });
  EXPECT_TRUE(log.WaitForChange("r.0", absl::Seconds(60)));
  writer.join();
  EXPECT_TRUE(log.WaitForChange("other.0", absl::Seconds(60)));
}

}  // namespace
}  // namespace iommu
