// Liveness and per-caller bounds from outside, with real processes: a broker
// that was stopped (SIGSTOP) does not blame the nodes for the heartbeats it
// could not take; a stalled agent holds up neither the replies that do not
// need it nor, once its node is no longer READY, the ones that do; and one
// tenant's calls in flight and remembered answers are bounded apart from
// another's.
#include <signal.h>

#include <atomic>
#include <chrono>
#include <string>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "proto/broker.grpc.pb.h"
#include "tests/cluster.h"

namespace iommu {
namespace {

using testing::Cluster;

constexpr char kDevices[] = "0000:00:04.0=1234:11e8@4,0000:00:05.0=1234:11e8@5";

// Deadlines well under the cluster's --agent-timeout-ms (5 s): a call that
// waited on the stalled agent misses them.
std::unique_ptr<grpc::ClientContext> Context(int seconds = 2) {
  auto ctx = std::make_unique<grpc::ClientContext>();
  ctx->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(seconds));
  return ctx;
}

int CountEvents(v1::Broker::Stub* stub, const std::string& node, const std::string& reason) {
  v1::ListEventsRequest req;
  req.mutable_object()->set_kind(v1::OBJECT_KIND_NODE);
  req.mutable_object()->set_id(node);
  req.set_page_size(1000);
  v1::ListEventsResponse out;
  grpc::Status s = stub->ListEvents(Context().get(), req, &out);
  EXPECT_TRUE(s.ok()) << s.error_message();
  int n = 0;
  for (const v1::Event& e : out.events()) n += e.reason() == reason;
  return n;
}

TEST(BrokerLivenessTest, BrokerPauseDoesNotMarkLiveNodesUnavailable) {
  Cluster cluster;
  ASSERT_TRUE(cluster.StartBroker().ok()) << cluster.broker().Log();
  ASSERT_TRUE(cluster.StartAgent("node-1", kDevices).ok()) << cluster.agent("node-1").Log();
  auto stub = cluster.BrokerStub();
  ASSERT_EQ(CountEvents(stub.get(), "node-1", "NodeUnavailable"), 0);

  // Stopped for twice the node timeout (1.5 s), then running again.
  ASSERT_EQ(kill(cluster.broker().pid(), SIGSTOP), 0);
  absl::SleepFor(absl::Seconds(3));
  ASSERT_EQ(kill(cluster.broker().pid(), SIGCONT), 0);
  // Several liveness checks and heartbeats later.
  absl::SleepFor(absl::Seconds(1));
  EXPECT_EQ(CountEvents(stub.get(), "node-1", "NodeUnavailable"), 0) << cluster.broker().Log();
  v1::GetNodeRequest gn;
  gn.set_node("node-1");
  v1::Node node;
  ASSERT_TRUE(stub->GetNode(Context().get(), gn, &node).ok());
  EXPECT_EQ(node.state(), v1::NODE_STATE_READY);
  EXPECT_NE(cluster.broker().Log().find("event=broker_was_paused"), std::string::npos);

  // A node that really stops is still noticed.
  ASSERT_EQ(kill(cluster.agent("node-1").pid(), SIGSTOP), 0);
  EXPECT_TRUE(cluster.WaitForNodeState("node-1", v1::NODE_STATE_UNAVAILABLE).ok());
  ASSERT_EQ(kill(cluster.agent("node-1").pid(), SIGCONT), 0);
}

TEST(BrokerLivenessTest, StalledAgentHoldsNoReplyThatDoesNotNeedIt) {
  Cluster cluster;
  ASSERT_TRUE(cluster.StartBroker().ok()) << cluster.broker().Log();
  ASSERT_TRUE(cluster.StartAgent("node-1", kDevices).ok()) << cluster.agent("node-1").Log();
  auto stub = cluster.BrokerStub();
  v1::CreateTenantRequest tr;
  tr.set_tenant_id("acme");
  tr.mutable_quota()->set_pinned_bytes(1ULL << 30);
  v1::Tenant tenant;
  ASSERT_TRUE(stub->CreateTenant(Context().get(), tr, &tenant).ok());
  v1::CreateContainerRequest cr;
  cr.set_tenant_id("acme");
  cr.mutable_selector()->set_count(1);
  v1::Container c;
  grpc::Status s = stub->CreateContainer(Context().get(), cr, &c);
  ASSERT_TRUE(s.ok()) << s.error_message();

  ASSERT_EQ(kill(cluster.agent("node-1").pid(), SIGSTOP), 0);
  // The window is the broker's to give; telling the agent is best effort.
  v1::AllocateWindowRequest ar;
  ar.set_container_id(c.id());
  ar.set_size(1 << 20);
  v1::Window w;
  s = stub->AllocateWindow(Context().get(), ar, &w);
  EXPECT_TRUE(s.ok()) << s.error_code() << ": " << s.error_message();
  v1::SetContainerBudgetRequest br;
  br.set_container_id(c.id());
  br.set_pin_budget_bytes(1 << 20);
  v1::Container budgeted;
  s = stub->SetContainerBudget(Context().get(), br, &budgeted);
  EXPECT_TRUE(s.ok()) << s.error_code() << ": " << s.error_message();

  // A release waits for the agent to revoke, but only while its node is
  // live; a grant needs the agent: once the node is not READY it is refused
  // at once.
  ASSERT_TRUE(cluster.WaitForNodeState("node-1", v1::NODE_STATE_UNAVAILABLE).ok());
  v1::ReleaseWindowRequest rr;
  rr.set_window_id(w.id());
  v1::ReleaseWindowResponse released;
  s = stub->ReleaseWindow(Context().get(), rr, &released);
  EXPECT_TRUE(s.ok()) << s.error_code() << ": " << s.error_message();
  v1::GrantLauncherRequest gr;
  gr.set_container_id(c.id());
  v1::GrantLauncherResponse grant;
  s = stub->GrantLauncher(Context().get(), gr, &grant);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAVAILABLE) << s.error_message();
  EXPECT_NE(s.error_message().find("is not heartbeating"), std::string::npos)
      << s.error_message();

