// Unit tests of the broker's logic against a FakeStore and a fake agent
// client: placement, quotas, idempotency, liveness, reload, and that every
// refused request changes nothing.
#include "server/broker.h"

#include <map>
#include <memory>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/synchronization/mutex.h"
#include "common/grant_token.h"
#include "common/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/fake_store.h"
#include "server/test_nodes.h"

namespace iommu {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

// An in-memory stand-in for node agents: remembers containers per address
// and can be told to fail.
class FakeAgents final : public AgentClient {
 public:
  absl::StatusOr<v1::AgentContainer> CreateContainer(
      const AgentEndpoint& agent, const v1::AgentCreateContainerRequest& req) override {
    absl::MutexLock l(&mu_);
    ++creates_;
    if (!next_error_.ok()) {
      absl::Status s = next_error_;
      next_error_ = absl::OkStatus();
      return s;
    }
    v1::AgentContainer c;
    c.set_id(req.container_id());
    c.set_tenant_id(req.tenant_id());
    *c.mutable_devices() = req.devices();
    auto* g = c.mutable_geometry();
    auto* r1 = g->add_usable_ranges();
    r1->set_start(0);
    r1->set_last(0xfedfffff);
    auto* r2 = g->add_usable_ranges();
    r2->set_start(0xfef00000);
    r2->set_last(0x7fffffffffULL);
    g->set_page_size_bitmap(0x40201000);
    g->set_max_mappings(65535);
    held_[agent.address].insert(req.container_id());
    return c;
  }
  absl::Status DestroyContainer(const AgentEndpoint& agent, const std::string& id) override {
    absl::MutexLock l(&mu_);
    ++destroys_;
    if (!next_error_.ok()) {
      absl::Status s = next_error_;
      next_error_ = absl::OkStatus();
      return s;
    }
    if (!held_[agent.address].erase(id)) return absl::NotFoundError("container_id: unknown");
    return absl::OkStatus();
  }
  absl::Status SetPinBudgets(const AgentEndpoint& agent,
                             const v1::SetPinBudgetsRequest& req) override {
    absl::MutexLock l(&mu_);
    for (const auto& b : req.budgets()) pushed_[b.container_id()] = b.pin_budget_bytes();
    return absl::OkStatus();
  }
  absl::Status SetWindows(const AgentEndpoint& agent, const v1::SetWindowsRequest& req) override {
    absl::MutexLock l(&mu_);
    windows_[req.windows().container_id()] = req.windows();
    return absl::OkStatus();
  }
  v1::ContainerWindows windows(const std::string& id) {
    absl::MutexLock l(&mu_);
    return windows_[id];
  }
  std::map<std::string, uint64_t> pushed() {
    absl::MutexLock l(&mu_);
    return pushed_;
  }
  void set_next_error(absl::Status s) {
    absl::MutexLock l(&mu_);
    next_error_ = std::move(s);
  }
  std::set<std::string> held(const std::string& address) {
    absl::MutexLock l(&mu_);
    return held_[address];
  }
  int creates() {
    absl::MutexLock l(&mu_);
    return creates_;
  }
  int destroys() {
    absl::MutexLock l(&mu_);
    return destroys_;
  }

 private:
  absl::Mutex mu_;
  std::map<std::string, std::set<std::string>> held_ ABSL_GUARDED_BY(mu_);
  absl::Status next_error_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, uint64_t> pushed_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, v1::ContainerWindows> windows_ ABSL_GUARDED_BY(mu_);
  int creates_ ABSL_GUARDED_BY(mu_) = 0;
  int destroys_ ABSL_GUARDED_BY(mu_) = 0;
};

v1::Device Dev(const std::string& addr, uint32_t group, uint32_t vendor = 0x1234,
               uint32_t device = 0x11e8, bool assignable = true) {
  v1::Device d;
  d.set_address(addr);
  d.set_iommu_group(group);
  d.set_vendor_id(vendor);
  d.set_device_id(device);
  d.set_driver("vfio-pci");
  d.set_assignable(assignable);
  if (!assignable) d.set_unassignable_reason("group member bound to a host driver");
  return d;
}

class BrokerTest : public ::testing::Test {
 protected:
  void SetUp() override { Restart(); }

  void Restart(int64_t liveness_check_interval_ms = 0, int64_t max_remembered = 1000000) {
    broker_.reset();
    BrokerOptions o;
    o.node_timeout_ms = 5000;
    o.liveness_check_interval_ms = liveness_check_interval_ms;
    o.max_remembered_answers_per_caller = max_remembered;
    o.now_ms = [this] { return now_ms_; };
    auto b = Broker::Create(&store_, &agents_, o);
    ASSERT_TRUE(b.ok()) << b.status();
    broker_ = std::move(*b);
  }

  // Returns the node's session id.
  std::string RegisterNode(const std::string& name, const std::vector<v1::Device>& devices,
                           v1::RegisterResponse* out = nullptr) {
    absl::StatusOr<v1::RegisterResponse> resp = RegisterReadyNode(broker_.get(), name, devices);
    EXPECT_OK(resp);
    if (!resp.ok()) return "";
    if (out) *out = *resp;
    return resp->session_id();
  }

  void CreateTenant(const std::string& id, uint32_t max_containers = 0, uint64_t window_bytes = 0) {
    v1::CreateTenantRequest req;
    req.set_tenant_id(id);
    req.mutable_quota()->set_pinned_bytes(1ULL << 30);
    req.mutable_quota()->set_max_containers(max_containers);
    req.mutable_quota()->set_window_bytes(window_bytes);
    v1::Tenant t;
    ASSERT_TRUE(broker_->CreateTenant(req, &t).ok());
  }

  absl::StatusOr<v1::Container> Create(const std::string& tenant, const std::string& node,
                                       std::vector<std::string> devices,
                                       const std::string& request_id = "") {
    v1::CreateContainerRequest req;
    req.set_request_id(request_id);
    req.set_tenant_id(tenant);
    req.set_node(node);
    for (auto& d : devices) req.add_devices(d);
    v1::Container c;
    absl::Status s = broker_->CreateContainer(req, &c);
    if (!s.ok()) return s;
    return c;
  }

  absl::StatusOr<v1::Container> Place(const std::string& tenant, uint32_t vendor, uint32_t count) {
    v1::CreateContainerRequest req;
    req.set_tenant_id(tenant);
    req.mutable_selector()->set_vendor_id(vendor);
    req.mutable_selector()->set_count(count);
    v1::Container c;
    absl::Status s = broker_->CreateContainer(req, &c);
    if (!s.ok()) return s;
    return c;
  }

  absl::StatusOr<v1::Window> Allocate(const std::string& container, uint64_t size,
                                      uint64_t alignment = 0, bool fixed = false,
                                      uint64_t base = 0) {
    v1::AllocateWindowRequest req;
    req.set_container_id(container);
    req.set_size(size);
    req.set_alignment(alignment);
    req.set_fixed_base(fixed);
    req.set_base(base);
    v1::Window w;
    absl::Status s = broker_->AllocateWindow(req, &w);
    if (!s.ok()) return s;
    return w;
  }

  // Everything a client can observe plus everything persisted.
  std::string Snapshot() {
    std::string out;
    v1::ListTenantsResponse t;
    EXPECT_TRUE(broker_->ListTenants({}, &t).ok());
    v1::ListNodesResponse n;
    EXPECT_TRUE(broker_->ListNodes({}, &n).ok());
    v1::ListContainersResponse c;
    EXPECT_TRUE(broker_->ListContainers({}, &c).ok());
    v1::ListWindowsResponse w;
    EXPECT_TRUE(broker_->ListWindows({}, &w).ok());
    out = t.DebugString() + n.DebugString() + c.DebugString() + w.DebugString();
    auto records = store_.LoadAll();
    EXPECT_TRUE(records.ok());
    for (const auto& r : *records) out += r.kind + "/" + r.id + "=" + r.value + "\n";
    return out;
  }

