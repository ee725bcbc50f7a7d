// Authorization over real mutual TLS on loopback: every RPC of the broker's
// two services (Broker, NodeRegistry) and of the agent's service, crossed
// with every kind of caller, with the status code each must get. The broker
// and two sim agents run as processes with certificates from
// deploy/make-dev-certs.sh; each call opens its own TLS connection with the
// caller's certificate.
//
// What a row proves for an allowed caller is that authorization let it
// through: the code is then the broker's own answer (OK for a well-formed
// request, or e.g. FAILED_PRECONDITION for a heartbeat with a made-up
// session) and the request was designed so that it disturbs nothing else.
#include <algorithm>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/version.h"
#include "google/protobuf/descriptor.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "proto/agent.grpc.pb.h"
#include "proto/broker.grpc.pb.h"
#include "tests/cluster.h"

namespace iommu {
namespace {

using grpc::StatusCode;
using testing::Cluster;
using testing::ClusterOptions;
using testing::RunCommand;
using testing::RunfilePath;

constexpr char kOwner[] = "acme";
constexpr char kOther[] = "other";
// Six single-device groups, so cases can create and delete containers freely.
constexpr char kDevices[] =
    "0000:00:04.0=1234:11e8@4,0000:00:05.0=1234:11e8@5,0000:00:06.0=1234:11e8@6,"
    "0000:00:07.0=1234:11e8@7,0000:00:08.0=1234:11e8@8,0000:00:09.0=1234:11e8@9";

// Who calls.
enum Caller {
  kOperator,
  kOwningTenant,
  kOtherTenant,
  kAgentOfNode,     // agent-node-1: the node whose registry calls and API are tried.
  kAgentOfOtherNode,  // agent-node-2.
  kBrokerCert,      // the broker's own certificate, used by a client.
  kNoCertificate,
  kForeignCa,       // an operator certificate from another CA.
  kCallerCount,
};

const char* CallerName(int c) {
  static const char* names[] = {"operator",   "owning tenant", "other tenant",
                                "agent of the node", "agent of another node", "broker cert",
                                "no certificate", "certificate from another CA"};
  return names[c];
}

using Codes = std::map<Caller, StatusCode>;

// The shapes of policy the table uses. A handshake with a certificate from
// another CA fails (UNAVAILABLE); a connection without a certificate gets
// through the handshake and is refused per call (UNAUTHENTICATED).
Codes OperatorOnly(StatusCode op = StatusCode::OK) {
  return {{kOperator, op},
          {kOwningTenant, StatusCode::PERMISSION_DENIED},
          {kOtherTenant, StatusCode::PERMISSION_DENIED},
          {kAgentOfNode, StatusCode::PERMISSION_DENIED},
          {kAgentOfOtherNode, StatusCode::PERMISSION_DENIED},
          {kBrokerCert, StatusCode::PERMISSION_DENIED},
          {kNoCertificate, StatusCode::UNAUTHENTICATED},
          {kForeignCa, StatusCode::UNAVAILABLE}};
}
// Objects of the owning tenant named by id: another tenant cannot tell them
// from ids that do not exist.
Codes OwnedById(StatusCode ok = StatusCode::OK) {
  Codes c = OperatorOnly(ok);
  c[kOwningTenant] = ok;
  c[kOtherTenant] = StatusCode::NOT_FOUND;
  return c;
}
// Requests naming the owning tenant explicitly.
Codes NamesOwner() {
  Codes c = OperatorOnly();
  c[kOwningTenant] = StatusCode::OK;
  return c;
}
// Requests without a tenant filter: every tenant is narrowed to itself.
Codes NarrowedToCaller() {
  Codes c = OperatorOnly();
  c[kOwningTenant] = StatusCode::OK;
  c[kOtherTenant] = StatusCode::OK;
  return c;
}
// Read-only facts about the broker: every authenticated caller.
Codes AnyAuthenticated() {
  Codes c = OperatorOnly();
  for (Caller k : {kOwningTenant, kOtherTenant, kAgentOfNode, kAgentOfOtherNode, kBrokerCert}) {
    c[k] = StatusCode::OK;
  }
  return c;
}
// NodeRegistry calls for node-1: its agent (and operators) get through.
Codes AgentOfNode(StatusCode through) {
  Codes c = OperatorOnly(through);
  c[kAgentOfNode] = through;
  return c;
}
// The agent's API: the broker and operators only.
Codes BrokerAndOperator(StatusCode through) {
  Codes c = OperatorOnly(through);
  c[kBrokerCert] = through;
  return c;
}

class AuthzTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    ClusterOptions options;
    options.tls = true;
    options.tenants = {kOwner, kOther};
    cluster_ = new Cluster(options);
    ASSERT_TRUE(cluster_->IssueCertificates({"--agent", "node-2"}).ok());
    ASSERT_TRUE(cluster_->StartBroker().ok()) << cluster_->broker().Log();
    ASSERT_TRUE(cluster_->StartAgent("node-1", kDevices).ok()) << cluster_->agent("node-1").Log();
    ASSERT_TRUE(cluster_->StartAgent("node-2", kDevices).ok()) << cluster_->agent("node-2").Log();

    // A second CA with an identity that would be an operator, if trusted.
    foreign_dir_ = new std::string(cluster_->dir() + "/foreign");
    ASSERT_EQ(RunCommand({RunfilePath("deploy/make-dev-certs.sh"), "--out", *foreign_dir_})
                  .exit_code,
              0);

    auto op = cluster_->BrokerStub();
    for (const char* t : {kOwner, kOther}) {
      grpc::ClientContext ctx;
      v1::CreateTenantRequest req;
      req.set_tenant_id(t);
      req.mutable_quota()->set_pinned_bytes(1ULL << 30);
      v1::Tenant out;
      grpc::Status s = op->CreateTenant(&ctx, req, &out);
      ASSERT_TRUE(s.ok()) << s.error_message();
    }
  }
  static void TearDownTestSuite() {
    delete cluster_;
    delete foreign_dir_;
  }

