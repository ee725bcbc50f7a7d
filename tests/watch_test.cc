// The Watch RPC over real mutual TLS against a real broker and sim agent:
// an informer's list+watch sees a container created, its node going
// UNAVAILABLE when the agent is killed (and the container with it), and a
// delete; a tenant's watch sees only its own objects and may not watch nodes;
// bad versions and too many watches are refused with clear codes.
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "proto/broker.grpc.pb.h"
#include "tests/cluster.h"
#include "tests/test_util.h"

namespace iommu {
namespace {

using ::testing::HasSubstr;

testing::ClusterOptions Tls() {
  testing::ClusterOptions o;
  o.tls = true;
  o.tenants = {"acme", "other"};
  return o;
}

// One open stream, read on the test's thread with a deadline per Read.
class Stream {
 public:
  Stream(std::unique_ptr<v1::Broker::Stub> stub, const v1::WatchRequest& req)
      : stub_(std::move(stub)) {
    ctx_.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
    reader_ = stub_->Watch(&ctx_, req);
  }
  ~Stream() {
    ctx_.TryCancel();
    Finish();
  }
  // Reads until an event satisfying `want` arrives; false when the stream
  // ends first.
  bool ReadUntil(const std::function<bool(const v1::WatchEvent&)>& want,
                 std::vector<v1::WatchEvent>* seen = nullptr) {
    v1::WatchResponse r;
    while (reader_->Read(&r)) {
      for (const v1::WatchEvent& e : r.events()) {
        if (seen != nullptr) seen->push_back(e);
        if (want(e)) return true;
      }
    }
    return false;
  }
  // The stream's status; gRPC allows one Finish per call.
  grpc::Status Finish() {
    if (!finished_) {
      status_ = reader_->Finish();
      finished_ = true;
    }
    return status_;
  }

