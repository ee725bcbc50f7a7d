// Broker::Create refuses options out of range, whoever builds them (the
// daemon checks its flags with the same rule, tests/daemon_cli_test).
#include <cstdint>
#include <functional>
#include <string>

#include "common/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/broker.h"
#include "server/fake_store.h"
#include "server/ok_agents.h"

namespace iommu {
namespace {

using ::testing::HasSubstr;

TEST(BrokerOptionsTest, DefaultsAreValid) { EXPECT_OK(ValidateBrokerOptions(BrokerOptions())); }

TEST(BrokerOptionsTest, EachOptionOutOfRangeIsRefusedByNameAndRule) {
  const struct {
    std::function<void(BrokerOptions*)> set;
    std::string message;
  } cases[] = {
      {[](BrokerOptions* o) { o->heartbeat_interval_ms = 0; },
       "heartbeat_interval_ms: must be at least 1, got 0"},
      {[](BrokerOptions* o) { o->node_timeout_ms = -1; },
       "node_timeout_ms: must be at least 1, got -1"},
      {[](BrokerOptions* o) { o->liveness_check_interval_ms = -5; },
       "liveness_check_interval_ms: must be at least 0, got -5"},
      {[](BrokerOptions* o) { o->request_ttl_ms = 0; },
       "request_ttl_ms: must be at least 1, got 0"},
      {[](BrokerOptions* o) { o->max_remembered_answers_per_caller = -1; },
       "max_remembered_answers_per_caller: must be at least 0, got -1"},
      {[](BrokerOptions* o) { o->max_remembered_answer_bytes_per_caller = -1; },
       "max_remembered_answer_bytes_per_caller: must be at least 0, got -1"},
      {[](BrokerOptions* o) { o->max_concurrent_registrations = INT64_MIN; },
       "max_concurrent_registrations: must be at least 0, got -9223372036854775808"},
  };
  for (const auto& c : cases) {
    BrokerOptions o;
    c.set(&o);
    absl::Status s = ValidateBrokerOptions(o);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << c.message;
    EXPECT_EQ(s.message(), c.message);

    // Create refuses them before it reads the store.
    FakeStore store;
    OkAgents agents;
    absl::StatusOr<std::unique_ptr<Broker>> broker = Broker::Create(&store, &agents, o);
    ASSERT_FALSE(broker.ok()) << c.message;
    EXPECT_EQ(broker.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(broker.status().message(), HasSubstr(c.message));
  }
}

TEST(BrokerOptionsTest, TheEdgesOfEachRangeAreAccepted) {
  BrokerOptions o;
  o.heartbeat_interval_ms = 1;
  o.node_timeout_ms = 1;
  o.liveness_check_interval_ms = 0;
  o.request_ttl_ms = 1;
  o.max_remembered_answers_per_caller = 0;  // No limit.
  o.max_concurrent_registrations = 0;       // No bound.
  EXPECT_OK(ValidateBrokerOptions(o));
  FakeStore store;
  OkAgents agents;
  EXPECT_OK(Broker::Create(&store, &agents, o).status());
}

}  // namespace
}  // namespace iommu
