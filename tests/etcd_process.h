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

#include <string>

#include "absl/status/status.h"
#include "absl/time/time.h"

namespace iommu::testing {

// PEM files for an etcd that serves clients over TLS and demands a client
// certificate signed by `ca_file` (--client-cert-auth). Peers stay plaintext.
struct EtcdTlsFiles {
  std::string ca_file;
  std::string server_cert_file;  // Valid for IP 127.0.0.1.
  std::string server_key_file;
  std::string client_cert_file;  // Used by Start's readiness probe.
  std::string client_key_file;
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

  // SIGTERM, wait up to 5 s, then SIGKILL; reaps etcd and deletes its data
  // directory. Idempotent.
  void Stop();

  // "127.0.0.1:<port>": etcd's client endpoint (plaintext gRPC, or TLS when
  // started with EtcdTlsFiles) once started.
  std::string endpoint() const;
  pid_t pid() const { return pid_; }
  std::string Log() const;  // etcd's stdout and stderr so far.

 private:
  pid_t pid_ = -1;
  int client_port_ = 0;
  std::string dir_;  // Holds data/ and etcd.log.
};

}  // namespace iommu::testing

#endif  // TESTS_ETCD_PROCESS_H_