  static TransportConfig Config(Caller c) {
    switch (c) {
      case kOperator: return cluster_->ClientConfig("operator-admin");
      case kOwningTenant: return cluster_->ClientConfig(absl::StrCat("tenant-", kOwner));
      case kOtherTenant: return cluster_->ClientConfig(absl::StrCat("tenant-", kOther));
      case kAgentOfNode: return cluster_->ClientConfig("agent-node-1");
      case kAgentOfOtherNode: return cluster_->ClientConfig("agent-node-2");
      case kBrokerCert: return cluster_->ClientConfig("broker");
      case kNoCertificate: return cluster_->ClientConfig("");
      case kForeignCa: {
        TransportConfig t = cluster_->ClientConfig("");
        t.cert_file = *foreign_dir_ + "/operator-admin.crt";
        t.key_file = *foreign_dir_ + "/operator-admin.key";
        return t;  // Still verifies the broker with the cluster's CA.
      }
      default: break;
    }
    return {};
  }
  static std::unique_ptr<v1::Broker::Stub> BrokerAs(Caller c) {
    return v1::Broker::NewStub(cluster_->ChannelAs(cluster_->broker_address(), Config(c),
                                                   Identity{Role::kBroker, ""}));
  }
  static std::unique_ptr<v1::NodeRegistry::Stub> RegistryAs(Caller c) {
    return v1::NodeRegistry::NewStub(cluster_->ChannelAs(cluster_->broker_address(), Config(c),
                                                         Identity{Role::kBroker, ""}));
  }
  static std::unique_ptr<v1::Agent::Stub> AgentAs(Caller c) {
    return v1::Agent::NewStub(cluster_->ChannelAs(cluster_->agent("node-1").address(),
                                                  Config(c), Identity{Role::kAgent, "node-1"}));
  }

  // Operator helpers for fixtures.
  static std::string NewContainer(const std::string& tenant, const std::string& name = "") {
    auto op = cluster_->BrokerStub();
    grpc::ClientContext ctx;
    v1::CreateContainerRequest req;
    req.set_tenant_id(tenant);
    req.set_name(name);
    req.mutable_selector()->set_count(1);  // Either node; placement is not under test.
    req.set_pin_budget_bytes(1 << 20);
    v1::Container out;
    grpc::Status s = op->CreateContainer(&ctx, req, &out);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return out.id();
  }
  static void DeleteContainer(const std::string& id) {
    if (id.empty()) return;
    auto op = cluster_->BrokerStub();
    grpc::ClientContext ctx;
    v1::DeleteContainerRequest req;
    req.set_container_id(id);
    v1::DeleteContainerResponse out;
    grpc::Status s = op->DeleteContainer(&ctx, req, &out);
    EXPECT_TRUE(s.ok() || s.error_code() == StatusCode::NOT_FOUND) << s.error_message();
  }
  static std::string NewWindow(const std::string& container) {
    auto op = cluster_->BrokerStub();
    grpc::ClientContext ctx;
    v1::AllocateWindowRequest req;
    req.set_container_id(container);
    req.set_size(1 << 20);
    v1::Window out;
    grpc::Status s = op->AllocateWindow(&ctx, req, &out);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return out.id();
  }

  static Cluster* cluster_;
  static std::string* foreign_dir_;
};

Cluster* AuthzTest::cluster_ = nullptr;
std::string* AuthzTest::foreign_dir_ = nullptr;

// One row: an RPC, the codes per caller, and a call that sets up what it
// needs, makes the call as `caller`, cleans up, and returns the status.
struct Row {
  std::string rpc;
  Codes want;
  std::function<grpc::Status(Caller)> call;
};

template <typename Stub, typename Req, typename Resp>
grpc::Status Invoke(Stub* stub,
                    grpc::Status (Stub::*method)(grpc::ClientContext*, const Req&, Resp*),
                    const Req& req, Resp* resp) {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  return (stub->*method)(&ctx, req, resp);
}

// A server-streaming call's answer to authorization: OK once its first
// message arrives (the broker sends one at once), else how it ended.
grpc::Status OpenWatch(v1::Broker::Stub* stub, const v1::WatchRequest& req) {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  std::unique_ptr<grpc::ClientReader<v1::WatchResponse>> reader = stub->Watch(&ctx, req);
  v1::WatchResponse first;
  if (!reader->Read(&first)) return reader->Finish();
  ctx.TryCancel();
  reader->Finish();
  return grpc::Status::OK;
}

