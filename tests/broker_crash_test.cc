// Kills the broker with SIGKILL in the middle of a stream of mutations,
// restarts it on the same database, and checks DESIGN.md invariant 5: every
// acknowledged change is there, and the one in flight is either wholly there
// or wholly absent (and a retry with its request id completes it once).
#include <signal.h>

#include <map>
#include <optional>
#include <random>
#include <string>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "proto/broker.grpc.pb.h"
#include "tests/daemon.h"
#include "tests/etcd_process.h"
#include "tests/test_util.h"

namespace iommu {
namespace {

using testing::Daemon;
using testing::InsecureBrokerStub;
using testing::TenantQuotas;

struct Pending {
  bool is_create = false;
  v1::CreateTenantRequest create;
  v1::SetTenantQuotaRequest update;
};

// Each store the broker runs on: the embedded record store, the versioned
// SQLite store, and a real etcd (whose leader lease, left behind by the
// killed broker, the restarted one waits out).
class BrokerCrashTest : public ::testing::TestWithParam<std::string> {
 protected:
  std::string StoreFlag(const std::string& dir) {
    if (GetParam() == "sqlite") return "--store=sqlite:" + dir + "/broker.db";
    if (GetParam() == "sqlite-kv") return "--store=sqlite-kv:" + dir + "/broker.db";
    absl::Status s = etcd_.Start();
    EXPECT_TRUE(s.ok()) << s;
    return "--store=etcd://" + etcd_.endpoint();
  }
  testing::EtcdProcess etcd_;
};

INSTANTIATE_TEST_SUITE_P(Stores, BrokerCrashTest,
                         ::testing::Values("sqlite", "sqlite-kv", "etcd"),
                         [](const ::testing::TestParamInfo<std::string>& p) {
                           return p.param == "sqlite-kv" ? std::string("SqliteKv") : p.param;
                         });

TEST_P(BrokerCrashTest, AcknowledgedMutationsSurviveKill9AndNothingHalfDoneAppears) {
  const std::string dir = testing::NewTempDir("crash");
  const std::string broker = testing::RunfilePath("server/iommu-broker");
  const std::vector<std::string> args = {"--listen=127.0.0.1:0", StoreFlag(dir),
                                         "--leader-ttl-seconds=2", "--shutdown-grace-ms=500",
                                         "--insecure"};
  std::mt19937 rng(42);
  std::map<std::string, uint64_t> acked;  // tenant -> pinned_bytes last acknowledged

  for (int round = 0; round < 6; ++round) {
    SCOPED_TRACE(absl::StrCat("round ", round));
    Daemon d;
    ASSERT_TRUE(d.Start(broker, args, dir, "broker").ok()) << d.Log();
    auto stub = InsecureBrokerStub(d.address());
    // Everything acknowledged in earlier rounds is still there.
    ASSERT_EQ(TenantQuotas(stub.get()), acked);

    const int delay_ms = 30 + static_cast<int>(rng() % 400);
    const pid_t pid = d.pid();
    std::thread killer([pid, delay_ms] {
      absl::SleepFor(absl::Milliseconds(delay_ms));
      kill(pid, SIGKILL);
    });
    std::optional<Pending> pending;
    for (int i = 0; !pending.has_value(); ++i) {
      grpc::ClientContext ctx;
      ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(5)));
      Pending p;
      const bool update = !acked.empty() && i % 3 == 2;
      grpc::Status s;
      if (!update) {
        p.is_create = true;
        p.create.set_request_id(absl::StrCat("create-", round, "-", i));
        p.create.set_tenant_id(absl::StrCat("t", round, "-", i));
        p.create.mutable_quota()->set_pinned_bytes(4096 * (i + 1));
        v1::Tenant out;
        s = stub->CreateTenant(&ctx, p.create, &out);
        if (s.ok()) acked[out.id()] = out.quota().pinned_bytes();
      } else {
        auto victim = std::next(acked.begin(), rng() % acked.size());
        p.update.set_request_id(absl::StrCat("update-", round, "-", i));
        p.update.set_tenant_id(victim->first);
        p.update.mutable_quota()->set_pinned_bytes(4096 * (1 + rng() % 1000));
        v1::Tenant out;
        s = stub->SetTenantQuota(&ctx, p.update, &out);
        if (s.ok()) acked[out.id()] = out.quota().pinned_bytes();
      }
      if (!s.ok()) pending = p;
    }
    killer.join();
    d.Kill();

    // Restart on the same database.
    Daemon again;
    ASSERT_TRUE(again.Start(broker, args, dir, "broker").ok()) << again.Log();
    auto stub2 = InsecureBrokerStub(again.address());
    std::map<std::string, uint64_t> seen = TenantQuotas(stub2.get());
    // The in-flight change is all or nothing.
    if (pending->is_create) {
      const std::string& id = pending->create.tenant_id();
      if (seen.count(id)) {
        EXPECT_EQ(seen[id], pending->create.quota().pinned_bytes());
        seen.erase(id);
      }
    } else {
      const std::string& id = pending->update.tenant_id();
      ASSERT_TRUE(seen.count(id));
      if (seen[id] == pending->update.quota().pinned_bytes()) seen[id] = acked[id];
    }
    EXPECT_EQ(seen, acked);
    // Retrying the in-flight request completes it exactly once.
    grpc::ClientContext ctx;
    v1::Tenant out;
    grpc::Status s = pending->is_create ? stub2->CreateTenant(&ctx, pending->create, &out)
                                        : stub2->SetTenantQuota(&ctx, pending->update, &out);
    ASSERT_TRUE(s.ok()) << s.error_message();
    acked[out.id()] = out.quota().pinned_bytes();
    EXPECT_EQ(TenantQuotas(stub2.get()), acked);
    // Drop the connection first: an idle client that never reads the
    // server's GOAWAY would hold the graceful shutdown to its deadline.
    stub2.reset();
    EXPECT_EQ(again.Stop(), 0);
  }
  // Several rounds each acknowledged something before the kill.
  EXPECT_GT(acked.size(), 6u);
}

}  // namespace
}  // namespace iommu
