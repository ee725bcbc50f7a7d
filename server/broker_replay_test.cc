// The broker's idempotency against a FakeStore that counts its reads: a fresh
// request id costs no store read (the in-memory index, request_index.h, says
// it is fresh), a retry reads its answer once and replays it, a reused id is
// refused, and all of that holds across a restart, a failed commit, expiry
// and answers remembered under bare ids by older brokers.
#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "common/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/broker.h"
#include "server/fake_store.h"
#include "server/ok_agents.h"

namespace iommu {
namespace {


constexpr int64_t kDayMs = 24LL * 3600 * 1000;

v1::CreateTenantRequest CreateRequest(const std::string& request_id, const std::string& tenant) {
  v1::CreateTenantRequest req;
  req.set_request_id(request_id);
  req.set_tenant_id(tenant);
  req.mutable_quota()->set_pinned_bytes(4096);
  return req;
}

class BrokerReplayTest : public ::testing::Test {
 protected:
  // Ends every test with the broker's state checked whole (CheckIndexes:
  // indexes, and memory against the store).
  void TearDown() override {
    if (broker_ == nullptr || !broker_->Unrecoverable().ok()) return;
    absl::Status s = broker_->CheckIndexes();
    EXPECT_TRUE(s.ok()) << "at the end of the test: " << s;
  }
  void SetUp() override { ASSERT_TRUE(Restart().ok()); }

  // A new broker on the same store, as after a restart of the daemon.
  absl::Status Restart() {
    broker_.reset();
    BrokerOptions o;
    o.request_ttl_ms = kDayMs;
    o.now_ms = [this] { return now_ms_; };
    absl::StatusOr<std::unique_ptr<Broker>> b = Broker::Create(&store_, &agents_, o);
    if (!b.ok()) return b.status();
    broker_ = *std::move(b);
    return absl::OkStatus();
  }

  absl::StatusOr<v1::Tenant> CreateTenant(const v1::CreateTenantRequest& req) {
    v1::Tenant t;
    absl::Status s = broker_->CreateTenant(req, &t, caller_);
    if (!s.ok()) return s;
    return t;
  }

  bool TenantExists(const std::string& id) {
    v1::GetTenantRequest req;
    req.set_tenant_id(id);
    v1::Tenant t;
    return broker_->GetTenant(req, &t).ok();
  }

  FakeStore store_;
  OkAgents agents_;
  std::unique_ptr<Broker> broker_;
  int64_t now_ms_ = 1'700'000'000'000;
  const Identity caller_{Role::kTenant, "acme"};
};

TEST_F(BrokerReplayTest, FreshRequestIdsCauseNoStoreRead) {
  for (int i = 0; i < 20; ++i) {
    absl::StatusOr<v1::Tenant> t =
        CreateTenant(CreateRequest(absl::StrCat("create-", i), absl::StrCat("t", i)));
    ASSERT_TRUE(t.ok()) << t.status();
  }
  v1::SetTenantQuotaRequest quota;
  quota.set_request_id("quota-1");
  quota.set_tenant_id("t0");
  quota.mutable_quota()->set_pinned_bytes(8192);
  v1::Tenant t;
  ASSERT_TRUE(broker_->SetTenantQuota(quota, &t, caller_).ok());
  EXPECT_EQ(store_.find_requests(), 0);
  EXPECT_EQ(store_.commits(), 21);
}

TEST_F(BrokerReplayTest, RetryReplaysTheFirstAnswerWithOneStoreRead) {
  const v1::CreateTenantRequest req = CreateRequest("r1", "acme");
  absl::StatusOr<v1::Tenant> first = CreateTenant(req);
  ASSERT_TRUE(first.ok()) << first.status();
  now_ms_ += 1000;
  absl::StatusOr<v1::Tenant> again = CreateTenant(req);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->SerializeAsString(), first->SerializeAsString());
  EXPECT_EQ(store_.commits(), 1);
  EXPECT_EQ(store_.find_requests(), 1);
}

TEST_F(BrokerReplayTest, ReusedIdForAnotherRequestIsRefusedWithoutAStoreRead) {
  ASSERT_TRUE(CreateTenant(CreateRequest("r1", "acme")).ok());
  EXPECT_THAT(CreateTenant(CreateRequest("r1", "other")).status(),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       "request_id: \"r1\" was already used for a different request"));
  EXPECT_FALSE(TenantExists("other"));
  EXPECT_EQ(store_.find_requests(), 0);
}