TEST_F(AuthzTest, EveryRpcCrossedWithEveryCaller) {
  // Long-lived fixtures of the owning tenant; rows that would consume or
  // change them make their own.
  const std::string c1 = NewContainer(kOwner);
  ASSERT_FALSE(c1.empty());
  const std::string w1 = NewWindow(c1);
  int fresh = 0;

  using B = v1::Broker::Stub;
  using R = v1::NodeRegistry::Stub;
  using A = v1::Agent::Stub;
  std::vector<Row> rows = {
      // ---- tenants
      {"CreateTenant", OperatorOnly(),
       [&](Caller c) {
         v1::CreateTenantRequest req;
         req.set_tenant_id(absl::StrCat("t", ++fresh));
         req.mutable_quota()->set_pinned_bytes(4096);
         v1::Tenant out;
         return Invoke(BrokerAs(c).get(), &B::CreateTenant, req, &out);
       }},
      {"GetTenant(own)", NamesOwner(),
       [&](Caller c) {
         v1::GetTenantRequest req;
         req.set_tenant_id(kOwner);
         v1::Tenant out;
         return Invoke(BrokerAs(c).get(), &B::GetTenant, req, &out);
       }},
      {"ListTenants", OperatorOnly(),
       [&](Caller c) {
         v1::ListTenantsRequest req;
         v1::ListTenantsResponse out;
         return Invoke(BrokerAs(c).get(), &B::ListTenants, req, &out);
       }},
      {"SetTenantQuota", OperatorOnly(),
       [&](Caller c) {
         v1::SetTenantQuotaRequest req;
         req.set_tenant_id(kOwner);
         req.mutable_quota()->set_pinned_bytes(1ULL << 30);
         v1::Tenant out;
         return Invoke(BrokerAs(c).get(), &B::SetTenantQuota, req, &out);
       }},
      {"Watch", NarrowedToCaller(),
       [&](Caller c) {
         v1::WatchRequest req;
         return OpenWatch(BrokerAs(c).get(), req);
       }},
      {"SetTenantLabels", OperatorOnly(),
       [&](Caller c) {
         v1::SetTenantLabelsRequest req;
         req.set_tenant_id(kOwner);
         (*req.mutable_labels())["team"] = "ml";
         v1::Tenant out;
         return Invoke(BrokerAs(c).get(), &B::SetTenantLabels, req, &out);
       }},
      {"DeleteTenant", OperatorOnly(),
       [&](Caller c) {
         const std::string id = absl::StrCat("t", ++fresh);
         v1::CreateTenantRequest create;
         create.set_tenant_id(id);
         create.mutable_quota()->set_pinned_bytes(4096);
         v1::Tenant t;
         EXPECT_TRUE(Invoke(cluster_->BrokerStub().get(), &B::CreateTenant, create, &t).ok());
         v1::DeleteTenantRequest req;
         req.set_tenant_id(id);
         v1::DeleteTenantResponse out;
         return Invoke(BrokerAs(c).get(), &B::DeleteTenant, req, &out);
       }},
      // ---- nodes and devices
      {"ListNodes", OperatorOnly(),
       [&](Caller c) {
         v1::ListNodesRequest req;
         v1::ListNodesResponse out;
         return Invoke(BrokerAs(c).get(), &B::ListNodes, req, &out);
       }},
      {"GetNode", OperatorOnly(),
       [&](Caller c) {
         v1::GetNodeRequest req;
         req.set_node("node-1");
         v1::Node out;
         return Invoke(BrokerAs(c).get(), &B::GetNode, req, &out);
       }},
      {"CordonNode", OperatorOnly(),
       [&](Caller c) {
         v1::CordonNodeRequest req;
         req.set_node("node-2");
         v1::Node out;
         grpc::Status s = Invoke(BrokerAs(c).get(), &B::CordonNode, req, &out);
         v1::UncordonNodeRequest undo;
         undo.set_node("node-2");
         Invoke(cluster_->BrokerStub().get(), &B::UncordonNode, undo, &out);
         return s;
       }},
      {"UncordonNode", OperatorOnly(),
       [&](Caller c) {
         v1::UncordonNodeRequest req;
         req.set_node("node-2");
         v1::Node out;
         return Invoke(BrokerAs(c).get(), &B::UncordonNode, req, &out);
       }},
      {"DrainNode", OperatorOnly(),
       [&](Caller c) {
         v1::DrainNodeRequest req;
         req.set_node("node-2");
         v1::DrainNodeResponse out;
         grpc::Status s = Invoke(BrokerAs(c).get(), &B::DrainNode, req, &out);
         v1::UncordonNodeRequest undo;
         undo.set_node("node-2");
         v1::Node n;
         Invoke(cluster_->BrokerStub().get(), &B::UncordonNode, undo, &n);
         return s;
       }},
      // A node that does not exist: the operator is told so, nobody else
      // gets as far as the lookup.
      {"DeleteNode", OperatorOnly(StatusCode::NOT_FOUND),
       [&](Caller c) {
         v1::DeleteNodeRequest req;
         req.set_node("node-9");
         v1::DeleteNodeResponse out;
         return Invoke(BrokerAs(c).get(), &B::DeleteNode, req, &out);
       }},
      {"ListDevices", OperatorOnly(),
       [&](Caller c) {
         v1::ListDevicesRequest req;
         req.set_node("node-1");
         v1::ListDevicesResponse out;
         return Invoke(BrokerAs(c).get(), &B::ListDevices, req, &out);
       }},
      // ---- containers
      {"CreateContainer(for owner)", NamesOwner(),
       [&](Caller c) {
         v1::CreateContainerRequest req;
         req.set_tenant_id(kOwner);
         req.mutable_selector()->set_count(1);
         req.set_pin_budget_bytes(4096);
         v1::Container out;
         grpc::Status s = Invoke(BrokerAs(c).get(), &B::CreateContainer, req, &out);
         DeleteContainer(out.id());
         return s;
       }},
      {"GetContainer", OwnedById(),
       [&](Caller c) {
         v1::GetContainerRequest req;
         req.set_container_id(c1);
         v1::Container out;
         return Invoke(BrokerAs(c).get(), &B::GetContainer, req, &out);
       }},
      {"ListContainers(owner)", NamesOwner(),
       [&](Caller c) {
         v1::ListContainersRequest req;
         req.set_tenant_id(kOwner);
         v1::ListContainersResponse out;
         return Invoke(BrokerAs(c).get(), &B::ListContainers, req, &out);
       }},
      {"ListContainers(all)", NarrowedToCaller(),
       [&](Caller c) {
         v1::ListContainersRequest req;
         v1::ListContainersResponse out;
         grpc::Status s = Invoke(BrokerAs(c).get(), &B::ListContainers, req, &out);
         if (c == kOtherTenant) {
           EXPECT_EQ(out.containers_size(), 0) << "saw the owner's";
         }
         if (c == kOwningTenant) {
           EXPECT_GE(out.containers_size(), 1);
         }
         return s;
       }},
      {"DeleteContainer", OwnedById(),
       [&](Caller c) {
         const std::string id = NewContainer(kOwner);
         v1::DeleteContainerRequest req;
         req.set_container_id(id);
         v1::DeleteContainerResponse out;
         grpc::Status s = Invoke(BrokerAs(c).get(), &B::DeleteContainer, req, &out);
         DeleteContainer(id);
         return s;
       }},
      {"SetContainerBudget", OwnedById(),
       [&](Caller c) {
         v1::SetContainerBudgetRequest req;
         req.set_container_id(c1);
         req.set_pin_budget_bytes(1 << 20);
         v1::Container out;
         return Invoke(BrokerAs(c).get(), &B::SetContainerBudget, req, &out);
       }},
      {"SetContainerLabels", OwnedById(),
       [&](Caller c) {
         v1::SetContainerLabelsRequest req;
         req.set_container_id(c1);
         (*req.mutable_labels())["team"] = "ml";
         v1::Container out;
         return Invoke(BrokerAs(c).get(), &B::SetContainerLabels, req, &out);
       }},
      {"GrantLauncher", OwnedById(),
       [&](Caller c) {
         v1::GrantLauncherRequest req;
         req.set_container_id(c1);
         v1::GrantLauncherResponse out;
         grpc::Status s = Invoke(BrokerAs(c).get(), &B::GrantLauncher, req, &out);
         if (!s.ok()) {
           EXPECT_TRUE(out.token().empty());
         }
         return s;
       }},
      // ---- windows
      {"AllocateWindow", OwnedById(),
       [&](Caller c) {
         v1::AllocateWindowRequest req;
         req.set_container_id(c1);
         req.set_size(4096);
         v1::Window out;
         grpc::Status s = Invoke(BrokerAs(c).get(), &B::AllocateWindow, req, &out);
         if (s.ok()) {
           v1::ReleaseWindowRequest undo;
           undo.set_window_id(out.id());
           v1::ReleaseWindowResponse r;
           EXPECT_TRUE(Invoke(cluster_->BrokerStub().get(), &B::ReleaseWindow, undo, &r).ok());
         }
         return s;
       }},
      {"ReleaseWindow", OwnedById(),
       [&](Caller c) {
         const std::string id = NewWindow(c1);
         v1::ReleaseWindowRequest req;
         req.set_window_id(id);
         v1::ReleaseWindowResponse out;
         grpc::Status s = Invoke(BrokerAs(c).get(), &B::ReleaseWindow, req, &out);
         if (!s.ok()) {
           EXPECT_TRUE(Invoke(cluster_->BrokerStub().get(), &B::ReleaseWindow, req, &out).ok());
         }
         return s;
       }},
      {"ListWindows(container)", NarrowedToCaller(),
       [&](Caller c) {
         v1::ListWindowsRequest req;
         req.set_container_id(c1);
         v1::ListWindowsResponse out;
         grpc::Status s = Invoke(BrokerAs(c).get(), &B::ListWindows, req, &out);
         if (c == kOtherTenant) {
           EXPECT_EQ(out.windows_size(), 0) << "saw the owner's window";
         }
         if (c == kOwningTenant) {
           EXPECT_EQ(out.windows_size(), 1);
         }
         return s;
       }},
      {"ListWindows(owner)", NamesOwner(),
       [&](Caller c) {
         v1::ListWindowsRequest req;
         req.set_tenant_id(kOwner);
         v1::ListWindowsResponse out;
         return Invoke(BrokerAs(c).get(), &B::ListWindows, req, &out);
       }},
      // ---- usage
      {"GetUsage(all)", NarrowedToCaller(),
       [&](Caller c) {
         v1::GetUsageRequest req;
         v1::GetUsageResponse out;
         grpc::Status s = Invoke(BrokerAs(c).get(), &B::GetUsage, req, &out);
         if (c == kOtherTenant || c == kOwningTenant) {
           const std::string self = c == kOtherTenant ? kOther : kOwner;
           for (const auto& t : out.tenants()) EXPECT_EQ(t.tenant_id(), self);
           for (const auto& n : out.nodes()) EXPECT_EQ(n.tenant_id(), self);
         }
         return s;
       }},
      {"GetUsage(owner)", NamesOwner(),
       [&](Caller c) {
         v1::GetUsageRequest req;
         req.set_tenant_id(kOwner);
         v1::GetUsageResponse out;
         return Invoke(BrokerAs(c).get(), &B::GetUsage, req, &out);
       }},
      // ---- events: a tenant sees its own objects' (and its narrowed list);
      // another tenant's container is NOT_FOUND, nodes are for operators.
      {"ListEvents(container)", OwnedById(),
       [&](Caller c) {
         v1::ListEventsRequest req;
         req.mutable_object()->set_kind(v1::OBJECT_KIND_CONTAINER);
         req.mutable_object()->set_id(c1);
         v1::ListEventsResponse out;
         grpc::Status s = Invoke(BrokerAs(c).get(), &B::ListEvents, req, &out);
         if (s.ok()) {
           EXPECT_GE(out.events_size(), 1) << "its creation";
         } else {
           EXPECT_EQ(out.events_size(), 0);
         }
         return s;
       }},
      {"ListEvents(own tenant)", NamesOwner(),
       [&](Caller c) {
         v1::ListEventsRequest req;
         req.mutable_object()->set_kind(v1::OBJECT_KIND_TENANT);
         req.mutable_object()->set_id(kOwner);
         v1::ListEventsResponse out;
         return Invoke(BrokerAs(c).get(), &B::ListEvents, req, &out);
       }},
      {"ListEvents(node)", OperatorOnly(),
       [&](Caller c) {
         v1::ListEventsRequest req;
         req.mutable_object()->set_kind(v1::OBJECT_KIND_NODE);
         req.mutable_object()->set_id("node-1");
         v1::ListEventsResponse out;
         return Invoke(BrokerAs(c).get(), &B::ListEvents, req, &out);
       }},
      {"ListEvents(all)", NarrowedToCaller(),
       [&](Caller c) {
         v1::ListEventsRequest req;
         v1::ListEventsResponse out;
         grpc::Status s = Invoke(BrokerAs(c).get(), &B::ListEvents, req, &out);
         if (c == kOtherTenant || c == kOwningTenant) {
           const std::string self = c == kOtherTenant ? kOther : kOwner;
           for (const auto& e : out.events()) EXPECT_EQ(e.tenant_id(), self) << e.reason();
         }
         if (c == kOwningTenant) {
           EXPECT_GE(out.events_size(), 1);
         }
         return s;
       }},
      // ---- version
      {"GetVersion", AnyAuthenticated(),
       [&](Caller c) {
         v1::GetVersionResponse out;
         grpc::Status s = Invoke(BrokerAs(c).get(), &B::GetVersion, v1::GetVersionRequest(), &out);
         if (s.ok()) {
           EXPECT_EQ(out.version(), kVersion);
         }
         return s;
       }},
      // ---- NodeRegistry, for node-1. Requests that get through are refused
      // by the broker itself (no agent address, unknown session), so the real
      // agent's registration is not disturbed.
      {"Register(node-1)", AgentOfNode(StatusCode::INVALID_ARGUMENT),
       [&](Caller c) {
         v1::RegisterRequest req;
         req.set_node("node-1");
         v1::RegisterResponse out;
         return Invoke(RegistryAs(c).get(), &R::Register, req, &out);
       }},
      {"Heartbeat(node-1)", AgentOfNode(StatusCode::FAILED_PRECONDITION),
       [&](Caller c) {
         v1::HeartbeatRequest req;
         req.set_node("node-1");
         req.set_session_id("not-a-session");
         v1::HeartbeatResponse out;
         return Invoke(RegistryAs(c).get(), &R::Heartbeat, req, &out);
       }},
      {"Reconciled(node-1)", AgentOfNode(StatusCode::FAILED_PRECONDITION),
       [&](Caller c) {
         v1::ReconciledRequest req;
         req.set_node("node-1");
         req.set_session_id("not-a-session");
         v1::ReconciledResponse out;
         return Invoke(RegistryAs(c).get(), &R::Reconciled, req, &out);
       }},
      // ---- the agent of node-1's own API. Requests name objects it does not
      // hold, so those that get through change nothing.
      {"Agent.GetInventory", BrokerAndOperator(StatusCode::OK),
       [&](Caller c) {
         v1::GetInventoryRequest req;
         v1::GetInventoryResponse out;
         return Invoke(AgentAs(c).get(), &A::GetInventory, req, &out);
       }},
      {"Agent.CreateContainer", BrokerAndOperator(StatusCode::INVALID_ARGUMENT),
       [&](Caller c) {
         v1::AgentCreateContainerRequest req;  // No id: refused by validation.
         v1::AgentContainer out;
         return Invoke(AgentAs(c).get(), &A::CreateContainer, req, &out);
       }},
      {"Agent.DestroyContainer", BrokerAndOperator(StatusCode::NOT_FOUND),
       [&](Caller c) {
         v1::AgentDestroyContainerRequest req;
         req.set_container_id("c-00000000000000ff");
         v1::AgentDestroyContainerResponse out;
         return Invoke(AgentAs(c).get(), &A::DestroyContainer, req, &out);
       }},
      {"Agent.GetContainer", BrokerAndOperator(StatusCode::NOT_FOUND),
       [&](Caller c) {
         v1::AgentGetContainerRequest req;
         req.set_container_id("c-00000000000000ff");
         v1::AgentGetContainerResponse out;
         return Invoke(AgentAs(c).get(), &A::GetContainer, req, &out);
       }},
      {"Agent.Unmap", BrokerAndOperator(StatusCode::NOT_FOUND),
       [&](Caller c) {
         v1::AgentUnmapRequest req;
         req.set_container_id("c-00000000000000ff");
         req.set_iova(0);
         req.set_size(4096);
         v1::AgentUnmapResponse out;
         return Invoke(AgentAs(c).get(), &A::Unmap, req, &out);
       }},
      {"Agent.SetPinBudgets", BrokerAndOperator(StatusCode::OK),
       [&](Caller c) {
         v1::SetPinBudgetsRequest req;  // No budgets: nothing to change.
         v1::SetPinBudgetsResponse out;
         return Invoke(AgentAs(c).get(), &A::SetPinBudgets, req, &out);
       }},
      {"Agent.SetWindows", BrokerAndOperator(StatusCode::NOT_FOUND),
       [&](Caller c) {
         v1::SetWindowsRequest req;
         req.mutable_windows()->set_container_id("c-00000000000000ff");
         v1::SetWindowsResponse out;
         return Invoke(AgentAs(c).get(), &A::SetWindows, req, &out);
       }},
  };

  // Every RPC of the three services has a row.
  std::set<std::string> covered;
  for (const Row& r : rows) covered.insert(r.rpc.substr(0, r.rpc.find('(')));
  const auto* pool = google::protobuf::DescriptorPool::generated_pool();
  for (const auto& [service, prefix] : std::vector<std::pair<std::string, std::string>>{
           {"iommu.v1.Broker", ""}, {"iommu.v1.NodeRegistry", ""}, {"iommu.v1.Agent", "Agent."}}) {
    const google::protobuf::ServiceDescriptor* d = pool->FindServiceByName(service);
    ASSERT_NE(d, nullptr) << service;
    for (int i = 0; i < d->method_count(); ++i) {
      EXPECT_TRUE(covered.count(prefix + d->method(i)->name())) << service << "." << d->method(i)->name();
    }
  }

  for (const Row& row : rows) {
    ASSERT_EQ(row.want.size(), static_cast<size_t>(kCallerCount)) << row.rpc;
    for (const auto& [caller, want] : row.want) {
      grpc::Status got = row.call(caller);
      EXPECT_EQ(got.error_code(), want)
          << row.rpc << " as " << CallerName(caller) << ": got " << got.error_code() << " "
          << got.error_message();
    }
  }

  // The owner's fixtures are untouched by everyone else's attempts.
  v1::GetContainerRequest get;
  get.set_container_id(c1);
  v1::Container after;
  ASSERT_TRUE(Invoke(cluster_->BrokerStub().get(), &B::GetContainer, get, &after).ok());
  EXPECT_EQ(after.tenant_id(), kOwner);
  v1::ListWindowsRequest lw;
  lw.set_container_id(c1);
  v1::ListWindowsResponse windows;
  ASSERT_TRUE(Invoke(cluster_->BrokerStub().get(), &B::ListWindows, lw, &windows).ok());
  ASSERT_EQ(windows.windows_size(), 1);
  EXPECT_EQ(windows.windows(0).id(), w1);
  DeleteContainer(c1);
}

