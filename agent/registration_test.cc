#include "agent/registration.h"

#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "agent/sim_backend.h"
#include "common/status_matchers.h"
#include "gmock/gmock.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/server.h"
#include "grpcpp/server_builder.h"
#include "gtest/gtest.h"
#include "proto/broker.grpc.pb.h"

namespace iommu {
namespace agent {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

constexpr char kC1[] = "c-00000000000000c1";
constexpr char kC2[] = "c-00000000000000c2";

// Generous: the conditions are normally met within milliseconds; the timeout
// only turns a hang into a failure.
constexpr absl::Duration kWait = absl::Seconds(30);

v1::AgentContainer Desired(const std::string& id, const std::string& device) {
  v1::AgentContainer c;
  c.set_id(id);
  c.set_tenant_id("acme");
  c.add_devices(device);
  return c;
}

// A NodeRegistry that records every call and can be told to forget its
// sessions (as a restarted broker does) or to fail calls.
class FakeBroker final : public v1::NodeRegistry::Service {
 public:
  grpc::Status Register(grpc::ServerContext*, const v1::RegisterRequest* request,
                        v1::RegisterResponse* response) override {
    absl::MutexLock lock(&mu_);
    registers_.push_back(*request);
    if (register_failures_ > 0) {
      --register_failures_;
      return grpc::Status(grpc::StatusCode::UNAVAILABLE, "broker warming up");
    }
    const std::string session = absl::StrCat("s-", ++next_session_);
    sessions_.insert(session);
    response->set_session_id(session);
    response->set_heartbeat_interval_ms(2);
    for (const v1::AgentContainer& c : desired_) *response->add_desired_containers() = c;
    return grpc::Status::OK;
  }

  grpc::Status Heartbeat(grpc::ServerContext*, const v1::HeartbeatRequest* request,
                         v1::HeartbeatResponse*) override {
    absl::MutexLock lock(&mu_);
    if (heartbeat_failures_ > 0) {
      --heartbeat_failures_;
      return grpc::Status(grpc::StatusCode::UNAVAILABLE, "broker unreachable");
    }
    if (!sessions_.contains(request->session_id())) {
      return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                          "unknown session; register again");
    }
    ok_heartbeats_.push_back(*request);
    return grpc::Status::OK;
  }

  grpc::Status Reconciled(grpc::ServerContext*, const v1::ReconciledRequest* request,
                          v1::ReconciledResponse*) override {
    absl::MutexLock lock(&mu_);
    reconciled_.push_back(*request);
    return grpc::Status::OK;
  }

  void SetDesired(std::vector<v1::AgentContainer> desired) {
    absl::MutexLock lock(&mu_);
    desired_ = std::move(desired);
  }
  void ForgetSessions() {
    absl::MutexLock lock(&mu_);
    sessions_.clear();
  }
  void FailRegisters(int n) {
    absl::MutexLock lock(&mu_);
    register_failures_ = n;
  }
  void FailHeartbeats(int n) {
    absl::MutexLock lock(&mu_);
    heartbeat_failures_ = n;
  }

  // Counters the tests wait on.
  struct Snapshot {
    size_t registers = 0;
    size_t reconciled = 0;
    size_t ok_heartbeats = 0;
    int heartbeat_failures_pending = 0;
    std::string last_heartbeat_session;
  };

  // Waits until `pred(Snapshot)` holds; false after kWait.
  template <typename Pred>
  bool WaitUntil(Pred pred) {
    absl::MutexLock lock(&mu_);
    auto check = [&] {
      mu_.AssertHeld();  // Await evaluates conditions with mu_ held.
      return pred(SnapshotLocked());
    };
    return mu_.AwaitWithTimeout(absl::Condition(&check), kWait);
  }

  std::vector<v1::RegisterRequest> registers() {
    absl::MutexLock lock(&mu_);
    return registers_;
  }
  std::vector<v1::ReconciledRequest> reconciled() {
    absl::MutexLock lock(&mu_);
    return reconciled_;
  }
  std::vector<v1::HeartbeatRequest> ok_heartbeats() {
    absl::MutexLock lock(&mu_);
    return ok_heartbeats_;
  }

 private:
  Snapshot SnapshotLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    Snapshot s;
    s.registers = registers_.size();
    s.reconciled = reconciled_.size();
    s.ok_heartbeats = ok_heartbeats_.size();
    s.heartbeat_failures_pending = heartbeat_failures_;
    if (!ok_heartbeats_.empty()) {
      s.last_heartbeat_session = ok_heartbeats_.back().session_id();
    }
    return s;
  }