  int64_t now_ms_ = 1'000'000;
  FakeStore store_;
  FakeAgents agents_;
  std::unique_ptr<Broker> broker_;
};

// Between Register and Reconciled the agent is cleaning up to match the
// store: nothing is placed on the node, so a new container cannot be caught
// by that clean-up.
TEST_F(BrokerTest, NothingIsPlacedOnANodeUntilItHasReconciled) {
  CreateTenant("acme");
  v1::RegisterRequest req;
  req.set_node("n1");
  req.set_agent_address("n1:1");
  req.set_backend("sim");
  req.set_simulated(true);
  *req.add_devices() = Dev("0000:00:04.0", 5);
  v1::RegisterResponse reg;
  EXPECT_TRUE(broker_->Register(req, &reg).ok());
  v1::GetNodeRequest gn;
  gn.set_node("n1");
  v1::Node node;
  ASSERT_TRUE(broker_->GetNode(gn, &node).ok());
  EXPECT_EQ(node.state(), v1::NODE_STATE_RECONCILING);
  EXPECT_THAT(Create("acme", "n1", {"0000:00:04.0"}).status(),
              StatusIs(absl::StatusCode::kUnavailable, "is reconciling"));
  v1::CreateContainerRequest placed;
  placed.set_tenant_id("acme");
  v1::Container c;
  EXPECT_THAT(broker_->CreateContainer(placed, &c),
              StatusIs(absl::StatusCode::kResourceExhausted, ""));

  v1::ReconciledRequest rec;
  rec.set_node("n1");
  rec.set_session_id(reg.session_id());
  v1::ReconciledResponse rr;
  ASSERT_TRUE(broker_->Reconciled(rec, &rr).ok());
  ASSERT_TRUE(broker_->GetNode(gn, &node).ok());
  EXPECT_EQ(node.state(), v1::NODE_STATE_READY);
  EXPECT_TRUE(Create("acme", "n1", {"0000:00:04.0"}).ok());
}

// Devices and usage come in bounded pages that together hold everything once.
TEST_F(BrokerTest, DevicesAndUsageArePaged) {
  RegisterNode("n1", {Dev("0000:00:04.0", 4), Dev("0000:00:05.0", 5), Dev("0000:00:06.0", 6)});
  for (const char* t : {"t-a", "t-b", "t-c"}) CreateTenant(t);
  ASSERT_TRUE(Create("t-a", "n1", {"0000:00:04.0"}).ok());
  ASSERT_TRUE(Create("t-c", "n1", {"0000:00:05.0"}).ok());

  std::vector<std::string> seen;
  v1::ListDevicesRequest ld;
  ld.set_node("n1");
  ld.set_page_size(2);
  do {
    v1::ListDevicesResponse page;
    ASSERT_TRUE(broker_->ListDevices(ld, &page).ok());
    ASSERT_LE(page.devices_size(), 2);
    for (const auto& d : page.devices()) seen.push_back(d.address());
    ld.set_page_token(page.next_page_token());
  } while (!ld.page_token().empty());
  EXPECT_THAT(seen, ElementsAre("0000:00:04.0", "0000:00:05.0", "0000:00:06.0"));

  std::vector<std::string> tenants, rows;
  v1::GetUsageRequest ur;
  ur.set_page_size(2);
  do {
    v1::GetUsageResponse page;
    ASSERT_TRUE(broker_->GetUsage(ur, &page).ok());
    ASSERT_LE(page.tenants_size(), 2);
    std::set<std::string> here;
    for (const auto& t : page.tenants()) {
      tenants.push_back(t.tenant_id());
      here.insert(t.tenant_id());
    }
    // A page's node rows belong to that page's tenants only.
    for (const auto& n : page.nodes()) {
      EXPECT_TRUE(here.count(n.tenant_id())) << n.tenant_id();
      rows.push_back(n.tenant_id());
    }
    ur.set_page_token(page.next_page_token());
  } while (!ur.page_token().empty());
  EXPECT_THAT(tenants, ElementsAre("t-a", "t-b", "t-c"));
  EXPECT_THAT(rows, ElementsAre("t-a", "t-c"));

  ur.set_page_size(1001);  // Over the limit of 1000.
  v1::GetUsageResponse refused;
  EXPECT_THAT(broker_->GetUsage(ur, &refused),
              StatusIs(absl::StatusCode::kInvalidArgument, "page_size"));
  ld.set_page_token(std::string(300, 'x'));
  ld.set_page_size(0);
  v1::ListDevicesResponse unused;
  EXPECT_THAT(broker_->ListDevices(ld, &unused),
              StatusIs(absl::StatusCode::kInvalidArgument, "page_token"));
}

// A node's free device count: its assignable devices no container holds.
// Another node's holder of the same address does not count.
TEST_F(BrokerTest, ANodesFreeDeviceCountIsItsAssignableDevicesNoContainerHolds) {
  RegisterNode("n1", {Dev("0000:00:04.0", 5), Dev("0000:00:05.0", 6),
                      Dev("0000:00:06.0", 7, 0x1234, 0x11e8, /*assignable=*/false)});
  RegisterNode("n2", {Dev("0000:00:04.0", 5), Dev("0000:00:05.0", 6)});
  CreateTenant("acme");
  auto c = Create("acme", "n1", {"0000:00:04.0"});
  ASSERT_OK(c);
  auto free_counts = [&] {
    v1::ListNodesResponse nodes;
    EXPECT_OK(broker_->ListNodes({}, &nodes));
    std::vector<std::string> out;
    for (const v1::Node& n : nodes.nodes()) {
      out.push_back(absl::StrCat(n.name(), " ", n.free_device_count(), "/", n.device_count()));
    }
    return out;
  };
  EXPECT_THAT(free_counts(), ElementsAre("n1 1/3", "n2 2/2"));
  v1::DeleteContainerRequest del;
  del.set_container_id(c->id());
  v1::DeleteContainerResponse gone;
  ASSERT_OK(broker_->DeleteContainer(del, &gone));
  EXPECT_THAT(free_counts(), ElementsAre("n1 2/3", "n2 2/2"));
}

TEST_F(BrokerTest, ScenarioFromTenantToDelete) {
  RegisterNode("n1", {Dev("0000:00:04.0", 5), Dev("0000:00:05.0", 6)});
  CreateTenant("acme");
  auto c = Create("acme", "n1", {"0000:00:04.0"});
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->state(), v1::CONTAINER_STATE_READY);
  EXPECT_THAT(c->devices(), ElementsAre("0000:00:04.0"));
  EXPECT_EQ(c->geometry().usable_ranges_size(), 2);

  v1::ListDevicesRequest ldr;
  ldr.set_node("n1");
  v1::ListDevicesResponse devices;
  ASSERT_TRUE(broker_->ListDevices(ldr, &devices).ok());
  EXPECT_EQ(devices.devices(0).container_id(), c->id());
  EXPECT_EQ(devices.devices(1).container_id(), "");

  auto w1 = Allocate(c->id(), 0x200000, 0x200000);
  ASSERT_TRUE(w1.ok()) << w1.status();
  EXPECT_EQ(w1->base() % 0x200000, 0u);
  auto w2 = Allocate(c->id(), 0x1000);
  ASSERT_TRUE(w2.ok());
  EXPECT_TRUE(w2->base() + w2->size() <= w1->base() || w1->base() + w1->size() <= w2->base());

  v1::GetUsageRequest ur;
  ur.set_tenant_id("acme");
  v1::GetUsageResponse usage;
  ASSERT_TRUE(broker_->GetUsage(ur, &usage).ok());
  ASSERT_EQ(usage.tenants_size(), 1);
  EXPECT_EQ(usage.tenants(0).window_bytes(), 0x201000u);
  EXPECT_EQ(usage.tenants(0).containers(), 1u);
  ASSERT_EQ(usage.nodes_size(), 1);
  EXPECT_EQ(usage.nodes(0).node(), "n1");

  // The agent was told both windows (after the replies: pushes are queued).
  broker_->WaitForPushes();
  EXPECT_EQ(agents_.windows(c->id()).windows_size(), 2);

  v1::ReleaseWindowRequest rr;
  rr.set_window_id(w1->id());
  v1::ReleaseWindowResponse rresp;
  ASSERT_TRUE(broker_->ReleaseWindow(rr, &rresp).ok());
  // And that one is gone, so it can revoke what it held.
  broker_->WaitForPushes();
  ASSERT_EQ(agents_.windows(c->id()).windows_size(), 1);
  EXPECT_EQ(agents_.windows(c->id()).windows(0).start(), w2->base());

  v1::DeleteContainerRequest dr;
  dr.set_container_id(c->id());
  v1::DeleteContainerResponse dresp;
  ASSERT_TRUE(broker_->DeleteContainer(dr, &dresp).ok());
  EXPECT_TRUE(agents_.held("n1:1").empty());
  v1::ListWindowsResponse lw;
  ASSERT_TRUE(broker_->ListWindows({}, &lw).ok());
  EXPECT_EQ(lw.windows_size(), 0);  // w2 went with its container.

  v1::DeleteTenantRequest dt;
  dt.set_tenant_id("acme");
  v1::DeleteTenantResponse dtr;
  EXPECT_TRUE(broker_->DeleteTenant(dt, &dtr).ok());
}

TEST_F(BrokerTest, RetriedCreateTenantReturnsFirstAnswerAndCommitsOnce) {
  v1::CreateTenantRequest req;
  req.set_request_id("req-1");
  req.set_tenant_id("acme");
  req.mutable_quota()->set_pinned_bytes(4096);
  v1::Tenant first, second;
  ASSERT_TRUE(broker_->CreateTenant(req, &first).ok());
  const int commits = store_.commits();
  now_ms_ += 1000;
  ASSERT_TRUE(broker_->CreateTenant(req, &second).ok());
  EXPECT_EQ(store_.commits(), commits);
  EXPECT_EQ(first.SerializeAsString(), second.SerializeAsString());
  // Survives a restart too.
  Restart();
  v1::Tenant third;
  ASSERT_TRUE(broker_->CreateTenant(req, &third).ok());
  EXPECT_EQ(first.SerializeAsString(), third.SerializeAsString());
}

TEST_F(BrokerTest, RequestIdReusedForDifferentRequestIsRefused) {
  v1::CreateTenantRequest req;
  req.set_request_id("req-1");
  req.set_tenant_id("acme");
  req.mutable_quota()->set_pinned_bytes(4096);
  v1::Tenant t;
  ASSERT_TRUE(broker_->CreateTenant(req, &t).ok());
  req.set_tenant_id("other");
  EXPECT_THAT(broker_->CreateTenant(req, &t),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       "request_id: \"req-1\" was already used for a different request"));
}

TEST_F(BrokerTest, RetriedCreateContainerCallsAgentOnce) {
  RegisterNode("n1", {Dev("0000:00:04.0", 5)});
  CreateTenant("acme");
  auto a = Create("acme", "n1", {"0000:00:04.0"}, "create-1");
  ASSERT_TRUE(a.ok());
  auto b = Create("acme", "n1", {"0000:00:04.0"}, "create-1");
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_EQ(a->id(), b->id());
  EXPECT_EQ(agents_.creates(), 1);
  v1::ListContainersResponse l;
  ASSERT_TRUE(broker_->ListContainers({}, &l).ok());
  EXPECT_EQ(l.containers_size(), 1);
}

