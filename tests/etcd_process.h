// Test helper: a single-member etcd (Debian's /usr/bin/etcd, package
// etcd-server) run as a child process on loopback, on ports the kernel
// chooses, with its data in a fresh directory under TEST_TMPDIR.
//
// Cleanup in every case: the destructor stops etcd (SIGTERM, then SIGKILL
// after 5 s), reaps it and deletes the data directory; the child also has
// PR_SET_PDEATHSIG=SIGKILL, so it dies with the test even when the test is
// killed (a Bazel timeout) and no destructor runs (the directory then stays
// in TEST_TMPDIR, which Bazel owns).
//
// Thread-compatible (one thread drives an EtcdProcess).
#ifndef TESTS_ETCD_PROCESS_H_
#define TESTS_ETCD_PROCESS_H_

#include <sys/types.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "grpcpp/security/credentials.h"

namespace iommu::testing {

// PEM files for an etcd that serves clients over TLS and demands a client
// certificate signed by `ca_file` (--client-cert-auth). Peers stay plaintext.
struct EtcdTlsFiles {
  std::string ca_file;
  std::string server_cert_file;  // Valid for IP 127.0.0.1, or for server_name.
  std::string server_key_file;
  std::string client_cert_file;  // Used by Start's readiness probe.
  std::string client_key_file;
  // The name the readiness probe expects server_cert_file to carry, when it
  // does not carry IP 127.0.0.1 (e.g. "localhost"); empty: 127.0.0.1.
  std::string server_name;
};

// One member of a multi-member cluster: fixed ports (every member must know
// every peer's URL before it starts), see EtcdCluster.
struct EtcdMemberSpec {
  std::string name;
  int client_port = 0;
  int peer_port = 0;
  std::string initial_cluster;  // "m0=http://127.0.0.1:P0,m1=..."
};

class EtcdProcess final {
 public:
  EtcdProcess() = default;
  ~EtcdProcess();
  EtcdProcess(const EtcdProcess&) = delete;
  EtcdProcess& operator=(const EtcdProcess&) = delete;

  // Starts etcd with client and peer URLs on 127.0.0.1 port 0 (its log then
  // names the port the kernel gave the client listener) and waits until a
  // linearizable Range answers, i.e. the member has elected itself leader.
  // Errors: FAILED_PRECONDITION when /usr/bin/etcd is missing (scripts/setup.sh
  // installs etcd-server); INTERNAL when etcd exits; DEADLINE_EXCEEDED when it
  // does not answer within `timeout`. Both carry etcd's log.
  // With `tls`, clients must speak mTLS (see EtcdTlsFiles).
  absl::Status Start(absl::Duration timeout = absl::Seconds(20),
                     const EtcdTlsFiles* tls = nullptr);

  // Stops a started member (SIGTERM, its data kept) and starts it again on
  // the same data and client port, now serving with `tls` (e.g. a rotated
  // certificate from another CA, trusting only that CA), and waits as Start
  // does, probing with tls's client certificate. Errors as Start's.
  absl::Status RestartWithTls(const EtcdTlsFiles& tls, absl::Duration timeout = absl::Seconds(20));

  // Starts a cluster member without waiting for it (a member answers only
  // once a majority runs); WaitReady waits. Kill (SIGKILL, the data kept)
  // and Relaunch (the same member on its data) simulate a member's crash.
  absl::Status Launch(const EtcdMemberSpec& member);
  absl::Status WaitReady(absl::Duration timeout);
  void Kill();
  absl::Status Relaunch();

  // SIGSTOP, then waits until the kernel reports every thread stopped
  // (state 'T' in /proc/PID/task/*/stat), so that a call made after Pause returns
  // cannot be answered; FAILED_PRECONDITION when not running, DEADLINE_EXCEEDED
  // when it has not stopped within `timeout`. Resume sends SIGCONT.
  absl::Status Pause(absl::Duration timeout = absl::Seconds(5));
  absl::Status Resume();

  // SIGTERM, wait up to 5 s, then SIGKILL; reaps etcd and deletes its data
  // directory. Idempotent.
  void Stop();

  // "127.0.0.1:<port>": etcd's client endpoint (plaintext gRPC, or TLS when
  // started with EtcdTlsFiles) once started.
  std::string endpoint() const;
  pid_t pid() const { return pid_; }
  std::string Log() const;  // etcd's stdout and stderr so far.

 private:
  absl::Status Exec(std::vector<std::string> argv);
  absl::Status WaitReady(absl::Duration timeout, absl::string_view serving_line);
  // etcd's flags for the single member of Start, its client listener at
  // `client_url`; sets probe_creds_.
  std::vector<std::string> SingleMemberArgv(const std::string& client_url, const EtcdTlsFiles* tls);
  // SIGTERM, then SIGKILL after 5 s; reaps. The data stays.
  void Terminate();

  pid_t pid_ = -1;
  int client_port_ = 0;
  std::string dir_;  // Holds data/ and etcd.log.
  size_t log_offset_ = 0;          // Where the last launch's lines start in etcd.log.
  std::vector<std::string> argv_;  // Of the last launch, for Relaunch.
  std::shared_ptr<grpc::ChannelCredentials> probe_creds_;
  std::string probe_server_name_;  // EtcdTlsFiles::server_name.
};

}  // namespace iommu::testing

#endif  // TESTS_ETCD_PROCESS_H_
