// Test-only: what the broker's logic tests share. A BrokerTest fixture runs a
// Broker on a FakeStore and FakeAgents (a fake AgentClient that can be told to
// fail) on a clock the test moves, with helpers for the calls most tests make.
// Defined here in full so that each topic's test file can be its own binary.
#ifndef SERVER_BROKER_TEST_FIXTURE_H_
#define SERVER_BROKER_TEST_FIXTURE_H_

#include <cstdint>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "common/status_matchers.h"
#include "gtest/gtest.h"
#include "proto/agent.pb.h"
#include "proto/broker.pb.h"
#include "server/agent_client.h"
#include "server/broker.h"
#include "server/fake_store.h"
#include "server/test_nodes.h"

namespace iommu {

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

// A device as an agent reports it: bound to vfio-pci, assignable unless told
// otherwise.
inline v1::Device Dev(const std::string& addr, uint32_t group, uint32_t vendor = 0x1234,
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
  // Every test ends with the broker's state checked whole: indexes against
  // a recount and memory against the store (Broker::CheckIndexes), so a
  // mutation whose change to memory disagrees with the records it committed
  // fails the test that made it. A broker that failed closed serves nothing
  // and is not checked.
  void TearDown() override {
    if (broker_ == nullptr || !broker_->Unrecoverable().ok()) return;
    EXPECT_OK(broker_->CheckIndexes()) << "at the end of the test";
  }

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

  // A heartbeat of `node` in `session`, reporting for each tenant in
  // `usage` its {billed, mapped} bytes on the node.
  absl::StatusOr<v1::HeartbeatResponse> Heartbeat(
      const std::string& node, const std::string& session,
      const std::map<std::string, std::pair<uint64_t, uint64_t>>& usage = {}) {
    v1::HeartbeatRequest req;
    req.set_node(node);
    req.set_session_id(session);
    for (const auto& [tenant, bytes] : usage) {
      v1::PinUsage* u = req.add_usage();
      u->set_tenant_id(tenant);
      u->set_billed_bytes(bytes.first);
      u->set_mapped_bytes(bytes.second);
    }
    v1::HeartbeatResponse out;
    absl::Status s = broker_->Heartbeat(req, &out);
    if (!s.ok()) return s;
    return out;
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

}  // namespace iommu

#endif  // SERVER_BROKER_TEST_FIXTURE_H_