TEST_F(BrokerTest, RetriedDeleteAndReleaseSucceedWithoutChangingAnything) {
  RegisterNode("n1", {Dev("0000:00:04.0", 5)});
  CreateTenant("acme");
  auto c = Create("acme", "n1", {"0000:00:04.0"});
  ASSERT_TRUE(c.ok());
  auto w = Allocate(c->id(), 0x1000);
  ASSERT_TRUE(w.ok());
  v1::ReleaseWindowRequest rr;
  rr.set_request_id("rel-1");
  rr.set_window_id(w->id());
  v1::ReleaseWindowResponse rresp;
  ASSERT_TRUE(broker_->ReleaseWindow(rr, &rresp).ok());
  ASSERT_TRUE(broker_->ReleaseWindow(rr, &rresp).ok());
  rr.set_request_id("rel-2");
  EXPECT_THAT(broker_->ReleaseWindow(rr, &rresp),
              StatusIs(absl::StatusCode::kNotFound, "window_id: no window"));

  v1::DeleteContainerRequest dr;
  dr.set_request_id("del-1");
  dr.set_container_id(c->id());
  v1::DeleteContainerResponse dresp;
  ASSERT_TRUE(broker_->DeleteContainer(dr, &dresp).ok());
  const int destroys = agents_.destroys();
  ASSERT_TRUE(broker_->DeleteContainer(dr, &dresp).ok());
  EXPECT_EQ(agents_.destroys(), destroys);
}

TEST_F(BrokerTest, EveryRefusedRequestChangesNothing) {
  RegisterNode("n1", {Dev("0000:00:04.0", 5), Dev("0000:00:05.0", 6), Dev("0000:00:06.0", 7),
                      Dev("0000:00:07.0", 7), Dev("0000:00:08.0", 8, 0x8086, 0x1, false)});
  RegisterNode("n2", {Dev("0000:00:04.0", 5)});
  CreateTenant("acme", /*max_containers=*/2, /*window_bytes=*/0x400000);
  auto c = Create("acme", "n1", {"0000:00:04.0"});
  ASSERT_TRUE(c.ok());
  ASSERT_TRUE(Allocate(c->id(), 0x200000).ok());
  v1::CordonNodeRequest cordon;
  cordon.set_node("n2");
  v1::Node node;
  ASSERT_TRUE(broker_->CordonNode(cordon, &node).ok());

  const std::string before = Snapshot();
  const int agent_calls = agents_.creates();
  struct Case {
    std::string name;
    std::function<absl::Status()> call;
    absl::StatusCode code;
    std::string substr;
  };
  v1::Tenant t;
  v1::Container cont;
  v1::Window win;
  std::vector<Case> cases = {
      {"bad tenant id",
       [&] {
         v1::CreateTenantRequest r;
         r.set_tenant_id("Bad_Id");
         r.mutable_quota()->set_pinned_bytes(4096);
         return broker_->CreateTenant(r, &t);
       },
       absl::StatusCode::kInvalidArgument, "tenant_id: must start with a lowercase letter"},
      {"missing quota",
       [&] {
         v1::CreateTenantRequest r;
         r.set_tenant_id("x");
         return broker_->CreateTenant(r, &t);
       },
       absl::StatusCode::kInvalidArgument, "quota: required"},
      {"zero pinned quota",
       [&] {
         v1::CreateTenantRequest r;
         r.set_tenant_id("x");
         r.mutable_quota()->set_max_containers(1);
         return broker_->CreateTenant(r, &t);
       },
       absl::StatusCode::kInvalidArgument, "quota.pinned_bytes: required"},
      {"duplicate tenant",
       [&] {
         v1::CreateTenantRequest r;
         r.set_tenant_id("acme");
         r.mutable_quota()->set_pinned_bytes(4096);
         return broker_->CreateTenant(r, &t);
       },
       absl::StatusCode::kAlreadyExists, "tenant \"acme\" already exists"},
      {"bad request id",
       [&] {
         v1::CreateTenantRequest r;
         r.set_request_id("has space");
         r.set_tenant_id("x");
         r.mutable_quota()->set_pinned_bytes(4096);
         return broker_->CreateTenant(r, &t);
       },
       absl::StatusCode::kInvalidArgument, "request_id: only"},
      {"quota for unknown tenant",
       [&] {
         v1::SetTenantQuotaRequest r;
         r.set_tenant_id("nobody");
         r.mutable_quota()->set_pinned_bytes(4096);
         return broker_->SetTenantQuota(r, &t);
       },
       absl::StatusCode::kNotFound, "tenant_id: no tenant \"nobody\""},
      {"delete tenant with containers",
       [&] {
         v1::DeleteTenantRequest r;
         r.set_tenant_id("acme");
         v1::DeleteTenantResponse o;
         return broker_->DeleteTenant(r, &o);
       },
       absl::StatusCode::kFailedPrecondition, "still owns 1 container"},
      {"unknown node", [&] { return Create("acme", "n9", {"0000:00:05.0"}).status(); },
       absl::StatusCode::kNotFound, "node: no node \"n9\""},
      {"cordoned node", [&] { return Create("acme", "n2", {"0000:00:04.0"}).status(); },
       absl::StatusCode::kFailedPrecondition, "node: node \"n2\" is cordoned"},
      {"bad pci address", [&] { return Create("acme", "n1", {"00:05.0"}).status(); },
       absl::StatusCode::kInvalidArgument, "devices[0]: must be a PCI address"},
      {"unknown device", [&] { return Create("acme", "n1", {"0000:00:1f.0"}).status(); },
       absl::StatusCode::kNotFound, "devices[0]: node \"n1\" has no device 0000:00:1f.0"},
      {"device held", [&] { return Create("acme", "n1", {"0000:00:04.0"}).status(); },
       absl::StatusCode::kFailedPrecondition, "is held by container"},
      {"half a group", [&] { return Create("acme", "n1", {"0000:00:06.0"}).status(); },
       absl::StatusCode::kFailedPrecondition, "IOMMU group 7 also holds 0000:00:07.0"},
      {"unassignable", [&] { return Create("acme", "n1", {"0000:00:08.0"}).status(); },
       absl::StatusCode::kFailedPrecondition, "is not assignable"},
      {"device twice",
       [&] { return Create("acme", "n1", {"0000:00:05.0", "0000:00:05.0"}).status(); },
       absl::StatusCode::kInvalidArgument, "devices[1]: 0000:00:05.0 is listed twice"},
      {"unknown tenant", [&] { return Create("nobody", "n1", {"0000:00:05.0"}).status(); },
       absl::StatusCode::kNotFound, "tenant_id: no tenant"},
      {"no placement", [&] { return Place("acme", 0xdead, 1).status(); },
       absl::StatusCode::kResourceExhausted, "selector: no ready, uncordoned node"},
      {"unknown container", [&] { return Allocate("c-0000000000000000", 0x1000).status(); },
       absl::StatusCode::kNotFound, "container_id: no container"},
      {"malformed container reference", [&] { return Allocate("C_1", 0x1000).status(); },
       absl::StatusCode::kInvalidArgument,
       "container_id: expects a container id (\"c-\" and 16 hex digits), a NAME or TENANT/NAME"},
      {"unknown container name", [&] { return Allocate("c-1", 0x1000).status(); },
       absl::StatusCode::kNotFound, "container_id: no container named \"c-1\""},
      {"zero size", [&] { return Allocate(c->id(), 0).status(); },
       absl::StatusCode::kInvalidArgument, "size: must be greater than 0"},
      {"unaligned size", [&] { return Allocate(c->id(), 0x1800).status(); },
       absl::StatusCode::kInvalidArgument, "size: must be a multiple of the IOMMU page size"},
      {"bad alignment", [&] { return Allocate(c->id(), 0x1000, 0x3000).status(); },
       absl::StatusCode::kInvalidArgument, "alignment: must be a power of two"},
      {"base without fixed", [&] { return Allocate(c->id(), 0x1000, 0, false, 0x1000).status(); },
       absl::StatusCode::kInvalidArgument, "base: only allowed with fixed_base"},
      {"fixed base in msi window",
       [&] { return Allocate(c->id(), 0x1000, 0, true, 0xfee00000).status(); },
       absl::StatusCode::kFailedPrecondition, "outside the container's usable IOVA ranges"},
      {"fixed base overlapping",
       [&] { return Allocate(c->id(), 0x1000, 0, true, 0).status(); },
       absl::StatusCode::kAlreadyExists, "overlaps window"},
      {"window quota", [&] { return Allocate(c->id(), 0x400000).status(); },
       absl::StatusCode::kResourceExhausted, "would pass quota.window_bytes"},
      {"too big for the space", [&] { return Allocate(c->id(), 1ULL << 62, 0, false, 0).status(); },
       absl::StatusCode::kResourceExhausted, "quota.window_bytes"},
      {"page size too big",
       [&] {
         v1::ListTenantsRequest r;
         r.set_page_size(5000);
         v1::ListTenantsResponse o;
         return broker_->ListTenants(r, &o);
       },
       absl::StatusCode::kInvalidArgument, "page_size: at most 1000"},
      {"unknown window",
       [&] {
         v1::ReleaseWindowRequest r;
         r.set_window_id("w-0000000000000000");
         v1::ReleaseWindowResponse o;
         return broker_->ReleaseWindow(r, &o);
       },
       absl::StatusCode::kNotFound, "window_id: no window"},
      {"bad state filter",
       [&] {
         v1::ListContainersRequest r;
         r.set_state(static_cast<v1::ContainerState>(42));
         v1::ListContainersResponse o;
         return broker_->ListContainers(r, &o);
       },
       absl::StatusCode::kInvalidArgument, "state: unknown state 42"},
  };
  for (const Case& tc : cases) {
    SCOPED_TRACE(tc.name);
    EXPECT_THAT(tc.call(), StatusIs(tc.code, tc.substr));
    EXPECT_EQ(Snapshot(), before);
  }
  EXPECT_EQ(agents_.creates(), agent_calls);
}

