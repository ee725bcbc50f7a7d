// iommuctl against a live broker and a simulated agent on loopback, over
// mutual TLS with dev certificates: the real binary, its exit codes, its
// stderr, and JSON output that parses back into the API's messages.
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "google/protobuf/util/json_util.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "client/views.pb.h"
#include "common/version.h"
#include "proto/broker.pb.h"
#include "tests/cluster.h"
#include "tests/metrics_testing.h"

namespace iommu {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
using testing::CommandResult;

testing::ClusterOptions Tls() {
  testing::ClusterOptions o;
  o.tls = true;
  o.tenants = {"acme", "other"};
  o.broker_args = {"--metrics-address=127.0.0.1:0"};  // node delete drops a node's series.
  return o;
}

class CliTest : public ::testing::Test {
 protected:
  CliTest() : cluster_(Tls()) {}

  void SetUp() override {
    ASSERT_TRUE(cluster_.StartBroker().ok()) << cluster_.broker().Log();
    ASSERT_TRUE(cluster_.StartAgent("node-1", "0000:00:04.0=1234:11e8@5,0000:00:05.0=1234:11e8@6")
                    .ok());
  }

  // As the operator, with the transport given by flags.
  CommandResult Ctl(std::vector<std::string> args) {
    return CtlAs("operator-admin", std::move(args));
  }
  CommandResult CtlAs(const std::string& stem, std::vector<std::string> args) {
    const std::string certs = cluster_.certs_dir();
    args.insert(args.begin(), {"--broker=" + cluster_.broker_address(),
                               "--cert=" + certs + "/" + stem + ".crt",
                               "--key=" + certs + "/" + stem + ".key", "--ca=" + certs + "/ca.crt"});
    args.insert(args.begin(), testing::RunfilePath("client/iommuctl"));
    return testing::RunCommand(args);
  }
  // The transport from the environment, as a deployment would set it.
  std::vector<std::string> EnvFor(const std::string& stem) {
    const std::string certs = cluster_.certs_dir();
    return {"IOMMU_BROKER=" + cluster_.broker_address(),
            "IOMMUCTL_CERT=" + certs + "/" + stem + ".crt",
            "IOMMUCTL_KEY=" + certs + "/" + stem + ".key", "IOMMUCTL_CA=" + certs + "/ca.crt"};
  }

  template <typename Msg>
  Msg Json(const CommandResult& r) {
    EXPECT_EQ(r.exit_code, 0) << r.err;
    Msg m;
    google::protobuf::util::JsonParseOptions opts;
    opts.ignore_unknown_fields = true;  // The RFC 3339 siblings of *_ms times.
    auto s = google::protobuf::util::JsonStringToMessage(r.out, &m, opts);
    EXPECT_TRUE(s.ok()) << s.ToString() << "\n" << r.out;
    return m;
  }

