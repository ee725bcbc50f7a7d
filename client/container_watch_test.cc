// `container list --watch` (container_watch.cc): the list then each change,
// reconnecting and listing again, and --node/--state applied by the
// enter/leave rule.
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_split.h"
#include "client/commands_fixture.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "proto/broker.grpc.pb.h"

namespace iommu {
namespace client {
namespace {

namespace v1 = ::iommu::v1;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Not;

TEST_F(CommandsTest, ContainerListWatchPrintsTheListThenEachChange) {
  v1::ListContainersResponse list;
  list.set_resource_version("run.7");
  v1::Container* c = list.add_containers();
  c->set_id("c-00000000000000a1");
  c->set_name("vm-1");
  c->set_tenant_id("acme");
  c->set_state(v1::CONTAINER_STATE_READY);
  fake_->SetResponse("ListContainers", list);
  v1::WatchResponse first;
  v1::WatchEvent* bookmark = first.add_events();
  bookmark->set_type(v1::WatchEvent::BOOKMARK);
  bookmark->set_resource_version("run.7");
  v1::WatchResponse changes;
  v1::WatchEvent* down = changes.add_events();
  down->set_type(v1::WatchEvent::PUT);
  down->set_resource_version("run.8");
  *down->mutable_container() = *c;
  down->mutable_container()->set_state(v1::CONTAINER_STATE_NODE_UNAVAILABLE);
  v1::WatchEvent* gone = changes.add_events();
  gone->set_type(v1::WatchEvent::DELETE);
  gone->set_resource_version("run.9");
  *gone->mutable_container() = *c;
  fake_->SetWatch({first, changes}, grpc::Status(grpc::StatusCode::UNAVAILABLE, "broker gone"));
  int waits = 0;
  env_.wait = [&waits](absl::Duration) { return ++waits < 2; };

  ASSERT_EQ(Run({"container", "list", "--tenant=acme", "-l", "team=ml", "--watch"}), 0) << err_;
  EXPECT_THAT(out_, HasSubstr("ID                  NAME  TENANT"));
  EXPECT_THAT(out_, HasSubstr("CHANGED  c-00000000000000a1  vm-1  acme"));
  EXPECT_THAT(out_, HasSubstr("node-unavailable"));
  EXPECT_THAT(out_, HasSubstr("DELETED  c-00000000000000a1"));
  EXPECT_THAT(err_, HasSubstr("watch: the stream ended (broker gone); reconnecting"));
  // The watch asked for containers of the list's tenant and selector, from
  // the list's version, and resumed from the last event it saw.
  std::vector<v1::WatchRequest> watches = fake_->Requests<v1::WatchRequest>("Watch");
  ASSERT_EQ(watches.size(), 2u);
  EXPECT_EQ(watches[0].resource_version(), "run.7");
  EXPECT_EQ(watches[0].tenant_id(), "acme");
  EXPECT_EQ(watches[0].label_selector(), "team=ml");
  ASSERT_EQ(watches[0].kinds_size(), 1);
  EXPECT_EQ(watches[0].kinds(0), v1::OBJECT_KIND_CONTAINER);
  EXPECT_EQ(watches[1].resource_version(), "run.9");
}

// The change of container `id` on `node` in `state`.
v1::WatchEvent ContainerEvent(v1::WatchEvent::Type type, const std::string& version,
                              const std::string& id, const std::string& node,
                              v1::ContainerState state) {
  v1::WatchEvent e;
  e.set_type(type);
  e.set_resource_version(version);
  e.mutable_container()->set_id(id);
  e.mutable_container()->set_tenant_id("acme");
  e.mutable_container()->set_node(node);
  e.mutable_container()->set_state(state);
  return e;
}

// --node and --state, which Watch does not take, narrow the changes with
// Kubernetes' enter/leave rule: starting to match shows the container,
// ceasing to match takes it back as DELETED, other containers stay unseen.
class ContainerListWatchFilterTest : public CommandsTest {
 protected:
  void SetUp() override {
    CommandsTest::SetUp();
    v1::ListContainersResponse list;
    list.set_resource_version("run.1");
    *list.add_containers() = ContainerEvent(v1::WatchEvent::PUT, "", "c-00000000000000a1", "n1",
                                            v1::CONTAINER_STATE_READY)
                                 .container();
    fake_->SetResponse("ListContainers", list);
    v1::WatchResponse changes;
    const auto ready = v1::CONTAINER_STATE_READY;
    const auto down = v1::CONTAINER_STATE_NODE_UNAVAILABLE;
    const auto put = v1::WatchEvent::PUT;
    const auto del = v1::WatchEvent::DELETE;
    *changes.add_events() = ContainerEvent(put, "run.2", "c-00000000000000a1", "n1", down);
    *changes.add_events() = ContainerEvent(put, "run.3", "c-00000000000000b2", "n2", ready);
    *changes.add_events() = ContainerEvent(put, "run.4", "c-00000000000000c3", "n1", ready);
    *changes.add_events() = ContainerEvent(put, "run.5", "c-00000000000000a1", "n1", ready);
    *changes.add_events() = ContainerEvent(del, "run.6", "c-00000000000000b2", "n2", ready);
    *changes.add_events() = ContainerEvent(put, "run.7", "c-00000000000000d4", "n1", down);
    *changes.add_events() = ContainerEvent(del, "run.8", "c-00000000000000c3", "n1", ready);
    // The stream ends; the first wait says stop.
    fake_->SetWatch({changes}, grpc::Status(grpc::StatusCode::UNAVAILABLE, "broker gone"));
  }