 private:
  std::unique_ptr<v1::Broker::Stub> stub_;
  grpc::ClientContext ctx_;
  std::unique_ptr<grpc::ClientReader<v1::WatchResponse>> reader_;
  bool finished_ = false;
  grpc::Status status_;
};

class WatchTest : public ::testing::Test {
 protected:
  WatchTest() : cluster_(Tls()) {}
  void SetUp() override {
    ASSERT_TRUE(cluster_.StartBroker().ok()) << cluster_.broker().Log();
    ASSERT_TRUE(cluster_.StartAgent("node-1", "0000:00:04.0=1234:11e8@5").ok());
    for (const char* t : {"acme", "other"}) {
      grpc::ClientContext ctx;
      v1::CreateTenantRequest req;
      req.set_tenant_id(t);
      req.mutable_quota()->set_pinned_bytes(1 << 30);
      v1::Tenant out;
      ASSERT_TRUE(cluster_.BrokerStub()->CreateTenant(&ctx, req, &out).ok());
    }
  }
  testing::Cluster cluster_;
};

TEST_F(WatchTest, AnInformerSeesCreatesNodeLossAndDeletes) {
  // List, then watch from the list's version.
  grpc::ClientContext list_ctx;
  v1::ListContainersResponse list;
  ASSERT_TRUE(cluster_.BrokerStub()->ListContainers(&list_ctx, {}, &list).ok());
  v1::WatchRequest req;
  req.set_resource_version(list.resource_version());
  Stream operator_watch(cluster_.BrokerStub(), req);
  v1::WatchRequest mine;
  Stream acme_watch(cluster_.BrokerStubAs("tenant-acme"), mine);

  grpc::ClientContext create_ctx;
  v1::CreateContainerRequest create;
  create.set_tenant_id("acme");
  create.set_name("vm-1");
  create.mutable_selector()->set_count(1);
  create.set_pin_budget_bytes(1 << 20);
  v1::Container c;
  ASSERT_TRUE(cluster_.BrokerStubAs("tenant-acme")->CreateContainer(&create_ctx, create, &c).ok());
  auto container_is = [&](v1::WatchEvent::Type type, v1::ContainerState state) {
    return [&, type, state](const v1::WatchEvent& e) {
      return e.type() == type && e.has_container() && e.container().id() == c.id() &&
             (state == v1::CONTAINER_STATE_UNSPECIFIED || e.container().state() == state);
    };
  };
  EXPECT_TRUE(operator_watch.ReadUntil(
      container_is(v1::WatchEvent::PUT, v1::CONTAINER_STATE_READY)));
  EXPECT_TRUE(acme_watch.ReadUntil(container_is(v1::WatchEvent::PUT, v1::CONTAINER_STATE_READY)));

  // The agent dies: the node and its container go unavailable, pushed.
  cluster_.agent("node-1").Kill();
  std::vector<v1::WatchEvent> seen;
  EXPECT_TRUE(operator_watch.ReadUntil(
      container_is(v1::WatchEvent::PUT, v1::CONTAINER_STATE_NODE_UNAVAILABLE), &seen));
  bool node_down = false;
  for (const v1::WatchEvent& e : seen) {
    node_down |= e.has_node() && e.node().state() == v1::NODE_STATE_UNAVAILABLE;
  }
  EXPECT_TRUE(node_down);

  grpc::ClientContext del_ctx;
  v1::DeleteContainerRequest del;
  del.set_container_id("acme/vm-1");
  v1::DeleteContainerResponse gone;
  ASSERT_TRUE(cluster_.BrokerStub()->DeleteContainer(&del_ctx, del, &gone).ok());
  EXPECT_TRUE(operator_watch.ReadUntil(
      container_is(v1::WatchEvent::DELETE, v1::CONTAINER_STATE_UNSPECIFIED)));
  // The tenant never saw a node.
  std::vector<v1::WatchEvent> acme_seen;
  EXPECT_TRUE(acme_watch.ReadUntil(
      container_is(v1::WatchEvent::DELETE, v1::CONTAINER_STATE_UNSPECIFIED), &acme_seen));
  for (const v1::WatchEvent& e : acme_seen) EXPECT_FALSE(e.has_node());
}

TEST_F(WatchTest, RefusalsHaveClearCodes) {
  {
    v1::WatchRequest nodes;
    nodes.add_kinds(v1::OBJECT_KIND_NODE);
    Stream s(cluster_.BrokerStubAs("tenant-acme"), nodes);
    EXPECT_FALSE(s.ReadUntil([](const v1::WatchEvent&) { return true; }));
    grpc::Status st = s.Finish();
    EXPECT_EQ(st.error_code(), grpc::StatusCode::PERMISSION_DENIED) << st.error_message();
    EXPECT_THAT(st.error_message(), HasSubstr("kinds: changes of nodes need the operator role"));
  }
  {
    v1::WatchRequest other;
    other.set_tenant_id("other");
    Stream s(cluster_.BrokerStubAs("tenant-acme"), other);
    EXPECT_FALSE(s.ReadUntil([](const v1::WatchEvent&) { return true; }));
    EXPECT_EQ(s.Finish().error_code(), grpc::StatusCode::PERMISSION_DENIED);
  }
  {
    v1::WatchRequest old;
    old.set_resource_version("0123456789abcdef.3");
    Stream s(cluster_.BrokerStub(), old);
    EXPECT_FALSE(s.ReadUntil([](const v1::WatchEvent&) { return true; }));
    grpc::Status st = s.Finish();
    EXPECT_EQ(st.error_code(), grpc::StatusCode::OUT_OF_RANGE);
    EXPECT_THAT(st.error_message(), HasSubstr("list again"));
  }
  // Eight watches per caller; the ninth is refused, the others keep going.
  std::vector<std::unique_ptr<Stream>> open;
  for (int i = 0; i < 8; ++i) {
    open.push_back(std::make_unique<Stream>(cluster_.BrokerStubAs("tenant-acme"),
                                            v1::WatchRequest()));
    ASSERT_TRUE(open.back()->ReadUntil(
        [](const v1::WatchEvent& e) { return e.type() == v1::WatchEvent::BOOKMARK; }));
  }
  Stream ninth(cluster_.BrokerStubAs("tenant-acme"), v1::WatchRequest());
  EXPECT_FALSE(ninth.ReadUntil([](const v1::WatchEvent&) { return true; }));
  grpc::Status st = ninth.Finish();
  EXPECT_EQ(st.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_THAT(st.error_message(), HasSubstr("the most one caller may hold (8)"));
  // Another caller is not affected.
  Stream theirs(cluster_.BrokerStubAs("tenant-other"), v1::WatchRequest());
  EXPECT_TRUE(theirs.ReadUntil(
      [](const v1::WatchEvent& e) { return e.type() == v1::WatchEvent::BOOKMARK; }));
}

// `iommuctl container list --watch` as a tenant of `cluster`, the real
// binary in a child process, its stdout in a file; SIGINT at the end.
class CtlWatch {
 public:
  CtlWatch(const testing::Cluster& cluster, const std::vector<std::string>& extra)
      : out_path_(testing::NewTempDir("ctl") + "/watch.out") {
    const std::string certs = cluster.certs_dir();
    std::vector<std::string> args = {testing::RunfilePath("client/iommuctl"),
                                     "--broker=" + cluster.broker_address(),
                                     "--cert=" + certs + "/tenant-acme.crt",
                                     "--key=" + certs + "/tenant-acme.key",
                                     "--ca=" + certs + "/ca.crt",
                                     "container",
                                     "list",
                                     "--watch"};
    args.insert(args.end(), extra.begin(), extra.end());
    pid_ = fork();
    if (pid_ == 0) {
      const int fd = open(out_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
      dup2(fd, STDOUT_FILENO);
      std::vector<char*> argv;
      for (std::string& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      execv(argv[0], argv.data());
      _exit(127);
    }
  }
  ~CtlWatch() {
    if (pid_ <= 0) return;
    kill(pid_, SIGINT);
    int status = 0;
    waitpid(pid_, &status, 0);
  }
  bool started() const { return pid_ > 0; }
  std::string Output() const {
    std::ifstream in(out_path_);
    std::stringstream text;
    text << in.rdbuf();
    return text.str();
  }
  // Whether the output shows `needle` within 30 s.
  bool WaitFor(const std::string& needle) const {
    return testing::PollUntil([&] { return absl::StrContains(Output(), needle); },
                              absl::Seconds(30));
  }

 private:
  const std::string out_path_;
  pid_t pid_ = -1;
};

v1::Container CreateLabelled(testing::Cluster& cluster, const std::string& name) {
  grpc::ClientContext ctx;
  v1::CreateContainerRequest create;
  create.set_tenant_id("acme");
  create.set_name(name);
  (*create.mutable_labels())["team"] = "ml";
  create.mutable_selector()->set_count(1);
  create.set_pin_budget_bytes(1 << 20);
  v1::Container c;
  grpc::Status s = cluster.BrokerStub()->CreateContainer(&ctx, create, &c);
  EXPECT_TRUE(s.ok()) << s.error_message();
  return c;
}

// iommuctl container list --watch, the real binary against the real broker:
// it prints the list, then the change of a container created while it runs,
// and takes it back when its labels no longer match -l.
TEST_F(WatchTest, IommuctlContainerListWatchPrintsChangesAsTheyHappen) {
  CtlWatch watch(cluster_, {"--selector=team=ml"});
  ASSERT_TRUE(watch.started());
  EXPECT_TRUE(watch.WaitFor("ID "));  // The list's header: the watch is next.
  v1::Container c = CreateLabelled(cluster_, "vm-watched");
  EXPECT_TRUE(watch.WaitFor(absl::StrCat("CHANGED  ", c.id(), "  vm-watched  acme")))
      << watch.Output();
  grpc::ClientContext label_ctx;
  v1::SetContainerLabelsRequest relabel;
  relabel.set_container_id(c.id());
  (*relabel.mutable_labels())["team"] = "web";
  ASSERT_TRUE(cluster_.BrokerStub()->SetContainerLabels(&label_ctx, relabel, &c).ok());
  EXPECT_TRUE(watch.WaitFor(absl::StrCat("DELETED  ", c.id(), "  vm-watched  acme")))
      << watch.Output();
}

// The watch carries on after the broker restarts (kill -9, back on the same
// address after a pause): a container created after the restart is shown. Over
// mTLS, where the reconnect includes a handshake that only a call waiting
// for the connection drives: with fail-fast attempts alone the handshake
// timed out again and again and the watch never came back.
TEST_F(WatchTest, IommuctlContainerListWatchCarriesOnAfterABrokerRestart) {
  CtlWatch watch(cluster_, {});
  ASSERT_TRUE(watch.started());
  EXPECT_TRUE(watch.WaitFor("ID "));
  v1::Container before = CreateLabelled(cluster_, "vm-before");
  EXPECT_TRUE(watch.WaitFor(absl::StrCat("CHANGED  ", before.id()))) << watch.Output();
  cluster_.broker().Kill();
  // Long enough for the client to find no broker and back off: its
  // reconnect then has to make the connection itself.
  absl::SleepFor(absl::Seconds(3));
  ASSERT_TRUE(cluster_.StartBroker().ok()) << cluster_.broker().Log();
  ASSERT_TRUE(cluster_.WaitForNodeState("node-1", v1::NODE_STATE_READY).ok());
  // The node's one device is free again for the container made after.
  grpc::ClientContext ctx;
  v1::DeleteContainerRequest del;
  del.set_container_id(before.id());
  v1::DeleteContainerResponse deleted;
  ASSERT_TRUE(cluster_.BrokerStub()->DeleteContainer(&ctx, del, &deleted).ok());
  // Shown either as a change or, when the watch relists first (the new
  // broker run cannot resume the old one's versions), in the list.
  v1::Container after = CreateLabelled(cluster_, "vm-after");
  EXPECT_TRUE(watch.WaitFor(after.id())) << watch.Output();
}

}  // namespace
}  // namespace iommu
