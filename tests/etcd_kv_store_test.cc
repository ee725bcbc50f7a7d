// The etcd store (server/kv/etcd_kv_store.h) against a real single-member
// etcd on loopback: the KvStore conformance suite (each test on a fresh key
// prefix of one shared etcd), then what only etcd has: prefixes that never
// see each other, etcd's own --max-txn-ops, and UNAVAILABLE when etcd is
// unreachable or dies.
#include "common/status_matchers.h"
#include "server/kv/etcd_kv_store.h"

#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "server/kv/kv_conformance.h"
#include "tests/etcd_process.h"

namespace iommu {
namespace kv {
namespace {

const std::string kAll("\0", 1);

// One etcd for the whole binary: started before the first test, stopped
// (and its directory deleted) after the last, or killed with the test.
class SharedEtcd final : public ::testing::Environment {
 public:
  void SetUp() override {
    start_ = etcd_.Start();
    ASSERT_TRUE(start_.ok()) << start_;
  }
  void TearDown() override { etcd_.Stop(); }
  absl::StatusOr<std::string> endpoint() const {
    if (!start_.ok()) return start_;
    return etcd_.endpoint();
  }

 private:
  iommu::testing::EtcdProcess etcd_;
  absl::Status start_ = absl::UnavailableError("etcd not started yet");
};

SharedEtcd* const g_etcd =
    static_cast<SharedEtcd*>(::testing::AddGlobalTestEnvironment(new SharedEtcd));

// A fresh prefix per store, so every test starts from an empty keyspace.
EtcdKvOptions Options(const std::string& endpoint) {
  static std::atomic<int> n{0};
  EtcdKvOptions o;
  o.endpoints = endpoint;
  o.prefix = absl::StrCat("/conformance/", n++, "/");
  o.dial_timeout = absl::Seconds(5);
  o.call_timeout = absl::Seconds(5);
  // Leases granted by one test must not expire (a DELETE at a new revision)
  // during a later one.
  o.revoke_leases_on_close = true;
  return o;
}

KvStoreFactory EtcdFactory() {
  return [](const KvStoreConfig& config) -> absl::StatusOr<std::unique_ptr<KvStore>> {
    absl::StatusOr<std::string> endpoint = g_etcd->endpoint();
    if (!endpoint.ok()) return endpoint.status();
    EtcdKvOptions o = Options(*endpoint);
    o.limits = config.limits;
    o.watch_max_pending_events = config.watch_max_pending_events;
    return OpenEtcdKvStore(o);
  };
}

INSTANTIATE_TEST_SUITE_P(Etcd, KvConformanceTest,
                         ::testing::Values(KvConformanceParam{
                             "etcd", EtcdFactory(), /*leases_follow_injected_clock=*/false}),
                         [](const auto& info) { return info.param.name; });

std::unique_ptr<KvStore> MustOpen(const EtcdKvOptions& o) {
  absl::StatusOr<std::unique_ptr<KvStore>> s = OpenEtcdKvStore(o);
  EXPECT_TRUE(s.ok()) << s.status();
  return s.ok() ? std::move(*s) : nullptr;
}

// A loopback port nothing listens on (bound, then closed).
int UnusedPort() {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(a);
  if (fd < 0 || bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0 ||
      getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
    ADD_FAILURE() << "no loopback port";
  }
  close(fd);
  return ntohs(a.sin_port);
}

TEST(EtcdKvStoreTest, TwoPrefixesNeverSeeEachOthersKeysOrEvents) {
  ASSERT_TRUE(g_etcd->endpoint().ok());
  auto a = MustOpen(Options(*g_etcd->endpoint()));
  auto b = MustOpen(Options(*g_etcd->endpoint()));
  ASSERT_TRUE(a && b);
  absl::Mutex mu;
  std::vector<std::string> seen_by_a;  // Guarded by mu.
  auto watch = a->Watch({"k", kAll, 0}, [&](const absl::StatusOr<WatchBatch>& batch) {
    absl::MutexLock l(&mu);
    if (batch.ok()) {
      for (const Event& e : batch->events) seen_by_a.push_back(e.kv.value);
    }
  });
  ASSERT_TRUE(watch.ok()) << watch.status();
  ASSERT_TRUE(b->Put("k", "from b").ok());
  ASSERT_TRUE(a->Put("k", "from a").ok());
  absl::StatusOr<RangeResponse> all = a->Range({"\x01", kAll, 0, 0});
  ASSERT_TRUE(all.ok()) << all.status();
  ASSERT_EQ(all->kvs.size(), 1u);
  EXPECT_EQ(all->kvs[0].key, "k");  // The prefix is stripped.
  EXPECT_EQ(all->kvs[0].value, "from a");
  ASSERT_TRUE(b->DeleteRange("\x01", kAll).ok());
  EXPECT_EQ(a->Range({"\x01", kAll, 0, 0})->kvs.size(), 1u);
  absl::MutexLock l(&mu);
  ASSERT_TRUE(mu.AwaitWithTimeout(absl::Condition(
                                      +[](std::vector<std::string>* v) { return !v->empty(); },
                                      &seen_by_a),
                                  absl::Seconds(10)));
  EXPECT_EQ(seen_by_a, (std::vector<std::string>{"from a"}));
}

TEST(EtcdKvStoreTest, TxnOfEtcdsDefaultMaxTxnOpsIsAcceptedAndOneMoreIsRefusedLocally) {
  ASSERT_TRUE(g_etcd->endpoint().ok());
  auto store = MustOpen(Options(*g_etcd->endpoint()));  // limits.max_txn_ops = 128
  ASSERT_NE(store, nullptr);
  TxnRequest txn;
  for (int i = 0; i < 129; ++i) txn.then_ops.emplace_back(PutOp{absl::StrCat("k", i), "v"});
  EXPECT_THAT(store->Txn(txn).status(), StatusIs(absl::StatusCode::kInvalidArgument,
                                                 "129 compares and ops is over the limit of 128"));
  txn.then_ops.pop_back();
  absl::StatusOr<TxnResponse> r = store->Txn(txn);
  ASSERT_TRUE(r.ok()) << r.status();  // etcd's --max-txn-ops default takes it.
  EXPECT_EQ(store->Range({"k", kAll, 0, 0})->count, 128);
}

TEST(EtcdKvStoreTest, UnreachableEndpointIsUnavailablePromptlyAndNamed) {
  EtcdKvOptions o;
  const std::string endpoint = absl::StrCat("127.0.0.1:", UnusedPort());
  o.endpoints = endpoint;
  o.dial_timeout = absl::Milliseconds(500);
  const absl::Time start = absl::Now();
  absl::StatusOr<std::unique_ptr<KvStore>> s = OpenEtcdKvStore(o);
  EXPECT_LT(absl::Now() - start, absl::Seconds(3));
  EXPECT_THAT(s.status(), StatusIs(absl::StatusCode::kUnavailable, endpoint));
}

TEST(EtcdKvStoreTest, EmptyEndpointsAreInvalid) {
  EXPECT_THAT(OpenEtcdKvStore(EtcdKvOptions{}).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, "endpoints"));
}

TEST(EtcdKvStoreTest, CallsAfterEtcdDiesAreUnavailableNamingTheEndpoint) {
  iommu::testing::EtcdProcess etcd;
  ASSERT_TRUE(etcd.Start().ok());
  EtcdKvOptions o = Options(etcd.endpoint());
  o.call_timeout = absl::Seconds(2);
  auto store = MustOpen(o);
  ASSERT_NE(store, nullptr);
  ASSERT_TRUE(store->Put("a", "1").ok());
  absl::Mutex mu;
  absl::Status watch_error;  // Guarded by mu.
  auto watch = store->Watch({"a", "", 0}, [&](const absl::StatusOr<WatchBatch>& b) {
    absl::MutexLock l(&mu);
    if (!b.ok()) watch_error = b.status();
  });
  ASSERT_TRUE(watch.ok()) << watch.status();
  etcd.Stop();
  const absl::Time start = absl::Now();
  EXPECT_THAT(store->Put("a", "2").status(),
              StatusIs(absl::StatusCode::kUnavailable, etcd.endpoint()));
  EXPECT_THAT(store->Range({"a", "", 0, 0}).status(),
              StatusIs(absl::StatusCode::kUnavailable, etcd.endpoint()));
  EXPECT_LT(absl::Now() - start, absl::Seconds(5));
  absl::MutexLock l(&mu);
  ASSERT_TRUE(mu.AwaitWithTimeout(
      absl::Condition(+[](absl::Status* s) { return !s->ok(); }, &watch_error), absl::Seconds(10)));
  EXPECT_EQ(watch_error.code(), absl::StatusCode::kUnavailable) << watch_error;
}

TEST(EtcdKvStoreTest, CompactionPointIsFoundByAStoreThatDidNotCompact) {
  ASSERT_TRUE(g_etcd->endpoint().ok());
  auto a = MustOpen(Options(*g_etcd->endpoint()));
  auto b = MustOpen(Options(*g_etcd->endpoint()));
  ASSERT_TRUE(a && b);
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(a->Put("k", std::to_string(i)).ok());
  const int64_t at = a->Put("k", "last")->revision - 2;
  ASSERT_TRUE(a->Compact(at).ok());
  EXPECT_EQ(b->CompactedRevision(), at);  // etcd's compaction is cluster-wide.
  EXPECT_THAT(b->Range({"k", "", at - 1, 0}).status(),
              StatusIs(absl::StatusCode::kOutOfRange, "compacted"));
}

TEST(EtcdKvStoreTest, HungEtcdIsUnavailableAfterTheCallTimeoutAndRecovers) {
  iommu::testing::EtcdProcess etcd;
  ASSERT_TRUE(etcd.Start().ok());
  EtcdKvOptions o = Options(etcd.endpoint());
  o.call_timeout = absl::Milliseconds(500);
  auto store = MustOpen(o);
  ASSERT_NE(store, nullptr);
  ASSERT_OK(etcd.Pause());
  const absl::Time start = absl::Now();
  EXPECT_THAT(store->Put("a", "1").status(),
              StatusIs(absl::StatusCode::kUnavailable, "did not answer txn"));
  EXPECT_LT(absl::Now() - start, absl::Seconds(3));
  ASSERT_OK(etcd.Resume());
  o.call_timeout = absl::Seconds(5);
  auto again = MustOpen(o);
  ASSERT_NE(again, nullptr);
  EXPECT_TRUE(again->Put("a", "2").ok());
}

TEST(EtcdKvStoreTest, UnreachableFirstEndpointFallsThroughToTheNextOnOpen) {
  ASSERT_TRUE(g_etcd->endpoint().ok());
  EtcdKvOptions o = Options(absl::StrCat("127.0.0.1:", UnusedPort(), ",", *g_etcd->endpoint()));
  o.dial_timeout = absl::Seconds(3);
  auto store = MustOpen(o);
  ASSERT_NE(store, nullptr);
  EXPECT_TRUE(store->Put("a", "1").ok());
}

// Runs a shell command (openssl); false when it fails.
bool RunShell(const std::string& command) { return std::system(command.c_str()) == 0; }

// A CA, a server certificate naming `server_san` and a client certificate
// (no SAN, as etcd client certificates usually are), all from `openssl`
// into `dir`.
iommu::testing::EtcdTlsFiles MakeCertificates(const std::string& dir,
                                              const std::string& server_san = "IP:127.0.0.1") {
  const std::string ec = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
  const auto cert = [&](const std::string& name, const std::string& san) {
    std::ofstream(dir + "/" + name + ".ext") << (san.empty() ? "" : "subjectAltName=" + san) << "\n";
    EXPECT_TRUE(RunShell(absl::StrCat("cd ", dir, " && openssl req ", ec, " -keyout ", name, ".key -out ",
                                 name, ".csr -subj /CN=", name, " 2>/dev/null && openssl x509 -req -in ",
                                 name, ".csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 1 -out ",
                                 name, ".crt -extfile ", name, ".ext 2>/dev/null")));
  };
  EXPECT_TRUE(RunShell(absl::StrCat("cd ", dir, " && openssl req -x509 ", ec,
                               " -keyout ca.key -out ca.crt -days 1 -subj /CN=test-ca 2>/dev/null")));
  cert("server", server_san);
  cert("client", "");
  return {dir + "/ca.crt", dir + "/server.crt", dir + "/server.key", dir + "/client.crt",
          dir + "/client.key"};
}

TEST(EtcdKvStoreTest, MutualTlsWithClientCertificateWorksAndPlaintextIsRefused) {
  const char* tmp = std::getenv("TEST_TMPDIR");
  ASSERT_NE(tmp, nullptr);
  const std::string dir = absl::StrCat(tmp, "/tls");
  ASSERT_TRUE(RunShell("mkdir -p " + dir));
  const iommu::testing::EtcdTlsFiles files = MakeCertificates(dir);
  iommu::testing::EtcdProcess etcd;
  const absl::Status started = etcd.Start(absl::Seconds(20), &files);
  ASSERT_TRUE(started.ok()) << started;

  EtcdKvOptions o = Options(etcd.endpoint());
  o.tls_ca_file = files.ca_file;
  o.tls_cert_file = files.client_cert_file;
  o.tls_key_file = files.client_key_file;
  auto store = MustOpen(o);
  ASSERT_NE(store, nullptr);
  ASSERT_TRUE(store->Put("a", "1").ok());
  EXPECT_EQ(store->Range({"a", "", 0, 0})->kvs.size(), 1u);

  EtcdKvOptions plain = Options(etcd.endpoint());
  plain.dial_timeout = absl::Milliseconds(500);
  EXPECT_THAT(OpenEtcdKvStore(plain).status(),
              StatusIs(absl::StatusCode::kUnavailable, etcd.endpoint()));

  EtcdKvOptions missing = o;
  missing.tls_key_file = dir + "/nope.key";
  EXPECT_THAT(OpenEtcdKvStore(missing).status(), StatusIs(absl::StatusCode::kNotFound, "nope.key"));

  // Files that do not hold together are refused at open, naming the file,
  // rather than failing every handshake.
  EtcdKvOptions mismatched = o;
  mismatched.tls_key_file = files.server_key_file;
  EXPECT_THAT(OpenEtcdKvStore(mismatched).status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       files.server_key_file + ": does not match the certificate"));
  EtcdKvOptions garbage_ca = o;
  garbage_ca.tls_ca_file = files.client_key_file;
  EXPECT_THAT(OpenEtcdKvStore(garbage_ca).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, files.client_key_file));
}

