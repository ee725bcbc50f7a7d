// The KvStore interface (kv_store.h) over etcd v3's gRPC API (KV, Watch,
// Lease), using the stubs generated from Debian's golang-etcd-server-dev
// protos (//third_party/etcd:etcd_cc_grpc).
//
// - Every key lives under `prefix` in etcd and comes back with the prefix
//   stripped, so stores with different prefixes never see each other's keys.
//   Revisions, compaction and lease ids are etcd's and so are shared by every
//   prefix of one cluster: a Compact here compacts the whole cluster.
// - Requests are checked with the same rules as every other implementation
//   (kv_rules.h) before anything is sent: a txn over limits.max_txn_ops is
//   INVALID_ARGUMENT locally (configure it at or below etcd's --max-txn-ops,
//   128 by default, so etcd never refuses a txn we accepted).
// - Lease expiry follows etcd's clock, not an injected one: etcd grants at
//   least its minimum TTL (1.5 x election timeout, rounded up to a second)
//   and expires leases on its leader.
// - Errors: UNAVAILABLE naming the endpoint when etcd cannot be reached or
//   does not answer within call_timeout (a write's outcome is then unknown);
//   OUT_OF_RANGE "compacted" / "future revision" as etcd reports them;
//   NOT_FOUND for unknown leases; etcd's other gRPC codes unchanged, with the
//   operation and endpoint in the message. Nothing aborts.
// - Watches: one bidi Watch stream per watch, a reader thread and a delivery
//   thread per watch (both owned by the handle).
//
// Thread-safe.
#ifndef SERVER_KV_ETCD_KV_STORE_H_
#define SERVER_KV_ETCD_KV_STORE_H_

#include <cstdint>
#include <memory>
#include <functional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "server/kv/kv_store.h"

namespace iommu {
namespace kv {

struct EtcdKvOptions {
  // Comma-separated host:port list, like etcdctl's --endpoints. Calls go to
  // one endpoint at a time; when it is unreachable the next call goes to the
  // next one (a failed call is never retried: its outcome may be unknown).
  std::string endpoints;
  // Prepended to every key ("/iommu-broker/" or ""). Keep it free of other
  // stores' prefixes: "a/" and "a/b/" would overlap.
  std::string prefix;
  // mTLS when cert and key are given (with the CA to verify etcd; without
  // one, the system's roots); TLS with server verification only when only
  // the CA is given; plaintext when none is. etcd's certificate must chain
  // to the CA and name the endpoint's host (a DNS or IP SAN matching the
  // host of the endpoint's host:port), as for any TLS client.
  std::string tls_cert_file;
  std::string tls_key_file;
  std::string tls_ca_file;
  // How often the TLS files are re-read (common/tls_mirror.h): a set that
  // holds together (the key matches the certificate, every certificate
  // parses) is used for the connections made from then on, so rotating is
  // replacing the files; one that does not is refused and logged
  // (event=tls_reload_refused) and the last good set stays in use. Zero:
  // read once, at open.
  absl::Duration tls_reload_interval = absl::Seconds(60);
  // How long OpenEtcdKvStore waits for a connection to some endpoint.
  absl::Duration dial_timeout = absl::Seconds(5);
  // The deadline of each unary call (and of a watch's creation).
  absl::Duration call_timeout = absl::Seconds(10);
  KvLimits limits;
  // A watch whose callback lags by more than this many undelivered events
  // ends with RESOURCE_EXHAUSTED.
  int64_t watch_max_pending_events = 100000;
  // Revoke the leases this store granted when it is destroyed (tests, and
  // replicas that want their leadership lease gone at shutdown). Off: a lease
  // outlives the store until its TTL runs out.
  bool revoke_leases_on_close = false;
  // Called after every unary call to etcd (and a lease keep-alive) with the
  // call ("txn", "range", "lease_grant", "lease_keep_alive", ...) and its
  // round trip, whatever its outcome; from the calling thread. Metrics only:
  // it must be cheap and thread-safe.
  using CallObserver = std::function<void(absl::string_view op, absl::Duration round_trip)>;
  CallObserver observe_call;
};

// Connects to etcd and returns the store. Errors: INVALID_ARGUMENT for empty
// endpoints, a certificate without its key, or a TLS file that does not
// hold together (named: a key that does not match its certificate, a file
// with no PEM certificate); NOT_FOUND / PERMISSION_DENIED naming a TLS file
// that cannot be read; UNAVAILABLE naming the endpoints when none answers
// within dial_timeout (also when etcd refuses the handshake).
absl::StatusOr<std::unique_ptr<KvStore>> OpenEtcdKvStore(const EtcdKvOptions& options);

}  // namespace kv
}  // namespace iommu

#endif  // SERVER_KV_ETCD_KV_STORE_H_