// Another tenant's container looks exactly like one that does not exist.
TEST_F(AuthzTest, AnotherTenantsContainerIsIndistinguishableFromNone) {
  const std::string c = NewContainer(kOwner);
  auto other = BrokerAs(kOtherTenant);
  v1::GetContainerRequest req;
  req.set_container_id(c);
  v1::Container out;
  grpc::Status theirs = Invoke(other.get(), &v1::Broker::Stub::GetContainer, req, &out);
  std::string missing_id = c;
  missing_id.back() = missing_id.back() == '0' ? '1' : '0';
  req.set_container_id(missing_id);
  grpc::Status none = Invoke(other.get(), &v1::Broker::Stub::GetContainer, req, &out);
  EXPECT_EQ(theirs.error_code(), StatusCode::NOT_FOUND);
  EXPECT_EQ(none.error_code(), StatusCode::NOT_FOUND);
  EXPECT_EQ(theirs.error_message(), absl::StrCat("container_id: no container \"", c, "\""));
  EXPECT_EQ(none.error_message(),
            absl::StrCat("container_id: no container \"", missing_id, "\""));
  DeleteContainer(c);
}

// By name too: another tenant's TENANT/NAME gets the answer a name nobody has
// gets, and its bare NAME is looked up in its own tenant only.
TEST_F(AuthzTest, AnotherTenantsContainerNameIsIndistinguishableFromNone) {
  const std::string c = NewContainer(kOwner, "secret-vm");
  auto other = BrokerAs(kOtherTenant);
  const auto get = [&](const std::string& ref) {
    v1::GetContainerRequest req;
    req.set_container_id(ref);
    v1::Container out;
    return Invoke(other.get(), &v1::Broker::Stub::GetContainer, req, &out);
  };
  grpc::Status theirs = get(absl::StrCat(kOwner, "/secret-vm"));
  grpc::Status none = get(absl::StrCat(kOwner, "/no-such-vm"));
  EXPECT_EQ(theirs.error_code(), StatusCode::NOT_FOUND);
  EXPECT_EQ(none.error_code(), StatusCode::NOT_FOUND);
  EXPECT_EQ(theirs.error_message(), "container_id: no container named \"acme/secret-vm\"");
  EXPECT_EQ(none.error_message(), "container_id: no container named \"acme/no-such-vm\"");
  grpc::Status bare = get("secret-vm");
  EXPECT_EQ(bare.error_code(), StatusCode::NOT_FOUND);
  EXPECT_EQ(bare.error_message(),
            "container_id: no container named \"secret-vm\" in tenant \"other\"");
  // The owner reaches it by the same name.
  v1::GetContainerRequest req;
  req.set_container_id("secret-vm");
  v1::Container out;
  grpc::Status own = Invoke(BrokerAs(kOwningTenant).get(), &v1::Broker::Stub::GetContainer, req, &out);
  EXPECT_TRUE(own.ok()) << own.error_message();
  EXPECT_EQ(out.id(), c);
  DeleteContainer(c);
}