TEST_F(BrokerTest, MaxContainersQuotaIsEnforced) {
  RegisterNode("n1", {Dev("0000:00:04.0", 5), Dev("0000:00:05.0", 6)});
  CreateTenant("acme", /*max_containers=*/1);
  ASSERT_TRUE(Create("acme", "n1", {"0000:00:04.0"}).ok());
  EXPECT_THAT(Create("acme", "n1", {"0000:00:05.0"}).status(),
              StatusIs(absl::StatusCode::kResourceExhausted,
                       "holds 1 of its 1 containers (quota.max_containers)"));
}

TEST_F(BrokerTest, LoweredQuotaBlocksNewWindowsButTakesNothingAway) {
  RegisterNode("n1", {Dev("0000:00:04.0", 5)});
  CreateTenant("acme", 0, 0x400000);
  auto c = Create("acme", "n1", {"0000:00:04.0"});
  ASSERT_TRUE(c.ok());
  ASSERT_TRUE(Allocate(c->id(), 0x200000).ok());
  v1::SetTenantQuotaRequest q;
  q.set_tenant_id("acme");
  q.mutable_quota()->set_pinned_bytes(4096);
  q.mutable_quota()->set_window_bytes(0x100000);
  v1::Tenant t;
  ASSERT_TRUE(broker_->SetTenantQuota(q, &t).ok());
  EXPECT_THAT(Allocate(c->id(), 0x1000).status(),
              StatusIs(absl::StatusCode::kResourceExhausted, "quota.window_bytes"));
  v1::ListWindowsResponse lw;
  ASSERT_TRUE(broker_->ListWindows({}, &lw).ok());
  EXPECT_EQ(lw.windows_size(), 1);
}

TEST_F(BrokerTest, AgentFailureOnCreateChangesNothing) {
  RegisterNode("n1", {Dev("0000:00:04.0", 5)});
  CreateTenant("acme");
  const std::string before = Snapshot();
  agents_.set_next_error(absl::UnavailableError("connection refused"));
  EXPECT_THAT(
      Create("acme", "n1", {"0000:00:04.0"}).status(),
      StatusIs(absl::StatusCode::kUnavailable, "node: agent of node \"n1\" did not answer"));
  EXPECT_EQ(Snapshot(), before);
  agents_.set_next_error(absl::FailedPreconditionError("devices[0]: EBUSY"));
  EXPECT_THAT(Create("acme", "n1", {"0000:00:04.0"}).status(),
              StatusIs(absl::StatusCode::kFailedPrecondition, "node \"n1\": devices[0]: EBUSY"));
  EXPECT_EQ(Snapshot(), before);
  // The device was not left reserved.
  EXPECT_TRUE(Create("acme", "n1", {"0000:00:04.0"}).ok());
}

TEST_F(BrokerTest, StoreFailureOnCreateUndoesAgentContainer) {
  RegisterNode("n1", {Dev("0000:00:04.0", 5)});
  CreateTenant("acme");
  const std::string before = Snapshot();
  store_.set_next_commit_error(absl::UnavailableError("disk full"));
  EXPECT_THAT(Create("acme", "n1", {"0000:00:04.0"}).status(),
              StatusIs(absl::StatusCode::kUnavailable, "disk full"));
  EXPECT_EQ(Snapshot(), before);
  EXPECT_TRUE(agents_.held("n1:1").empty());
  // The rollback reloaded the state: the device is offered again.
  EXPECT_OK(broker_->CheckIndexes());
  auto placed = Place("acme", 0, 1);
  ASSERT_TRUE(placed.ok()) << placed.status();
  EXPECT_THAT(placed->devices(), ElementsAre("0000:00:04.0"));
}

TEST_F(BrokerTest, StoreFailureOnWindowLeavesAllocatorUnchanged) {
  RegisterNode("n1", {Dev("0000:00:04.0", 5)});
  CreateTenant("acme");
  auto c = Create("acme", "n1", {"0000:00:04.0"});
  ASSERT_TRUE(c.ok());
  store_.set_next_commit_error(absl::UnavailableError("disk full"));
  EXPECT_THAT(Allocate(c->id(), 0x1000, 0, true, 0x1000).status(),
              StatusIs(absl::StatusCode::kUnavailable, "disk full"));
  // The range is still free.
  EXPECT_TRUE(Allocate(c->id(), 0x1000, 0, true, 0x1000).ok());
}

TEST_F(BrokerTest, PlacementPicksNodeWithMostFreeMatchingDevicesAndSkipsUnfit) {
  RegisterNode("a", {Dev("0000:00:04.0", 1)});
  RegisterNode("b", {Dev("0000:00:04.0", 1), Dev("0000:00:05.0", 2), Dev("0000:00:06.0", 3)});
  RegisterNode("c", {Dev("0000:00:04.0", 1, 0x8086, 0x10)});
  CreateTenant("acme");
  auto c1 = Place("acme", 0x1234, 1);
  ASSERT_TRUE(c1.ok()) << c1.status();
  EXPECT_EQ(c1->node(), "b");
  auto c2 = Place("acme", 0x8086, 1);
  ASSERT_TRUE(c2.ok());
  EXPECT_EQ(c2->node(), "c");
  // b has 2 free, a has 1; cordon b: the next goes to a.
  v1::CordonNodeRequest cr;
  cr.set_node("b");
  v1::Node n;
  ASSERT_TRUE(broker_->CordonNode(cr, &n).ok());
  auto c3 = Place("acme", 0x1234, 1);
  ASSERT_TRUE(c3.ok());
  EXPECT_EQ(c3->node(), "a");
  // a is full now and b is cordoned.
  EXPECT_THAT(Place("acme", 0x1234, 1).status(),
              StatusIs(absl::StatusCode::kResourceExhausted, "no ready, uncordoned node"));
}

TEST_F(BrokerTest, PlacementNeverPutsTwoContainersOnOneDevice) {
  RegisterNode("n1", {Dev("0000:00:04.0", 1), Dev("0000:00:05.0", 2), Dev("0000:00:06.0", 3)});
  CreateTenant("acme");
  std::set<std::string> used;
  for (int i = 0; i < 3; ++i) {
    auto c = Place("acme", 0, 1);
    ASSERT_TRUE(c.ok());
    for (const auto& d : c->devices()) EXPECT_TRUE(used.insert(d).second) << d;
  }
  EXPECT_THAT(Place("acme", 0, 1).status(),
              StatusIs(absl::StatusCode::kResourceExhausted, "selector"));
}

// Placement reads an index kept up to date by every change to a node (its
// devices, their holders, cordon, liveness, registration and reconcile): it
// must answer as a walk over every node would, and match a rebuild.
TEST_F(BrokerTest, PlacementFollowsEveryChangeToANode) {
  RegisterNode("a", {Dev("0000:00:04.0", 1)});
  RegisterNode("b", {Dev("0000:00:04.0", 1), Dev("0000:00:05.0", 2)});
  CreateTenant("acme");
  auto on_b = Place("acme", 0, 1);
  ASSERT_TRUE(on_b.ok()) << on_b.status();
  EXPECT_EQ(on_b->node(), "b");  // 2 free against a's 1.
  EXPECT_OK(broker_->CheckIndexes());

  // Both have 1 free now: ties go to the first by name, a.
  auto on_a = Place("acme", 0, 1);
  ASSERT_TRUE(on_a.ok());
  EXPECT_EQ(on_a->node(), "a");
  EXPECT_OK(broker_->CheckIndexes());

  // A delete frees a's device again; a cordon takes b out.
  v1::DeleteContainerRequest dr;
  dr.set_container_id(on_a->id());
  v1::DeleteContainerResponse dresp;
  ASSERT_OK(broker_->DeleteContainer(dr, &dresp));
  v1::CordonNodeRequest cr;
  cr.set_node("a");
  v1::Node n;
  ASSERT_OK(broker_->CordonNode(cr, &n));
  EXPECT_OK(broker_->CheckIndexes());
  auto second_b = Place("acme", 0, 1);
  ASSERT_TRUE(second_b.ok());
  EXPECT_EQ(second_b->node(), "b");
  EXPECT_THAT(Place("acme", 0, 1).status(),
              StatusIs(absl::StatusCode::kResourceExhausted, "no ready, uncordoned node"));
  v1::UncordonNodeRequest ur;
  ur.set_node("a");
  ASSERT_OK(broker_->UncordonNode(ur, &n));
  EXPECT_OK(broker_->CheckIndexes());

  // a falls silent: nothing goes there; it registers with a new device and
  // is still skipped until it has reconciled.
  now_ms_ += 10000;
  EXPECT_THAT(broker_->CheckLiveness(), ElementsAre("a", "b"));
  EXPECT_OK(broker_->CheckIndexes());
  EXPECT_THAT(Place("acme", 0, 1).status(), StatusIs(absl::StatusCode::kResourceExhausted, ""));
  v1::RegisterRequest req;
  req.set_node("a");
  req.set_agent_address("a:1");
  req.set_backend("sim");
  req.set_simulated(true);
  *req.add_devices() = Dev("0000:00:04.0", 1);
  *req.add_devices() = Dev("0000:00:07.0", 7);
  v1::RegisterResponse reg;
  ASSERT_OK(broker_->Register(req, &reg));
  EXPECT_OK(broker_->CheckIndexes());
  EXPECT_THAT(Place("acme", 0, 1).status(), StatusIs(absl::StatusCode::kResourceExhausted, ""));
  v1::ReconciledRequest rec;
  rec.set_node("a");
  rec.set_session_id(reg.session_id());
  v1::ReconciledResponse rr;
  ASSERT_OK(broker_->Reconciled(rec, &rr));
  EXPECT_OK(broker_->CheckIndexes());
  auto two = Place("acme", 0, 2);
  ASSERT_TRUE(two.ok()) << two.status();
  EXPECT_EQ(two->node(), "a");
  EXPECT_THAT(two->devices(), ElementsAre("0000:00:04.0", "0000:00:07.0"));
  EXPECT_OK(broker_->CheckIndexes());
}

