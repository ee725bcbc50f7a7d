#include "client/format.h"

#include <string>
#include <vector>

#include "absl/strings/str_split.h"
#include "gmock/gmock.h"
#include "google/protobuf/util/json_util.h"
#include "google/protobuf/util/message_differencer.h"
#include "gtest/gtest.h"

namespace iommu {
namespace client {
namespace {

using ::google::protobuf::util::JsonStringToMessage;

// iommuctl's JSON adds an RFC 3339 sibling to every *_ms time field.
google::protobuf::util::JsonParseOptions IgnoreUnknownFields() {
  google::protobuf::util::JsonParseOptions options;
  options.ignore_unknown_fields = true;
  return options;
}

using ::google::protobuf::util::MessageDifferencer;
using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::StartsWith;

constexpr int64_t kCreated = 1714564800000;  // 2024-05-01T12:00:00Z.

iommu::v1::Container SampleContainer() {
  iommu::v1::Container c;
  c.set_id("c-00000000000000a1");
  c.set_tenant_id("acme");
  c.set_node("host-a");
  c.add_devices("0000:00:04.0");
  c.add_devices("0000:00:05.0");
  c.set_state(iommu::v1::CONTAINER_STATE_READY);
  auto* g = c.mutable_geometry();
  auto* r = g->add_usable_ranges();
  r->set_start(0);
  r->set_last(0xfedfffff);
  r = g->add_usable_ranges();
  r->set_start(0xfef00000);
  r->set_last(0xffffffffffff);
  g->set_page_size_bitmap((1ull << 12) | (1ull << 21) | (1ull << 30));
  g->set_max_mappings(65535);
  c.set_create_time_ms(kCreated);
  c.set_window_count(1);
  c.set_window_bytes(2ull << 30);
  c.set_pin_budget_bytes(8ull << 30);
  return c;
}

iommu::v1::GrantLauncherResponse SampleGrant() {
  iommu::v1::GrantLauncherResponse g;
  g.set_token("tok.ABCdef-123_xyz");
  g.set_node("host-a");
  g.set_launcher_socket("/run/iommu-agent/launcher.sock");
  g.set_container_id("c-00000000000000a1");
  g.set_tenant_id("acme");
  g.set_expires_ms(kCreated + 60000);
  auto* w = g.add_windows();
  w->set_id("w-00000000000000b2");
  w->set_container_id("c-00000000000000a1");
  w->set_base(0x100000000);
  w->set_size(2ull << 30);
  w = g.add_windows();
  w->set_id("w-00000000000000b3");
  w->set_container_id("c-00000000000000a1");
  w->set_base(0x200000000);
  w->set_size(2u << 20);
  return g;
}

iommu::v1::GetUsageResponse SampleUsage() {
  iommu::v1::GetUsageResponse u;
  auto* t = u.add_tenants();
  t->set_tenant_id("acme");
  t->mutable_quota()->set_pinned_bytes(8ull << 30);
  t->mutable_quota()->set_max_containers(4);
  t->set_containers(2);
  t->set_windows(3);
  t->set_window_bytes(6ull << 30);
  t->set_pinned_bytes(2ull << 30);
  t->set_mapped_bytes(4ull << 30);
  t->set_dedup_saved_bytes(2ull << 30);
  auto* n = u.add_nodes();
  n->set_tenant_id("acme");
  n->set_node("host-a");
  n->set_containers(2);
  n->set_windows(3);
  n->set_window_bytes(6ull << 30);
  n->set_pinned_bytes(2ull << 30);
  n->set_mapped_bytes(4ull << 30);
  return u;
}

std::vector<std::string> Lines(const std::string& text) {
  return absl::StrSplit(text, '\n', absl::SkipEmpty());
}

TEST(FormatBytesTest, BinaryUnitsWithOneDecimal) {
  EXPECT_EQ(FormatBytes(0), "0B");
  EXPECT_EQ(FormatBytes(512), "512B");
  EXPECT_EQ(FormatBytes(1023), "1023B");
  EXPECT_EQ(FormatBytes(4096), "4.0KiB");
  EXPECT_EQ(FormatBytes(2ull << 30), "2.0GiB");
  EXPECT_EQ(FormatBytes(3ull << 29), "1.5GiB");
  EXPECT_EQ(FormatBytes(1ull << 40), "1.0TiB");
  EXPECT_EQ(FormatBytes((1ull << 20) - 1), "1.0MiB");  // Rounds up a unit.
  EXPECT_EQ(FormatBytes(~0ull), "16.0EiB");
}

TEST(FormatScalarsTest, TimesPageSizesAndStates) {
  EXPECT_EQ(FormatTimeMs(kCreated), "2024-05-01T12:00:00Z");
  EXPECT_EQ(FormatTimeMs(0), "-");
  EXPECT_EQ(FormatPageSizes((1ull << 12) | (1ull << 21) | (1ull << 30)), "4KiB,2MiB,1GiB");
  EXPECT_EQ(FormatPageSizes(0), "-");
  EXPECT_EQ(ContainerStateName(iommu::v1::CONTAINER_STATE_NODE_UNAVAILABLE), "node-unavailable");
  EXPECT_EQ(NodeStateName(iommu::v1::NODE_STATE_READY), "ready");
}

TEST(TableTest, AlignsColumnsWithoutTrailingBlanks) {
  Table t({"A", "LONGER", "C"});
  t.AddRow({"xxxx", "y", ""});
  t.AddRow({"z"});
  EXPECT_EQ(t.Render(), "A     LONGER  C\nxxxx  y\nz\n");
}

TEST(FormatTableTest, TenantListShowsQuotaHumanReadable) {
  iommu::v1::ListTenantsResponse r;
  auto* t = r.add_tenants();
  t->set_id("acme");
  t->mutable_quota()->set_pinned_bytes(64ull << 30);
  t->mutable_quota()->set_max_containers(8);
  t->set_create_time_ms(kCreated);
  auto* u = r.add_tenants();
  u->set_id("beta-corp");
  u->mutable_quota()->set_pinned_bytes(1ull << 30);
  u->mutable_quota()->set_window_bytes(1ull << 40);
  const std::vector<std::string> lines = Lines(FormatTenantTable(r));
  ASSERT_EQ(lines.size(), 3u);
  EXPECT_EQ(lines[0], "ID         PINNED-QUOTA  MAX-CONTAINERS  WINDOW-QUOTA  CREATED");
  EXPECT_EQ(lines[1], "acme       64.0GiB       8               unlimited     2024-05-01T12:00:00Z");
  EXPECT_EQ(lines[2], "beta-corp  1.0GiB        unlimited       1.0TiB        -");
}

TEST(FormatTableTest, EmptyListPrintsOnlyTheHeader) {
  EXPECT_EQ(Lines(FormatContainerTable(iommu::v1::ListContainersResponse())).size(), 1u);
}

TEST(FormatTableTest, ContainerListShowsTheBudgetHumanReadable) {
  iommu::v1::ListContainersResponse r;
  *r.add_containers() = SampleContainer();
  auto* c = r.add_containers();
  c->set_id("c-00000000000000a2");
  c->set_tenant_id("acme");
  c->set_node("host-b");
  c->set_state(iommu::v1::CONTAINER_STATE_NODE_UNAVAILABLE);
  const std::vector<std::string> lines = Lines(FormatContainerTable(r));
  ASSERT_EQ(lines.size(), 3u);
  EXPECT_EQ(lines[0],
            "ID                  NAME  TENANT  NODE    STATE             DEVICES                    "
            "BUDGET  WINDOWS  WINDOW-BYTES  CREATED");
  EXPECT_EQ(lines[1],
            "c-00000000000000a1  -     acme    host-a  ready             0000:00:04.0,0000:00:05.0  "
            "8.0GiB  1        2.0GiB        2024-05-01T12:00:00Z");
  EXPECT_EQ(lines[2],
            "c-00000000000000a2  -     acme    host-b  node-unavailable  -                          "
            "0B      0        0B            -");
}

TEST(FormatTableTest, WindowListShowsExactHexBaseAndLast) {
  iommu::v1::ListWindowsResponse r;
  auto* w = r.add_windows();
  w->set_id("w-00000000000000b2");
  w->set_container_id("c-00000000000000a1");
  w->set_tenant_id("acme");
  w->set_base(0x100000000);
  w->set_size(2ull << 30);
  w->set_alignment(2u << 20);
  const std::string text = FormatWindowTable(r);
  EXPECT_THAT(text, HasSubstr("0x100000000"));
  EXPECT_THAT(text, HasSubstr("0x17fffffff"));
  EXPECT_THAT(text, HasSubstr("2.0GiB"));
  EXPECT_THAT(text, HasSubstr("2.0MiB"));
}

TEST(FormatTableTest, NodesAndDevices) {
  iommu::v1::ListNodesResponse nodes;
  auto* n = nodes.add_nodes();
  n->set_name("host-a");
  n->set_state(iommu::v1::NODE_STATE_READY);
  n->set_cordoned(true);
  n->set_backend("sim");
  n->set_device_count(4);
  n->set_free_device_count(3);
  EXPECT_THAT(FormatNodeTable(nodes), HasSubstr("host-a  ready,cordoned  sim      3/4"));

  iommu::v1::ListDevicesResponse devices;
  auto* d = devices.add_devices();
  d->set_address("0000:00:04.0");
  d->set_iommu_group(7);
  d->set_vendor_id(0x1234);
  d->set_device_id(0x11e8);
  d->set_driver("vfio-pci");
  d->set_assignable(false);
  d->set_unassignable_reason("group 7 has a host driver");
  const std::string text = FormatDeviceTable(devices);
  EXPECT_THAT(text, HasSubstr("0x1234"));
  EXPECT_THAT(text, HasSubstr("0x11e8"));
  EXPECT_THAT(text, HasSubstr("no (group 7 has a host driver)"));
}

TEST(FormatTableTest, UsageShowsTenantAndNodeRows) {
  const std::string text = FormatUsage(SampleUsage());
  const std::vector<std::string> lines = Lines(text);
  ASSERT_EQ(lines.size(), 4u) << text;
  EXPECT_THAT(lines[0], HasSubstr("TENANT  PINNED(BILLED)  PINNED-QUOTA  USE  MAPPED  DEDUP-SAVED"));
  EXPECT_THAT(lines[1], HasSubstr("acme    2.0GiB          8.0GiB        25%  4.0GiB  2.0GiB"));
  EXPECT_THAT(lines[2], HasSubstr("TENANT  NODE    PINNED(BILLED)"));
  EXPECT_THAT(lines[3], HasSubstr("acme    host-a  2.0GiB          4.0GiB  2.0GiB"));
  EXPECT_THAT(text, HasSubstr("\n\n"));  // The two tables are apart.
}

TEST(FormatObjectTest, ContainerShowsGeometry) {
  const std::string text = FormatContainer(SampleContainer());
  EXPECT_THAT(text, HasSubstr("ID:            c-00000000000000a1\n"));
  EXPECT_THAT(text, HasSubstr("Devices:       0000:00:04.0, 0000:00:05.0\n"));
  EXPECT_THAT(text, HasSubstr("Page sizes:    4KiB,2MiB,1GiB\n"));
  EXPECT_THAT(text, HasSubstr("Usable IOVA:   0x0-0xfedfffff, 0xfef00000-0xffffffffffff\n"));
  EXPECT_THAT(text, HasSubstr("Windows:       1 (2.0GiB)\n"));
  EXPECT_THAT(text, HasSubstr("Pin budget:    8.0GiB (8589934592 bytes)\n"));
  EXPECT_THAT(text, Not(HasSubstr(" \n")));
}

TEST(FormatObjectTest, GrantShowsTheTokenFirstAndOneWindowALine) {
  EXPECT_EQ(FormatGrant(SampleGrant()),
            "Token:            tok.ABCdef-123_xyz\n"
            "Node:             host-a\n"
            "Launcher socket:  /run/iommu-agent/launcher.sock\n"
            "Container:        c-00000000000000a1\n"
            "Tenant:           acme\n"
            "Expires:          2024-05-01T12:01:00Z\n"
            "Windows:          w-00000000000000b2  0x100000000-0x17fffffff  (2.0GiB)\n"
            "                  w-00000000000000b3  0x200000000-0x2001fffff  (2.0MiB)\n");
}

TEST(FormatObjectTest, GrantWithoutWindowsSaysNone) {
  iommu::v1::GrantLauncherResponse g = SampleGrant();
  g.clear_windows();
  g.clear_launcher_socket();
  const std::string text = FormatGrant(g);
  EXPECT_THAT(text, HasSubstr("Launcher socket:  -\n"));
  EXPECT_THAT(text, HasSubstr("Windows:          none\n"));
}

TEST(FormatObjectTest, DrainListsDeletedAndRemaining) {
  iommu::v1::DrainNodeResponse r;
  r.mutable_node()->set_name("host-a");
  r.mutable_node()->set_cordoned(true);
  r.mutable_node()->set_state(iommu::v1::NODE_STATE_READY);
  r.add_deleted_container_ids("c-1");
  r.add_deleted_container_ids("c-2");
  const std::string text = FormatDrain(r);
  EXPECT_THAT(text, HasSubstr("ready,cordoned"));
  EXPECT_THAT(text, HasSubstr("Deleted containers:    c-1, c-2\n"));
  EXPECT_THAT(text, HasSubstr("Remaining containers:  none\n"));
}

TEST(FormatTableTest, DispatchesOnMessageType) {
  EXPECT_THAT(*FormatTable(SampleContainer()), HasSubstr("Page sizes:"));
  EXPECT_THAT(*FormatTable(SampleUsage()), HasSubstr("DEDUP-SAVED"));
  EXPECT_THAT(*FormatTable(SampleGrant()), HasSubstr("Token:"));
  absl::StatusOr<std::string> none = FormatTable(iommu::v1::DeleteContainerResponse());
  ASSERT_FALSE(none.ok());
  EXPECT_EQ(none.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(none.status().message()), HasSubstr("DeleteContainerResponse"));
}

TEST(FormatJsonTest, UsesProtoNamesPrintsZerosAndParsesBack) {
  iommu::v1::Container c = SampleContainer();
  c.set_window_count(0);
  absl::StatusOr<std::string> json = FormatJson(c);
  ASSERT_TRUE(json.ok()) << json.status();
  EXPECT_THAT(*json, HasSubstr("\"tenant_id\": \"acme\""));
  EXPECT_THAT(*json, HasSubstr("\"window_count\": 0"));
  EXPECT_THAT(*json, HasSubstr("\"state\": \"CONTAINER_STATE_READY\""));
  EXPECT_THAT(*json, HasSubstr("\"page_size_bitmap\": 1075843072,"));
  EXPECT_EQ(json->back(), '\n');

  iommu::v1::Container back;
  ASSERT_TRUE(JsonStringToMessage(*json, &back, IgnoreUnknownFields()).ok());
  EXPECT_TRUE(MessageDifferencer::Equals(c, back));
}

TEST(FormatJsonTest, GrantAndBudgetParseBack) {
  absl::StatusOr<std::string> json = FormatJson(SampleGrant());
  ASSERT_TRUE(json.ok()) << json.status();
  EXPECT_THAT(*json, HasSubstr("\"token\": \"tok.ABCdef-123_xyz\""));
  EXPECT_THAT(*json, HasSubstr("\"expires_ms\": 1714564860000,\n"));
  iommu::v1::GrantLauncherResponse back;
  ASSERT_TRUE(JsonStringToMessage(*json, &back, IgnoreUnknownFields()).ok());
  EXPECT_TRUE(MessageDifferencer::Equals(SampleGrant(), back));

  json = FormatJson(SampleContainer());
  ASSERT_TRUE(json.ok()) << json.status();
  EXPECT_THAT(*json, HasSubstr("\"pin_budget_bytes\": 8589934592"));
}

TEST(FormatJsonTest, TimesAreEpochMillisAndRfc3339AndBigNumbersStayExact) {
  iommu::v1::Container c = SampleContainer();
  c.set_create_time_ms(1714564800123);
  c.set_pin_budget_bytes(~uint64_t{0});  // Far above 2^53: printed exactly.
  absl::StatusOr<std::string> json = FormatJson(c);
  ASSERT_TRUE(json.ok()) << json.status();
  EXPECT_THAT(*json, HasSubstr("\"create_time_ms\": 1714564800123,\n"
                               "  \"create_time\": \"2024-05-01T12:00:00.123Z\""));
  EXPECT_THAT(*json, HasSubstr("\"pin_budget_bytes\": 18446744073709551615"));
  iommu::v1::Container back;
  ASSERT_TRUE(JsonStringToMessage(*json, &back, IgnoreUnknownFields()).ok());
  EXPECT_TRUE(MessageDifferencer::Equals(c, back));

  // Unset (0) times are null, not 1970.
  c.set_create_time_ms(0);
  json = FormatJson(c);
  ASSERT_TRUE(json.ok()) << json.status();
  EXPECT_THAT(*json, HasSubstr("\"create_time_ms\": 0,\n  \"create_time\": null"));
  // Strings that need escaping.
  c.set_tenant_id("a\"b\\c\n");
  json = FormatJson(c);
  ASSERT_TRUE(json.ok()) << json.status();
  EXPECT_THAT(*json, HasSubstr("\"tenant_id\": \"a\\\"b\\\\c\\n\""));
  ASSERT_TRUE(JsonStringToMessage(*json, &back, IgnoreUnknownFields()).ok());
  EXPECT_EQ(back.tenant_id(), c.tenant_id());
}

TEST(FormatJsonTest, UsageAndEmptyResponsesParseBack) {
  absl::StatusOr<std::string> json = FormatJson(SampleUsage());
  ASSERT_TRUE(json.ok()) << json.status();
  EXPECT_THAT(*json, HasSubstr("\"dedup_saved_bytes\": 2147483648"));
  iommu::v1::GetUsageResponse back;
  ASSERT_TRUE(JsonStringToMessage(*json, &back, IgnoreUnknownFields()).ok());
  EXPECT_TRUE(MessageDifferencer::Equals(SampleUsage(), back));

  json = FormatJson(iommu::v1::DeleteTenantResponse());
  ASSERT_TRUE(json.ok());
  EXPECT_EQ(*json, "{}\n");
}

// ---------------------------------------------------------------- describe, top

constexpr int64_t kNow = kCreated + 3600 * 1000;  // An hour after kCreated.

iommu::v1::Event SampleEvent(const std::string& reason, iommu::v1::EventType type,
                             int64_t last_ms, const std::string& message, uint32_t count = 1,
                             int64_t first_ms = 0) {
  iommu::v1::Event e;
  e.set_reason(reason);
  e.set_type(type);
  e.set_message(message);
  e.set_last_time_ms(last_ms);
  e.set_first_time_ms(first_ms == 0 ? last_ms : first_ms);
  e.set_count(count);
  return e;
}

iommu::ctl::ContainerDescription SampleContainerDescription() {
  iommu::ctl::ContainerDescription d;
  *d.mutable_container() = SampleContainer();
  iommu::v1::Window* w = d.add_windows();
  w->set_id("w-00000000000000b2");
  w->set_container_id("c-00000000000000a1");
  w->set_base(0x100000000);
  w->set_size(2ull << 30);
  w->set_alignment(2u << 20);
  w->set_create_time_ms(kCreated);
  d.mutable_usage()->set_tenant_id("acme");
  d.mutable_usage()->set_node("host-a");
  d.mutable_usage()->set_pinned_bytes(1ull << 30);
  d.mutable_usage()->set_mapped_bytes(3ull << 30);
  *d.add_events() = SampleEvent("ContainerCreated", iommu::v1::EVENT_TYPE_NORMAL, kCreated,
                                "c-00000000000000a1 on node host-a with devices 0000:00:04.0");
  *d.add_events() = SampleEvent("WindowAllocated", iommu::v1::EVENT_TYPE_NORMAL,
                                kNow - 90 * 1000, "w-00000000000000b2 at 0x100000000-0x17fffffff");
  return d;
}

TEST(FormatAgeTest, SecondsThenMinutesHoursAndDays) {
  EXPECT_EQ(FormatAge(-5000), "0s");
  EXPECT_EQ(FormatAge(0), "0s");
  EXPECT_EQ(FormatAge(119 * 1000), "119s");
  EXPECT_EQ(FormatAge(120 * 1000), "2m");
  EXPECT_EQ(FormatAge(119 * 60 * 1000), "119m");
  EXPECT_EQ(FormatAge(120 * 60 * 1000), "2h");
  EXPECT_EQ(FormatAge(47ll * 3600 * 1000), "47h");
  EXPECT_EQ(FormatAge(49ll * 3600 * 1000), "2d");
}

TEST(FormatEventTableTest, AgeTypeReasonMessageWithRepeatsCounted) {
  google::protobuf::RepeatedPtrField<iommu::v1::Event> events;
  *events.Add() = SampleEvent("ContainerCreated", iommu::v1::EVENT_TYPE_NORMAL, kCreated, "made");
  *events.Add() = SampleEvent("ContainerFailed", iommu::v1::EVENT_TYPE_WARNING, kNow - 30 * 1000,
                              "the agent could not re-create it: busy", 3, kNow - 600 * 1000);
  const std::vector<std::string> lines = Lines(FormatEventTable(events, kNow));
  ASSERT_EQ(lines.size(), 3u);
  EXPECT_EQ(lines[0], "AGE                TYPE     REASON            MESSAGE");
  EXPECT_EQ(lines[1], "60m                Normal   ContainerCreated  made");
  EXPECT_EQ(lines[2],
            "30s (x3 over 10m)  Warning  ContainerFailed   the agent could not re-create it: busy");
  EXPECT_EQ(FormatEventTable({}, kNow), "<none>\n");
}

TEST(FormatDescribeTest, ContainerShowsItsFieldsUsageWindowsAndEvents) {
  const std::string text = FormatContainerDescription(SampleContainerDescription(), kNow);
  EXPECT_THAT(text, HasSubstr("ID:            c-00000000000000a1\n"));
  EXPECT_THAT(text, HasSubstr("Pin budget:    8.0GiB (8589934592 bytes)\n"));
  EXPECT_THAT(text, HasSubstr("Usage:         tenant acme on node host-a: 1.0GiB pinned (billed), "
                              "3.0GiB mapped, dedup saved 2.0GiB\n"));
  EXPECT_THAT(text, HasSubstr("\nWindows:\n  ID                  BASE         LAST         SIZE    "
                              "ALIGN   CREATED\n  w-00000000000000b2  0x100000000  0x17fffffff  "
                              "2.0GiB  2.0MiB  2024-05-01T12:00:00Z\n"));
  EXPECT_THAT(text, HasSubstr("\nEvents:\n  AGE  TYPE    REASON            MESSAGE\n"));
  EXPECT_THAT(text, HasSubstr("  90s  Normal  WindowAllocated   w-00000000000000b2 at"));
  EXPECT_THAT(text, Not(HasSubstr(" \n")));
}

TEST(FormatDescribeTest, EmptySectionsSayNoneAndMoreSaysHowToListThem) {
  iommu::ctl::ContainerDescription d = SampleContainerDescription();
  d.clear_events();
  d.set_more_windows(3);
  const std::string text = FormatContainerDescription(d, kNow);
  EXPECT_THAT(text, HasSubstr("\nEvents:  <none>\n"));
  EXPECT_THAT(text, HasSubstr("  ... and 3 more (iommuctl window list "
                              "--container=c-00000000000000a1)\n"));
  d.clear_windows();
  d.set_more_windows(0);
  EXPECT_THAT(FormatContainerDescription(d, kNow), HasSubstr("\nWindows:  <none>\n"));
}

TEST(FormatDescribeTest, ADeletedObjectShowsItsIdAndItsEventsOnly) {
  iommu::ctl::ContainerDescription d;
  d.mutable_container()->set_id("c-00000000000000a1");
  d.set_deleted(true);
  *d.add_events() = SampleEvent("ContainerDeleted", iommu::v1::EVENT_TYPE_NORMAL, kNow - 5000,
                                "c-00000000000000a1 deleted from node host-a");
  const std::string text = FormatContainerDescription(d, kNow);
  EXPECT_THAT(text, HasSubstr("ID:     c-00000000000000a1\n"
                              "State:  deleted (only its recent events are left)\n"));
  EXPECT_THAT(text, HasSubstr("ContainerDeleted"));
  EXPECT_THAT(text, Not(HasSubstr("Pin budget")));
}

TEST(FormatDescribeTest, TenantShowsQuotaAgainstUsageNodesAndContainers) {
  iommu::ctl::TenantDescription d;
  d.mutable_tenant()->set_id("acme");
  d.mutable_tenant()->mutable_quota()->set_pinned_bytes(8ull << 30);
  d.mutable_tenant()->mutable_quota()->set_max_containers(4);
  d.mutable_tenant()->set_create_time_ms(kCreated);
  *d.mutable_usage() = SampleUsage().tenants(0);
  *d.mutable_usage_by_node() = SampleUsage().nodes();
  *d.add_containers() = SampleContainer();
  d.set_more_containers(1);
  const std::string text = FormatTenantDescription(d, kNow);
  EXPECT_THAT(text, HasSubstr("Pinned:      2.0GiB of 8.0GiB quota (25%), billed once per host "
                              "page\n"));
  EXPECT_THAT(text, HasSubstr("Mapped:      4.0GiB (dedup saved 2.0GiB)\n"));
  EXPECT_THAT(text, HasSubstr("Containers:  2 of 4\n"));
  EXPECT_THAT(text, HasSubstr("Windows:     3, 6.0GiB of unlimited\n"));
  EXPECT_THAT(text, HasSubstr("\nUsage by node:\n  NODE    CONTAINERS"));
  EXPECT_THAT(text, HasSubstr("  host-a  2           3        6.0GiB        2.0GiB          "
                              "4.0GiB  2.0GiB\n"));
  EXPECT_THAT(text, HasSubstr("\nContainers:\n  ID                  NAME  NODE    STATE"));
  EXPECT_THAT(text, HasSubstr("  ... and 1 more (iommuctl container list --tenant=acme)\n"));
  EXPECT_THAT(text, HasSubstr("\nEvents:  <none>\n"));
}

TEST(FormatDescribeTest, NodeShowsDevicesContainersAndEachTenantsUsage) {
  iommu::ctl::NodeDescription d;
  d.mutable_node()->set_name("host-a");
  d.mutable_node()->set_state(iommu::v1::NODE_STATE_READY);
  d.mutable_node()->set_backend("sim");
  d.mutable_node()->set_simulated(true);
  iommu::v1::Device* dev = d.add_devices();
  dev->set_address("0000:00:04.0");
  dev->set_iommu_group(5);
  dev->set_assignable(true);
  dev->set_container_id("c-00000000000000a1");
  *d.add_containers() = SampleContainer();
  *d.mutable_usage() = SampleUsage().nodes();
  *d.add_events() = SampleEvent("NodeUnavailable", iommu::v1::EVENT_TYPE_WARNING, kNow - 1000,
                                "no heartbeat for more than 5000ms");
  const std::string text = FormatNodeDescription(d, kNow);
  EXPECT_THAT(text, HasSubstr("Name:             host-a\n"));
  EXPECT_THAT(text, HasSubstr("Backend:          sim (simulated)\n"));
  EXPECT_THAT(text, HasSubstr("\nDevices:\n  ADDRESS       GROUP"));
  EXPECT_THAT(text, HasSubstr("c-00000000000000a1\n"));
  EXPECT_THAT(text, HasSubstr("\nContainers:\n  ID                  NAME  TENANT  STATE"));
  EXPECT_THAT(text, HasSubstr("\nUsage by tenant:\n  TENANT  CONTAINERS"));
  EXPECT_THAT(text, HasSubstr("  1s   Warning  NodeUnavailable  no heartbeat"));
}

TEST(FormatDescribeTest, WindowShowsItsContainer) {
  iommu::ctl::WindowDescription d;
  *d.mutable_window() = SampleContainerDescription().windows(0);
  *d.mutable_container() = SampleContainer();
  const std::string text = FormatWindowDescription(d, kNow);
  EXPECT_THAT(text, HasSubstr("Base:       0x100000000\n"));
  EXPECT_THAT(text, HasSubstr("\nContainer:\n  ID:       c-00000000000000a1\n  Node:     host-a\n"
                              "  State:    ready\n"));
}

iommu::ctl::FleetSummary SampleSummary() {
  iommu::ctl::FleetSummary s;
  s.set_time_ms(kNow);
  s.set_nodes_visible(true);
  s.set_nodes(3);
  (*s.mutable_nodes_by_state())["ready"] = 2;
  (*s.mutable_nodes_by_state())["unavailable"] = 1;
  s.add_nodes_not_ready("host-c");
  s.set_nodes_cordoned(1);
  s.add_nodes_cordoned_names("host-b");
  s.set_containers(3);
  (*s.mutable_containers_by_state())["ready"] = 2;
  (*s.mutable_containers_by_state())["failed"] = 1;
  (*s.mutable_containers_by_state())["node-unavailable"] = 0;
  iommu::v1::TenantUsage* a = s.add_tenants();
  *a = SampleUsage().tenants(0);
  iommu::v1::TenantUsage* b = s.add_tenants();
  b->set_tenant_id("zeta");
  b->mutable_quota()->set_pinned_bytes(1ull << 30);
  b->set_containers(1);
  iommu::v1::TenantUsage* t = s.mutable_total();
  t->set_tenant_id("total");
  t->mutable_quota()->set_pinned_bytes(9ull << 30);
  t->set_pinned_bytes(2ull << 30);
  t->set_mapped_bytes(4ull << 30);
  t->set_dedup_saved_bytes(2ull << 30);
  t->set_containers(3);
  t->set_windows(3);
  t->set_window_bytes(6ull << 30);
  return s;
}

TEST(FormatTopTest, NodesAndContainersByStateThenTenantsAndATotal) {
  const std::string text = FormatFleetSummary(SampleSummary());
  const std::vector<std::string> lines = Lines(text);
  ASSERT_EQ(lines.size(), 8u) << text;
  EXPECT_EQ(lines[0], "As of:       2024-05-01T13:00:00Z");
  EXPECT_EQ(lines[1],
            "Nodes:       3: 2 ready, 1 unavailable (not ready: host-c); 1 cordoned (host-b)");
  EXPECT_EQ(lines[2], "Containers:  3: 2 ready, 1 failed");
  EXPECT_EQ(lines[3], "Tenants:     2");
  EXPECT_THAT(lines[4],
              StartsWith("TENANT  PINNED(BILLED)  PINNED-QUOTA  USE  MAPPED  DEDUP-SAVED"));
  EXPECT_THAT(lines[5], StartsWith("acme    2.0GiB          8.0GiB        25%  4.0GiB  2.0GiB"));
  EXPECT_THAT(lines[6], StartsWith("zeta    0B              1.0GiB        0%"));
  EXPECT_THAT(lines[7], StartsWith("TOTAL   2.0GiB          9.0GiB        22%  4.0GiB  2.0GiB"));
}

TEST(FormatTopTest, WithoutNodesForATenant) {
  iommu::ctl::FleetSummary s = SampleSummary();
  s.set_nodes_visible(false);
  EXPECT_THAT(FormatFleetSummary(s), Not(HasSubstr("Nodes:")));
}

TEST(FormatJsonTest, DescriptionsAndTheSummaryParseBack) {
  absl::StatusOr<std::string> json = FormatJson(SampleContainerDescription());
  ASSERT_TRUE(json.ok()) << json.status();
  EXPECT_THAT(*json, HasSubstr("\"reason\": \"WindowAllocated\""));
  iommu::ctl::ContainerDescription back;
  ASSERT_TRUE(JsonStringToMessage(*json, &back, IgnoreUnknownFields()).ok());
  EXPECT_TRUE(MessageDifferencer::Equals(SampleContainerDescription(), back));

  json = FormatJson(SampleSummary());
  ASSERT_TRUE(json.ok()) << json.status();
  EXPECT_THAT(*json, HasSubstr("\"nodes_by_state\""));
  iommu::ctl::FleetSummary summary;
  ASSERT_TRUE(JsonStringToMessage(*json, &summary, IgnoreUnknownFields()).ok());
  EXPECT_TRUE(MessageDifferencer::Equals(SampleSummary(), summary));
}

}  // namespace
}  // namespace client
}  // namespace iommu