  // The lines of out_ after the list's (which ends with the header and a1).
  std::vector<std::string> Changes() {
    std::vector<std::string> lines = absl::StrSplit(out_, '\n', absl::SkipEmpty());
    std::vector<std::string> changes;
    for (const std::string& l : lines) {
      if (absl::StartsWith(l, "CHANGED") || absl::StartsWith(l, "DELETED")) {
        changes.push_back(l.substr(0, 27));
      }
    }
    return changes;
  }
};

TEST_F(ContainerListWatchFilterTest, ContainersEnterAndLeaveTheNodeAndState) {
  ASSERT_EQ(Run({"container", "list", "--node=n1", "--state=ready", "--watch"}), 0) << err_;
  EXPECT_THAT(out_, HasSubstr("c-00000000000000a1"));
  EXPECT_THAT(Changes(), ElementsAre("DELETED  c-00000000000000a1",    // Went down.
                                     "CHANGED  c-00000000000000c3",    // New on n1.
                                     "CHANGED  c-00000000000000a1",    // Back up.
                                     "DELETED  c-00000000000000c3"));  // Deleted.
  // The broker was asked for every node and state: --node and --state are
  // applied by iommuctl.
  std::vector<v1::WatchRequest> watches = fake_->Requests<v1::WatchRequest>("Watch");
  ASSERT_EQ(watches.size(), 1u);
  EXPECT_EQ(watches[0].resource_version(), "run.1");
}

TEST_F(ContainerListWatchFilterTest, JsonEmitsALeavingContainerAsADelete) {
  ASSERT_EQ(Run({"-o", "json", "container", "list", "--state=ready", "--watch"}), 0) << err_;
  // The list, then a1 leaving (a DELETE marked left_selection), b2, c3 and
  // a1 entering, b2 and c3 deleted; d4 never matched.
  EXPECT_THAT(out_, HasSubstr("\"type\": \"DELETE\",\n  \"resource_version\": \"run.2\""));
  EXPECT_THAT(out_, HasSubstr("\"left_selection\": true"));
  EXPECT_THAT(out_, HasSubstr("\"resource_version\": \"run.6\""));
  EXPECT_THAT(out_, Not(HasSubstr("c-00000000000000d4")));
  EXPECT_THAT(out_, Not(HasSubstr("\"resource_version\": \"run.7\"")));
}

TEST_F(CommandsTest, ContainerListWatchListsAgainWhenTheVersionIsTooOld) {
  v1::ListContainersResponse list;
  list.set_resource_version("run.1");
  fake_->SetResponse("ListContainers", list);
  fake_->SetWatch({}, grpc::Status(grpc::StatusCode::OUT_OF_RANGE, "resource_version: too old"));
  int relists = 0;
  fake_->SetHandler("ListContainers", [&](const google::protobuf::Message& req,
                                          google::protobuf::Message* out) {
    if (dynamic_cast<const v1::ListContainersRequest&>(req).page_size() == 1 && ++relists == 3) {
      return grpc::Status(grpc::StatusCode::PERMISSION_DENIED, "stop here");
    }
    out->CopyFrom(list);
    return grpc::Status::OK;
  });
  EXPECT_EQ(Run({"container", "list", "--watch"}), 1);
  EXPECT_THAT(err_, HasSubstr("resource_version: too old; listing again"));
  EXPECT_THAT(err_, HasSubstr("PERMISSION_DENIED: stop here"));
}

}  // namespace
}  // namespace client
}  // namespace iommu