TEST_F(BrokerTest, SilentNodeBecomesUnavailableAndReregistersWithItsContainers) {
  v1::RegisterResponse reg;
  const std::string session = RegisterNode("n1", {Dev("0000:00:04.0", 5), Dev("0000:00:05.0", 6)}, &reg);
  EXPECT_EQ(reg.desired_containers_size(), 0);
  CreateTenant("acme");
  auto c = Create("acme", "n1", {"0000:00:04.0"});
  ASSERT_TRUE(c.ok());

  now_ms_ += 4000;
  EXPECT_TRUE(broker_->CheckLiveness().empty());
  v1::HeartbeatRequest hb;
  hb.set_node("n1");
  hb.set_session_id(session);
  v1::HeartbeatResponse hbr;
  ASSERT_TRUE(broker_->Heartbeat(hb, &hbr).ok());
  now_ms_ += 5001;
  EXPECT_THAT(broker_->CheckLiveness(), ElementsAre("n1"));

  v1::GetNodeRequest gn;
  gn.set_node("n1");
  v1::Node node;
  ASSERT_TRUE(broker_->GetNode(gn, &node).ok());
  EXPECT_EQ(node.state(), v1::NODE_STATE_UNAVAILABLE);
  v1::GetContainerRequest gc;
  gc.set_container_id(c->id());
  v1::Container got;
  ASSERT_TRUE(broker_->GetContainer(gc, &got).ok());
  EXPECT_EQ(got.state(), v1::CONTAINER_STATE_NODE_UNAVAILABLE);
  EXPECT_THAT(Create("acme", "n1", {"0000:00:05.0"}).status(),
              StatusIs(absl::StatusCode::kUnavailable, "node: node \"n1\" is not heartbeating"));
  EXPECT_THAT(broker_->Heartbeat(hb, &hbr),
              StatusIs(absl::StatusCode::kFailedPrecondition, "register again"));

  // The agent comes back: it is told which containers it must hold.
  RegisterNode("n1", {Dev("0000:00:04.0", 5), Dev("0000:00:05.0", 6)}, &reg);
  ASSERT_EQ(reg.desired_containers_size(), 1);
  EXPECT_EQ(reg.desired_containers(0).id(), c->id());
  EXPECT_THAT(reg.desired_containers(0).devices(), ElementsAre("0000:00:04.0"));
  ASSERT_TRUE(broker_->GetContainer(gc, &got).ok());
  EXPECT_EQ(got.state(), v1::CONTAINER_STATE_READY);
}

TEST_F(BrokerTest, ContainerTheAgentCouldNotRecreateShowsFailedUntilItDoes) {
  v1::RegisterResponse reg;
  RegisterNode("n1", {Dev("0000:00:04.0", 5)}, &reg);
  CreateTenant("acme");
  auto c = Create("acme", "n1", {"0000:00:04.0"});
  ASSERT_TRUE(c.ok());
  v1::ReconciledRequest rec;
  rec.set_node("n1");
  rec.set_session_id(reg.session_id());
  rec.add_failed_container_ids(c->id());
  rec.add_failure_reasons("VFIO_DEVICE_BIND_IOMMUFD: device still bound");
  v1::ReconciledResponse rr;
  ASSERT_TRUE(broker_->Reconciled(rec, &rr).ok());
  v1::GetContainerRequest gc;
  gc.set_container_id(c->id());
  v1::Container got;
  ASSERT_TRUE(broker_->GetContainer(gc, &got).ok());
  EXPECT_EQ(got.state(), v1::CONTAINER_STATE_FAILED);
  EXPECT_THAT(got.status_message(), HasSubstr("could not re-create it: VFIO_DEVICE_BIND_IOMMUFD"));
  v1::ListContainersRequest lr;
  lr.set_state(v1::CONTAINER_STATE_FAILED);
  v1::ListContainersResponse listed;
  ASSERT_TRUE(broker_->ListContainers(lr, &listed).ok());
  EXPECT_EQ(listed.containers_size(), 1);
  // The agent's retry registers again and reconciles without failures.
  RegisterNode("n1", {Dev("0000:00:04.0", 5)}, &reg);
  rec.set_session_id(reg.session_id());
  rec.clear_failed_container_ids();
  rec.clear_failure_reasons();
  ASSERT_TRUE(broker_->Reconciled(rec, &rr).ok());
  ASSERT_TRUE(broker_->GetContainer(gc, &got).ok());
  EXPECT_EQ(got.state(), v1::CONTAINER_STATE_READY);
  EXPECT_EQ(got.status_message(), "");
}

TEST_F(BrokerTest, DeleteOnUnavailableNodeForgetsNowAndAgentDropsItLater) {
  RegisterNode("n1", {Dev("0000:00:04.0", 5)});
  CreateTenant("acme");
  auto c = Create("acme", "n1", {"0000:00:04.0"});
  ASSERT_TRUE(c.ok());
  now_ms_ += 10000;
  broker_->CheckLiveness();
  v1::DeleteContainerRequest dr;
  dr.set_container_id(c->id());
  v1::DeleteContainerResponse dresp;
  ASSERT_TRUE(broker_->DeleteContainer(dr, &dresp).ok());
  EXPECT_EQ(agents_.destroys(), 0);
  v1::RegisterResponse reg;
  RegisterNode("n1", {Dev("0000:00:04.0", 5)}, &reg);
  EXPECT_EQ(reg.desired_containers_size(), 0);
}

TEST_F(BrokerTest, DrainCordonsAndDeletesContainers) {
  RegisterNode("n1", {Dev("0000:00:04.0", 5), Dev("0000:00:05.0", 6)});
  CreateTenant("acme");
  ASSERT_TRUE(Create("acme", "n1", {"0000:00:04.0"}).ok());
  ASSERT_TRUE(Create("acme", "n1", {"0000:00:05.0"}).ok());
  v1::DrainNodeRequest dr;
  dr.set_node("n1");
  v1::DrainNodeResponse out;
  ASSERT_TRUE(broker_->DrainNode(dr, &out).ok());
  EXPECT_TRUE(out.node().cordoned());
  EXPECT_EQ(out.remaining_container_ids_size(), 2);
  dr.set_delete_containers(true);
  ASSERT_TRUE(broker_->DrainNode(dr, &out).ok());
  EXPECT_EQ(out.deleted_container_ids_size(), 2);
  EXPECT_EQ(out.remaining_container_ids_size(), 0);
  EXPECT_EQ(out.node().container_count(), 0u);
  EXPECT_TRUE(agents_.held("n1:1").empty());
}

TEST_F(BrokerTest, StateSurvivesRestartIncludingAllocatorOccupancy) {
  RegisterNode("n1", {Dev("0000:00:04.0", 5)});
  CreateTenant("acme");
  auto c = Create("acme", "n1", {"0000:00:04.0"});
  ASSERT_TRUE(c.ok());
  auto w = Allocate(c->id(), 0x10000, 0, true, 0x100000);
  ASSERT_TRUE(w.ok());
  v1::CordonNodeRequest cr;
  cr.set_node("n1");
  v1::Node n;
  ASSERT_TRUE(broker_->CordonNode(cr, &n).ok());
  Restart();
  v1::GetContainerRequest gc;
  gc.set_container_id(c->id());
  v1::Container got;
  ASSERT_TRUE(broker_->GetContainer(gc, &got).ok());
  EXPECT_EQ(got.window_count(), 1u);
  // Until the agent registers again the node is unavailable.
  EXPECT_EQ(got.state(), v1::CONTAINER_STATE_NODE_UNAVAILABLE);
  EXPECT_THAT(Allocate(c->id(), 0x1000, 0, true, 0x100000).status(),
              StatusIs(absl::StatusCode::kAlreadyExists, "overlaps window"));
  v1::GetNodeRequest gn;
  gn.set_node("n1");
  ASSERT_TRUE(broker_->GetNode(gn, &n).ok());
  EXPECT_TRUE(n.cordoned());
  v1::ListDevicesRequest ld;
  ld.set_node("n1");
  v1::ListDevicesResponse devs;
  ASSERT_TRUE(broker_->ListDevices(ld, &devs).ok());
  EXPECT_EQ(devs.devices(0).container_id(), c->id());
}

TEST_F(BrokerTest, ListsPageInIdOrder) {
  for (int i = 0; i < 7; ++i) CreateTenant("t" + std::to_string(i));
  v1::ListTenantsRequest req;
  req.set_page_size(3);
  std::vector<std::string> seen;
  for (int pages = 0; pages < 10; ++pages) {
    v1::ListTenantsResponse resp;
    ASSERT_TRUE(broker_->ListTenants(req, &resp).ok());
    for (const auto& t : resp.tenants()) seen.push_back(t.id());
    if (resp.next_page_token().empty()) break;
    req.set_page_token(resp.next_page_token());
  }
  EXPECT_THAT(seen, ElementsAre("t0", "t1", "t2", "t3", "t4", "t5", "t6"));
}

