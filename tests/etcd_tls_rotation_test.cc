// The broker's etcd client certificates (--etcd-cert, --etcd-key, --etcd-ca)
// rotate without a restart, through the real iommu-broker on a real etcd
// that demands client certificates (--client-cert-auth), with
// --tls-reload-seconds=1:
//   - etcd re-issued by a new CA that alone it trusts, the broker's client
//     certificate re-issued by it, the broker's three files replaced by
//     rename: writes go through again, the broker never restarted;
//   - a key that does not match the certificate is refused
//     (event=tls_reload_refused) and the last good set stays in use, also
//     for new connections (etcd restarted on the same certificates).
//
// Regression (the first test): the etcd client read its files once, at
// start, so after a rotation to a new CA every handshake with etcd failed
// (the old CA does not verify etcd's new certificate, and etcd refuses the
// old client certificate) until the broker lost its leader lease and
// stopped.
//
// --leader-ttl-seconds=30 keeps the lease through etcd's restarts (etcd
// renews every lease when it starts). Until the broker reaches etcd again
// the test only replays an acknowledged request: a replay reads its answer
// from etcd and fails harmlessly while etcd is unreachable, where a failed
// write would make the broker stop (server/broker.cc: it cannot reload the
// state it failed to commit).
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>
#include <system_error>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "proto/broker.grpc.pb.h"
#include "tests/daemon.h"
#include "tests/etcd_process.h"
#include "tests/test_util.h"

namespace iommu {
namespace {

using testing::Daemon;
using testing::EtcdProcess;
using testing::EtcdTlsFiles;

// Runs `command` with /bin/sh (openssl); false when it fails.
bool RunShell(const std::string& command) { return std::system(command.c_str()) == 0; }

constexpr char kNewEcKey[] = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";

// A self-signed CA `name`.crt / `name`.key in `dir`.
bool MakeCa(const std::string& dir, const std::string& name) {
  return RunShell(absl::StrCat("cd ", dir, " && openssl req -x509 ", kNewEcKey, " -keyout ", name,
                               ".key -out ", name, ".crt -days 1 -subj /CN=", name,
                               " 2>/dev/null"));
}

// `name`.crt (with `san` as its subjectAltName, none when empty) and
// `name`.key in `dir`, issued by the CA `ca` there.
bool Issue(const std::string& dir, const std::string& ca, const std::string& name,
           const std::string& san) {
  return RunShell(absl::StrCat(
      "cd ", dir, " && printf '%s\\n' '", san.empty() ? "" : "subjectAltName=" + san, "' > ", name,
      ".ext && openssl req ", kNewEcKey, " -keyout ", name, ".key -out ", name, ".csr -subj /CN=",
      name, " 2>/dev/null && openssl x509 -req -in ", name, ".csr -CA ", ca, ".crt -CAkey ", ca,
      ".key -CAcreateserial -days 1 -out ", name, ".crt -extfile ", name, ".ext 2>/dev/null"));
}

// Puts a copy of `from` at `to` in one step (a rename), as an operator or
// the kubelet does: the broker never reads half a file.
::testing::AssertionResult InstallByRename(const std::string& from, const std::string& to) {
  std::error_code ec;
  std::filesystem::copy_file(from, to + ".new", std::filesystem::copy_options::overwrite_existing,
                             ec);
  if (!ec) std::filesystem::rename(to + ".new", to, ec);
  if (ec) return ::testing::AssertionFailure() << from << " -> " << to << ": " << ec.message();
  return ::testing::AssertionSuccess();
}

grpc::Status CreateTenant(v1::Broker::Stub* stub, const std::string& id) {
  v1::CreateTenantRequest req;
  req.set_request_id("create-" + id);
  req.set_tenant_id(id);
  req.mutable_quota()->set_pinned_bytes(1 << 20);
  grpc::ClientContext ctx;
  ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(5)));
  v1::Tenant out;
  return stub->CreateTenant(&ctx, req, &out);
}

// Polls until the broker reaches etcd over a new connection: the replay of
// the acknowledged CreateTenant of `id` reads its answer from etcd. At most
// `timeout` (less than the leader lease, so that a broker that cannot reach
// etcd fails here, not by losing its lease). The last error when it never
// does.
grpc::Status WaitUntilEtcdAnswers(v1::Broker::Stub* stub, const std::string& id,
                                  absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  grpc::Status s;
  do {
    s = CreateTenant(stub, id);
    if (s.ok()) return s;
    absl::SleepFor(absl::Milliseconds(200));
  } while (absl::Now() < deadline);
  return s;
}

int Count(const std::string& log, const std::string& text) {
  int n = 0;
  for (size_t at = log.find(text); at != std::string::npos; at = log.find(text, at + 1)) ++n;
  return n;
}

