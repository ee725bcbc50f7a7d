// Container names and labels, tenant labels and label selectors, through the
// broker's API: every request field that takes a container id takes a name,
// names are unique within a tenant and private to it, labels are edited
// without losing the others, and all of it survives a restart. Every refusal
// changes nothing.
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "common/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/broker.h"
#include "server/fake_store.h"
#include "server/ok_agents.h"
#include "server/test_nodes.h"

namespace iommu {
namespace {


using Labels = std::map<std::string, std::string>;

Labels AsMap(const google::protobuf::Map<std::string, std::string>& m) {
  return Labels(m.begin(), m.end());
}

const Identity kOperator{Role::kOperator, "ops"};
const Identity kAcme{Role::kTenant, "acme"};
const Identity kBeta{Role::kTenant, "beta"};

class BrokerNamesTest : public ::testing::Test {
 protected:
  // Ends every test with the broker's state checked whole (CheckIndexes:
  // indexes, and memory against the store).
  void TearDown() override {
    if (broker_ == nullptr || !broker_->Unrecoverable().ok()) return;
    absl::Status s = broker_->CheckIndexes();
    EXPECT_TRUE(s.ok()) << "at the end of the test: " << s;
  }
  void SetUp() override {
    Restart();
    for (const char* t : {"acme", "beta"}) {
      v1::CreateTenantRequest req;
      req.set_tenant_id(t);
      req.mutable_quota()->set_pinned_bytes(1ULL << 30);
      v1::Tenant out;
      ASSERT_TRUE(broker_->CreateTenant(req, &out, kOperator).ok());
    }
    std::vector<v1::Device> devices(8);
    for (int i = 0; i < 8; ++i) {
      devices[i].set_address("0000:00:0" + std::to_string(i) + ".0");
      devices[i].set_iommu_group(i);
      devices[i].set_vendor_id(0x1234);
      devices[i].set_device_id(0x11e8);
      devices[i].set_assignable(true);
    }
    ASSERT_OK(RegisterReadyNode(broker_.get(), "host-a", devices));
  }

  void Restart() {
    broker_.reset();
    BrokerOptions o;
    o.node_timeout_ms = 60000;
    absl::StatusOr<std::unique_ptr<Broker>> b = Broker::Create(&store_, &agents_, o);
    ASSERT_TRUE(b.ok()) << b.status();
    broker_ = *std::move(b);
  }

  absl::StatusOr<v1::Container> Create(const Identity& caller, const std::string& tenant,
                                       const std::string& name,
                                       std::map<std::string, std::string> labels = {},
                                       const std::string& request_id = "") {
    v1::CreateContainerRequest req;
    req.set_request_id(request_id);
    req.set_tenant_id(tenant);
    req.set_name(name);
    for (const auto& [k, v] : labels) (*req.mutable_labels())[k] = v;
    req.mutable_selector()->set_count(1);
    req.set_pin_budget_bytes(4096);
    v1::Container c;
    absl::Status s = broker_->CreateContainer(req, &c, caller);
    if (!s.ok()) return s;
    return c;
  }

  absl::StatusOr<v1::Container> Get(const Identity& caller, const std::string& ref) {
    v1::GetContainerRequest req;
    req.set_container_id(ref);
    v1::Container c;
    absl::Status s = broker_->GetContainer(req, &c, caller);
    if (!s.ok()) return s;
    return c;
  }

  std::vector<std::string> ListIds(const std::string& selector) {
    v1::ListContainersRequest req;
    req.set_label_selector(selector);
    v1::ListContainersResponse resp;
    EXPECT_TRUE(broker_->ListContainers(req, &resp, kOperator).ok());
    std::vector<std::string> ids;
    for (const v1::Container& c : resp.containers()) ids.push_back(c.name());
    return ids;
  }

  FakeStore store_;
  OkAgents agents_;
  std::unique_ptr<Broker> broker_;
};

TEST_F(BrokerNamesTest, ANameAndLabelsAreKeptAndTheNameStandsForTheId) {
  absl::StatusOr<v1::Container> c = Create(kAcme, "acme", "vm-42", {{"team", "ml"}});
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->name(), "vm-42");
  EXPECT_EQ(c->labels().at("team"), "ml");
  for (const auto& [caller, ref] : std::vector<std::pair<Identity, std::string>>{
           {kAcme, "vm-42"}, {kAcme, "acme/vm-42"}, {kOperator, "vm-42"},
           {kOperator, "acme/vm-42"}, {kOperator, c->id()}}) {
    absl::StatusOr<v1::Container> got = Get(caller, ref);
    ASSERT_TRUE(got.ok()) << ref << ": " << got.status();
    EXPECT_EQ(got->id(), c->id()) << ref;
  }