// Lists by node, by tenant or both walk an index, and page through exactly
// the containers a walk over all of them with the same filters would give.
TEST_F(BrokerTest, ContainerListsByNodeAndTenantPageThroughExactlyTheirOwn) {
  std::vector<v1::Device> devices;
  for (int i = 0; i < 6; ++i) devices.push_back(Dev(absl::StrFormat("0000:00:%02x.0", i), i));
  RegisterNode("n1", devices);
  RegisterNode("n2", devices);
  CreateTenant("acme");
  CreateTenant("zeta");
  // (node, tenant) -> ids, in id order.
  std::map<std::pair<std::string, std::string>, std::set<std::string>> made;
  for (int i = 0; i < 6; ++i) {
    for (const std::string node : {"n1", "n2"}) {
      const std::string tenant = i % 3 == 0 ? "zeta" : "acme";
      auto c = Create(tenant, node, {absl::StrFormat("0000:00:%02x.0", i)});
      ASSERT_TRUE(c.ok()) << c.status();
      made[{node, tenant}].insert(c->id());
    }
  }
  auto list = [&](const std::string& node, const std::string& tenant) {
    v1::ListContainersRequest req;
    req.set_node(node);
    req.set_tenant_id(tenant);
    req.set_page_size(2);
    std::vector<std::string> seen;
    for (int pages = 0; pages < 20; ++pages) {
      v1::ListContainersResponse resp;
      EXPECT_OK(broker_->ListContainers(req, &resp));
      for (const auto& c : resp.containers()) {
        if (!node.empty()) {
          EXPECT_EQ(c.node(), node);
        }
        if (!tenant.empty()) {
          EXPECT_EQ(c.tenant_id(), tenant);
        }
        seen.push_back(c.id());
      }
      if (resp.next_page_token().empty()) break;
      req.set_page_token(resp.next_page_token());
    }
    return seen;
  };
  auto want = [&](const std::string& node, const std::string& tenant) {
    std::set<std::string> ids;
    for (const auto& [key, set] : made) {
      if ((node.empty() || key.first == node) && (tenant.empty() || key.second == tenant)) {
        ids.insert(set.begin(), set.end());
      }
    }
    return std::vector<std::string>(ids.begin(), ids.end());
  };
  for (const std::string node : {"", "n1", "n2", "n3"}) {
    for (const std::string tenant : {"", "acme", "zeta", "nobody"}) {
      EXPECT_EQ(list(node, tenant), want(node, tenant)) << node << "/" << tenant;
    }
  }
}

TEST_F(BrokerTest, HeartbeatUsageShowsInUsageWithDedupSavings) {
  const std::string session = RegisterNode("n1", {Dev("0000:00:04.0", 5)});
  CreateTenant("acme");
  v1::HeartbeatRequest hb;
  hb.set_node("n1");
  hb.set_session_id(session);
  auto* u = hb.add_usage();
  u->set_tenant_id("acme");
  u->set_billed_bytes(0x10000);
  u->set_mapped_bytes(0x30000);
  v1::HeartbeatResponse hbr;
  ASSERT_TRUE(broker_->Heartbeat(hb, &hbr).ok());
  v1::GetUsageResponse usage;
  ASSERT_TRUE(broker_->GetUsage({}, &usage).ok());
  ASSERT_EQ(usage.tenants_size(), 1);
  EXPECT_EQ(usage.tenants(0).pinned_bytes(), 0x10000u);
  EXPECT_EQ(usage.tenants(0).mapped_bytes(), 0x30000u);
  EXPECT_EQ(usage.tenants(0).dedup_saved_bytes(), 0x20000u);
}

TEST_F(BrokerTest, PinBudgetsDefaultToTheUnbudgetedRestAndNeverSumPastQuota) {
  RegisterNode("n1", {Dev("0000:00:04.0", 1), Dev("0000:00:05.0", 2), Dev("0000:00:06.0", 3),
                      Dev("0000:00:07.0", 4)});
  CreateTenant("acme");  // 1 GiB pinned quota.
  v1::CreateContainerRequest req;
  req.set_tenant_id("acme");
  req.set_node("n1");
  req.add_devices("0000:00:04.0");
  req.set_pin_budget_bytes(256 << 20);
  v1::Container a, b, c;
  ASSERT_TRUE(broker_->CreateContainer(req, &a).ok());
  EXPECT_EQ(a.pin_budget_bytes(), 256u << 20);
  req.set_devices(0, "0000:00:05.0");
  req.set_pin_budget_bytes(0);
  ASSERT_TRUE(broker_->CreateContainer(req, &b).ok());
  EXPECT_EQ(b.pin_budget_bytes(), 768u << 20);
  req.set_devices(0, "0000:00:06.0");
  ASSERT_TRUE(broker_->CreateContainer(req, &c).ok());
  EXPECT_EQ(c.pin_budget_bytes(), 0u);
  req.set_devices(0, "0000:00:07.0");
  req.set_pin_budget_bytes(4096);
  EXPECT_THAT(broker_->CreateContainer(req, &c),
              StatusIs(absl::StatusCode::kResourceExhausted,
                       "pin_budget_bytes: tenant \"acme\" has 0x0 bytes of its pinned quota"));
  req.set_pin_budget_bytes(100);
  EXPECT_THAT(
      broker_->CreateContainer(req, &c),
      StatusIs(absl::StatusCode::kInvalidArgument, "pin_budget_bytes: must be a multiple of 4096"));
  // Moving budget between containers: free some, then take it.
  v1::SetContainerBudgetRequest sb;
  sb.set_container_id(b.id());
  sb.set_pin_budget_bytes(512 << 20);
  v1::Container out;
  ASSERT_TRUE(broker_->SetContainerBudget(sb, &out).ok());
  EXPECT_EQ(out.pin_budget_bytes(), 512u << 20);
  sb.set_container_id(a.id());
  sb.set_pin_budget_bytes(512 << 20);  // 256 MiB were freed by b.
  ASSERT_TRUE(broker_->SetContainerBudget(sb, &out).ok());
  sb.set_pin_budget_bytes((512 << 20) + 4096);
  EXPECT_THAT(broker_->SetContainerBudget(sb, &out),
              StatusIs(absl::StatusCode::kResourceExhausted, "available for this container"));
}

TEST_F(BrokerTest, LoweringQuotaShrinksNewestBudgetsFirstAndHeartbeatCarriesThem) {
  const std::string session =
      RegisterNode("n1", {Dev("0000:00:04.0", 1), Dev("0000:00:05.0", 2)});
  CreateTenant("acme");
  v1::CreateContainerRequest req;
  req.set_tenant_id("acme");
  req.set_node("n1");
  req.add_devices("0000:00:04.0");
  req.set_pin_budget_bytes(512 << 20);
  v1::Container older, newer;
  ASSERT_TRUE(broker_->CreateContainer(req, &older).ok());
  now_ms_ += 1;
  req.set_devices(0, "0000:00:05.0");
  req.set_pin_budget_bytes(0);
  ASSERT_TRUE(broker_->CreateContainer(req, &newer).ok());
  v1::SetTenantQuotaRequest q;
  q.set_tenant_id("acme");
  q.mutable_quota()->set_pinned_bytes(256 << 20);
  v1::Tenant t;
  ASSERT_TRUE(broker_->SetTenantQuota(q, &t).ok());
  v1::HeartbeatRequest hb;
  hb.set_node("n1");
  hb.set_session_id(session);
  v1::HeartbeatResponse hbr;
  ASSERT_TRUE(broker_->Heartbeat(hb, &hbr).ok());
  std::map<std::string, uint64_t> budgets;
  for (const auto& b : hbr.budgets()) budgets[b.container_id()] = b.pin_budget_bytes();
  EXPECT_EQ(budgets[newer.id()], 0u);
  EXPECT_EQ(budgets[older.id()], 256u << 20);
  // They were also pushed to the agent, after the reply.
  broker_->WaitForPushes();
  EXPECT_EQ(agents_.pushed(), budgets);
  // And the shrink is durable.
  Restart();
  v1::GetContainerRequest gc;
  gc.set_container_id(older.id());
  v1::Container got;
  ASSERT_TRUE(broker_->GetContainer(gc, &got).ok());
  EXPECT_EQ(got.pin_budget_bytes(), 256u << 20);
}

// A heartbeat's answer is cached per node: every change to the node's
// containers (create, budget, windows, delete, a rolled-back commit) must
// show in the next one, and nothing else's.
TEST_F(BrokerTest, HeartbeatAnswersFollowEveryChangeToTheNodesContainers) {
  const std::string s1 = RegisterNode("n1", {Dev("0000:00:04.0", 1)});
  const std::string s2 = RegisterNode("n2", {Dev("0000:00:04.0", 1)});
  CreateTenant("acme");
  // container id -> "budget:window,window" as the node's heartbeat says.
  auto beat = [&](const std::string& node, const std::string& session) {
    v1::HeartbeatRequest hb;
    hb.set_node(node);
    hb.set_session_id(session);
    v1::HeartbeatResponse r;
    EXPECT_OK(broker_->Heartbeat(hb, &r));
    std::map<std::string, std::string> out;
    for (const auto& b : r.budgets())
      out[b.container_id()] = absl::StrCat(b.pin_budget_bytes(), ":");
    for (const auto& cw : r.windows()) {
      for (const auto& w : cw.windows()) absl::StrAppend(&out[cw.container_id()], w.start(), ",");
    }
    return out;
  };
  using Beat = std::map<std::string, std::string>;
  EXPECT_EQ(beat("n1", s1), Beat{});
  auto c = Create("acme", "n1", {"0000:00:04.0"});
  ASSERT_TRUE(c.ok());
  const std::string budget = absl::StrCat(c->pin_budget_bytes());
  EXPECT_EQ(beat("n1", s1), (Beat{{c->id(), budget + ":"}}));
  EXPECT_EQ(beat("n2", s2), Beat{});

  auto w = Allocate(c->id(), 1 << 20, 0, true, 0x100000);
  ASSERT_TRUE(w.ok()) << w.status();
  EXPECT_EQ(beat("n1", s1), (Beat{{c->id(), budget + ":1048576,"}}));

  v1::SetContainerBudgetRequest sb;
  sb.set_container_id(c->id());
  sb.set_pin_budget_bytes(64 << 20);
  v1::Container changed;
  ASSERT_OK(broker_->SetContainerBudget(sb, &changed));
  EXPECT_EQ(beat("n1", s1), (Beat{{c->id(), "67108864:1048576,"}}));

  // A window whose commit fails is rolled back, and so is the answer.
  store_.set_next_commit_error(absl::UnavailableError("disk full"));
  EXPECT_FALSE(Allocate(c->id(), 1 << 20, 0, true, 0x200000).ok());
  EXPECT_EQ(beat("n1", s1), (Beat{{c->id(), "67108864:1048576,"}}));

  v1::ReleaseWindowRequest rw;
  rw.set_window_id(w->id());
  v1::ReleaseWindowResponse rwr;
  ASSERT_OK(broker_->ReleaseWindow(rw, &rwr));
  EXPECT_EQ(beat("n1", s1), (Beat{{c->id(), "67108864:"}}));

  v1::DeleteContainerRequest dr;
  dr.set_container_id(c->id());
  v1::DeleteContainerResponse dresp;
  ASSERT_OK(broker_->DeleteContainer(dr, &dresp));
  EXPECT_EQ(beat("n1", s1), Beat{});
}