// etcd's certificate must name the host the endpoint gives, as with any TLS
// client (grpc::SslCredentials checked it, and so must the reloading
// credentials): a certificate for "localhost" from the trusted CA is
// accepted at localhost:PORT and refused at 127.0.0.1:PORT, the same etcd.
TEST(EtcdKvStoreTest, EtcdsCertificateMustNameTheEndpointsHost) {
  const char* tmp = std::getenv("TEST_TMPDIR");
  ASSERT_NE(tmp, nullptr);
  const std::string dir = absl::StrCat(tmp, "/tls-host");
  ASSERT_TRUE(RunShell("mkdir -p " + dir));
  iommu::testing::EtcdTlsFiles files = MakeCertificates(dir, "DNS:localhost");
  files.server_name = "localhost";
  iommu::testing::EtcdProcess etcd;
  const absl::Status started = etcd.Start(absl::Seconds(20), &files);
  ASSERT_TRUE(started.ok()) << started;
  const std::string port = etcd.endpoint().substr(etcd.endpoint().rfind(':') + 1);

  EtcdKvOptions by_name = Options("localhost:" + port);
  by_name.tls_ca_file = files.ca_file;
  by_name.tls_cert_file = files.client_cert_file;
  by_name.tls_key_file = files.client_key_file;
  auto store = MustOpen(by_name);
  ASSERT_NE(store, nullptr);
  EXPECT_TRUE(store->Put("a", "1").ok());

  EtcdKvOptions by_address = by_name;
  by_address.endpoints = etcd.endpoint();
  by_address.dial_timeout = absl::Seconds(2);
  EXPECT_THAT(OpenEtcdKvStore(by_address).status(),
              StatusIs(absl::StatusCode::kUnavailable, etcd.endpoint()));
}