  // Every other field that takes a container id takes the name.
  v1::AllocateWindowRequest alloc;
  alloc.set_container_id("vm-42");
  alloc.set_size(1 << 21);
  v1::Window w;
  ASSERT_TRUE(broker_->AllocateWindow(alloc, &w, kAcme).ok());
  EXPECT_EQ(w.container_id(), c->id());
  v1::ListWindowsRequest lw;
  lw.set_container_id("acme/vm-42");
  v1::ListWindowsResponse windows;
  ASSERT_TRUE(broker_->ListWindows(lw, &windows, kOperator).ok());
  EXPECT_EQ(windows.windows_size(), 1);
  v1::SetContainerBudgetRequest budget;
  budget.set_container_id("vm-42");
  budget.set_pin_budget_bytes(8192);
  v1::Container after;
  ASSERT_TRUE(broker_->SetContainerBudget(budget, &after, kAcme).ok());
  EXPECT_EQ(after.pin_budget_bytes(), 8192u);
  v1::ListEventsRequest ev;
  ev.mutable_object()->set_kind(v1::OBJECT_KIND_CONTAINER);
  ev.mutable_object()->set_id("vm-42");
  ev.set_tenant_id("acme");
  v1::ListEventsResponse events;
  ASSERT_TRUE(broker_->ListEvents(ev, &events, kAcme).ok());
  EXPECT_GE(events.events_size(), 1);
  EXPECT_EQ(events.events(0).object().id(), c->id());

  // Deleting by name frees the name; a retry of that delete replays.
  v1::DeleteContainerRequest del;
  del.set_request_id("del-1");
  del.set_container_id("vm-42");
  v1::DeleteContainerResponse gone;
  ASSERT_TRUE(broker_->DeleteContainer(del, &gone, kAcme).ok());
  EXPECT_TRUE(broker_->DeleteContainer(del, &gone, kAcme).ok());
  EXPECT_THAT(Get(kAcme, "vm-42").status(),
              StatusIs(absl::StatusCode::kNotFound,
                       "container_id: no container named \"vm-42\" in tenant \"acme\""));
  absl::StatusOr<v1::Container> again = Create(kAcme, "acme", "vm-42");
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_NE(again->id(), c->id());
}

TEST_F(BrokerNamesTest, NamesAreUniqueWithinATenantAndPrivateToIt) {
  absl::StatusOr<v1::Container> a = Create(kAcme, "acme", "vm-1");
  ASSERT_TRUE(a.ok());
  EXPECT_THAT(Create(kAcme, "acme", "vm-1").status(),
              StatusIs(absl::StatusCode::kAlreadyExists,
                       "name: tenant \"acme\" already has a container named \"vm-1\""));
  absl::StatusOr<v1::Container> b = Create(kBeta, "beta", "vm-1");
  ASSERT_TRUE(b.ok()) << b.status();

  // Each tenant's bare name is its own container.
  EXPECT_EQ(Get(kAcme, "vm-1")->id(), a->id());
  EXPECT_EQ(Get(kBeta, "vm-1")->id(), b->id());
  // Another tenant's TENANT/NAME is a name nobody has.
  EXPECT_THAT(Get(kAcme, "beta/vm-1").status(),
              StatusIs(absl::StatusCode::kNotFound, "no container named"));
  // An operator must say which tenant when several use the name.
  EXPECT_THAT(
      Get(kOperator, "vm-1").status(),
      StatusIs(absl::StatusCode::kInvalidArgument,
               "tenants acme, beta each have a container named \"vm-1\"; write TENANT/NAME"));
  EXPECT_EQ(Get(kOperator, "beta/vm-1")->id(), b->id());
  EXPECT_THAT(Get(kOperator, "vm-2").status(),
              StatusIs(absl::StatusCode::kNotFound, "no container named \"vm-2\""));
}

TEST_F(BrokerNamesTest, BadNamesLabelsAndSelectorsAreRefusedAndChangeNothing) {
  EXPECT_THAT(Create(kAcme, "acme", "VM_1").status(),
              StatusIs(absl::StatusCode::kInvalidArgument, "name: a name is 1-63 characters"));
  EXPECT_THAT(Create(kAcme, "acme", "c-0123456789abcdef").status(),
              StatusIs(absl::StatusCode::kInvalidArgument, "form of a container id"));
  EXPECT_THAT(
      Create(kAcme, "acme", "vm", {{"team", "not ok"}}).status(),
      StatusIs(absl::StatusCode::kInvalidArgument, "labels[\"team\"]: a value must be empty"));
  std::map<std::string, std::string> many;
  for (int i = 0; i < 33; ++i) many["k" + std::to_string(i)] = "";
  EXPECT_THAT(Create(kAcme, "acme", "vm", many).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, "labels: at most 32 labels"));
  EXPECT_THAT(Get(kAcme, "acme/").status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "a container id (\"c-\" and 16 hex digits), a NAME or TENANT/NAME"));
  v1::ListContainersRequest list;
  list.set_label_selector("team in ml");
  v1::ListContainersResponse resp;
  EXPECT_THAT(broker_->ListContainers(list, &resp, kOperator),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "label_selector: at character 9: expected '(' after in/notin"));
  EXPECT_TRUE(ListIds("").empty());
}