// A broker leading on an etcd whose certificates come from "ca1", with its
// own etcd client files at cert_/key_/ca_, and one acknowledged write.
class EtcdTlsRotationTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(MakeCa(dir_, "ca1"));
    ASSERT_TRUE(Issue(dir_, "ca1", "etcd1", "IP:127.0.0.1"));
    // etcd client certificates carry no SPIFFE ID (the mirror's identity
    // rule then compares two empty sets).
    ASSERT_TRUE(Issue(dir_, "ca1", "broker1", ""));
    ASSERT_TRUE(InstallByRename(dir_ + "/broker1.crt", cert_));
    ASSERT_TRUE(InstallByRename(dir_ + "/broker1.key", key_));
    ASSERT_TRUE(InstallByRename(dir_ + "/ca1.crt", ca_));
    const absl::Status started = etcd_.Start(absl::Seconds(20), &first_);
    ASSERT_TRUE(started.ok()) << started;
    ASSERT_TRUE(broker_
                    .Start(testing::RunfilePath("server/iommu-broker"),
                           {"--listen=127.0.0.1:0", "--store=etcd://" + etcd_.endpoint(),
                            "--etcd-prefix=/rotation", "--etcd-cert=" + cert_, "--etcd-key=" + key_,
                            "--etcd-ca=" + ca_, "--tls-reload-seconds=1", "--leader-ttl-seconds=30",
                            "--shutdown-grace-ms=500", "--insecure"},
                           dir_, "broker")
                    .ok())
        << broker_.Log();
    stub_ = testing::InsecureBrokerStub(broker_.address());
    const grpc::Status s = CreateTenant(stub_.get(), "before");
    ASSERT_TRUE(s.ok()) << s.error_message() << "\n" << broker_.Log();
  }

  // Stops the broker, which must not have restarted or lost its lead.
  void StopBroker() {
    const std::string log = broker_.Log();
    EXPECT_EQ(Count(log, "event=leading"), 1) << log;
    EXPECT_EQ(Count(log, "event=leadership_lost"), 0) << log;
    stub_.reset();
    EXPECT_EQ(broker_.Stop(), 0) << broker_.Log();
  }

  const std::string dir_ = testing::NewTempDir("etcd-tls-rotation");
  // The broker's files, which the tests replace as an operator would.
  const std::string cert_ = dir_ + "/broker-etcd.crt";
  const std::string key_ = dir_ + "/broker-etcd.key";
  const std::string ca_ = dir_ + "/etcd-ca.crt";
  const EtcdTlsFiles first_ = {dir_ + "/ca1.crt", dir_ + "/etcd1.crt", dir_ + "/etcd1.key",
                               dir_ + "/broker1.crt", dir_ + "/broker1.key"};
  EtcdProcess etcd_;
  Daemon broker_;
  std::unique_ptr<v1::Broker::Stub> stub_;
};

TEST_F(EtcdTlsRotationTest, ANewCaForEtcdAndTheBrokerIsPickedUpWithoutARestart) {
  // A new CA; etcd re-issued by it and trusting only it; the broker's client
  // certificate re-issued by it and its files renamed into place (key first:
  // a reload between the renames sees a pair that does not match and
  // refuses it).
  ASSERT_TRUE(MakeCa(dir_, "ca2"));
  ASSERT_TRUE(Issue(dir_, "ca2", "etcd2", "IP:127.0.0.1"));
  ASSERT_TRUE(Issue(dir_, "ca2", "broker2", ""));
  const int reloads_before = Count(broker_.Log(), "event=tls_reloaded");
  ASSERT_TRUE(InstallByRename(dir_ + "/broker2.key", key_));
  ASSERT_TRUE(InstallByRename(dir_ + "/broker2.crt", cert_));
  ASSERT_TRUE(InstallByRename(dir_ + "/ca2.crt", ca_));
  const EtcdTlsFiles second = {dir_ + "/ca2.crt", dir_ + "/etcd2.crt", dir_ + "/etcd2.key",
                               dir_ + "/broker2.crt", dir_ + "/broker2.key"};
  const absl::Status restarted = etcd_.RestartWithTls(second);
  ASSERT_TRUE(restarted.ok()) << restarted;

  grpc::Status s = WaitUntilEtcdAnswers(stub_.get(), "before", absl::Seconds(20));
  ASSERT_TRUE(s.ok()) << "the broker does not reach etcd with its rotated certificates: "
                      << s.error_message() << "\n"
                      << broker_.Log();
  s = CreateTenant(stub_.get(), "after-rotation");
  EXPECT_TRUE(s.ok()) << s.error_message() << "\n" << broker_.Log();
  EXPECT_GT(Count(broker_.Log(), "event=tls_reloaded"), reloads_before) << broker_.Log();
  StopBroker();
}

TEST_F(EtcdTlsRotationTest, AKeyThatDoesNotMatchIsRefusedAndTheLastGoodSetKeepsWorking) {
  ASSERT_TRUE(Issue(dir_, "ca1", "stranger", ""));
  ASSERT_TRUE(InstallByRename(dir_ + "/stranger.key", key_));
  ASSERT_TRUE(testing::PollUntil(
      [&] { return absl::StrContains(broker_.Log(), "event=tls_reload_refused file=" + key_); },
      absl::Seconds(20)))
      << broker_.Log();
  // New connections use the last good pair: etcd's restart closes the open
  // one.
  const absl::Status restarted = etcd_.RestartWithTls(first_);
  ASSERT_TRUE(restarted.ok()) << restarted;
  grpc::Status s = WaitUntilEtcdAnswers(stub_.get(), "before", absl::Seconds(20));
  ASSERT_TRUE(s.ok()) << "after a refused key, the broker no longer reaches etcd: "
                      << s.error_message() << "\n"
                      << broker_.Log();
  s = CreateTenant(stub_.get(), "after-refused-key");
  EXPECT_TRUE(s.ok()) << s.error_message() << "\n" << broker_.Log();
  // Logged once for this content, however many reloads saw it.
  EXPECT_EQ(Count(broker_.Log(), "event=tls_reload_refused"), 1) << broker_.Log();
  StopBroker();
}

}  // namespace
}  // namespace iommu