TEST_F(BrokerTest, GrantLauncherSignsWithTheNodeKeyAndListsTheWindows) {
  v1::RegisterResponse reg;
  RegisterNode("n1", {Dev("0000:00:04.0", 5)}, &reg);
  ASSERT_GE(reg.grant_key().size(), 16u);
  CreateTenant("acme");
  auto c = Create("acme", "n1", {"0000:00:04.0"});
  ASSERT_TRUE(c.ok());
  auto w = Allocate(c->id(), 0x200000);
  ASSERT_TRUE(w.ok());
  v1::GrantLauncherRequest gr;
  gr.set_container_id(c->id());
  gr.set_ttl_seconds(30);
  v1::GrantLauncherResponse grant;
  ASSERT_TRUE(broker_->GrantLauncher(gr, &grant).ok());
  EXPECT_EQ(grant.node(), "n1");
  EXPECT_EQ(grant.expires_ms(), now_ms_ + 30000);
  ASSERT_EQ(grant.windows_size(), 1);
  auto verified = VerifyGrant(grant.token(), reg.grant_key(), now_ms_);
  ASSERT_TRUE(verified.ok()) << verified.status();
  EXPECT_EQ(verified->container_id(), c->id());
  EXPECT_EQ(verified->tenant_id(), "acme");
  ASSERT_EQ(verified->windows_size(), 1);
  EXPECT_EQ(verified->windows(0).base(), w->base());
  EXPECT_EQ(VerifyGrant(grant.token(), "another key that is long enough", now_ms_).status().code(),
            absl::StatusCode::kUnauthenticated);
  // The key survives a broker restart, so tokens handed out stay valid.
  Restart();
  v1::RegisterResponse again;
  RegisterNode("n1", {Dev("0000:00:04.0", 5)}, &again);
  EXPECT_EQ(again.grant_key(), reg.grant_key());
  gr.set_ttl_seconds(3601);
  EXPECT_THAT(broker_->GrantLauncher(gr, &grant),
              StatusIs(absl::StatusCode::kInvalidArgument, "ttl_seconds: at most 3600"));
  gr.set_ttl_seconds(0);
  now_ms_ += 10000;
  broker_->CheckLiveness();
  EXPECT_THAT(broker_->GrantLauncher(gr, &grant),
              StatusIs(absl::StatusCode::kUnavailable, "is not heartbeating"));
}


// A broker that could not run (SIGSTOP, starvation) could not take
// heartbeats either: that time is not the nodes' silence.
TEST_F(BrokerTest, BrokerPauseDoesNotCountAsNodeSilence) {
  Restart(/*liveness_check_interval_ms=*/250);
  v1::RegisterResponse reg;
  const std::string session = RegisterNode("n1", {Dev("0000:00:04.0", 5)}, &reg);
  EXPECT_TRUE(broker_->CheckLiveness().empty());
  now_ms_ += 8000;  // Stopped for 8 s, longer than node_timeout_ms.
  EXPECT_TRUE(broker_->CheckLiveness().empty());
  // Running again: the node has the full timeout to be heard from.
  for (int i = 0; i < 19; ++i) {
    now_ms_ += 250;
    EXPECT_TRUE(broker_->CheckLiveness().empty()) << i;
  }
  v1::HeartbeatRequest hb;
  hb.set_node("n1");
  hb.set_session_id(session);
  v1::HeartbeatResponse hbr;
  ASSERT_TRUE(broker_->Heartbeat(hb, &hbr).ok());
  // Silence while the broker runs still counts.
  for (int i = 0; i < 20; ++i) {
    now_ms_ += 250;
    EXPECT_TRUE(broker_->CheckLiveness().empty()) << i;
  }
  now_ms_ += 250;
  EXPECT_THAT(broker_->CheckLiveness(), ElementsAre("n1"));
}

// A late check while heartbeats got through (only the checking thread was
// starved) is no pause: a node silent all that time is still noticed.
TEST_F(BrokerTest, LateLivenessCheckWhileHeartbeatsFlowedIsNoPause) {
  Restart(/*liveness_check_interval_ms=*/250);
  const std::string a = RegisterNode("a", {Dev("0000:00:04.0", 5)});
  RegisterNode("b", {Dev("0000:00:05.0", 6)});
  EXPECT_TRUE(broker_->CheckLiveness().empty());
  v1::HeartbeatRequest hb;
  hb.set_node("a");
  hb.set_session_id(a);
  v1::HeartbeatResponse hbr;
  for (int i = 0; i < 8; ++i) {  // a keeps heartbeating, b has gone quiet.
    now_ms_ += 1000;
    ASSERT_TRUE(broker_->Heartbeat(hb, &hbr).ok());
  }
  EXPECT_THAT(broker_->CheckLiveness(), ElementsAre("b"));
}

TEST_F(BrokerTest, WindowsPerContainerAreBoundedAndEveryGrantFitsAToken) {
  // The longest names the validation rules allow.
  const std::string node(63, 'n');
  const std::string tenant = "t" + std::string(62, 'x');
  v1::RegisterResponse reg;
  RegisterNode(node, {Dev("0000:00:04.0", 5)}, &reg);
  CreateTenant(tenant);
  auto c = Create(tenant, node, {"0000:00:04.0"});
  ASSERT_TRUE(c.ok()) << c.status();
  // High, widely spaced windows (GrantSizeTest checks the widest fields).
  for (size_t i = 0; i < kMaxWindowsPerContainer; ++i) {
    auto w = Allocate(c->id(), 0x1000, 0, /*fixed=*/true, 0x7f00000000ULL + i * 0x2000000ULL);
    ASSERT_TRUE(w.ok()) << i << ": " << w.status();
  }
  EXPECT_THAT(Allocate(c->id(), 0x1000).status(),
              StatusIs(absl::StatusCode::kResourceExhausted,
                       "already holds 48 windows, the most a container may hold (48)"));
  v1::GrantLauncherRequest gr;
  gr.set_container_id(c->id());
  v1::GrantLauncherResponse grant;
  ASSERT_TRUE(broker_->GrantLauncher(gr, &grant).ok());
  EXPECT_EQ(grant.windows_size(), static_cast<int>(kMaxWindowsPerContainer));
  EXPECT_LE(grant.token().size(), kMaxGrantTokenBytes);
  auto verified = VerifyGrant(grant.token(), reg.grant_key(), now_ms_);
  ASSERT_TRUE(verified.ok()) << verified.status();
  EXPECT_EQ(verified->windows_size(), static_cast<int>(kMaxWindowsPerContainer));
}

// Grants are bound to the agent run that registered, so its restart (a new
// incarnation) voids tokens used before it.
TEST_F(BrokerTest, GrantsCarryTheRegisteredAgentIncarnation) {
  v1::RegisterRequest req;
  req.set_node("n1");
  req.set_agent_address("n1:1");
  *req.add_devices() = Dev("0000:00:04.0", 5);
  req.set_agent_incarnation("not hex");
  v1::RegisterResponse reg;
  EXPECT_THAT(
      broker_->Register(req, &reg),
      StatusIs(absl::StatusCode::kInvalidArgument, "agent_incarnation: 32 lower-case hex digits"));
  req.set_agent_incarnation(std::string(32, 'a'));
  ASSERT_TRUE(broker_->Register(req, &reg).ok());
  v1::ReconciledRequest rec;
  rec.set_node("n1");
  rec.set_session_id(reg.session_id());
  v1::ReconciledResponse unused;
  ASSERT_TRUE(broker_->Reconciled(rec, &unused).ok());
  CreateTenant("acme");
  auto c = Create("acme", "n1", {"0000:00:04.0"});
  ASSERT_TRUE(c.ok());
  v1::GrantLauncherRequest gr;
  gr.set_container_id(c->id());
  v1::GrantLauncherResponse grant;
  ASSERT_TRUE(broker_->GrantLauncher(gr, &grant).ok());
  auto verified = VerifyGrant(grant.token(), reg.grant_key(), now_ms_);
  ASSERT_TRUE(verified.ok());
  EXPECT_EQ(verified->agent_incarnation(), std::string(32, 'a'));
  // The agent restarts: new incarnation, and it reconciles again.
  req.set_agent_incarnation(std::string(32, 'b'));
  ASSERT_TRUE(broker_->Register(req, &reg).ok());
  EXPECT_THAT(broker_->GrantLauncher(gr, &grant),
              StatusIs(absl::StatusCode::kUnavailable, "is reconciling after registering; retry"));
  rec.set_session_id(reg.session_id());
  *rec.add_containers() = reg.desired_containers(0);
  ASSERT_TRUE(broker_->Reconciled(rec, &unused).ok());
  ASSERT_TRUE(broker_->GrantLauncher(gr, &grant).ok());
  verified = VerifyGrant(grant.token(), reg.grant_key(), now_ms_);
  ASSERT_TRUE(verified.ok());
  EXPECT_EQ(verified->agent_incarnation(), std::string(32, 'b'));
}