TEST_F(BrokerReplayTest, SameIdFromAnotherCallerIsAnotherRequest) {
  ASSERT_TRUE(CreateTenant(CreateRequest("r1", "acme")).ok());
  v1::Tenant t;
  ASSERT_TRUE(
      broker_->CreateTenant(CreateRequest("r1", "other"), &t, Identity{Role::kOperator, "admin"})
          .ok());
  EXPECT_TRUE(TenantExists("other"));
  EXPECT_EQ(store_.find_requests(), 0);
}

TEST_F(BrokerReplayTest, AnswersSurviveARestartOnTheSameStore) {
  const v1::CreateTenantRequest req = CreateRequest("r1", "acme");
  absl::StatusOr<v1::Tenant> first = CreateTenant(req);
  ASSERT_TRUE(first.ok()) << first.status();
  ASSERT_TRUE(Restart().ok());
  now_ms_ += 1000;
  absl::StatusOr<v1::Tenant> again = CreateTenant(req);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->SerializeAsString(), first->SerializeAsString());
  EXPECT_THAT(
      CreateTenant(CreateRequest("r1", "other")).status(),
      StatusIs(absl::StatusCode::kFailedPrecondition, "was already used for a different request"));
  ASSERT_TRUE(CreateTenant(CreateRequest("r2", "other")).ok());
  EXPECT_EQ(store_.commits(), 2);
  EXPECT_EQ(store_.find_requests(), 1);  // The retry's only.
}

TEST_F(BrokerReplayTest, ExpiryForgetsTheAnswer) {
  const v1::CreateTenantRequest req = CreateRequest("r1", "acme");
  ASSERT_TRUE(CreateTenant(req).ok());
  now_ms_ += kDayMs + 1;
  ASSERT_TRUE(broker_->ExpireRequests().ok());
  // Not replayed: the request runs again (and finds its tenant).
  EXPECT_THAT(CreateTenant(req).status(), StatusIs(absl::StatusCode::kAlreadyExists, "acme"));
  // And the id is free for another request.
  ASSERT_TRUE(CreateTenant(CreateRequest("r1", "other")).ok());
  EXPECT_EQ(store_.find_requests(), 0);
}

TEST_F(BrokerReplayTest, AnswersYoungerThanTheTtlOutliveExpiry) {
  const v1::CreateTenantRequest req = CreateRequest("r1", "acme");
  absl::StatusOr<v1::Tenant> first = CreateTenant(req);
  ASSERT_TRUE(first.ok());
  now_ms_ += kDayMs - 1;
  ASSERT_TRUE(broker_->ExpireRequests().ok());
  absl::StatusOr<v1::Tenant> again = CreateTenant(req);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->SerializeAsString(), first->SerializeAsString());
}

// Answers remembered before ids were scoped by caller are keyed by the bare
// id: the identical request still replays one, any other runs as new.
TEST_F(BrokerReplayTest, AnswerUnderABareLegacyIdReplaysOnlyForTheIdenticalRequest) {
  const v1::CreateTenantRequest req = CreateRequest("legacy-1", "acme");
  v1::Tenant remembered;
  remembered.set_id("acme");
  remembered.mutable_quota()->set_pinned_bytes(4096);
  remembered.set_create_time_ms(12345);  // Not what a new create would say.
  store_.PutRequest(RequestRecord{"legacy-1", absl::StrCat("CreateTenant\n", req.SerializeAsString()),
                                  remembered.SerializeAsString(), now_ms_});
  ASSERT_TRUE(Restart().ok());

  absl::StatusOr<v1::Tenant> replayed = CreateTenant(req);
  ASSERT_TRUE(replayed.ok()) << replayed.status();
  EXPECT_EQ(replayed->create_time_ms(), 12345);
  EXPECT_FALSE(TenantExists("acme"));  // Replayed, not run.
  EXPECT_EQ(store_.find_requests(), 1);

  // Another request under that id may be another caller's: it runs as new.
  ASSERT_TRUE(CreateTenant(CreateRequest("legacy-1", "other")).ok());
  EXPECT_TRUE(TenantExists("other"));
  EXPECT_EQ(store_.find_requests(), 1);
}