  absl::Mutex mu_;
  std::vector<v1::RegisterRequest> registers_ ABSL_GUARDED_BY(mu_);
  std::vector<v1::ReconciledRequest> reconciled_ ABSL_GUARDED_BY(mu_);
  std::vector<v1::HeartbeatRequest> ok_heartbeats_ ABSL_GUARDED_BY(mu_);
  int heartbeat_failures_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<v1::AgentContainer> desired_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_set<std::string> sessions_ ABSL_GUARDED_BY(mu_);
  int next_session_ ABSL_GUARDED_BY(mu_) = 0;
  int register_failures_ ABSL_GUARDED_BY(mu_) = 0;
};

class RegistrationTest : public ::testing::Test {
 protected:
  RegistrationTest() {
    absl::StatusOr<std::vector<SimDeviceSpec>> specs =
        ParseSimDevices("0000:00:04.0=1234:11e8@5,0000:00:05.0=1234:11e8@6");
    EXPECT_OK(specs);
    absl::StatusOr<std::unique_ptr<SimBackend>> backend =
        SimBackend::Create(*std::move(specs));
    EXPECT_OK(backend);
    backend_ = *std::move(backend);
    core_ = std::make_unique<AgentCore>("n1", backend_.get());

    grpc::ServerBuilder builder;
    builder.RegisterService(&broker_);
    server_ = builder.BuildAndStart();
  }

  ~RegistrationTest() override {
    registration_.reset();  // Stops the loop before the server goes.
    server_->Shutdown();
  }

  static RegistrationOptions Options() {
    RegistrationOptions o;
    o.agent_address = "127.0.0.1:7001";
    o.launcher_socket = "/run/iommu-agent/launcher.sock";
    o.agent_version = "test";
    o.broker_address = "in-process";
    o.initial_backoff = absl::Milliseconds(1);
    o.max_backoff = absl::Milliseconds(20);
    return o;
  }

  void Start(RegistrationOptions options = Options()) {
    registration_ = std::make_unique<Registration>(
        options, core_.get(),
        v1::NodeRegistry::NewStub(server_->InProcessChannel(grpc::ChannelArguments())));
    registration_->Start();
  }

  std::unique_ptr<SimBackend> backend_;
  std::unique_ptr<AgentCore> core_;
  FakeBroker broker_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<Registration> registration_;
};

TEST_F(RegistrationTest, RegistersReconcilesThenHeartbeats) {
  // Held before registering but unknown to the broker: must go.
  ASSERT_OK(core_->CreateContainer(kC2, "acme", {"0000:00:05.0"}));
  broker_.SetDesired({Desired(kC1, "0000:00:04.0")});
  Start();
  ASSERT_TRUE(broker_.WaitUntil(
      [](const FakeBroker::Snapshot& s) { return s.ok_heartbeats >= 2; }));

  const std::vector<v1::RegisterRequest> registers = broker_.registers();
  ASSERT_EQ(registers.size(), 1u);
  const v1::RegisterRequest& r = registers[0];
  EXPECT_EQ(r.node(), "n1");
  EXPECT_EQ(r.agent_address(), "127.0.0.1:7001");
  EXPECT_EQ(r.backend(), "sim");
  EXPECT_TRUE(r.simulated());
  EXPECT_EQ(r.agent_version(), "test");
  EXPECT_EQ(r.launcher_socket(), "/run/iommu-agent/launcher.sock");
  // This run's incarnation, which the broker binds its grants to.
  EXPECT_EQ(r.agent_incarnation(), core_->incarnation());
  EXPECT_EQ(r.agent_incarnation().size(), 32u);
  ASSERT_EQ(r.devices_size(), 2);
  EXPECT_EQ(r.devices(1).container_id(), kC2);
  ASSERT_EQ(r.containers_size(), 1);
  EXPECT_EQ(r.containers(0).id(), kC2);

  const std::vector<v1::ReconciledRequest> reconciled = broker_.reconciled();
  ASSERT_EQ(reconciled.size(), 1u);
  EXPECT_EQ(reconciled[0].node(), "n1");
  EXPECT_EQ(reconciled[0].session_id(), "s-1");
  ASSERT_EQ(reconciled[0].containers_size(), 1);
  EXPECT_EQ(reconciled[0].containers(0).id(), kC1);
  EXPECT_EQ(reconciled[0].containers(0).geometry().page_size_bitmap(), 0x40201000u);
  EXPECT_EQ(reconciled[0].failed_container_ids_size(), 0);

  const v1::HeartbeatRequest hb = broker_.ok_heartbeats()[0];
  EXPECT_EQ(hb.node(), "n1");
  EXPECT_EQ(hb.session_id(), "s-1");
  EXPECT_EQ(hb.container_count(), 1u);
  EXPECT_EQ(hb.usage_size(), 0);

  EXPECT_EQ(registration_->session_id(), "s-1");
  std::vector<std::string> held;
  for (const v1::AgentContainer& c : core_->Containers()) held.push_back(c.id());
  EXPECT_THAT(held, ElementsAre(kC1));
}