  // Back: the agent gets the current windows and budgets and grants work.
  ASSERT_EQ(kill(cluster.agent("node-1").pid(), SIGCONT), 0);
  ASSERT_TRUE(cluster.WaitForNodeState("node-1", v1::NODE_STATE_READY).ok());
  s = stub->GrantLauncher(Context(10).get(), gr, &grant);
  EXPECT_TRUE(s.ok()) << s.error_message();
}

// mTLS, a broker with `flag`, one agent, and the tenants "hostile" and
// "acme" (each with a certificate).
testing::ClusterOptions TwoTenants(const std::string& flag) {
  testing::ClusterOptions options;
  options.tls = true;
  options.tenants = {"hostile", "acme"};
  options.broker_args = {flag};
  return options;
}

void StartWithTwoTenants(Cluster& cluster) {
  ASSERT_TRUE(cluster.StartBroker().ok()) << cluster.broker().Log();
  ASSERT_TRUE(cluster.StartAgent("node-1", kDevices).ok()) << cluster.agent("node-1").Log();
  auto op = cluster.BrokerStub();
  for (const char* t : {"hostile", "acme"}) {
    v1::CreateTenantRequest tr;
    tr.set_tenant_id(t);
    tr.mutable_quota()->set_pinned_bytes(1ULL << 30);
    v1::Tenant tenant;
    ASSERT_TRUE(op->CreateTenant(Context().get(), tr, &tenant).ok());
  }
}

