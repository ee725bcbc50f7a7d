// Tenants' quotas, containers' pin budgets within them, usage, and paged
// lists of devices, tenants and containers.
#include <map>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_format.h"
#include "common/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/broker.h"
#include "server/broker_test_fixture.h"

namespace iommu {
namespace {

using ::testing::ElementsAre;

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
  ASSERT_TRUE(Heartbeat("n1", session, {{"acme", {0x10000, 0x30000}}}).ok());
  v1::GetUsageResponse usage;
  ASSERT_TRUE(broker_->GetUsage({}, &usage).ok());
  ASSERT_EQ(usage.tenants_size(), 1);
  EXPECT_EQ(usage.tenants(0).pinned_bytes(), 0x10000u);
  EXPECT_EQ(usage.tenants(0).mapped_bytes(), 0x30000u);
  EXPECT_EQ(usage.tenants(0).dedup_saved_bytes(), 0x20000u);
}

// Usage is what each node's agent last reported, per tenant: a heartbeat
// replaces its node's report, a registration or the node's delete drops it,
// and a page of tenants shows only the nodes that reported for them.
TEST_F(BrokerTest, UsageIsWhatEachNodeLastReported) {
  const std::string s1 = RegisterNode("n1", {Dev("0000:00:04.0", 5)});
  const std::string s2 = RegisterNode("n2", {Dev("0000:00:04.0", 5)});
  CreateTenant("acme");
  CreateTenant("zeta");
  // Each tenant's bytes, billed and mapped alike.
  auto beat = [&](const std::string& node, const std::string& session,
                  const std::map<std::string, uint64_t>& billed) {
    std::map<std::string, std::pair<uint64_t, uint64_t>> usage;
    for (const auto& [tenant, bytes] : billed) usage[tenant] = {bytes, bytes};
    ASSERT_OK(Heartbeat(node, session, usage));
  };
  // Per (tenant, node) row of GetUsage, and the tenants' totals.
  auto usage = [&](const std::string& tenant, const std::string& node) {
    v1::GetUsageRequest req;
    req.set_tenant_id(tenant);
    req.set_node(node);
    v1::GetUsageResponse out;
    EXPECT_OK(broker_->GetUsage(req, &out));
    std::map<std::string, uint64_t> seen;
    for (const v1::NodeUsage& r : out.nodes()) {
      if (r.pinned_bytes() != 0) seen[r.tenant_id() + "@" + r.node()] = r.pinned_bytes();
    }
    for (const v1::TenantUsage& t : out.tenants()) seen[t.tenant_id()] = t.pinned_bytes();
    return seen;
  };
  using Seen = std::map<std::string, uint64_t>;

  ASSERT_NO_FATAL_FAILURE(beat("n1", s1, {{"acme", 0x1000}, {"zeta", 0x2000}}));
  ASSERT_NO_FATAL_FAILURE(beat("n2", s2, {{"acme", 0x4000}}));
  EXPECT_EQ(usage("acme", ""), (Seen{{"acme", 0x5000}, {"acme@n1", 0x1000}, {"acme@n2", 0x4000}}));
  EXPECT_EQ(usage("acme", "n2"), (Seen{{"acme", 0x4000}, {"acme@n2", 0x4000}}));
  {
    // One tenant is one page: the page after it is empty.
    v1::GetUsageRequest req;
    req.set_tenant_id("acme");
    v1::GetUsageResponse first, after;
    ASSERT_OK(broker_->GetUsage(req, &first));
    EXPECT_EQ(first.next_page_token(), "");
    req.set_page_token("acme");
    ASSERT_OK(broker_->GetUsage(req, &after));
    EXPECT_EQ(after.tenants_size(), 0);
    EXPECT_EQ(after.nodes_size(), 0);
  }
  EXPECT_EQ(usage("", ""), (Seen{{"acme", 0x5000},
                                 {"acme@n1", 0x1000},
                                 {"acme@n2", 0x4000},
                                 {"zeta", 0x2000},
                                 {"zeta@n1", 0x2000}}));
  EXPECT_OK(broker_->CheckIndexes());

  // n1's next report no longer names acme.
  ASSERT_NO_FATAL_FAILURE(beat("n1", s1, {{"zeta", 0x3000}}));
  EXPECT_EQ(usage("acme", ""), (Seen{{"acme", 0x4000}, {"acme@n2", 0x4000}}));
  EXPECT_EQ(usage("zeta", ""), (Seen{{"zeta", 0x3000}, {"zeta@n1", 0x3000}}));
  EXPECT_OK(broker_->CheckIndexes());

  // n2's agent registers again: it has reported nothing yet.
  RegisterNode("n2", {Dev("0000:00:04.0", 5)});
  EXPECT_EQ(usage("acme", ""), (Seen{{"acme", 0}}));
  EXPECT_OK(broker_->CheckIndexes());

  // n1 is deleted: its report goes with it.
  v1::DeleteNodeRequest del;
  del.set_node("n1");
  del.set_force(true);
  v1::DeleteNodeResponse deleted;
  ASSERT_OK(broker_->DeleteNode(del, &deleted));
  EXPECT_EQ(usage("zeta", ""), (Seen{{"zeta", 0}}));
  EXPECT_OK(broker_->CheckIndexes());
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
  const std::string session = RegisterNode("n1", {Dev("0000:00:04.0", 1), Dev("0000:00:05.0", 2)});
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
  absl::StatusOr<v1::HeartbeatResponse> hbr = Heartbeat("n1", session);
  ASSERT_TRUE(hbr.ok());
  std::map<std::string, uint64_t> budgets;
  for (const auto& b : hbr->budgets()) budgets[b.container_id()] = b.pin_budget_bytes();
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

}  // namespace
}  // namespace iommu