// --etcd-cert and --etcd-key without --etcd-ca: etcd is verified against
// the system's roots (here the test CA, by gRPC's own override of them), as
// grpc::SslCredentials did.
TEST(EtcdKvStoreTest, WithoutACaEtcdIsVerifiedAgainstTheSystemRoots) {
  const char* tmp = std::getenv("TEST_TMPDIR");
  ASSERT_NE(tmp, nullptr);
  const std::string dir = absl::StrCat(tmp, "/tls-system-roots");
  ASSERT_TRUE(RunShell("mkdir -p " + dir));
  const iommu::testing::EtcdTlsFiles files = MakeCertificates(dir);
  // Read once per process, at the first use of the default roots: no other
  // test here uses them (every other TLS client names its CA).
  ASSERT_EQ(setenv("GRPC_DEFAULT_SSL_ROOTS_FILE_PATH", files.ca_file.c_str(), 1), 0);
  iommu::testing::EtcdProcess etcd;
  const absl::Status started = etcd.Start(absl::Seconds(20), &files);
  ASSERT_TRUE(started.ok()) << started;
  EtcdKvOptions o = Options(etcd.endpoint());
  o.tls_cert_file = files.client_cert_file;
  o.tls_key_file = files.client_key_file;
  auto store = MustOpen(o);
  ASSERT_NE(store, nullptr);
  EXPECT_TRUE(store->Put("a", "1").ok());
}

}  // namespace
}  // namespace kv
}  // namespace iommu
