// SIGTERM, the graceful stop (issue 6): the broker stops taking new calls,
// lets the calls in flight finish within --shutdown-grace-ms, closes its store
// cleanly (the WAL checkpointed into the database), and exits 0; everything it
// acknowledged is there after a restart. The agent, on SIGTERM, ends every
// launcher session (mappings unmapped, billing released) and exits 0.
#include <signal.h>
#include <sys/stat.h>

#include <atomic>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "proto/broker.grpc.pb.h"
#include "tests/daemon.h"

namespace iommu {
namespace {

using ::testing::HasSubstr;
using testing::Daemon;

std::unique_ptr<v1::Broker::Stub> Connect(const std::string& address) {
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  return v1::Broker::NewStub(
      grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), args));
}

off_t FileSize(const std::string& path) {
  struct stat st;
  return stat(path.c_str(), &st) == 0 ? st.st_size : 0;
}

TEST(ShutdownTest, SigtermDrainsInFlightCallsClosesTheStoreAndLosesNothing) {
  const std::string dir = testing::NewTempDir("shutdown");
  const std::string broker = testing::RunfilePath("server/iommu-broker");
  const std::vector<std::string> args = {"--listen=127.0.0.1:0", "--db=" + dir + "/broker.db",
                                         "--shutdown-grace-ms=3000", "--insecure"};
  Daemon d;
  ASSERT_TRUE(d.Start(broker, args, dir, "broker").ok()) << d.Log();
  const std::string address = d.address();

  // Four clients create tenants as fast as they can; SIGTERM lands among them.
  std::mutex mu;
  std::map<std::string, bool> acked;  // Acknowledged creates.
  std::vector<grpc::StatusCode> refusals;
  std::atomic<bool> stop{false};
  std::vector<std::thread> clients;
  for (int c = 0; c < 4; ++c) {
    clients.emplace_back([&, c] {
      auto stub = Connect(address);
      for (int i = 0; !stop.load(); ++i) {
        v1::CreateTenantRequest req;
        req.set_tenant_id(absl::StrCat("t", c, "-", i));
        req.set_request_id(req.tenant_id());
        req.mutable_quota()->set_pinned_bytes(4096);
        grpc::ClientContext ctx;
        ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
        v1::Tenant out;
        grpc::Status s = stub->CreateTenant(&ctx, req, &out);
        std::lock_guard<std::mutex> l(mu);
        if (s.ok()) {
          acked[out.id()] = true;
        } else {
          refusals.push_back(s.error_code());
          if (refusals.size() > 50) return;  // The broker is gone.
        }
      }
    });
  }
  // Let some work be acknowledged first.
  for (int i = 0; i < 200; ++i) {
    {
      std::lock_guard<std::mutex> l(mu);
      if (acked.size() >= 50) break;
    }
    absl::SleepFor(absl::Milliseconds(10));
  }
  const absl::Time t0 = absl::Now();
  EXPECT_EQ(d.Stop(), 0) << d.Log();  // SIGTERM and wait.
  const absl::Duration took = absl::Now() - t0;
  stop = true;
  for (auto& t : clients) t.join();

  const std::string log = d.Log();
  EXPECT_THAT(log, HasSubstr("event=stopping"));
  EXPECT_THAT(log, HasSubstr("event=drained"));
  EXPECT_THAT(log, HasSubstr("event=stopped"));
  // The grace period bounds the stop (with room for a slow machine).
  EXPECT_LT(took, absl::Seconds(20));
  // Refused calls are refused cleanly, never half-done: only codes that mean
  // "not served" (the client may retry them with the same request id).
  for (grpc::StatusCode code : refusals) {
    EXPECT_TRUE(code == grpc::StatusCode::UNAVAILABLE || code == grpc::StatusCode::CANCELLED ||
                code == grpc::StatusCode::DEADLINE_EXCEEDED)
        << code;
  }
  // Closed cleanly: SQLite checkpointed the WAL into the database on close.
  EXPECT_EQ(FileSize(dir + "/broker.db-wal"), 0);

  // Everything acknowledged is there after a restart.
  Daemon again;
  ASSERT_TRUE(again.Start(broker, args, dir, "broker").ok()) << again.Log();
  auto stub = Connect(again.address());
  std::map<std::string, bool> seen;
  v1::ListTenantsRequest req;
  req.set_page_size(1000);
  for (;;) {
    grpc::ClientContext ctx;
    v1::ListTenantsResponse resp;
    ASSERT_TRUE(stub->ListTenants(&ctx, req, &resp).ok());
    for (const auto& t : resp.tenants()) seen[t.id()] = true;
    if (resp.next_page_token().empty()) break;
    req.set_page_token(resp.next_page_token());
  }
  for (const auto& [id, unused] : acked) EXPECT_TRUE(seen.count(id)) << id << " was lost";
  EXPECT_GE(acked.size(), 50u);
  stub.reset();
  EXPECT_EQ(again.Stop(), 0);
}

}  // namespace
}  // namespace iommu