// Refusals name the rule.
TEST_F(AuthzTest, RefusalsSayWhy) {
  v1::ListContainersRequest req;
  req.set_tenant_id(kOwner);
  v1::ListContainersResponse out;
  grpc::Status s =
      Invoke(BrokerAs(kOtherTenant).get(), &v1::Broker::Stub::ListContainers, req, &out);
  EXPECT_EQ(s.error_code(), StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(s.error_message(),
            "tenant_id: tenant/other may only name its own tenant \"other\", not \"acme\"");

  v1::RegisterRequest reg;
  reg.set_node("node-1");
  v1::RegisterResponse r;
  s = Invoke(RegistryAs(kAgentOfOtherNode).get(), &v1::NodeRegistry::Stub::Register, reg, &r);
  EXPECT_EQ(s.error_code(), StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(s.error_message(),
            "node: agent/node-2 may only act for node \"node-2\", not \"node-1\"");
}

// A hostile caller's long values: a malformed tenant name is INVALID_ARGUMENT
// naming the rule (before any authorization, so it tells nothing), and every
// refusal repeats at most the start of a value. The message stays readable
// by the client (a longer one would pass gRPC's metadata limit and arrive as
// RESOURCE_EXHAUSTED) and the broker's log lines stay bounded.
TEST_F(AuthzTest, LongValuesAreRefusedWithBoundedMessagesAndLogLines) {
  const std::string huge(100000, 'a');
  auto other = BrokerAs(kOtherTenant);

  v1::ListContainersRequest list;
  list.set_tenant_id(huge);
  v1::ListContainersResponse listed;
  grpc::Status s = Invoke(other.get(), &v1::Broker::Stub::ListContainers, list, &listed);
  EXPECT_EQ(s.error_code(), StatusCode::INVALID_ARGUMENT) << s.error_message();
  EXPECT_EQ(s.error_message(), "tenant_id: at most 63 characters");

  v1::ListEventsRequest events;
  events.mutable_object()->set_kind(v1::OBJECT_KIND_TENANT);
  v1::ListEventsResponse got;
  s = Invoke(other.get(), &v1::Broker::Stub::ListEvents, events, &got);
  EXPECT_EQ(s.error_code(), StatusCode::INVALID_ARGUMENT) << s.error_message();
  EXPECT_EQ(s.error_message(), "object.id: required");

  for (int i = 0; i < 20; ++i) {
    v1::GetContainerRequest get;
    get.set_container_id(absl::StrCat(kOwner, "/", huge));
    v1::Container out;
    s = Invoke(other.get(), &v1::Broker::Stub::GetContainer, get, &out);
    ASSERT_EQ(s.error_code(), StatusCode::NOT_FOUND) << s.error_message().substr(0, 200);
    EXPECT_EQ(s.error_message(), absl::StrCat("container_id: no container named \"acme/",
                                              huge.substr(0, 59), "...\" (100005 bytes)"));
  }
  // The same shape of refusal from a tenant's own name lookups.
  v1::AllocateWindowRequest alloc;
  alloc.set_container_id(huge);
  alloc.set_size(1 << 20);
  v1::Window w;
  s = Invoke(BrokerAs(kOwningTenant).get(), &v1::Broker::Stub::AllocateWindow, alloc, &w);
  EXPECT_NE(s.error_code(), StatusCode::OK);
  EXPECT_NE(s.error_code(), StatusCode::RESOURCE_EXHAUSTED) << s.error_message().substr(0, 200);
  EXPECT_LE(s.error_message().size(), 512u) << s.error_message().substr(0, 200);

  // Refusals are logged at a bounded rate per caller, so earlier tests may
  // have used this one's; whatever was logged is bounded (common/log_test
  // shows every value is).
  size_t longest = 0;
  for (absl::string_view line : absl::StrSplit(cluster_->broker().Log(), '\n')) {
    longest = std::max(longest, line.size());
  }
  EXPECT_LT(longest, 8192u) << "a log line repeats a caller's value at length";
}

// A device another tenant's container holds is refused without that
// container's id; its own tenant and operators get the id.
TEST_F(AuthzTest, AHeldDeviceNamesItsHolderOnlyToItsTenantAndOperators) {
  const std::string c = NewContainer(kOwner);
  v1::GetContainerRequest get;
  get.set_container_id(c);
  v1::Container held;
  ASSERT_TRUE(
      Invoke(cluster_->BrokerStub().get(), &v1::Broker::Stub::GetContainer, get, &held).ok());
  ASSERT_EQ(held.devices_size(), 1);
  const auto create_on = [&](Caller as, const char* tenant) {
    v1::CreateContainerRequest req;
    req.set_tenant_id(tenant);
    req.set_node(held.node());
    req.add_devices(held.devices(0));
    req.set_pin_budget_bytes(4096);
    v1::Container out;
    return Invoke(BrokerAs(as).get(), &v1::Broker::Stub::CreateContainer, req, &out);
  };
  const std::string prefix = absl::StrCat("devices[0]: device ", held.devices(0), " is held by ");
  grpc::Status s = create_on(kOtherTenant, kOther);
  EXPECT_EQ(s.error_code(), StatusCode::FAILED_PRECONDITION);
  EXPECT_EQ(s.error_message(), prefix + "another tenant's container");
  s = create_on(kOwningTenant, kOwner);
  EXPECT_EQ(s.error_code(), StatusCode::FAILED_PRECONDITION);
  EXPECT_EQ(s.error_message(), prefix + "container " + c);
  s = create_on(kOperator, kOther);
  EXPECT_EQ(s.error_code(), StatusCode::FAILED_PRECONDITION);
  EXPECT_EQ(s.error_message(), prefix + "container " + c);
  DeleteContainer(c);
}

// Nodes are for operators to list: a tenant asking for its usage on a node
// gets the same answer whether the node exists or not.
TEST_F(AuthzTest, ATenantsUsageByNodeDoesNotTellWhichNodesExist) {
  auto other = BrokerAs(kOtherTenant);
  const auto usage_on = [&](const std::string& node, v1::GetUsageResponse* out) {
    v1::GetUsageRequest req;
    req.set_node(node);
    return Invoke(other.get(), &v1::Broker::Stub::GetUsage, req, out);
  };
  v1::GetUsageResponse real, made_up;
  grpc::Status s = usage_on("node-2", &real);
  ASSERT_TRUE(s.ok()) << s.error_message();
  s = usage_on("node-9", &made_up);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(real.SerializeAsString(), made_up.SerializeAsString());
  // An operator is told.
  v1::GetUsageRequest req;
  req.set_node("node-9");
  v1::GetUsageResponse out;
  EXPECT_EQ(
      Invoke(cluster_->BrokerStub().get(), &v1::Broker::Stub::GetUsage, req, &out).error_code(),
      StatusCode::NOT_FOUND);
}

// The two forms of placement do not mix, and a selector's ids are PCI ids.
TEST_F(AuthzTest, CreateContainerRefusesAMixedOrOutOfRangePlacement) {
  auto owner = BrokerAs(kOwningTenant);
  v1::CreateContainerRequest req;
  req.set_tenant_id(kOwner);
  req.set_node("node-1");
  req.add_devices("0000:00:09.0");
  req.mutable_selector()->set_count(7);
  v1::Container out;
  grpc::Status s = Invoke(owner.get(), &v1::Broker::Stub::CreateContainer, req, &out);
  EXPECT_EQ(s.error_code(), StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(s.error_message(), "selector: either node and devices, or a selector, not both");
  req.clear_node();
  req.clear_devices();
  req.mutable_selector()->set_count(1);
  req.mutable_selector()->set_vendor_id(0x10000);
  s = Invoke(owner.get(), &v1::Broker::Stub::CreateContainer, req, &out);
  EXPECT_EQ(s.error_code(), StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(s.error_message(),
            "selector.vendor_id: a PCI vendor id is at most 0xffff, got 0x10000");
  req.mutable_selector()->set_vendor_id(0);
  req.mutable_selector()->set_device_id(0xffffffff);
  s = Invoke(owner.get(), &v1::Broker::Stub::CreateContainer, req, &out);
  EXPECT_EQ(s.error_code(), StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(s.error_message(),
            "selector.device_id: a PCI device id is at most 0xffff, got 0xffffffff");
}

// Request ids are scoped by the caller: another tenant using an id first
// neither blocks this tenant's own request with that id nor learns that it
// was used, and each caller's retry gets its own first answer.
TEST_F(AuthzTest, RequestIdsAreScopedByCaller) {
  auto make = [](Caller as, const char* tenant, v1::Container* out) {
    v1::CreateContainerRequest req;
    req.set_request_id("shared-request-1");
    req.set_tenant_id(tenant);
    req.mutable_selector()->set_count(1);
    req.set_pin_budget_bytes(1 << 20);
    return Invoke(BrokerAs(as).get(), &v1::Broker::Stub::CreateContainer, req, out);
  };
  v1::Container theirs, mine, theirs_again, mine_again;
  grpc::Status s = make(kOtherTenant, kOther, &theirs);
  ASSERT_TRUE(s.ok()) << s.error_message();
  s = make(kOwningTenant, kOwner, &mine);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_NE(mine.id(), theirs.id());
  EXPECT_EQ(mine.tenant_id(), kOwner);
  // Retries replay each caller's own answer.
  ASSERT_TRUE(make(kOtherTenant, kOther, &theirs_again).ok());
  ASSERT_TRUE(make(kOwningTenant, kOwner, &mine_again).ok());
  EXPECT_EQ(theirs_again.id(), theirs.id());
  EXPECT_EQ(mine_again.id(), mine.id());
  // The operator's id space is its own too.
  v1::Container op;
  s = make(kOperator, kOwner, &op);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_NE(op.id(), mine.id());
  DeleteContainer(theirs.id());
  DeleteContainer(mine.id());
  DeleteContainer(op.id());
}

// Only URI SANs carry an identity: a certificate from the trusted CA whose
// spiffe:// name is a DNS or email SAN is nobody.
TEST_F(AuthzTest, SpiffeIdOnlyFromUriSans) {
  const std::string dir = cluster_->certs_dir();
  auto issue = [&](const std::string& stem, const std::string& san) {
    const std::string ext = absl::StrCat(dir, "/", stem, ".ext");
    std::string script = absl::StrCat(
        "set -e; printf '%s\\n' 'basicConstraints=critical,CA:FALSE' "
        "'keyUsage=critical,digitalSignature,keyEncipherment' "
        "'extendedKeyUsage=serverAuth,clientAuth' 'subjectAltName=", san, "' > ", ext,
        "; openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -sha256 "
        "-subj /CN=", stem, " -keyout ", dir, "/", stem, ".key -out ", dir, "/", stem,
        ".csr 2>/dev/null; openssl x509 -req -in ", dir, "/", stem, ".csr -CA ", dir,
        "/ca.crt -CAkey ", dir, "/ca.key -CAcreateserial -days 1 -sha256 -extfile ", ext,
        " -out ", dir, "/", stem, ".crt 2>/dev/null");
    testing::CommandResult r = RunCommand({"/bin/sh", "-c", script});
    ASSERT_EQ(r.exit_code, 0) << r.err;
  };
  issue("dns-spiffe", "DNS:spiffe://iommu.local/operator/admin");
  issue("email-spiffe", "email:spiffe://iommu.local/operator/admin");
  issue("dns-and-uri", "DNS:spiffe://iommu.local/operator/admin,URI:spiffe://iommu.local/tenant/other");
  auto as = [&](const std::string& stem) {
    TransportConfig t = cluster_->ClientConfig("");
    t.cert_file = absl::StrCat(dir, "/", stem, ".crt");
    t.key_file = absl::StrCat(dir, "/", stem, ".key");
    return v1::Broker::NewStub(
        cluster_->ChannelAs(cluster_->broker_address(), t, Identity{Role::kBroker, ""}));
  };
  v1::ListTenantsRequest req;
  v1::ListTenantsResponse out;
  for (const char* stem : {"dns-spiffe", "email-spiffe"}) {
    grpc::Status s = Invoke(as(stem).get(), &v1::Broker::Stub::ListTenants, req, &out);
    EXPECT_EQ(s.error_code(), StatusCode::UNAUTHENTICATED) << stem;
    EXPECT_EQ(s.error_message(),
              "peer certificate: must carry exactly one spiffe:// SAN URI, found 0")
        << stem;
  }
  // With a URI SAN as well, the URI is who it is: a tenant, not an operator.
  grpc::Status s = Invoke(as("dns-and-uri").get(), &v1::Broker::Stub::ListTenants, req, &out);
  EXPECT_EQ(s.error_code(), StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(s.error_message(), "ListTenants: needs the operator role; caller is tenant/other");
}

// A standby replica forwards calls to the leader over its own connection,
// naming the caller in metadata (server/caller_identity.h). Only a peer with
// the broker's certificate may do that; the leader then treats the call as
// the named caller's, with that caller's rights, never the broker's.
TEST_F(AuthzTest, OnlyABrokerReplicaMayCallOnBehalfOfAnother) {
  auto list_tenants = [](Caller as, const std::string& on_behalf_of) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    ctx.AddMetadata("iommu-forwarded-for", on_behalf_of);
    ctx.AddMetadata("iommu-forwarded-by", "replica-x");
    v1::ListTenantsResponse out;
    return BrokerAs(as)->ListTenants(&ctx, v1::ListTenantsRequest(), &out);
  };
  const std::string admin = "spiffe://iommu.local/operator/admin";
  grpc::Status s = list_tenants(kOwningTenant, admin);
  EXPECT_EQ(s.error_code(), StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(s.error_message(),
            "iommu-forwarded-for: only a broker replica may call on behalf of another identity, "
            "not tenant/" +
                std::string(kOwner));
  s = list_tenants(kAgentOfNode, admin);
  EXPECT_EQ(s.error_code(), StatusCode::UNAUTHENTICATED) << s.error_message();
  // From the broker, the named caller is who calls: an operator may list
  // tenants, another tenant may not.
  s = list_tenants(kBrokerCert, admin);
  EXPECT_TRUE(s.ok()) << s.error_message();
  s = list_tenants(kBrokerCert, "spiffe://iommu.local/tenant/" + std::string(kOther));
  EXPECT_EQ(s.error_code(), StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(s.error_message(),
            "ListTenants: needs the operator role; caller is tenant/" + std::string(kOther));
  s = list_tenants(kBrokerCert, "spiffe://elsewhere.example/operator/admin");
  EXPECT_EQ(s.error_code(), StatusCode::UNAUTHENTICATED) << s.error_message();
}

}  // namespace
}  // namespace iommu