TEST_F(BrokerNamesTest, SelectorsPickContainersAndTenantsByLabel) {
  ASSERT_TRUE(Create(kAcme, "acme", "ml-1", {{"team", "ml"}, {"env", "prod"}}).ok());
  ASSERT_TRUE(Create(kAcme, "acme", "ml-2", {{"team", "ml"}, {"env", "dev"}}).ok());
  ASSERT_TRUE(Create(kAcme, "acme", "web-1", {{"team", "web"}}).ok());
  EXPECT_THAT(ListIds("team=ml"), ::testing::UnorderedElementsAre("ml-1", "ml-2"));
  EXPECT_THAT(ListIds("team=ml,env!=dev"), ::testing::ElementsAre("ml-1"));
  EXPECT_THAT(ListIds("env notin (prod)"), ::testing::UnorderedElementsAre("ml-2", "web-1"));
  EXPECT_THAT(ListIds("!env"), ::testing::ElementsAre("web-1"));

  v1::SetTenantLabelsRequest label;
  label.set_tenant_id("beta");
  (*label.mutable_labels())["tier"] = "gold";
  v1::Tenant t;
  ASSERT_TRUE(broker_->SetTenantLabels(label, &t, kOperator).ok());
  v1::ListTenantsRequest lt;
  lt.set_label_selector("tier=gold");
  v1::ListTenantsResponse tenants;
  ASSERT_TRUE(broker_->ListTenants(lt, &tenants, kOperator).ok());
  ASSERT_EQ(tenants.tenants_size(), 1);
  EXPECT_EQ(tenants.tenants(0).id(), "beta");
}

TEST_F(BrokerNamesTest, LabelEditsKeepTheOthersAndSurviveARestart) {
  ASSERT_TRUE(Create(kAcme, "acme", "vm-7", {{"team", "ml"}, {"env", "dev"}}).ok());
  v1::SetContainerLabelsRequest edit;
  edit.set_request_id("edit-1");
  edit.set_container_id("vm-7");
  (*edit.mutable_labels())["env"] = "prod";
  (*edit.mutable_labels())["owner"] = "jo";
  edit.add_remove_keys("team");
  v1::Container c;
  ASSERT_TRUE(broker_->SetContainerLabels(edit, &c, kAcme).ok());
  const std::map<std::string, std::string> want = {{"env", "prod"}, {"owner", "jo"}};
  EXPECT_EQ(AsMap(c.labels()), want);

  // The same edit again, its map built in another order, is a retry.
  v1::SetContainerLabelsRequest retry;
  retry.set_request_id("edit-1");
  retry.set_container_id("vm-7");
  (*retry.mutable_labels())["owner"] = "jo";
  (*retry.mutable_labels())["env"] = "prod";
  retry.add_remove_keys("team");
  v1::Container replayed;
  ASSERT_TRUE(broker_->SetContainerLabels(retry, &replayed, kAcme).ok());
  EXPECT_EQ(replayed.id(), c.id());
  EXPECT_EQ(AsMap(replayed.labels()), want);

  // A refused edit changes nothing.
  v1::SetContainerLabelsRequest both;
  both.set_container_id("vm-7");
  (*both.mutable_labels())["env"] = "x";
  both.add_remove_keys("env");
  EXPECT_THAT(
      broker_->SetContainerLabels(both, &c, kAcme),
      StatusIs(absl::StatusCode::kInvalidArgument, "remove_keys: key \"env\" is also in labels"));
  EXPECT_THAT(broker_->SetContainerLabels(edit, &c, kBeta),
              StatusIs(absl::StatusCode::kNotFound, "no container named"));

  Restart();
  absl::StatusOr<v1::Container> got = Get(kAcme, "vm-7");
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(AsMap(got->labels()), want);
  EXPECT_THAT(Create(kAcme, "acme", "vm-7").status(),
              StatusIs(absl::StatusCode::kAlreadyExists, "already has a container named"));
}

}  // namespace
}  // namespace iommu
