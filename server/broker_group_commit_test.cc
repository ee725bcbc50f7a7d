// Group commit and the derived indexes of the broker: concurrent mutations
// share store commits and all survive a restart; a failed group commit fails
// every mutation in it (and after it) and rolls memory back; answers never
// show what is not durable; the per-tenant and per-node indexes always equal
// a full recount.
#include <cstdio>
#include <cstdlib>
#include <future>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/random/random.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/broker.h"
#include "server/fake_store.h"
#include "server/ok_agents.h"
#include "server/sqlite_store.h"
#include "server/test_nodes.h"

namespace iommu {
namespace {

using ::testing::AnyOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

std::string Address(int i) { return absl::StrFormat("0000:00:%02x.0", i); }

class GroupCommitTest : public ::testing::Test {
 protected:
  // Ends every test with the broker's state checked whole (CheckIndexes:
  // indexes, and memory against the store).
  void TearDown() override {
    if (broker_ == nullptr || !broker_->Unrecoverable().ok()) return;
    absl::Status s = broker_->CheckIndexes();
    EXPECT_TRUE(s.ok()) << "at the end of the test: " << s;
  }
  void SetUp() override { Restart(); }

  void Restart() {
    broker_.reset();
    auto b = Broker::Create(store(), &agents_, BrokerOptions{});
    ASSERT_TRUE(b.ok()) << b.status();
    broker_ = std::move(*b);
  }

  virtual Store* store() { return &fake_; }

  absl::Status CreateTenant(const std::string& id, const std::string& request_id = "",
                            v1::Tenant* out = nullptr) {
    v1::CreateTenantRequest req;
    req.set_tenant_id(id);
    req.set_request_id(request_id);
    req.mutable_quota()->set_pinned_bytes(1ULL << 30);
    v1::Tenant t;
    return broker_->CreateTenant(req, out ? out : &t);
  }

  // Tenants in memory, durable or not (Stats does not wait for commits).
  size_t TenantsInMemory() { return broker_->Stats().tenants.size(); }

  // Blocks until `n` tenants are in memory: the mutations creating them were
  // applied and are waiting for their group commit.
  void AwaitTenantsInMemory(size_t n) {
    while (TenantsInMemory() < n) std::this_thread::yield();
  }

  std::set<std::string> DurableTenants() {
    std::set<std::string> out;
    auto records = store()->LoadAll();
    EXPECT_TRUE(records.ok());
    for (const StoreRecord& r : *records) {
      if (r.kind == "tenant") out.insert(r.id);
    }
    return out;
  }

  // Returns the node's session id ("" when it could not register).
  std::string RegisterNode(const std::string& name, int device_count) {
    std::vector<v1::Device> devices(device_count);
    for (int i = 0; i < device_count; ++i) {
      devices[i].set_address(Address(i));
      devices[i].set_iommu_group(i + 1);
      devices[i].set_assignable(true);
    }
    absl::StatusOr<v1::RegisterResponse> reg = RegisterReadyNode(broker_.get(), name, devices);
    EXPECT_OK(reg);
    return reg.ok() ? reg->session_id() : "";
  }