  testing::Cluster cluster_;
};

TEST_F(CliTest, ScenarioWithJsonOutputThatParses) {
  auto tenant = Json<v1::Tenant>(Ctl({"-o", "json", "tenant", "create", "acme", "--pinned=4Gi"}));
  EXPECT_EQ(tenant.id(), "acme");
  EXPECT_EQ(tenant.quota().pinned_bytes(), 4ULL << 30);

  auto nodes = Json<v1::ListNodesResponse>(Ctl({"-o", "json", "node", "list"}));
  ASSERT_EQ(nodes.nodes_size(), 1);
  EXPECT_EQ(nodes.nodes(0).state(), v1::NODE_STATE_READY);

  auto devices = Json<v1::ListDevicesResponse>(Ctl({"-o", "json", "device", "list", "--node=node-1"}));
  EXPECT_EQ(devices.devices_size(), 2);

  auto c = Json<v1::Container>(Ctl({"-o", "json", "container", "create", "--tenant=acme",
                                    "--node=node-1", "--device=0000:00:04.0"}));
  ASSERT_FALSE(c.id().empty());
  auto w1 = Json<v1::Window>(
      Ctl({"-o", "json", "window", "allocate", c.id(), "--size=1Gi", "--align=1Gi"}));
  EXPECT_EQ(w1.size(), 1ULL << 30);
  auto w2 = Json<v1::Window>(Ctl({"-o", "json", "window", "allocate", c.id(), "--size=2Mi",
                                  "--base=0x100000000"}));
  EXPECT_EQ(w2.base(), 0x100000000ULL);

  auto usage = Json<v1::GetUsageResponse>(Ctl({"-o", "json", "usage", "--tenant=acme"}));
  ASSERT_EQ(usage.tenants_size(), 1);
  EXPECT_EQ(usage.tenants(0).window_bytes(), (1ULL << 30) + (2ULL << 20));

  // Table output for people.
  CommandResult table = Ctl({"window", "list", "--container=" + c.id()});
  EXPECT_EQ(table.exit_code, 0);
  EXPECT_THAT(table.out, HasSubstr("0x100000000"));

  EXPECT_EQ(Ctl({"window", "release", w1.id()}).exit_code, 0);
  EXPECT_EQ(Ctl({"container", "delete", c.id()}).exit_code, 0);
  EXPECT_EQ(Ctl({"tenant", "delete", "acme"}).exit_code, 0);
  auto left = Json<v1::ListContainersResponse>(Ctl({"-o", "json", "container", "list"}));
  EXPECT_EQ(left.containers_size(), 0);
}

// Issue 15: --vendor=1234 was read as decimal (0x4d2) and matched nothing.
// The simulated devices are 1234:11e8, as the agent's --sim-devices write it.
TEST_F(CliTest, PciIdsAreHexAndVendorTakesVendorColonDevice) {
  ASSERT_EQ(Ctl({"tenant", "create", "acme", "--pinned=1Gi"}).exit_code, 0);
  auto a = Json<v1::Container>(Ctl({"-o", "json", "container", "create", "--tenant=acme",
                                    "--vendor=1234", "--device-id=11e8"}));
  ASSERT_EQ(a.devices_size(), 1);
  auto b = Json<v1::Container>(Ctl({"-o", "json", "container", "create", "--tenant=acme",
                                    "--vendor=0x1234:11E8"}));
  ASSERT_EQ(b.devices_size(), 1);
  EXPECT_NE(a.devices(0), b.devices(0));

  CommandResult r = Ctl({"container", "create", "--tenant=acme", "--vendor=32902"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr("--vendor: \"32902\" is not a PCI id: want 1-4 hex digits"));
  r = Ctl({"container", "create", "--tenant=acme", "--vendor=1234:11e8", "--device-id=11e8"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr("--device-id: cannot be combined with --vendor=1234:11e8"));
}

// Issue 15: set-quota reset the limits it was not given, and the alert
// runbook's `set-quota acme --window-bytes=16G` was refused for want of --pinned.
TEST_F(CliTest, SetQuotaChangesOnlyTheLimitsGiven) {
  ASSERT_EQ(Ctl({"tenant", "create", "acme", "--pinned=4Gi", "--max-containers=8",
                 "--window-bytes=32Gi"})
                .exit_code,
            0);
  auto t = Json<v1::Tenant>(
      Ctl({"-o", "json", "tenant", "set-quota", "acme", "--window-bytes=16Gi"}));
  EXPECT_EQ(t.quota().window_bytes(), 16ULL << 30);
  EXPECT_EQ(t.quota().pinned_bytes(), 4ULL << 30);
  EXPECT_EQ(t.quota().max_containers(), 8u);
  t = Json<v1::Tenant>(Ctl({"-o", "json", "tenant", "set-quota", "acme", "--pinned=8Gi"}));
  EXPECT_EQ(t.quota().pinned_bytes(), 8ULL << 30);
  EXPECT_EQ(t.quota().window_bytes(), 16ULL << 30);
  EXPECT_EQ(t.quota().max_containers(), 8u);
  t = Json<v1::Tenant>(Ctl({"-o", "json", "tenant", "get", "acme"}));
  EXPECT_EQ(t.quota().max_containers(), 8u);

  CommandResult r = Ctl({"tenant", "set-quota", "acme"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr("give at least one of --pinned"));
  r = Ctl({"tenant", "set-quota", "acme", "--pinned=0"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("INVALID_ARGUMENT"));
}

// The same over gRPC: unknown mask paths are named; an empty mask replaces
// the whole quota, as before update_mask existed.
TEST_F(CliTest, SetTenantQuotaRpcValidatesTheMaskAndKeepsEmptyMaskWhole) {
  ASSERT_EQ(Ctl({"tenant", "create", "acme", "--pinned=4Gi", "--max-containers=8"}).exit_code, 0);
  auto stub = cluster_.BrokerStub();
  v1::SetTenantQuotaRequest req;
  req.set_tenant_id("acme");
  req.mutable_quota()->set_pinned_bytes(2ULL << 30);
  req.mutable_update_mask()->add_paths("quota.pinned_bytes");
  req.mutable_update_mask()->add_paths("quota.max_pins");
  v1::Tenant out;
  {
    grpc::ClientContext ctx;
    grpc::Status s = stub->SetTenantQuota(&ctx, req, &out);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_THAT(s.error_message(), HasSubstr("update_mask: unknown path \"quota.max_pins\""));
  }
  req.mutable_update_mask()->mutable_paths()->RemoveLast();
  {
    grpc::ClientContext ctx;
    ASSERT_TRUE(stub->SetTenantQuota(&ctx, req, &out).ok());
    EXPECT_EQ(out.quota().pinned_bytes(), 2ULL << 30);
    EXPECT_EQ(out.quota().max_containers(), 8u);
  }
  req.clear_update_mask();
  {
    grpc::ClientContext ctx;
    ASSERT_TRUE(stub->SetTenantQuota(&ctx, req, &out).ok());
    EXPECT_EQ(out.quota().pinned_bytes(), 2ULL << 30);
    EXPECT_EQ(out.quota().max_containers(), 0u);  // Whole replacement.
  }
}

// Issue 15: a retired node could not be removed, so its
// iommu_broker_node_up{node=...} 0 series and the IommuNodeNotHeartbeating
// alert stayed forever.
TEST_F(CliTest, NodeDeleteIsRefusedWhileTheNodeHoldsContainersOrIsAliveThenDropsItsSeries) {
  absl::StatusOr<int> metrics = testing::MetricsPortFromLog(cluster_.broker().Log());
  ASSERT_TRUE(metrics.ok()) << metrics.status();
  const std::string series = "iommu_broker_node_up{node=\"node-1\"}";
  absl::StatusOr<std::string> text = testing::ScrapeMetrics(*metrics);
  ASSERT_TRUE(text.ok()) << text.status();
  EXPECT_THAT(*text, HasSubstr(series + " 1"));

  ASSERT_EQ(Ctl({"tenant", "create", "acme", "--pinned=1Gi"}).exit_code, 0);
  auto c = Json<v1::Container>(Ctl({"-o", "json", "container", "create", "--tenant=acme",
                                    "--node=node-1", "--device=0000:00:04.0"}));
  CommandResult r = Ctl({"node", "delete", "node-1"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("FAILED_PRECONDITION: node: node \"node-1\" still has 1 "
                               "container(s)"));
  r = Ctl({"node", "delete", "node-1", "--force"});  // --force never deletes containers.
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("still has 1 container(s)"));
  ASSERT_EQ(Ctl({"container", "delete", c.id()}).exit_code, 0);
  r = Ctl({"node", "delete", "node-1"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("FAILED_PRECONDITION: node: node \"node-1\" is alive"));
  r = CtlAs("tenant-acme", {"node", "delete", "node-1"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("PERMISSION_DENIED: DeleteNode: needs the operator role"));

  // The agent stops: the node is unavailable, its series says 0 (the alert fires).
  cluster_.agent("node-1").Stop();
  ASSERT_TRUE(cluster_.WaitForNodeState("node-1", v1::NODE_STATE_UNAVAILABLE).ok());
  text = testing::ScrapeMetrics(*metrics);
  ASSERT_TRUE(text.ok()) << text.status();
  EXPECT_THAT(*text, HasSubstr(series + " 0"));

  // Deleted, idempotently with its request id; then gone, with its series.
  r = Ctl({"--request-id=delete-node-1", "node", "delete", "node-1"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("node node-1 deleted"));
  r = Ctl({"--request-id=delete-node-1", "node", "delete", "node-1"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  r = Ctl({"node", "delete", "node-1"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("NOT_FOUND: node: no node \"node-1\""));
  auto nodes = Json<v1::ListNodesResponse>(Ctl({"-o", "json", "node", "list"}));
  EXPECT_EQ(nodes.nodes_size(), 0);
  text = testing::ScrapeMetrics(*metrics);
  ASSERT_TRUE(text.ok()) << text.status();
  EXPECT_THAT(*text, Not(HasSubstr("node=\"node-1\"")));

  // And stays gone across a restart: none of its records outlives it.
  cluster_.broker().Kill();
  ASSERT_TRUE(cluster_.StartBroker().ok()) << cluster_.broker().Log();
  nodes = Json<v1::ListNodesResponse>(Ctl({"-o", "json", "node", "list"}));
  EXPECT_EQ(nodes.nodes_size(), 0) << nodes.ShortDebugString();
  r = Ctl({"node", "get", "node-1"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("NOT_FOUND: node: no node \"node-1\""));
}

// Over gRPC: force deletes a live node, whose agent then registers it again.
TEST_F(CliTest, DeleteNodeRpcWithForceDeletesALiveNode) {
  auto stub = cluster_.BrokerStub();
  v1::DeleteNodeRequest req;
  req.set_node("node-1");
  v1::DeleteNodeResponse out;
  {
    grpc::ClientContext ctx;
    grpc::Status s = stub->DeleteNode(&ctx, req, &out);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
    EXPECT_THAT(s.error_message(), HasSubstr("is alive"));
  }
  req.set_force(true);
  {
    grpc::ClientContext ctx;
    grpc::Status s = stub->DeleteNode(&ctx, req, &out);
    EXPECT_TRUE(s.ok()) << s.error_message();
  }
  EXPECT_TRUE(cluster_.WaitForNodeState("node-1", v1::NODE_STATE_READY).ok());
}

TEST_F(CliTest, ApiErrorsExitOneWithCodeAndMessageOnStderr) {
  CommandResult r = Ctl({"container", "get", "c-00000000000000aa"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("error: NOT_FOUND: container_id: no container"));
  EXPECT_TRUE(r.out.empty());

  r = Ctl({"tenant", "create", "Bad", "--pinned=1Gi"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("error: INVALID_ARGUMENT: tenant_id:"));

  ASSERT_EQ(Ctl({"tenant", "create", "acme", "--pinned=1Gi"}).exit_code, 0);
  r = Ctl({"tenant", "create", "acme", "--pinned=1Gi"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("error: ALREADY_EXISTS:"));
}

TEST_F(CliTest, UsageErrorsExitTwoAndHelpExitsZero) {
  CommandResult r = Ctl({"window", "allocate", "c-0000000000000001", "--size=1.5G"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr("--size"));
  r = Ctl({"frobnicate"});
  EXPECT_EQ(r.exit_code, 2);
  for (std::vector<std::string> help : {std::vector<std::string>{"--help"},
                                        {"container", "--help"},
                                        {"container", "create", "--help"},
                                        {"window", "allocate", "--help"}}) {
    r = Ctl(help);
    EXPECT_EQ(r.exit_code, 0) << help.back();
    EXPECT_FALSE(r.out.empty());
  }
}

TEST_F(CliTest, RetryWithSameRequestIdIsIdempotent) {
  ASSERT_EQ(Ctl({"tenant", "create", "acme", "--pinned=1Gi"}).exit_code, 0);
  std::vector<std::string> create = {"-o", "json", "--request-id=cli-retry-1", "container",
                                     "create", "--tenant=acme", "--node=node-1",
                                     "--device=0000:00:05.0"};
  auto a = Json<v1::Container>(Ctl(create));
  auto b = Json<v1::Container>(Ctl(create));
  EXPECT_EQ(a.id(), b.id());
  auto all = Json<v1::ListContainersResponse>(Ctl({"-o", "json", "container", "list"}));
  EXPECT_EQ(all.containers_size(), 1);
}

TEST_F(CliTest, BrokerAddressAndCertificatesComeFromEnvironment) {
  CommandResult r = testing::RunCommand({testing::RunfilePath("client/iommuctl"), "node", "list"},
                                        EnvFor("operator-admin"));
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("node-1"));
}

// stderr is for what went wrong: a command that worked prints nothing there
// (the TLS files it loaded were an info line on every call), unless asked.
TEST_F(CliTest, AWorkingCommandKeepsStderrEmptyAndVerboseShowsTheClientsLines) {
  CommandResult r = Ctl({"node", "list"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("node-1"));
  EXPECT_EQ(r.err, "");
  r = Ctl({"--verbose", "node", "list"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.err, HasSubstr("event=tls_reloaded"));
  // A warning or an error still shows without --verbose.
  r = Ctl({"node", "get", "no-such-node"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("NOT_FOUND"));
}

TEST_F(CliTest, ATenantSeesOnlyItsOwn) {
  ASSERT_EQ(Ctl({"tenant", "create", "acme", "--pinned=1Gi"}).exit_code, 0);
  ASSERT_EQ(Ctl({"tenant", "create", "other", "--pinned=1Gi"}).exit_code, 0);
  auto c = Json<v1::Container>(CtlAs("tenant-acme", {"-o", "json", "container", "create",
                                                     "--tenant=acme", "--node=node-1",
                                                     "--device=0000:00:04.0"}));
  // The other tenant: its list is empty, the container does not exist for it.
  auto theirs = Json<v1::ListContainersResponse>(
      testing::RunCommand({testing::RunfilePath("client/iommuctl"), "-o", "json", "container",
                           "list"},
                          EnvFor("tenant-other")));
  EXPECT_EQ(theirs.containers_size(), 0);
  CommandResult r = CtlAs("tenant-other", {"container", "get", c.id()});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("NOT_FOUND"));
  r = CtlAs("tenant-other", {"container", "list", "--tenant=acme"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("PERMISSION_DENIED: tenant_id: tenant/other may only name"));
  r = CtlAs("tenant-acme", {"node", "cordon", "node-1"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("PERMISSION_DENIED: CordonNode: needs the operator role"));
}

TEST_F(CliTest, NamesStandForIdsAndLabelsSelect) {
  ASSERT_EQ(Ctl({"tenant", "create", "acme", "--pinned=1Gi", "--label=tier=gold"}).exit_code, 0);
  ASSERT_EQ(Ctl({"tenant", "create", "other", "--pinned=1Gi"}).exit_code, 0);
  // A tenant names its container and uses the name everywhere.
  auto c = Json<v1::Container>(CtlAs("tenant-acme", {"-o", "json", "container", "create",
                                                     "--tenant=acme", "--vendor=1234",
                                                     "--name=vm-42", "--label=team=ml",
                                                     "--label=env=dev", "--budget=1Mi"}));
  EXPECT_EQ(c.name(), "vm-42");
  CommandResult r = CtlAs("tenant-acme", {"container", "get", "vm-42", "-o", "name"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "container/" + c.id() + "\n");
  r = CtlAs("tenant-acme", {"window", "allocate", "vm-42", "--size=2Mi", "-o", "json"});
  EXPECT_EQ(Json<v1::Window>(r).container_id(), c.id());
  r = CtlAs("tenant-acme", {"container", "label", "vm-42", "--label=env=prod", "--remove=team"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("Labels:"));
  EXPECT_THAT(r.out, HasSubstr("env=prod"));
  EXPECT_THAT(r.out, Not(HasSubstr("team=ml")));

  // The operator lists by selector (-l, as kubectl) and sees the name.
  r = Ctl({"container", "list", "-l", "env in (prod,staging)"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr(c.id() + "  vm-42  acme"));
  r = Ctl({"container", "list", "--selector=env=dev", "--no-headers"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "");
  r = Ctl({"tenant", "list", "-l", "tier=gold", "-o", "name"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "tenant/acme\n");
  r = Ctl({"container", "get", "acme/vm-42", "-o", "jsonpath={.labels.env}"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "prod");

  // The other tenant cannot reach it by name, and may reuse the name.
  r = CtlAs("tenant-other", {"container", "get", "acme/vm-42"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("NOT_FOUND"));
  r = CtlAs("tenant-acme", {"container", "create", "--tenant=acme", "--vendor=1234",
                            "--name=vm-42"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("ALREADY_EXISTS: name: tenant \"acme\" already has a container "
                               "named \"vm-42\""));
  // Bad input: a usage error before sending, or the broker's rule.
  r = Ctl({"container", "label", "acme/vm-42", "--label=novalue"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr("--label: expects KEY=VALUE"));
  r = Ctl({"container", "list", "-l", "env in prod"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("INVALID_ARGUMENT: label_selector: at character 8"));

  r = CtlAs("tenant-acme", {"container", "delete", "vm-42"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  r = Ctl({"container", "list", "-o", "name"});
  EXPECT_EQ(r.out, "");
}

TEST_F(CliTest, DescribeTellsWhatHappenedToAContainerAndTopListsItsTenant) {
  ASSERT_EQ(Ctl({"tenant", "create", "acme", "--pinned=1Gi"}).exit_code, 0);
  ASSERT_EQ(Ctl({"tenant", "create", "other", "--pinned=1Gi"}).exit_code, 0);
  auto c = Json<v1::Container>(CtlAs("tenant-acme", {"-o", "json", "container", "create",
                                                     "--tenant=acme", "--node=node-1",
                                                     "--device=0000:00:04.0"}));
  ASSERT_FALSE(c.id().empty());
  auto w = Json<v1::Window>(Ctl({"-o", "json", "window", "allocate", c.id(), "--size=2Mi"}));
  ASSERT_FALSE(w.id().empty());

  // For people: the fields, the window, and the events of both.
  CommandResult r = Ctl({"describe", "container", c.id()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("Tenant:        acme\n"));
  EXPECT_THAT(r.out, HasSubstr("\nWindows:\n"));
  EXPECT_THAT(r.out, HasSubstr(w.id()));
  EXPECT_THAT(r.out, HasSubstr("\nEvents:\n  AGE"));
  EXPECT_THAT(r.out, HasSubstr("Normal  ContainerCreated"));
  EXPECT_THAT(r.out, HasSubstr("on node node-1 with devices 0000:00:04.0"));
  EXPECT_THAT(r.out, HasSubstr("Normal  WindowAllocated"));
  // For scripts: one object that parses back.
  auto d = Json<iommu::ctl::ContainerDescription>(
      Ctl({"-o", "json", "describe", "container", c.id()}));
  EXPECT_EQ(d.container().id(), c.id());
  ASSERT_EQ(d.windows_size(), 1);
  ASSERT_EQ(d.events_size(), 2);
  EXPECT_EQ(d.events(0).reason(), "ContainerCreated");
  EXPECT_EQ(d.events(1).reason(), "WindowAllocated");

  // Its tenant may describe it; another tenant cannot tell it exists.
  r = CtlAs("tenant-acme", {"describe", "container", c.id()});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("ContainerCreated"));
  r = CtlAs("tenant-other", {"describe", "container", c.id()});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("error: NOT_FOUND: container_id: no container"));
  EXPECT_TRUE(r.out.empty());
  r = CtlAs("tenant-acme", {"describe", "node", "node-1"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("PERMISSION_DENIED"));

  // The node and the tenant tell their side.
  r = Ctl({"describe", "node", "node-1"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("NodeRegistered"));
  EXPECT_THAT(r.out, HasSubstr(c.id()));
  r = Ctl({"describe", "tenant", "acme"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("TenantCreated"));
  EXPECT_THAT(r.out, HasSubstr(c.id()));
  r = Ctl({"describe", "window", w.id()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("WindowAllocated"));

  // After the delete, the container's events still say what happened.
  ASSERT_EQ(Ctl({"container", "delete", c.id()}).exit_code, 0);
  r = Ctl({"describe", "container", c.id()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("State:  deleted"));
  EXPECT_THAT(r.out, HasSubstr("ContainerDeleted"));

  // top: the node and both tenants for the operator; a tenant sees itself.
  r = Ctl({"top"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("Nodes:       1: 1 ready\n"));
  EXPECT_THAT(r.out, HasSubstr("\nacme "));
  EXPECT_THAT(r.out, HasSubstr("\nother "));
  EXPECT_THAT(r.out, HasSubstr("\nTOTAL "));
  auto sum = Json<iommu::ctl::FleetSummary>(Ctl({"-o", "json", "top"}));
  EXPECT_EQ(sum.tenants_size(), 2);
  EXPECT_EQ(sum.nodes(), 1u);
  r = CtlAs("tenant-acme", {"top"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("\nacme "));
  EXPECT_THAT(r.out, Not(HasSubstr("other")));
  EXPECT_THAT(r.out, Not(HasSubstr("Nodes:")));
}

// Regression: `top --watch` wrote "\x1b[H\x1b[2J" before every frame even
// when its output was a pipe. RunCommand captures stdout through a pipe.
TEST_F(CliTest, TopWatchIntoAPipeWritesPlainFramesSeparatedByABlankLine) {
  const std::string certs = cluster_.certs_dir();
  CommandResult r = testing::RunCommand(
      {"/usr/bin/timeout", "2.5", testing::RunfilePath("client/iommuctl"),
       "--broker=" + cluster_.broker_address(), "--cert=" + certs + "/operator-admin.crt",
       "--key=" + certs + "/operator-admin.key", "--ca=" + certs + "/ca.crt", "top",
       "--watch=1s"});
  EXPECT_EQ(r.exit_code, 124) << r.err;  // timeout's code: it ran until stopped.
  EXPECT_EQ(r.out.find('\x1b'), std::string::npos) << r.out;
  // Each frame opens with "As of"; the second follows the first's blank line.
  EXPECT_EQ(r.out.rfind("As of", 0), 0u) << r.out;
  EXPECT_THAT(r.out, HasSubstr("\nTOTAL "));
  EXPECT_THAT(r.out, HasSubstr("\n\nAs of")) << r.out;
}

TEST_F(CliTest, OutputNameAndNoHeadersForScripts) {
  CommandResult r = Ctl({"tenant", "create", "acme", "--pinned=1Gi", "-o", "name"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "tenant/acme\n");
  ASSERT_EQ(Ctl({"tenant", "create", "other", "--pinned=1Gi"}).exit_code, 0);
  r = Ctl({"tenant", "list", "-o", "name"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("tenant/acme\n"));
  EXPECT_THAT(r.out, HasSubstr("tenant/other\n"));
  EXPECT_EQ(r.out.size(), std::string("tenant/acme\ntenant/other\n").size()) << r.out;
  r = Ctl({"node", "list", "-o", "name"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "node/node-1\n");
  r = Ctl({"device", "list", "--node=node-1", "-o", "name"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "device/0000:00:04.0\ndevice/0000:00:05.0\n");

  r = Ctl({"node", "list", "--no-headers"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, ::testing::StartsWith("node-1 "));
  EXPECT_THAT(r.out, Not(HasSubstr("NAME")));

  // Nothing to name: refused before the broker is asked, the tenant stays.
  r = Ctl({"-o", "name", "tenant", "delete", "other"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr("--output=name: \"tenant delete\" prints no objects to name"));
  EXPECT_EQ(Ctl({"tenant", "get", "other", "-o", "name"}).out, "tenant/other\n");
}

TEST_F(CliTest, AContextReplacesTheFlagsAndStructuredOutputsReadTheSameAnswer) {
  const std::string certs = cluster_.certs_dir();
  const std::string config = absl::StrCat(::testing::TempDir(), "/iommuctl-config");
  const std::vector<std::string> env = {"IOMMUCTL_CONFIG=" + config};
  const std::string ctl = testing::RunfilePath("client/iommuctl");
  auto run = [&](std::vector<std::string> args) {
    args.insert(args.begin(), ctl);
    return testing::RunCommand(args, env);
  };
  CommandResult r = run({"config", "set-context", "lab", "--broker=" + cluster_.broker_address(),
                         "--cert=" + certs + "/operator-admin.crt",
                         "--key=" + certs + "/operator-admin.key", "--ca=" + certs + "/ca.crt"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  ASSERT_EQ(run({"config", "use-context", "lab"}).exit_code, 0);

  // No flag and no variable names the broker or the certificates now.
  r = run({"tenant", "create", "acme", "--pinned=1Gi", "-o", "yaml"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, ::testing::StartsWith("id: acme\nquota:\n  pinned_bytes: 1073741824\n"));
  r = run({"node", "list", "-o",
           "jsonpath={range .nodes[*]}{.name} {.device_count}{\"\\n\"}{end}"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "node-1 2\n");
  r = run({"node", "list", "-o", "wide"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("AGENT-VERSION"));
  EXPECT_THAT(r.out, HasSubstr(std::string(kVersion)));

  // A context that does not exist is refused before anything is sent.
  r = run({"--context=prod", "tenant", "delete", "acme"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr("--context: no context named \"prod\" (have: lab)"));
  EXPECT_EQ(Ctl({"tenant", "get", "acme", "-o", "name"}).out, "tenant/acme\n");
}

TEST_F(CliTest, JsonHasPlainNumbersAndRfc3339Times) {
  CommandResult r = Ctl({"-o", "json", "tenant", "create", "acme", "--pinned=1Gi"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("\"pinned_bytes\": 1073741824,"));
  EXPECT_THAT(r.out, ::testing::ContainsRegex(
                         "\"create_time_ms\": [0-9]+,\n *\"create_time\": "
                         "\"20[0-9][0-9]-[01][0-9]-[0-3][0-9]T[0-9:]+\\.[0-9]{3}Z\""));
  EXPECT_EQ(Json<v1::Tenant>(r).quota().pinned_bytes(), uint64_t{1} << 30);
  r = Ctl({"-o", "json", "node", "get", "node-1"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("\"last_heartbeat\": \"20"));
}

TEST_F(CliTest, TransportMistakesAreClearErrors) {
  const std::string ctl = testing::RunfilePath("client/iommuctl");
  const std::string broker = "--broker=" + cluster_.broker_address();
  // Nothing given: a usage error that says what to give.
  CommandResult r = testing::RunCommand({ctl, broker, "node", "list"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr("--cert, --key, --ca: required"));
  // A key that is not the certificate's.
  const std::string certs = cluster_.certs_dir();
  r = testing::RunCommand({ctl, broker, "--cert=" + certs + "/operator-admin.crt",
                           "--key=" + certs + "/tenant-acme.key", "--ca=" + certs + "/ca.crt",
                           "node", "list"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr("--key: " + certs + "/tenant-acme.key does not match"));
  // Plaintext against an mTLS broker cannot connect.
  r = testing::RunCommand({ctl, broker, "--insecure", "--timeout=2s", "node", "list"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("UNAVAILABLE"));
}

TEST_F(CliTest, UnreachableBrokerIsUnavailable) {
  CommandResult r = testing::RunCommand(
      {testing::RunfilePath("client/iommuctl"), "--broker=127.0.0.1:1", "--insecure",
       "--timeout=2s", "node", "list"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("error: UNAVAILABLE"));
}

// What bash completes after sourcing `iommuctl completion bash`, for the
// words before the cursor and the word being completed.
std::string Complete(const std::string& words) {
  const std::string ctl = testing::RunfilePath("client/iommuctl");
  CommandResult r = testing::RunCommand(
      {"/bin/bash", "-c",
       absl::StrCat("source <('", ctl, "' completion bash) || exit 3; COMP_WORDS=(iommuctl ",
                    words, "); COMP_CWORD=$((${#COMP_WORDS[@]} - 1)); _iommuctl; "
                    "echo \"${COMPREPLY[*]}\"")});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.err, "");
  return r.out;
}

TEST(CompletionTest, BashCompletesCommandsVerbsAndFlags) {
  EXPECT_EQ(Complete("ten"), "tenant\n");
  EXPECT_EQ(Complete("tenant s"), "set-quota\n");
  EXPECT_EQ(Complete("-o json container c"), "create\n");
  EXPECT_EQ(Complete("tenant set-quota acme --win"), "--window-bytes=\n");
  EXPECT_EQ(Complete("--broker 127.0.0.1:1 node drain n1 --del"), "--delete-containers\n");
  EXPECT_EQ(Complete("top --w"), "--watch=\n");
  EXPECT_EQ(Complete("version --no-h"), "--no-headers\n");  // Global flags too.
  EXPECT_EQ(Complete("completion ''"), "bash\n");
  EXPECT_EQ(Complete("usage --tenant=acme --n"), "--node= --no-headers\n");
}

TEST_F(CliTest, VersionShowsClientBrokerAndAgentVersions) {
  const std::string line = absl::StrCat(kVersion, " (commit ", BuildCommit(), ")");
  CommandResult r = Ctl({"version"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr(absl::StrCat("Client: iommuctl ", line, "\n")));
  // The broker is built from the same tree, so it reports the same build.
  EXPECT_THAT(r.out, HasSubstr(absl::StrCat("Broker: iommu-broker ", line, "\n")));
  EXPECT_THAT(r.out, HasSubstr(absl::StrCat("  node-1  ", kVersion, "\n")));
  auto v = Json<iommu::ctl::VersionView>(Ctl({"-o", "json", "version"}));
  EXPECT_EQ(v.broker_version(), kVersion);
  EXPECT_EQ(v.broker_commit(), BuildCommit());
  ASSERT_EQ(v.agents_size(), 1);
  EXPECT_EQ(v.agents(0).node(), "node-1");

  // A tenant may ask the broker, but sees no agents.
  r = CtlAs("tenant-acme", {"version"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("Broker: iommu-broker "));
  EXPECT_THAT(r.out, Not(HasSubstr("Agents")));

  // No broker: the client's line, then the error.
  r = testing::RunCommand({testing::RunfilePath("client/iommuctl"), "--broker=127.0.0.1:1",
                           "--insecure", "--timeout=2s", "version"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(r.out, absl::StrCat("Client: iommuctl ", line, "\n"));
  EXPECT_THAT(r.err, HasSubstr("error: UNAVAILABLE"));
  r = testing::RunCommand({testing::RunfilePath("client/iommuctl"), "--broker=127.0.0.1:1",
                           "--insecure", "version", "--client"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, absl::StrCat("Client: iommuctl ", line, "\n"));
}

}  // namespace
}  // namespace iommu