TEST_F(RegistrationTest, ReportsContainersItCouldNotCreate) {
  broker_.SetDesired({Desired(kC1, "0000:00:04.0"), Desired(kC2, "0000:00:09.0")});
  Start();
  ASSERT_TRUE(broker_.WaitUntil([](const FakeBroker::Snapshot& s) { return s.reconciled > 0; }));
  const v1::ReconciledRequest r = broker_.reconciled()[0];
  ASSERT_EQ(r.containers_size(), 1);
  EXPECT_EQ(r.containers(0).id(), kC1);
  EXPECT_THAT(r.failed_container_ids(), ElementsAre(kC2));
  ASSERT_EQ(r.failure_reasons_size(), 1);
  EXPECT_THAT(r.failure_reasons(0), HasSubstr("ENODEV"));
}

TEST_F(RegistrationTest, RetriesContainersItCouldNotCreateUntilTheyExist) {
  // A device held elsewhere (as a launcher from before a restart may hold
  // it): the first reconcile fails, a later one succeeds once it is free.
  backend_->set_next_error(SimOp::kCreateContainer, EBUSY);
  broker_.SetDesired({Desired(kC1, "0000:00:04.0")});
  RegistrationOptions options = Options();
  options.reconcile_retry_interval = absl::Milliseconds(50);
  options.default_heartbeat_interval = absl::Milliseconds(10);
  Start(options);
  ASSERT_TRUE(broker_.WaitUntil([](const FakeBroker::Snapshot& s) { return s.reconciled >= 2; }));
  const std::vector<v1::ReconciledRequest> r = broker_.reconciled();
  EXPECT_THAT(r[0].failed_container_ids(), ElementsAre(kC1));
  EXPECT_EQ(r[1].failed_container_ids_size(), 0);
  ASSERT_EQ(r[1].containers_size(), 1);
  EXPECT_EQ(r[1].containers(0).id(), kC1);
  // And it stops retrying once nothing is missing.
  const size_t registers = broker_.registers().size();
  ASSERT_TRUE(broker_.WaitUntil(
      [](const FakeBroker::Snapshot& s) { return s.ok_heartbeats >= 20; }));
  EXPECT_EQ(broker_.registers().size(), registers);
}

TEST_F(RegistrationTest, RegistersAgainWhenBrokerForgetsSession) {
  broker_.SetDesired({Desired(kC1, "0000:00:04.0")});
  Start();
  ASSERT_TRUE(broker_.WaitUntil([](const FakeBroker::Snapshot& s) { return s.ok_heartbeats > 0; }));

  broker_.ForgetSessions();  // As a restarted broker would.
  ASSERT_TRUE(broker_.WaitUntil([](const FakeBroker::Snapshot& s) {
    return s.last_heartbeat_session == "s-2";
  }));
  const std::vector<v1::RegisterRequest> registers = broker_.registers();
  ASSERT_EQ(registers.size(), 2u);
  // The second registration reports what the agent kept.
  ASSERT_EQ(registers[1].containers_size(), 1);
  EXPECT_EQ(registers[1].containers(0).id(), kC1);
  EXPECT_EQ(broker_.reconciled().size(), 2u);
  EXPECT_EQ(core_->container_count(), 1u);
}

TEST_F(RegistrationTest, KeepsSessionAndContainersWhileBrokerUnavailable) {
  broker_.SetDesired({Desired(kC1, "0000:00:04.0")});
  Start();
  ASSERT_TRUE(broker_.WaitUntil([](const FakeBroker::Snapshot& s) { return s.ok_heartbeats > 0; }));

  broker_.FailHeartbeats(5);
  ASSERT_TRUE(broker_.WaitUntil([](const FakeBroker::Snapshot& s) { return s.heartbeat_failures_pending == 0; }));
  const size_t ok_before = broker_.ok_heartbeats().size();
  ASSERT_TRUE(broker_.WaitUntil(
      [ok_before](const FakeBroker::Snapshot& s) { return s.ok_heartbeats > ok_before; }));

  // Same session throughout: no re-registration, nothing destroyed.
  EXPECT_EQ(broker_.registers().size(), 1u);
  EXPECT_EQ(broker_.ok_heartbeats().back().session_id(), "s-1");
  EXPECT_EQ(core_->container_count(), 1u);
}