  FakeStore fake_;
  OkAgents agents_;
  std::unique_ptr<Broker> broker_;
};

TEST_F(GroupCommitTest, MutationsWaitingBehindACommitShareTheNextOne) {
  const int commits_before = fake_.commits();
  fake_.PauseCommits();
  std::vector<absl::Status> results(17);
  std::vector<std::thread> threads;
  // The first mutation's commit is held in the store, as a slow fsync would be...
  threads.emplace_back([&] { results[0] = CreateTenant("t0"); });
  fake_.AwaitPausedCommits(1);
  // ...and sixteen more are applied meanwhile and wait for the next commit.
  for (int i = 1; i < 17; ++i) {
    threads.emplace_back([&, i] { results[i] = CreateTenant(absl::StrCat("t", i)); });
  }
  AwaitTenantsInMemory(17);
  EXPECT_TRUE(DurableTenants().empty());
  fake_.ResumeCommits();
  for (std::thread& t : threads) t.join();
  for (const absl::Status& s : results) EXPECT_TRUE(s.ok()) << s;
  // One commit for the first, one for the sixteen behind it.
  EXPECT_EQ(fake_.commits() - commits_before, 2);
  EXPECT_EQ(DurableTenants().size(), 17u);
  Restart();
  v1::ListTenantsResponse all;
  ASSERT_TRUE(broker_->ListTenants({}, &all).ok());
  EXPECT_EQ(all.tenants_size(), 17);
}

// A heartbeat answer built from state that a failed commit then takes back
// must not be cached for the next heartbeat: the agent would be told of a
// window the broker no longer has.
TEST_F(GroupCommitTest, AHeartbeatAnswerBuiltFromRolledBackStateIsNotReused) {
  ASSERT_OK(CreateTenant("t"));
  v1::Device device;
  device.set_address(Address(0));
  device.set_iommu_group(1);
  device.set_assignable(true);
  absl::StatusOr<v1::RegisterResponse> reg = RegisterReadyNode(broker_.get(), "n1", {device});
  ASSERT_OK(reg);
  v1::CreateContainerRequest create;
  create.set_tenant_id("t");
  create.set_node("n1");
  create.add_devices(Address(0));
  v1::Container c;
  ASSERT_OK(broker_->CreateContainer(create, &c));
  v1::HeartbeatRequest hb;
  hb.set_node("n1");
  hb.set_session_id(reg->session_id());

  fake_.PauseCommits();
  absl::Status allocated;
  std::thread a([&] {
    v1::AllocateWindowRequest req;
    req.set_container_id(c.id());
    req.set_size(4096);
    v1::Window w;
    allocated = broker_->AllocateWindow(req, &w);
  });
  fake_.AwaitPausedCommits(1);
  // The window is applied, not durable; a heartbeat builds its answer now.
  const int64_t built = broker_->HeartbeatAnswersBuilt();
  absl::Status beat;
  std::thread b([&] {
    v1::HeartbeatResponse out;
    beat = broker_->Heartbeat(hb, &out);
  });
  while (broker_->HeartbeatAnswersBuilt() == built) std::this_thread::yield();
  fake_.set_next_commit_error(absl::UnavailableError("disk full"));
  fake_.ResumeCommits();
  a.join();
  b.join();
  EXPECT_FALSE(allocated.ok());
  EXPECT_FALSE(beat.ok()) << "a heartbeat was answered with a window that never became durable";

  v1::HeartbeatResponse after;
  ASSERT_OK(broker_->Heartbeat(hb, &after));
  ASSERT_EQ(after.windows_size(), 1);
  EXPECT_EQ(after.windows(0).windows_size(), 0) << after.ShortDebugString();
  EXPECT_OK(broker_->CheckIndexes());
}

// A node's heartbeat waits for what its answer shows to be durable, not for
// another node's commit: under a registration storm one is always in flight,
// and heartbeats waiting for each made nodes time out.
TEST_F(GroupCommitTest, AHeartbeatDoesNotWaitForAnotherNodesCommit) {
  ASSERT_OK(CreateTenant("t"));
  const std::string session = RegisterNode("n1", 1);
  RegisterNode("n2", 1);
  v1::HeartbeatRequest hb;
  hb.set_node("n1");
  hb.set_session_id(session);
  v1::HeartbeatResponse first;
  ASSERT_OK(broker_->Heartbeat(hb, &first));

  fake_.PauseCommits();
  absl::Status created;
  std::thread other([&] {
    v1::CreateContainerRequest req;
    req.set_tenant_id("t");
    req.set_node("n2");
    req.add_devices(Address(0));
    v1::Container c;
    created = broker_->CreateContainer(req, &c);
  });
  fake_.AwaitPausedCommits(1);
  // Answered while n2's commit is held; a wait for it would never end here.
  std::future<absl::Status> beat = std::async(std::launch::async, [&] {
    v1::HeartbeatResponse out;
    return broker_->Heartbeat(hb, &out);
  });
  const bool answered = beat.wait_for(std::chrono::seconds(20)) == std::future_status::ready;
  fake_.ResumeCommits();
  other.join();
  EXPECT_TRUE(answered) << "n1's heartbeat waited for n2's commit";
  EXPECT_OK(beat.get());
  EXPECT_OK(created);
}

// A node that registers again exactly as it was (its agent or the broker
// restarted) commits nothing; one whose devices changed is persisted.
TEST_F(GroupCommitTest, AnUnchangedRegistrationCommitsNothing) {
  RegisterNode("n1", 2);
  const int commits = fake_.commits();
  RegisterNode("n1", 2);
  EXPECT_EQ(fake_.commits(), commits);
  Restart();
  const std::string session = RegisterNode("n1", 2);
  EXPECT_EQ(fake_.commits(), commits) << "a broker restart re-persisted an unchanged node";
  v1::HeartbeatRequest hb;
  hb.set_node("n1");
  hb.set_session_id(session);
  v1::HeartbeatResponse out;
  EXPECT_OK(broker_->Heartbeat(hb, &out));

  RegisterNode("n1", 3);
  EXPECT_EQ(fake_.commits(), commits + 1);
  Restart();
  v1::ListDevicesRequest list;
  list.set_node("n1");
  v1::ListDevicesResponse devices;
  ASSERT_OK(broker_->ListDevices(list, &devices));
  EXPECT_EQ(devices.devices_size(), 3) << "the changed registration was not persisted";
}

// Registrations beyond BrokerOptions::max_concurrent_registrations wait
// their turn before they touch the broker's state, and heartbeats go on
// meanwhile: a fleet registering at once cannot hold them up.
TEST_F(GroupCommitTest, RegistrationsBeyondTheBoundWaitTheirTurnWhileHeartbeatsGoOn) {
  BrokerOptions options;
  options.max_concurrent_registrations = 1;
  broker_.reset();
  auto b = Broker::Create(store(), &agents_, options);
  ASSERT_OK(b);
  broker_ = *std::move(b);
  v1::HeartbeatRequest hb;
  hb.set_node("n0");
  hb.set_session_id(RegisterNode("n0", 1));
  v1::HeartbeatResponse beat;
  ASSERT_OK(broker_->Heartbeat(hb, &beat));

  fake_.PauseCommits();
  std::thread first([&] { RegisterNode("n1", 1); });  // A new node: its commit is held.
  fake_.AwaitPausedCommits(1);
  std::thread second([&] { RegisterNode("n2", 1); });
  // Bounded, so that a registration going past its turn fails the test
  // rather than hanging it.
  const absl::Time give_up = absl::Now() + absl::Seconds(20);
  while (broker_->Stats().registrations_waiting < 1 && absl::Now() < give_up) {
    std::this_thread::yield();
  }
  EXPECT_EQ(broker_->Stats().registrations_waiting, 1);
  auto names = [&] {
    std::vector<std::string> out;
    for (const BrokerStats::Node& n : broker_->Stats().nodes) out.push_back(n.name);
    return out;
  };
  EXPECT_THAT(names(), ElementsAre("n0", "n1")) << "n2 went past its turn";
  EXPECT_OK(broker_->Heartbeat(hb, &beat));

  fake_.ResumeCommits();
  first.join();
  second.join();
  EXPECT_EQ(broker_->Stats().registrations_waiting, 0);
  EXPECT_THAT(names(), ElementsAre("n0", "n1", "n2"));
  EXPECT_OK(broker_->CheckIndexes());
}

TEST_F(GroupCommitTest, FailedGroupFailsEveryMemberAndEverythingAfterItAndRollsBack) {
  ASSERT_TRUE(CreateTenant("kept").ok());
  fake_.PauseCommits();
  absl::Status first, second, third;
  std::thread a([&] { first = CreateTenant("a"); });
  fake_.AwaitPausedCommits(1);
  std::thread b([&] { second = CreateTenant("b"); });
  std::thread c([&] { third = CreateTenant("c"); });
  AwaitTenantsInMemory(4);
  fake_.set_next_commit_error(absl::UnavailableError("disk full"));
  fake_.ResumeCommits();
  a.join();
  b.join();
  c.join();
  EXPECT_EQ(first.code(), absl::StatusCode::kUnavailable) << first;
  EXPECT_THAT(first.message(), HasSubstr("disk full"));
  // b and c were planned against a's state: they fail too, and say why.
  for (const absl::Status& s : {second, third}) {
    EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable) << s;
    EXPECT_THAT(s.message(), HasSubstr("an earlier change committed with it failed: disk full"));
  }
  // Memory is what the store holds, and the broker goes on working.
  EXPECT_EQ(TenantsInMemory(), 1u);
  EXPECT_EQ(DurableTenants(), std::set<std::string>{"kept"});
  v1::GetTenantRequest get;
  get.set_tenant_id("a");
  v1::Tenant t;
  EXPECT_EQ(broker_->GetTenant(get, &t).code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(CreateTenant("a").ok());
  EXPECT_TRUE(broker_->CheckIndexes().ok());
}

TEST_F(GroupCommitTest, FailedLaterGroupKeepsTheEarlierOne) {
  fake_.PauseCommits();
  absl::Status first, second, third;
  std::thread a([&] { first = CreateTenant("a"); });
  fake_.AwaitPausedCommits(1);
  std::thread b([&] { second = CreateTenant("b"); });
  std::thread c([&] { third = CreateTenant("c"); });
  AwaitTenantsInMemory(3);
  fake_.set_commit_error_after(1, absl::UnavailableError("disk full"));  // b and c's group.
  fake_.ResumeCommits();
  a.join();
  b.join();
  c.join();
  EXPECT_TRUE(first.ok()) << first;
  EXPECT_EQ(second.code(), absl::StatusCode::kUnavailable) << second;
  EXPECT_EQ(third.code(), absl::StatusCode::kUnavailable) << third;
  EXPECT_EQ(DurableTenants(), std::set<std::string>{"a"});
  EXPECT_EQ(TenantsInMemory(), 1u);
}

TEST_F(GroupCommitTest, ReadNeverShowsAnObjectItsFailedCommitTakesBack) {
  fake_.PauseCommits();
  absl::Status created;
  std::thread a([&] { created = CreateTenant("a"); });
  fake_.AwaitPausedCommits(1);
  fake_.set_next_commit_error(absl::UnavailableError("disk full"));
  // The tenant is in memory, its commit pending. A read of it must not say
  // it exists: it waits for the commit and, when that fails, refuses.
  absl::Status read;
  std::thread reader([&] {
    v1::GetTenantRequest get;
    get.set_tenant_id("a");
    v1::Tenant t;
    read = broker_->GetTenant(get, &t);
  });
  fake_.ResumeCommits();
  a.join();
  reader.join();
  EXPECT_FALSE(created.ok());
  EXPECT_THAT(read.code(), AnyOf(absl::StatusCode::kUnavailable, absl::StatusCode::kNotFound))
      << read;
}

TEST_F(GroupCommitTest, ReadOfPendingObjectAnswersOnlyOnceItIsDurable) {
  fake_.PauseCommits();
  std::thread a([&] { EXPECT_TRUE(CreateTenant("a").ok()); });
  fake_.AwaitPausedCommits(1);
  absl::Mutex mu;
  bool resumed = false;
  absl::Status read;
  bool durable_when_answered = false;
  std::thread reader([&] {
    v1::GetTenantRequest get;
    get.set_tenant_id("a");
    v1::Tenant t;
    read = broker_->GetTenant(get, &t);
    absl::MutexLock l(&mu);
    durable_when_answered = resumed;
  });
  {
    absl::MutexLock l(&mu);
    resumed = true;
  }
  fake_.ResumeCommits();
  a.join();
  reader.join();
  // Either the reader ran before the create (NOT_FOUND) or it answered after
  // the commit was let through.
  if (read.ok()) {
    EXPECT_TRUE(durable_when_answered);
  } else {
    EXPECT_EQ(read.code(), absl::StatusCode::kNotFound) << read;
  }
}

TEST_F(GroupCommitTest, RetryWhileTheFirstAttemptWaitsForItsCommitIsInFlight) {
  fake_.PauseCommits();
  v1::Tenant first;
  absl::Status s;
  std::thread a([&] { s = CreateTenant("a", "req-1", &first); });
  fake_.AwaitPausedCommits(1);
  absl::Status retry = CreateTenant("a", "req-1");
  EXPECT_EQ(retry.code(), absl::StatusCode::kAborted) << retry;
  EXPECT_THAT(retry.message(), HasSubstr("in flight"));
  fake_.ResumeCommits();
  a.join();
  ASSERT_TRUE(s.ok()) << s;
  v1::Tenant again;
  ASSERT_TRUE(CreateTenant("a", "req-1", &again).ok());
  EXPECT_EQ(again.SerializeAsString(), first.SerializeAsString());
  EXPECT_EQ(DurableTenants().size(), 1u);
}

// Every kind of mutation, at random, with failed commits among them: after
// each step the indexes equal a recount and memory equals what the store's
// records make (CheckIndexes).
TEST_F(GroupCommitTest, StateEqualsARecountAndTheStoreAfterRandomOperations) {
  const std::string session = RegisterNode("n1", 24);
  RegisterNode("n2", 24);
  for (const char* t : {"a", "b", "c"}) {
    v1::CreateTenantRequest req;
    req.set_tenant_id(t);
    req.mutable_quota()->set_pinned_bytes(64ULL << 20);
    req.mutable_quota()->set_window_bytes(1ULL << 30);
    v1::Tenant out;
    ASSERT_TRUE(broker_->CreateTenant(req, &out).ok());
  }
  absl::BitGen rng;
  std::map<std::string, std::string> containers;  // id -> tenant
  std::vector<std::string> windows;
  auto pick = [&](const auto& v) {
    return *std::next(v.begin(), absl::Uniform<size_t>(rng, 0, v.size()));
  };
  for (int step = 0; step < 400; ++step) {
    const int op = absl::Uniform(rng, 0, 11);
    const std::string tenant = std::string(1, "abc"[absl::Uniform(rng, 0, 3)]);
    if (op == 0 || containers.empty()) {
      v1::CreateContainerRequest req;
      req.set_tenant_id(tenant);
      req.set_pin_budget_bytes(4096 * absl::Uniform(rng, 1, 64));
      if (absl::Bernoulli(rng, 0.3)) req.set_name(absl::StrCat("vm-", step));
      (*req.mutable_labels())["step"] = std::to_string(step);
      v1::Container c;
      if (broker_->CreateContainer(req, &c).ok()) containers[c.id()] = tenant;
    } else if (op == 1) {
      auto [id, t] = pick(containers);
      v1::DeleteContainerRequest req;
      req.set_container_id(id);
      v1::DeleteContainerResponse out;
      ASSERT_TRUE(broker_->DeleteContainer(req, &out).ok());
      containers.erase(id);
    } else if (op == 2 || op == 3) {
      v1::AllocateWindowRequest req;
      req.set_container_id(pick(containers).first);
      req.set_size(4096 * absl::Uniform(rng, 1, 16));
      v1::Window w;
      if (broker_->AllocateWindow(req, &w).ok()) windows.push_back(w.id());
    } else if (op == 4 && !windows.empty()) {
      const size_t i = absl::Uniform<size_t>(rng, 0, windows.size());
      v1::ReleaseWindowRequest req;
      req.set_window_id(windows[i]);
      v1::ReleaseWindowResponse out;
      broker_->ReleaseWindow(req, &out).IgnoreError();  // NOT_FOUND if its container went.
      windows.erase(windows.begin() + i);
    } else if (op == 5) {
      v1::SetContainerBudgetRequest req;
      req.set_container_id(pick(containers).first);
      req.set_pin_budget_bytes(4096 * absl::Uniform(rng, 0, 64));
      v1::Container out;
      broker_->SetContainerBudget(req, &out).IgnoreError();  // May pass the quota.
    } else if (op == 6) {
      // Shrinking the quota shrinks budgets.
      v1::SetTenantQuotaRequest req;
      req.set_tenant_id(tenant);
      req.mutable_quota()->set_pinned_bytes(4096 * absl::Uniform(rng, 1, 16384));
      req.mutable_quota()->set_window_bytes(1ULL << 30);
      v1::Tenant out;
      ASSERT_TRUE(broker_->SetTenantQuota(req, &out).ok());
    } else if (op == 7) {
      v1::SetContainerLabelsRequest req;
      req.set_container_id(pick(containers).first);
      (*req.mutable_labels())[absl::StrCat("k", absl::Uniform(rng, 0, 4))] = "v";
      req.add_remove_keys(absl::StrCat("k", absl::Uniform(rng, 0, 4)));
      v1::Container out;
      broker_->SetContainerLabels(req, &out).IgnoreError();  // Refused if both name one key.
    } else if (op == 8) {
      v1::SetTenantLabelsRequest req;
      req.set_tenant_id(tenant);
      (*req.mutable_labels())["step"] = std::to_string(step);
      v1::Tenant out;
      ASSERT_OK(broker_->SetTenantLabels(req, &out));
    } else if (op == 9) {
      v1::CordonNodeRequest req;
      req.set_node("n2");
      v1::Node out;
      if (absl::Bernoulli(rng, 0.5)) {
        ASSERT_OK(broker_->CordonNode(req, &out));
      } else {
        v1::UncordonNodeRequest un;
        un.set_node("n2");
        ASSERT_OK(broker_->UncordonNode(un, &out));
      }
    } else if (op == 10) {
      // A tenant that comes and goes, and a fixed-base window.
      v1::CreateTenantRequest create;
      create.set_tenant_id("d");
      create.mutable_quota()->set_pinned_bytes(1ULL << 20);
      v1::Tenant t;
      const absl::Status created = broker_->CreateTenant(create, &t);
      if (!created.ok()) {
        ASSERT_EQ(created.code(), absl::StatusCode::kAlreadyExists) << created;
        v1::DeleteTenantRequest del;
        del.set_tenant_id("d");
        v1::DeleteTenantResponse gone;
        ASSERT_OK(broker_->DeleteTenant(del, &gone));
      }
      v1::AllocateWindowRequest req;
      req.set_container_id(pick(containers).first);
      req.set_size(4096);
      req.set_fixed_base(true);
      req.set_base(4096 * absl::Uniform(rng, 1, 64));
      v1::Window w;
      if (broker_->AllocateWindow(req, &w).ok()) windows.push_back(w.id());
    }
    if (step % 7 == 0) {
      // A failed commit rolls back through a reload: indexes rebuilt.
      fake_.set_next_commit_error(absl::UnavailableError("disk full"));
      v1::AllocateWindowRequest req;
      req.set_container_id(containers.empty() ? "c-0000000000000000" : pick(containers).first);
      req.set_size(4096);
      v1::Window w;
      EXPECT_FALSE(broker_->AllocateWindow(req, &w).ok());
      fake_.set_next_commit_error(absl::OkStatus());
    }
    if (step % 3 == 0) {
      // Heartbeats cache their answer, which CheckIndexes compares with a
      // fresh one.
      v1::HeartbeatRequest hb;
      hb.set_node("n1");
      hb.set_session_id(session);
      v1::HeartbeatResponse out;
      ASSERT_OK(broker_->Heartbeat(hb, &out));
    }
    absl::Status check = broker_->CheckIndexes();
    ASSERT_TRUE(check.ok()) << "step " << step << " op " << op << ": " << check;
  }
  Restart();
  EXPECT_TRUE(broker_->CheckIndexes().ok());
}

// The same through the real store: 32 concurrent clients, each of whose
// acknowledged changes is on disk after a restart.
class SqliteGroupCommitTest : public GroupCommitTest {
 protected:
  void SetUp() override {
    const char* dir = std::getenv("TEST_TMPDIR");
    path_ = absl::StrCat(dir ? dir : "/tmp", "/group_commit.db");
    std::remove(path_.c_str());
    auto s = OpenSqliteStore(path_);
    ASSERT_TRUE(s.ok()) << s.status();
    sqlite_ = std::move(*s);
    GroupCommitTest::SetUp();
  }
  Store* store() override { return sqlite_.get(); }

