// `iommuctl describe` (describe_commands.cc): what each describe asks the
// broker, and the view it prints, also of a deleted object.
#include <string>
#include <vector>

#include "client/commands_fixture.h"
#include "client/views.pb.h"
#include "gmock/gmock.h"
#include "google/protobuf/util/json_util.h"
#include "gtest/gtest.h"
#include "proto/broker.grpc.pb.h"

namespace iommu {
namespace client {
namespace {

namespace v1 = ::iommu::v1;
using ::google::protobuf::util::JsonStringToMessage;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::StartsWith;

v1::Event MakeEvent(const std::string& reason, v1::ObjectKind kind, const std::string& id,
                    const std::string& message, std::vector<v1::ObjectRef> related = {}) {
  v1::Event e;
  e.set_type(v1::EVENT_TYPE_NORMAL);
  e.set_reason(reason);
  e.set_message(message);
  e.mutable_object()->set_kind(kind);
  e.mutable_object()->set_id(id);
  for (auto& r : related) *e.add_related() = r;
  e.set_count(1);
  return e;
}

v1::ObjectRef ContainerObject(const std::string& id) {
  v1::ObjectRef r;
  r.set_kind(v1::OBJECT_KIND_CONTAINER);
  r.set_id(id);
  return r;
}

TEST_F(CommandsTest, DescribeContainerGathersItsWindowsUsageAndEvents) {
  v1::Container c;
  c.set_id("c-00000000000000a1");
  c.set_tenant_id("acme");
  c.set_node("host-a");
  c.set_window_count(1);
  fake_->SetResponse("GetContainer", c);
  v1::ListWindowsResponse windows;
  windows.add_windows()->set_id("w-00000000000000b2");
  fake_->SetResponse("ListWindows", windows);
  v1::GetUsageResponse usage;
  v1::NodeUsage* row = usage.add_nodes();
  row->set_tenant_id("acme");
  row->set_node("host-a");
  row->set_pinned_bytes(1 << 20);
  fake_->SetResponse("GetUsage", usage);
  v1::ListEventsResponse events;
  *events.add_events() = MakeEvent("ContainerCreated", v1::OBJECT_KIND_CONTAINER,
                                   "c-00000000000000a1", "on node host-a");
  *events.add_events() = MakeEvent("WindowAllocated", v1::OBJECT_KIND_WINDOW, "w-00000000000000b2",
                                   "w-00000000000000b2 at 0x0-0x1fffff");
  fake_->SetResponse("ListEvents", events);

  ASSERT_EQ(Run({"describe", "container", "c-00000000000000a1"}), 0) << err_;
  auto gets = fake_->Requests<v1::GetContainerRequest>("GetContainer");
  ASSERT_EQ(gets.size(), 1u);
  EXPECT_EQ(gets[0].container_id(), "c-00000000000000a1");
  auto list = fake_->Requests<v1::ListWindowsRequest>("ListWindows");
  ASSERT_EQ(list.size(), 1u);
  EXPECT_EQ(list[0].container_id(), "c-00000000000000a1");
  EXPECT_EQ(list[0].page_size(), 50u);
  auto usage_reqs = fake_->Requests<v1::GetUsageRequest>("GetUsage");
  ASSERT_EQ(usage_reqs.size(), 1u);
  EXPECT_EQ(usage_reqs[0].tenant_id(), "acme");
  EXPECT_EQ(usage_reqs[0].node(), "host-a");
  auto event_reqs = fake_->Requests<v1::ListEventsRequest>("ListEvents");
  ASSERT_EQ(event_reqs.size(), 1u);
  EXPECT_EQ(event_reqs[0].object().kind(), v1::OBJECT_KIND_CONTAINER);
  EXPECT_EQ(event_reqs[0].object().id(), "c-00000000000000a1");

  EXPECT_THAT(out_, StartsWith("ID:            c-00000000000000a1\n"));
  EXPECT_THAT(out_, HasSubstr("Usage:         tenant acme on node host-a: 1.0MiB pinned"));
  EXPECT_THAT(out_, HasSubstr("\nWindows:\n  ID "));
  EXPECT_THAT(out_, HasSubstr("\nEvents:\n  AGE"));
  EXPECT_THAT(out_, HasSubstr("Normal  ContainerCreated  on node host-a\n"));
  EXPECT_THAT(out_, HasSubstr("WindowAllocated   w-00000000000000b2 at 0x0-0x1fffff\n"));

  // One JSON object with all of it.
  ASSERT_EQ(Run({"-o", "json", "describe", "container", "c-00000000000000a1"}), 0) << err_;
  iommu::ctl::ContainerDescription d;
  ASSERT_TRUE(JsonStringToMessage(out_, &d, IgnoreUnknownFields()).ok()) << out_;
  EXPECT_EQ(d.container().id(), "c-00000000000000a1");
  EXPECT_EQ(d.windows_size(), 1);
  EXPECT_EQ(d.usage().pinned_bytes(), 1u << 20);
  EXPECT_EQ(d.events_size(), 2);
  EXPECT_FALSE(d.deleted());
}

TEST_F(CommandsTest, DescribeADeletedContainerShowsWhatHappenedToIt) {
  fake_->SetError("GetContainer",
                  grpc::Status(grpc::StatusCode::NOT_FOUND, "container_id: no container \"c-1\""));
  v1::ListEventsResponse events;
  *events.add_events() =
      MakeEvent("ContainerDeleted", v1::OBJECT_KIND_CONTAINER, "c-1", "c-1 deleted from host-a");
  fake_->SetResponse("ListEvents", events);
  ASSERT_EQ(Run({"describe", "container", "c-1"}), 0) << err_;
  EXPECT_THAT(out_, HasSubstr("State:  deleted"));
  EXPECT_THAT(out_, HasSubstr("ContainerDeleted"));
  EXPECT_THAT(fake_->Requests<v1::ListWindowsRequest>("ListWindows"), IsEmpty());
}

TEST_F(CommandsTest, DescribeAnUnknownContainerIsTheGetsNotFound) {
  fake_->SetError("GetContainer",
                  grpc::Status(grpc::StatusCode::NOT_FOUND, "container_id: no container \"c-1\""));
  fake_->SetError("ListEvents",
                  grpc::Status(grpc::StatusCode::NOT_FOUND, "object.id: no container \"c-1\""));
  EXPECT_EQ(Run({"describe", "container", "c-1"}), 1);
  EXPECT_EQ(err_, "error: NOT_FOUND: container_id: no container \"c-1\"\n");
  EXPECT_EQ(out_, "");
}

TEST_F(CommandsTest, DescribeTenantAndNodeAskForTheirRelatedObjects) {
  v1::Tenant t;
  t.set_id("acme");
  fake_->SetResponse("GetTenant", t);
  ASSERT_EQ(Run({"describe", "tenant", "acme"}), 0) << err_;
  EXPECT_EQ(fake_->Requests<v1::GetUsageRequest>("GetUsage").back().tenant_id(), "acme");
  EXPECT_EQ(fake_->Requests<v1::ListContainersRequest>("ListContainers").back().tenant_id(),
            "acme");
  EXPECT_EQ(fake_->Requests<v1::ListEventsRequest>("ListEvents").back().object().kind(),
            v1::OBJECT_KIND_TENANT);
  EXPECT_THAT(out_, HasSubstr("\nContainers:  <none>\n"));
  EXPECT_THAT(out_, HasSubstr("\nEvents:  <none>\n"));

  v1::Node n;
  n.set_name("host-a");
  n.set_container_count(60);
  fake_->SetResponse("GetNode", n);
  v1::ListContainersResponse page;
  page.add_containers()->set_id("c-00000000000000a1");
  page.set_next_page_token("c-00000000000000a1");
  fake_->SetResponse("ListContainers", page);
  ASSERT_EQ(Run({"describe", "node", "host-a"}), 0) << err_;
  EXPECT_EQ(fake_->Requests<v1::ListDevicesRequest>("ListDevices").back().node(), "host-a");
  EXPECT_EQ(fake_->Requests<v1::ListContainersRequest>("ListContainers").back().node(), "host-a");
  EXPECT_EQ(fake_->Requests<v1::GetUsageRequest>("GetUsage").back().node(), "host-a");
  EXPECT_EQ(fake_->Requests<v1::ListEventsRequest>("ListEvents").back().object().id(), "host-a");
  EXPECT_THAT(out_, HasSubstr("... and 59 more (iommuctl container list --node=host-a)"));
}

TEST_F(CommandsTest, DescribeWindowFindsItsContainerThroughItsEvents) {
  v1::ListEventsResponse events;
  *events.add_events() = MakeEvent("WindowAllocated", v1::OBJECT_KIND_WINDOW, "w-00000000000000b2",
                                   "allocated", {ContainerObject("c-00000000000000a1")});
  fake_->SetResponse("ListEvents", events);
  v1::ListWindowsResponse windows;
  v1::Window* w = windows.add_windows();
  w->set_id("w-00000000000000b2");
  w->set_container_id("c-00000000000000a1");
  w->set_base(0x100000000);
  w->set_size(4096);
  fake_->SetResponse("ListWindows", windows);
  v1::Container c;
  c.set_id("c-00000000000000a1");
  c.set_node("host-a");
  fake_->SetResponse("GetContainer", c);
  ASSERT_EQ(Run({"describe", "window", "w-00000000000000b2"}), 0) << err_;
  auto list = fake_->Requests<v1::ListWindowsRequest>("ListWindows");
  ASSERT_EQ(list.size(), 1u);
  EXPECT_EQ(list[0].container_id(), "c-00000000000000a1");
  EXPECT_EQ(fake_->Requests<v1::GetContainerRequest>("GetContainer")[0].container_id(),
            "c-00000000000000a1");
  EXPECT_THAT(out_, HasSubstr("Base:       0x100000000\n"));
  EXPECT_THAT(out_, HasSubstr("\nContainer:\n  ID:       c-00000000000000a1\n"));

  // Released: not among its container's windows any more, but its events are.
  fake_->SetResponse("ListWindows", v1::ListWindowsResponse());
  ASSERT_EQ(Run({"describe", "window", "w-00000000000000b2"}), 0) << err_;
  EXPECT_THAT(out_, HasSubstr("State:  deleted"));

  // No events and not found anywhere.
  fake_->SetResponse("ListEvents", v1::ListEventsResponse());
  EXPECT_EQ(Run({"describe", "window", "w-00000000000000b2"}), 1);
  EXPECT_EQ(err_, "error: NOT_FOUND: window_id: no window \"w-00000000000000b2\"\n");
  // Without a hint every window the caller may see is searched.
  EXPECT_EQ(fake_->Requests<v1::ListWindowsRequest>("ListWindows").back().container_id(), "");
}

}  // namespace
}  // namespace client
}  // namespace iommu