// A failed commit whose rollback cannot reload the store leaves memory that
// matches nothing durable: the broker refuses every answer and commit from
// then on (the daemon then stops), instead of aborting.
TEST_F(BrokerTest, UnreloadableStoreAfterFailedCommitFailsClosedWithoutAborting) {
  RegisterNode("n1", {Dev("0000:00:04.0", 5)});
  CreateTenant("acme");
  EXPECT_TRUE(broker_->Unrecoverable().ok());
  store_.set_next_commit_error(absl::UnavailableError("disk full"));
  store_.set_next_load_error(absl::DataLossError("page 7: checksum mismatch"));
  v1::CreateTenantRequest req;
  req.set_tenant_id("globex");
  req.mutable_quota()->set_pinned_bytes(1 << 20);
  v1::Tenant t;
  EXPECT_THAT(broker_->CreateTenant(req, &t),
              StatusIs(absl::StatusCode::kUnavailable, "disk full"));
  EXPECT_THAT(broker_->Unrecoverable(),
              StatusIs(absl::StatusCode::kUnavailable,
                       "could not be reloaded from the store after a failed commit (page 7"));
  // Reads and further mutations are refused with the same reason.
  v1::GetTenantRequest get;
  get.set_tenant_id("acme");
  EXPECT_THAT(broker_->GetTenant(get, &t),
              StatusIs(absl::StatusCode::kUnavailable, "it is restarting"));
  req.set_tenant_id("initech");
  EXPECT_THAT(broker_->CreateTenant(req, &t),
              StatusIs(absl::StatusCode::kUnavailable, "it is restarting"));
}


// The two-step delete: a node, a tenant and one container, and the calls
// the delete tests make.
class DeleteTest : public BrokerTest {
 protected:
  void SetUp() override {
    BrokerTest::SetUp();
    RegisterNode("n1", {Dev("0000:00:04.0", 5)});
    CreateTenant("acme");
    auto c = Create("acme", "n1", {"0000:00:04.0"});
    ASSERT_TRUE(c.ok());
    id_ = c->id();
  }
  absl::Status Delete() {
    v1::DeleteContainerRequest req;
    req.set_container_id(id_);
    v1::DeleteContainerResponse out;
    return broker_->DeleteContainer(req, &out);
  }
  absl::StatusOr<v1::Container> Get() {
    v1::GetContainerRequest req;
    req.set_container_id(id_);
    v1::Container out;
    absl::Status s = broker_->GetContainer(req, &out);
    if (!s.ok()) return s;
    return out;
  }
  std::string id_;
};

// A delete commits its intent before the agent destroys anything: a delete
// the store refuses leaves the container on its agent, and one interrupted
// after the destroy is finished when the agent registers without it.
TEST_F(DeleteTest, CommitsItsIntentBeforeTheAgentDestroys) {
  store_.set_next_commit_error(absl::ResourceExhaustedError("disk full"));
  EXPECT_THAT(Delete(), StatusIs(absl::StatusCode::kResourceExhausted, "disk full"));
  EXPECT_EQ(agents_.destroys(), 0);
  EXPECT_EQ(agents_.held("n1:1").count(id_), 1u);
  ASSERT_TRUE(Get().ok());
  EXPECT_EQ(Get()->state(), v1::CONTAINER_STATE_READY);

  // The intent commits, the destroy happens, the removal is refused: the
  // container shows DELETING and takes no new windows.
  store_.set_commit_error_after(1, absl::ResourceExhaustedError("disk full"));
  EXPECT_THAT(Delete(),
              StatusIs(absl::StatusCode::kResourceExhausted, "stays DELETING: repeat the delete"));
  EXPECT_EQ(agents_.held("n1:1").count(id_), 0u);
  ASSERT_TRUE(Get().ok());
  EXPECT_EQ(Get()->state(), v1::CONTAINER_STATE_DELETING);
  EXPECT_THAT(Allocate(id_, 0x1000).status(),
              StatusIs(absl::StatusCode::kFailedPrecondition, "is being deleted"));
  // The scrape counts it as its view shows it, from the maintained indexes.
  EXPECT_EQ(broker_->Stats().containers_deleting, 1);
  EXPECT_EQ(broker_->Stats().containers_ready, 0);
  EXPECT_TRUE(broker_->CheckIndexes().ok()) << broker_->CheckIndexes();

  // After a restart the agent registers without it: the delete is finished,
  // and the agent is not asked to re-create it.
  Restart();
  EXPECT_EQ(broker_->Stats().containers_deleting, 1);  // Persisted.
  EXPECT_EQ(broker_->Stats().containers_node_unavailable, 0);
  v1::RegisterResponse reg;
  RegisterNode("n1", {Dev("0000:00:04.0", 5)}, &reg);
  EXPECT_EQ(reg.desired_containers_size(), 0);
  EXPECT_THAT(Get().status(), StatusIs(absl::StatusCode::kNotFound, "no container"));
}

// An agent that still holds a DELETING container keeps it (its guest's DMA
// is cut only by a delete request's own destroy); repeating the delete
// finishes it.
TEST_F(DeleteTest, ContainerTheAgentStillHoldsIsKeptUntilTheDeleteIsRepeated) {
  agents_.set_next_error(absl::UnavailableError("agent stalled"));
  EXPECT_FALSE(Delete().ok());
  ASSERT_TRUE(Get().ok());
  EXPECT_EQ(Get()->state(), v1::CONTAINER_STATE_DELETING);
  EXPECT_EQ(broker_->Stats().containers_deleting, 1);
  EXPECT_TRUE(broker_->CheckIndexes().ok()) << broker_->CheckIndexes();
  // The agent re-registers still holding it: it stays desired.
  v1::RegisterRequest req;
  req.set_node("n1");
  req.set_agent_address("n1:1");
  *req.add_devices() = Dev("0000:00:04.0", 5);
  req.add_containers()->set_id(id_);
  v1::RegisterResponse reg;
  ASSERT_TRUE(broker_->Register(req, &reg).ok());
  ASSERT_EQ(reg.desired_containers_size(), 1);
  v1::ReconciledRequest rec;
  rec.set_node("n1");
  rec.set_session_id(reg.session_id());
  *rec.mutable_containers() = reg.desired_containers();
  v1::ReconciledResponse unused;
  ASSERT_TRUE(broker_->Reconciled(rec, &unused).ok());
  ASSERT_TRUE(Delete().ok());
  EXPECT_EQ(agents_.held("n1:1").count(id_), 0u);
  EXPECT_THAT(Get().status(), StatusIs(absl::StatusCode::kNotFound, "no container"));
  EXPECT_EQ(broker_->Stats().containers_deleting, 0);
  EXPECT_TRUE(broker_->CheckIndexes().ok()) << broker_->CheckIndexes();
}


// The bound the window limit rests on, with every field at its widest: the
// longest ids and names validation allows and 64-bit bases and sizes.
TEST(GrantSizeTest, AGrantNamingTheMostWindowsFitsATokenAtItsWidest) {
  v1::LauncherGrant grant;
  grant.set_token_id(std::string(32, 'f'));
  grant.set_node(std::string(63, 'n'));
  grant.set_container_id("c-" + std::string(16, 'f'));
  grant.set_tenant_id("t" + std::string(62, 'x'));
  grant.set_expires_ms(INT64_MAX);
  grant.set_issued_ms(INT64_MAX);
  grant.set_launcher_uid(UINT32_MAX);
  grant.set_agent_incarnation(std::string(32, 'f'));
  for (size_t i = 0; i < kMaxWindowsPerContainer; ++i) {
    v1::GrantWindow* w = grant.add_windows();
    w->set_window_id("w-" + std::string(16, 'f'));
    w->set_base(UINT64_MAX - 0xfff);
    w->set_size(UINT64_MAX - 0xfff);
  }
  absl::StatusOr<std::string> token = SignGrant(grant, std::string(32, 'k'));
  ASSERT_TRUE(token.ok()) << token.status();
  EXPECT_LE(token->size(), kMaxGrantTokenBytes);
}


// Each mutation with a request_id leaves an answer in the store for a day:
// one caller may have only so many, so no tenant grows the store for all.
TEST_F(BrokerTest, RememberedAnswersAreBoundedPerCaller) {
  Restart(/*liveness_check_interval_ms=*/0, /*max_remembered=*/3);
  const Identity hostile{Role::kTenant, "hostile"};
  const Identity acme{Role::kTenant, "acme"};
  auto create = [&](const Identity& caller, const std::string& id, const std::string& request) {
    v1::CreateTenantRequest req;
    req.set_request_id(request);
    req.set_tenant_id(id);
    req.mutable_quota()->set_pinned_bytes(1 << 20);
    v1::Tenant t;
    return broker_->CreateTenant(req, &t, caller);
  };
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(create(hostile, absl::StrCat("h", i), absl::StrCat("r", i)).ok()) << i;
  }
  EXPECT_THAT(
      create(hostile, "h3", "r3"),
      StatusIs(
          absl::StatusCode::kResourceExhausted,
          "request_id: tenant/hostile has 3 answers remembered for retries (limit 3 per caller"));
  // Its retries still replay, mutations without an id still work, and
  // another caller is not affected.
  EXPECT_TRUE(create(hostile, "h0", "r0").ok());
  EXPECT_TRUE(create(hostile, "h4", "").ok());
  EXPECT_TRUE(create(acme, "a0", "r0").ok());
  // The count survives a restart, and expiry gives room again.
  Restart(/*liveness_check_interval_ms=*/0, /*max_remembered=*/3);
  EXPECT_THAT(create(hostile, "h3", "r3"),
              StatusIs(absl::StatusCode::kResourceExhausted, "limit 3"));
  now_ms_ += 25LL * 3600 * 1000;
  ASSERT_TRUE(broker_->ExpireRequests().ok());
  EXPECT_TRUE(create(hostile, "h3", "r3").ok());
}

}  // namespace
}  // namespace iommu