  std::string path_;
  std::unique_ptr<Store> sqlite_;
};

TEST_F(SqliteGroupCommitTest, EveryAcknowledgedMutationOfConcurrentClientsSurvivesRestart) {
  RegisterNode("n1", 32);
  constexpr int kClients = 32;
  constexpr int kPerClient = 10;
  std::vector<std::set<std::string>> acknowledged(kClients);
  std::vector<std::thread> threads;
  for (int i = 0; i < kClients; ++i) {
    threads.emplace_back([&, i] {
      const std::string tenant = absl::StrCat("t", i);
      if (!CreateTenant(tenant, absl::StrCat("create-", i)).ok()) return;
      v1::CreateContainerRequest cr;
      cr.set_tenant_id(tenant);
      cr.set_node("n1");
      cr.add_devices(Address(i));
      v1::Container c;
      if (!broker_->CreateContainer(cr, &c).ok()) return;
      for (int k = 0; k < kPerClient; ++k) {
        v1::AllocateWindowRequest req;
        req.set_request_id(absl::StrCat("w-", i, "-", k));
        req.set_container_id(c.id());
        req.set_size(0x10000);
        v1::Window w;
        if (broker_->AllocateWindow(req, &w).ok()) acknowledged[i].insert(w.id());
      }
    });
  }
  for (std::thread& t : threads) t.join();
  // Close the store as kill -9 would leave it is not possible in process;
  // reopening the file through a new broker is the next best thing.
  broker_.reset();
  sqlite_.reset();
  auto s = OpenSqliteStore(path_);
  ASSERT_TRUE(s.ok()) << s.status();
  sqlite_ = std::move(*s);
  Restart();
  v1::ListWindowsResponse all;
  v1::ListWindowsRequest req;
  req.set_page_size(1000);
  ASSERT_TRUE(broker_->ListWindows(req, &all).ok());
  std::set<std::string> present;
  for (const v1::Window& w : all.windows()) present.insert(w.id());
  size_t total = 0;
  for (int i = 0; i < kClients; ++i) {
    EXPECT_EQ(acknowledged[i].size(), static_cast<size_t>(kPerClient)) << "client " << i;
    for (const std::string& id : acknowledged[i]) EXPECT_TRUE(present.count(id)) << id;
    total += acknowledged[i].size();
  }
  EXPECT_EQ(present.size(), total);
  EXPECT_TRUE(broker_->CheckIndexes().ok());
}

}  // namespace
}  // namespace iommu