// A tenant whose calls hang (here: on a stalled agent) holds at most
// --max-inflight-per-caller handlers; its next call is refused at once and
// another tenant is served.
TEST(BrokerLivenessTest, OneCallersCallsInFlightAreBounded) {
  // Neither timeout may end the stuck call before the agent runs again, so
  // however slowly this machine schedules the test, the call is still held
  // when the next one arrives.
  testing::ClusterOptions options = TwoTenants("--max-inflight-per-caller=1");
  options.broker_args.push_back("--agent-timeout-ms=600000");
  options.broker_args.push_back("--node-timeout-ms=600000");
  Cluster cluster(options);
  ASSERT_NO_FATAL_FAILURE(StartWithTwoTenants(cluster));
  auto op = cluster.BrokerStub();
  ASSERT_EQ(kill(cluster.agent("node-1").pid(), SIGSTOP), 0);
  auto hostile = cluster.BrokerStubAs("tenant-hostile");
  v1::CreateContainerRequest cr;
  cr.set_tenant_id("hostile");
  cr.mutable_selector()->set_count(1);
  v1::Container hanging;
  grpc::ClientContext hanging_ctx;
  grpc::Status hanging_status;
  std::atomic<bool> stuck_done{false};
  std::thread stuck([&] {
    hanging_status = hostile->CreateContainer(&hanging_ctx, cr, &hanging);
    stuck_done = true;
  });
  // Until the broker holds the stuck call, a second one may still get in;
  // the bound only guards against a hang (60 s).
  grpc::Status s;
  for (int i = 0; i < 3000 && !stuck_done; ++i) {
    v1::ListContainersRequest lr;
    v1::ListContainersResponse lo;
    s = hostile->ListContainers(Context().get(), lr, &lo);
    // A list slowed past its deadline by a loaded machine proves nothing.
    if (!s.ok() && s.error_code() != grpc::StatusCode::DEADLINE_EXCEEDED) break;
    absl::SleepFor(absl::Milliseconds(20));
  }
  if (stuck_done) {
    stuck.join();
    kill(cluster.agent("node-1").pid(), SIGCONT);
    FAIL() << "the create that should hang on the stopped agent ended: "
           << hanging_status.error_code() << ": " << hanging_status.error_message() << "\n"
           << cluster.broker().Log();
  }
  EXPECT_EQ(s.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << s.error_message();
  EXPECT_NE(s.error_message().find("tenant/hostile already has 1 calls in flight"),
            std::string::npos)
      << s.error_message();
  // Another tenant is served meanwhile.
  auto acme = cluster.BrokerStubAs("tenant-acme");
  v1::ListContainersRequest lr;
  v1::ListContainersResponse lo;
  s = acme->ListContainers(Context().get(), lr, &lo);
  EXPECT_TRUE(s.ok()) << s.error_message();
  ASSERT_EQ(kill(cluster.agent("node-1").pid(), SIGCONT), 0);
  stuck.join();
  // The held call was the stuck create, which completes once the agent runs.
  EXPECT_TRUE(hanging_status.ok()) << hanging_status.error_message();
}

// A container of `tenant` on any node, made by the operator; its id.
std::string NewContainer(Cluster& cluster, const std::string& tenant) {
  v1::CreateContainerRequest cr;
  cr.set_tenant_id(tenant);
  cr.mutable_selector()->set_count(1);
  v1::Container c;
  grpc::Status s = cluster.BrokerStub()->CreateContainer(Context().get(), cr, &c);
  EXPECT_TRUE(s.ok()) << s.error_message();
  return c.id();
}

// Answers remembered for retries are bounded per caller, and survive a
// restart of the broker with their count.
TEST(BrokerLivenessTest, RememberedAnswersAreBoundedPerCaller) {
  Cluster cluster(TwoTenants("--max-remembered-answers-per-caller=2"));
  ASSERT_NO_FATAL_FAILURE(StartWithTwoTenants(cluster));
  auto allocate_as = [&](const std::string& tenant, const std::string& container,
                         const std::string& request_id) {
    auto stub = cluster.BrokerStubAs("tenant-" + tenant);
    v1::AllocateWindowRequest req;
    req.set_request_id(request_id);
    req.set_container_id(container);
    req.set_size(4096);
    v1::Window w;
    return stub->AllocateWindow(Context().get(), req, &w);
  };
  const std::string hostile = NewContainer(cluster, "hostile");
  const std::string acme = NewContainer(cluster, "acme");
  ASSERT_TRUE(allocate_as("hostile", hostile, "h-1").ok());
  ASSERT_TRUE(allocate_as("hostile", hostile, "h-2").ok());
  grpc::Status s = allocate_as("hostile", hostile, "h-3");
  EXPECT_EQ(s.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << s.error_message();
  EXPECT_NE(s.error_message().find("tenant/hostile has 2 answers remembered"), std::string::npos)
      << s.error_message();
  EXPECT_TRUE(allocate_as("acme", acme, "a-1").ok());
  ASSERT_TRUE(cluster.StartBroker().ok()) << cluster.broker().Log();  // Restart.
  s = allocate_as("hostile", hostile, "h-3");
  EXPECT_EQ(s.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << s.error_message();
  EXPECT_TRUE(allocate_as("hostile", hostile, "h-1").ok());  // A retry still replays.
}

// The same bound in bytes of the store: answers differ in size by two
// orders of magnitude, so the count alone let one caller add gigabytes.
TEST(BrokerLivenessTest, RememberedAnswerBytesAreBoundedPerCaller) {
  Cluster cluster(TwoTenants("--max-remembered-answer-bytes-per-caller=4000"));
  ASSERT_NO_FATAL_FAILURE(StartWithTwoTenants(cluster));
  auto label_as = [&](const std::string& tenant, const std::string& container,
                      const std::string& request_id) {
    auto stub = cluster.BrokerStubAs("tenant-" + tenant);
    v1::SetContainerLabelsRequest req;
    req.set_request_id(request_id);
    req.set_container_id(container);
    (*req.mutable_labels())["note"] = std::string(60, 'x');
    v1::Container out;
    return stub->SetContainerLabels(Context().get(), req, &out);
  };
  const std::string hostile = NewContainer(cluster, "hostile");
  const std::string acme = NewContainer(cluster, "acme");
  grpc::Status s;
  int accepted = 0;
  for (; accepted < 200; ++accepted) {
    s = label_as("hostile", hostile, absl::StrCat("h-", accepted));
    if (!s.ok()) break;
  }
  EXPECT_EQ(s.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << s.error_message();
  EXPECT_NE(s.error_message().find("bytes of answers remembered for retries (limit 4000 per "
                                   "caller, --max-remembered-answer-bytes-per-caller)"),
            std::string::npos)
      << s.error_message();
  EXPECT_GT(accepted, 1);
  EXPECT_TRUE(label_as("acme", acme, "a-1").ok());  // Another caller's bound is its own.
  ASSERT_TRUE(cluster.StartBroker().ok()) << cluster.broker().Log();  // Restart.
  s = label_as("hostile", hostile, absl::StrCat("h-", accepted));
  EXPECT_EQ(s.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << s.error_message();
  EXPECT_TRUE(label_as("hostile", hostile, "h-0").ok());  // A retry still replays.
}

}  // namespace
}  // namespace iommu
