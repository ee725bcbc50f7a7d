// Certificate rotation through the real broker (--tls-reload-seconds=1): a
// key that does not match the certificate is refused and the broker keeps
// serving its last good pair to new connections; a re-issued pair is then
// served without a restart.
#include <sys/wait.h>

#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "grpc/grpc_security_constants.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "proto/broker.grpc.pb.h"
#include "tests/cluster.h"
#include "tests/daemon.h"

namespace iommu {
namespace {

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// What a new connection to the broker gets: the call's status and the leaf
// certificate the broker presented (PEM; empty when the handshake failed).
struct Served {
  grpc::Status status;
  std::string leaf_pem;
};

Served ListNodesOnANewConnection(const testing::Cluster& cluster) {
  // A stub of its own: a new channel, hence a new handshake.
  std::unique_ptr<v1::Broker::Stub> stub = cluster.BrokerStub();
  grpc::ClientContext ctx;
  ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(5)));
  v1::ListNodesRequest req;
  v1::ListNodesResponse out;
  Served served;
  served.status = stub->ListNodes(&ctx, req, &out);
  std::shared_ptr<const grpc::AuthContext> auth = ctx.auth_context();
  if (auth != nullptr) {
    for (const grpc::string_ref& pem : auth->FindPropertyValues(GRPC_X509_PEM_CERT_PROPERTY_NAME)) {
      served.leaf_pem.assign(pem.data(), pem.size());
    }
  }
  return served;
}

// Polls (up to 30 s) until the daemon's log holds `text` at least `times` times.
bool WaitForLog(testing::Daemon& daemon, const std::string& text, int times = 1) {
  const absl::Time deadline = absl::Now() + absl::Seconds(30);
  while (absl::Now() < deadline) {
    const std::string log = daemon.Log();
    int seen = 0;
    for (size_t at = log.find(text); at != std::string::npos; at = log.find(text, at + 1)) ++seen;
    if (seen >= times) return true;
    absl::SleepFor(absl::Milliseconds(100));
  }
  return false;
}

testing::ClusterOptions Options(const std::string& reload_seconds) {
  testing::ClusterOptions o;
  o.tls = true;
  o.broker_args = {"--tls-reload-seconds=" + reload_seconds};
  return o;
}

// Regression: gRPC's own file watcher loaded a mismatched key/certificate
// pair as it was, after which the broker served no certificate and every new
// connection failed.
TEST(TlsRotationTest, ABadKeyIsRefusedAndAReissuedPairIsServed) {
  testing::Cluster cluster(Options("1"));
  ASSERT_TRUE(cluster.StartBroker().ok()) << cluster.broker().Log();
  const std::string dir = cluster.certs_dir();
  const std::string first_cert = ReadAll(dir + "/broker.crt");
  Served served = ListNodesOnANewConnection(cluster);
  ASSERT_TRUE(served.status.ok()) << served.status.error_message();
  ASSERT_EQ(served.leaf_pem, first_cert);

  // (a) The operator's key where the broker's belongs.
  testing::CommandResult swap =
      testing::RunCommand({"/bin/cp", dir + "/operator-admin.key", dir + "/broker.key"});
  ASSERT_EQ(swap.exit_code, 0) << swap.err;
  ASSERT_TRUE(WaitForLog(cluster.broker(), "event=tls_reload_refused file=" + dir + "/broker.key"))
      << cluster.broker().Log();
  // Another bad key, refused at a later reload: by then the broker has had
  // every chance to load the first one.
  swap = testing::RunCommand({"/bin/cp", dir + "/ca.key", dir + "/broker.key"});
  ASSERT_EQ(swap.exit_code, 0) << swap.err;
  ASSERT_TRUE(
      WaitForLog(cluster.broker(), "event=tls_reload_refused file=" + dir + "/broker.key", 2))
      << cluster.broker().Log();
  served = ListNodesOnANewConnection(cluster);
  EXPECT_TRUE(served.status.ok()) << served.status.error_message() << "\n"
                                  << cluster.broker().Log();
  EXPECT_EQ(served.leaf_pem, first_cert);

  // (b) A re-issued pair (same CA, same identity) is served without a restart.
  testing::CommandResult reissue = testing::RunCommand(
      {testing::RunfilePath("deploy/make-dev-certs.sh"), "--out", dir, "--days", "5"});
  ASSERT_EQ(reissue.exit_code, 0) << reissue.err;
  const std::string second_cert = ReadAll(dir + "/broker.crt");
  ASSERT_NE(second_cert, first_cert);
  const absl::Time deadline = absl::Now() + absl::Seconds(30);
  do {
    served = ListNodesOnANewConnection(cluster);
    if (served.status.ok() && served.leaf_pem == second_cert) break;
    absl::SleepFor(absl::Milliseconds(200));
  } while (absl::Now() < deadline);
  EXPECT_TRUE(served.status.ok()) << served.status.error_message();
  EXPECT_EQ(served.leaf_pem, second_cert) << cluster.broker().Log();
  EXPECT_TRUE(absl::StrContains(cluster.broker().Log(), "event=tls_reloaded"))
      << cluster.broker().Log();
}

TEST(TlsRotationTest, AReloadIntervalOutOfRangeIsAConfigurationError) {
  for (const char* bad : {"0", "3601"}) {
    testing::Cluster cluster(Options(bad));
    EXPECT_FALSE(cluster.StartBroker().ok()) << bad;
    const int status = cluster.broker().early_exit_status();
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 2) << bad << ": " << status;
    EXPECT_TRUE(absl::StrContains(cluster.broker().Log(),
                                  absl::StrCat("--tls-reload-seconds: must be 1..3600 (seconds), "
                                               "got ",
                                               bad)))
        << cluster.broker().Log();
  }
}

}  // namespace
}  // namespace iommu