TEST_F(RegistrationTest, RetriesRegisterUntilBrokerAnswers) {
  broker_.FailRegisters(3);
  Start();
  ASSERT_TRUE(broker_.WaitUntil([](const FakeBroker::Snapshot& s) { return s.ok_heartbeats > 0; }));
  EXPECT_EQ(broker_.registers().size(), 4u);
  EXPECT_EQ(registration_->session_id(), "s-1");
  EXPECT_EQ(registration_->state(), Registration::State::kRegistered);
}

TEST_F(RegistrationTest, StopEndsLoopAgainstAbsentBroker) {
  // Port 1 on loopback: nothing listens, every call fails fast.
  auto stub = v1::NodeRegistry::NewStub(
      grpc::CreateChannel("127.0.0.1:1", grpc::InsecureChannelCredentials()));
  Registration registration(Options(), core_.get(), std::move(stub));
  registration.Start();
  registration.Stop();
  EXPECT_EQ(registration.state(), Registration::State::kStopped);
  EXPECT_THAT(registration.session_id(), IsEmpty());
  registration.Stop();  // Idempotent.
}

TEST_F(RegistrationTest, StopBeforeStartIsHarmless) {
  Registration registration(
      Options(), core_.get(),
      v1::NodeRegistry::NewStub(server_->InProcessChannel(grpc::ChannelArguments())));
  registration.Stop();
  EXPECT_EQ(registration.state(), Registration::State::kStopped);
}

// Regression (issue 11, E): with the old doubling to 30 s, ten agents took
// 15.5 s to be READY after an 8 s broker outage. Now the delay never passes
// the cap (1 s by default, and at most the heartbeat interval), and it is
// drawn uniformly below the ceiling so a fleet does not retry in waves.
TEST(RetryDelayTest, DoublesFromInitialAndStopsAtTheCap) {
  const absl::Duration initial = absl::Milliseconds(250), cap = absl::Seconds(1);
  // unit_random just under 1: the ceiling itself, attempt by attempt.
  const double top = 1.0;
  EXPECT_EQ(RetryDelay(0, initial, cap, top), absl::Milliseconds(250));
  EXPECT_EQ(RetryDelay(1, initial, cap, top), absl::Milliseconds(500));
  EXPECT_EQ(RetryDelay(2, initial, cap, top), absl::Seconds(1));
  EXPECT_EQ(RetryDelay(3, initial, cap, top), absl::Seconds(1));
  EXPECT_EQ(RetryDelay(1000000, initial, cap, top), absl::Seconds(1));
}

TEST(RetryDelayTest, FullJitterScalesTheWholeCeiling) {
  const absl::Duration initial = absl::Milliseconds(250), cap = absl::Seconds(1);
  EXPECT_EQ(RetryDelay(5, initial, cap, 0.0), absl::ZeroDuration());
  EXPECT_EQ(RetryDelay(5, initial, cap, 0.25), absl::Milliseconds(250));
  EXPECT_EQ(RetryDelay(1, initial, cap, 0.5), absl::Milliseconds(250));
  // Out-of-range randomness is clamped, never past the cap or negative.
  EXPECT_EQ(RetryDelay(5, initial, cap, 7.0), absl::Seconds(1));
  EXPECT_EQ(RetryDelay(5, initial, cap, -1.0), absl::ZeroDuration());
  EXPECT_EQ(RetryDelay(5, absl::ZeroDuration(), cap, 0.5), absl::ZeroDuration());
}

TEST(RetryDelayTest, AnOutageOfEightSecondsCostsAtMostOneCapAfterTheBrokerReturns) {
  // Worst case for one agent: every draw at the ceiling. Sum the waits of
  // attempts until 8 s have passed; the next attempt comes at most one cap
  // later, i.e. within two 1 s heartbeat intervals of the broker's return.
  const absl::Duration initial = absl::Milliseconds(250), cap = absl::Seconds(1);
  absl::Duration t = absl::ZeroDuration();
  int attempt = 0;
  while (t < absl::Seconds(8)) t += RetryDelay(attempt++, initial, cap, 1.0);
  EXPECT_LE(t - absl::Seconds(8), cap);
}

}  // namespace
}  // namespace agent
}  // namespace iommu