TEST_F(BrokerReplayTest, AnAnswerWhoseCommitFailedIsNotRemembered) {
  const v1::CreateTenantRequest req = CreateRequest("r1", "acme");
  store_.set_next_commit_error(absl::UnavailableError("disk full"));
  EXPECT_THAT(CreateTenant(req).status(), StatusIs(absl::StatusCode::kUnavailable, "disk full"));
  // The retry runs (and now commits), rather than replaying or refusing.
  absl::StatusOr<v1::Tenant> t = CreateTenant(req);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_TRUE(TenantExists("acme"));
  EXPECT_EQ(store_.find_requests(), 0);
}

// A store that splits a group commit into several transactions may keep
// the first ones when a later one fails (kv_backed_store.h): the reload
// after the failure indexes the answers they carried.
TEST_F(BrokerReplayTest, AnswersTheStoreKeptFromAFailedCommitReplayAfterTheReload) {
  const v1::CreateTenantRequest kept = CreateRequest("kept", "kept");
  v1::Tenant answer;
  answer.set_id("kept");
  answer.set_create_time_ms(777);
  store_.PutRequest(RequestRecord{caller_.ToString() + "|kept",
                                  absl::StrCat("CreateTenant\n", kept.SerializeAsString()),
                                  answer.SerializeAsString(), now_ms_});
  store_.set_next_commit_error(absl::UnavailableError("etcd: txn 2 of 2 failed"));
  EXPECT_THAT(CreateTenant(CreateRequest("r1", "acme")).status(),
              StatusIs(absl::StatusCode::kUnavailable, "txn 2 of 2 failed"));
  ASSERT_TRUE(broker_->Unrecoverable().ok());
  absl::StatusOr<v1::Tenant> replayed = CreateTenant(kept);
  ASSERT_TRUE(replayed.ok()) << replayed.status();
  EXPECT_EQ(replayed->create_time_ms(), 777);
}

TEST_F(BrokerReplayTest, AnIndexThatCannotBeReloadedAfterAFailedCommitStopsTheBroker) {
  store_.set_next_commit_error(absl::UnavailableError("disk full"));
  store_.set_next_list_requests_error(absl::UnavailableError("store: read failed"));
  EXPECT_THAT(CreateTenant(CreateRequest("r1", "acme")).status(),
              StatusIs(absl::StatusCode::kUnavailable, "disk full"));
  EXPECT_THAT(broker_->Unrecoverable(),
              StatusIs(absl::StatusCode::kUnavailable, "store: read failed"));
  EXPECT_THAT(CreateTenant(CreateRequest("r2", "acme")).status(),
              StatusIs(absl::StatusCode::kUnavailable, "restarting"));
}

TEST_F(BrokerReplayTest, ADamagedRememberedAnswerRefusesTheStart) {
  store_.set_next_list_requests_error(
      absl::DataLossError("store: answer to request r1 fails its checksum"));
  EXPECT_THAT(Restart(),
              StatusIs(absl::StatusCode::kDataLoss, "answer to request r1 fails its checksum"));
}

TEST_F(BrokerReplayTest, RetriedDrainReplaysItsAnswer) {
  v1::RegisterRequest reg;
  reg.set_node("n1");
  reg.set_agent_address("n1:1");
  reg.set_backend("sim");
  reg.set_simulated(true);
  v1::RegisterResponse registered;
  ASSERT_TRUE(broker_->Register(reg, &registered).ok());
  v1::DrainNodeRequest drain;
  drain.set_request_id("drain-1");
  drain.set_node("n1");
  v1::DrainNodeResponse first, again;
  const Identity admin{Role::kOperator, "admin"};
  ASSERT_TRUE(broker_->DrainNode(drain, &first, admin).ok());
  EXPECT_EQ(store_.find_requests(), 0);
  const int commits = store_.commits();
  ASSERT_TRUE(broker_->DrainNode(drain, &again, admin).ok());
  EXPECT_EQ(again.SerializeAsString(), first.SerializeAsString());
  EXPECT_EQ(store_.commits(), commits);
  EXPECT_EQ(store_.find_requests(), 1);
  drain.set_delete_containers(true);
  EXPECT_THAT(
      broker_->DrainNode(drain, &again, admin),
      StatusIs(absl::StatusCode::kFailedPrecondition, "was already used for a different request"));
}

}  // namespace
}  // namespace iommu
