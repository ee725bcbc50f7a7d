#include "server/event_log.h"

#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace iommu {
namespace {

using ::testing::ElementsAre;
using ::testing::IsEmpty;

v1::ObjectRef Ref(v1::ObjectKind kind, const std::string& id) {
  v1::ObjectRef r;
  r.set_kind(kind);
  r.set_id(id);
  return r;
}
v1::ObjectRef Tenant(const std::string& id) { return Ref(v1::OBJECT_KIND_TENANT, id); }
v1::ObjectRef Node(const std::string& id) { return Ref(v1::OBJECT_KIND_NODE, id); }
v1::ObjectRef Container(const std::string& id) { return Ref(v1::OBJECT_KIND_CONTAINER, id); }
v1::ObjectRef Window(const std::string& id) { return Ref(v1::OBJECT_KIND_WINDOW, id); }
const v1::ObjectRef kAll;  // Kind UNSPECIFIED: every event.

v1::Event Ev(const std::string& reason, v1::ObjectRef object, int64_t time_ms,
             const std::string& tenant = "", std::vector<v1::ObjectRef> related = {},
             const std::string& message = "") {
  v1::Event e;
  e.set_type(v1::EVENT_TYPE_NORMAL);
  e.set_reason(reason);
  e.set_message(message.empty() ? reason : message);
  *e.mutable_object() = object;
  for (auto& r : related) *e.add_related() = r;
  e.set_tenant_id(tenant);
  e.set_last_time_ms(time_ms);
  return e;
}

std::vector<std::string> Reasons(const EventLog::Page& page) {
  std::vector<std::string> out;
  for (const auto& e : page.events) out.push_back(e.reason());
  return out;
}

TEST(EventLogTest, ListsAnObjectsEventsOldestFirstWithSequenceAndTimes) {
  EventLog log;
  log.Record(Ev("ContainerCreated", Container("c-1"), 100, "acme"));
  log.Record(Ev("BudgetChanged", Container("c-1"), 200, "acme"));
  log.Record(Ev("ContainerCreated", Container("c-2"), 300, "acme"));
  EventLog::Page page = log.List(Container("c-1"), "", 0, 100);
  EXPECT_THAT(Reasons(page), ElementsAre("ContainerCreated", "BudgetChanged"));
  EXPECT_EQ(page.next_after, 0u);
  EXPECT_EQ(page.events[0].sequence(), 1u);
  EXPECT_EQ(page.events[1].sequence(), 2u);
  EXPECT_EQ(page.events[1].count(), 1u);
  EXPECT_EQ(page.events[1].first_time_ms(), 200);
  EXPECT_EQ(page.events[1].last_time_ms(), 200);
  EXPECT_EQ(log.List(kAll, "", 0, 100).events.size(), 3u);
}

TEST(EventLogTest, AnEventIsFiledUnderItsRelatedObjectsToo) {
  EventLog log;
  log.Record(Ev("ContainerCreated", Container("c-1"), 1, "acme", {Tenant("acme"), Node("n1")}));
  log.Record(Ev("WindowAllocated", Window("w-1"), 2, "acme", {Container("c-1")}));
  EXPECT_THAT(Reasons(log.List(Container("c-1"), "", 0, 100)),
              ElementsAre("ContainerCreated", "WindowAllocated"));
  EXPECT_THAT(Reasons(log.List(Window("w-1"), "", 0, 100)), ElementsAre("WindowAllocated"));
  EXPECT_THAT(Reasons(log.List(Tenant("acme"), "", 0, 100)), ElementsAre("ContainerCreated"));
  EXPECT_THAT(Reasons(log.List(Node("n1"), "", 0, 100)), ElementsAre("ContainerCreated"));
  EXPECT_THAT(log.List(Node("n2"), "", 0, 100).events, IsEmpty());
}

TEST(EventLogTest, TenantFilterHidesOtherTenantsAndFleetEvents) {
  EventLog log;
  log.Record(Ev("NodeRegistered", Node("n1"), 1));
  log.Record(Ev("ContainerCreated", Container("c-1"), 2, "acme", {Node("n1")}));
  log.Record(Ev("ContainerCreated", Container("c-2"), 3, "other", {Node("n1")}));
  EXPECT_THAT(Reasons(log.List(kAll, "acme", 0, 100)), ElementsAre("ContainerCreated"));
  EXPECT_EQ(log.List(kAll, "acme", 0, 100).events[0].object().id(), "c-1");
  EXPECT_EQ(log.List(Node("n1"), "other", 0, 100).events.size(), 1u);
  EXPECT_TRUE(log.Holds(Container("c-2"), "other"));
  EXPECT_FALSE(log.Holds(Container("c-2"), "acme"));
  EXPECT_TRUE(log.Holds(Container("c-2"), ""));
  EXPECT_FALSE(log.Holds(Container("c-3"), ""));
}

TEST(EventLogTest, PagesResumeAfterTheLastSequenceAndSayWhenMoreFollow) {
  EventLog log;
  for (int i = 0; i < 5; ++i) log.Record(Ev(absl::StrCat("E", i), Node("n1"), i));
  EventLog::Page first = log.List(Node("n1"), "", 0, 2);
  EXPECT_THAT(Reasons(first), ElementsAre("E0", "E1"));
  EXPECT_EQ(first.next_after, 2u);
  EventLog::Page second = log.List(Node("n1"), "", first.next_after, 2);
  EXPECT_THAT(Reasons(second), ElementsAre("E2", "E3"));
  EventLog::Page last = log.List(Node("n1"), "", second.next_after, 2);
  EXPECT_THAT(Reasons(last), ElementsAre("E4"));
  EXPECT_EQ(last.next_after, 0u);
  // A page that is exactly full does not promise more.
  EXPECT_EQ(log.List(Node("n1"), "", 3, 2).next_after, 0u);
  // The same over every event.
  EXPECT_EQ(log.List(kAll, "", 0, 4).next_after, 4u);
  EXPECT_EQ(log.List(kAll, "", 0, 5).next_after, 0u);
}

TEST(EventLogTest, EachObjectKeepsOnlyItsNewestEvents) {
  EventLog log(EventLogOptions{/*max_events=*/100, /*max_per_object=*/3});
  for (int i = 0; i < 5; ++i) {
    log.Record(Ev(absl::StrCat("W", i), Window(absl::StrCat("w-", i)), i, "acme",
                  {Container("c-1")}));
  }
  EXPECT_THAT(Reasons(log.List(Container("c-1"), "", 0, 100)), ElementsAre("W2", "W3", "W4"));
  // Each window still holds its own.
  EXPECT_THAT(Reasons(log.List(Window("w-0"), "", 0, 100)), ElementsAre("W0"));
  EXPECT_EQ(log.size(), 5u);
}

TEST(EventLogTest, TheGlobalCapDropsTheOldestEverywhere) {
  EventLog log(EventLogOptions{/*max_events=*/3, /*max_per_object=*/20});
  for (int i = 0; i < 5; ++i) {
    log.Record(Ev(absl::StrCat("C", i), Container(absl::StrCat("c-", i)), i, "acme",
                  {Tenant("acme")}));
  }
  EXPECT_EQ(log.size(), 3u);
  EXPECT_THAT(Reasons(log.List(kAll, "", 0, 100)), ElementsAre("C2", "C3", "C4"));
  EXPECT_THAT(Reasons(log.List(Tenant("acme"), "", 0, 100)), ElementsAre("C2", "C3", "C4"));
  // An object whose events all aged out is forgotten.
  EXPECT_FALSE(log.Holds(Container("c-0"), ""));
  EXPECT_TRUE(log.Holds(Container("c-4"), ""));
}

// A tenant making many objects churns out only its own events: another
// tenant's, and fleet events, stay.
TEST(EventLogTest, OneTenantCannotPushOutAnothersEvents) {
  EventLog log(EventLogOptions{/*max_events=*/10, /*max_per_object=*/20, /*max_per_tenant=*/4});
  log.Record(Ev("Quiet", Container("c-quiet"), 0, "globex", {Tenant("globex")}));
  log.Record(Ev("NodeRegistered", Node("n1"), 1));
  for (int i = 0; i < 1000; ++i) {
    log.Record(Ev(absl::StrCat("H", i), Container(absl::StrCat("c-", i)), 2 + i, "hostile",
                  {Tenant("hostile")}));
  }
  EXPECT_THAT(Reasons(log.List(Tenant("hostile"), "", 0, 100)),
              ElementsAre("H996", "H997", "H998", "H999"));
  EXPECT_THAT(Reasons(log.List(kAll, "globex", 0, 100)), ElementsAre("Quiet"));
  EXPECT_THAT(Reasons(log.List(Node("n1"), "", 0, 100)), ElementsAre("NodeRegistered"));
  EXPECT_EQ(log.size(), 6u);
}

TEST(EventLogTest, ARepeatedEventIsKeptOnceWithACountAndItsFirstTime) {
  EventLog log;
  log.Record(Ev("ContainerFailed", Container("c-1"), 100, "acme", {Node("n1")}, "busy"));
  log.Record(Ev("NodeRegistered", Node("n1"), 150));
  log.Record(Ev("ContainerFailed", Container("c-1"), 200, "acme", {Node("n1")}, "busy"));
  log.Record(Ev("ContainerFailed", Container("c-1"), 300, "acme", {Node("n1")}, "busy"));
  EventLog::Page page = log.List(Container("c-1"), "", 0, 100);
  ASSERT_EQ(page.events.size(), 1u);
  EXPECT_EQ(page.events[0].count(), 3u);
  EXPECT_EQ(page.events[0].first_time_ms(), 100);
  EXPECT_EQ(page.events[0].last_time_ms(), 300);
  // It moved to the end: newer than the node's event in between.
  EXPECT_THAT(Reasons(log.List(Node("n1"), "", 0, 100)),
              ElementsAre("NodeRegistered", "ContainerFailed"));
  EXPECT_EQ(log.size(), 2u);
  // A different message, or another request, is another event.
  log.Record(Ev("ContainerFailed", Container("c-1"), 400, "acme", {Node("n1")}, "gone"));
  v1::Event with_request =
      Ev("ContainerFailed", Container("c-1"), 500, "acme", {Node("n1")}, "gone");
  with_request.set_request_id("r-1");
  log.Record(with_request);
  EXPECT_EQ(log.List(Container("c-1"), "", 0, 100).events.size(), 3u);
}

TEST(EventLogTest, DropsEventsWithoutAnObject) {
  EventLog log;
  log.Record(Ev("Nothing", v1::ObjectRef(), 1));
  EXPECT_EQ(log.size(), 0u);
}

TEST(EventLogTest, ConcurrentRecordersAndReadersStayWithinBounds) {
  EventLog log(EventLogOptions{/*max_events=*/50, /*max_per_object=*/5});
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&log, t] {
      for (int i = 0; i < 500; ++i) {
        log.Record(Ev("WindowAllocated", Window(absl::StrCat("w-", t, "-", i)), i, "acme",
                      {Container(absl::StrCat("c-", t))}));
        log.List(Container(absl::StrCat("c-", t)), "acme", 0, 10);
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(log.size(), 50u);
  for (int t = 0; t < 4; ++t) {
    EXPECT_LE(log.List(Container(absl::StrCat("c-", t)), "", 0, 0).events.size(), 5u);
  }
  // Sequences are unique and increasing.
  EventLog::Page all = log.List(kAll, "", 0, 0);
  for (size_t i = 1; i < all.events.size(); ++i) {
    EXPECT_LT(all.events[i - 1].sequence(), all.events[i].sequence());
  }
}

TEST(EventBytesTest, ExactBinaryUnitsElseBytes) {
  EXPECT_EQ(EventBytes(0), "0B");
  EXPECT_EQ(EventBytes(4096), "4KiB");
  EXPECT_EQ(EventBytes(2u << 20), "2MiB");
  EXPECT_EQ(EventBytes(3ull << 29), "1536MiB");
  EXPECT_EQ(EventBytes(4ull << 30), "4GiB");
  EXPECT_EQ(EventBytes(5000), "5000B");
}

}  // namespace
}  // namespace iommu
