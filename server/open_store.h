// Opens the store a StoreSpec names, as the broker's Store:
//   sqlite     the embedded record store (sqlite_store.h)
//   sqlite-kv  the Store on the versioned SQLite KvStore (kv/kv_backed_store.h)
//   etcd       the Store on etcd, after winning leadership among the replicas
//              on the same prefix (kv/leader_lease.h): every write is fenced
//              by the leader key, so only the leader's land.
#ifndef SERVER_OPEN_STORE_H_
#define SERVER_OPEN_STORE_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "common/cert_expiry_gauge.h"
#include "server/kv/etcd_kv_store.h"
#include "server/kv/kv_store.h"
#include "server/kv/leader_lease.h"
#include "server/store.h"
#include "server/store_spec.h"

namespace iommu {

struct StoreOptions {
  StoreSpec spec;
  // etcd only.
  std::string etcd_prefix = "/iommu-broker";
  std::string etcd_cert_file;
  std::string etcd_key_file;
  std::string etcd_ca_file;
  // How often those files are re-read (the broker's --tls-reload-seconds),
  // so that rotating them is replacing them (kv::EtcdKvOptions).
  absl::Duration etcd_tls_reload_interval = absl::Seconds(60);
  int64_t etcd_max_txn_ops = 128;  // The cluster's --max-txn-ops.
  std::string replica_name;        // Shown as the leader.
  // Where the other replicas reach this one's API (--advertise-address),
  // published with its name while it leads, so that they forward to it.
  std::string advertise_address;
  int64_t leader_ttl_seconds = 2;
  // sqlite-kv and etcd: remembered answers are written under leases that
  // keep them at least this long, and the store deletes them after
  // (kv/kv_backed_store.h). Zero: only the broker's sweep removes them.
  absl::Duration answer_ttl = absl::ZeroDuration();
  // Metrics hooks (either may be empty): every call to etcd, and every
  // commit the leadership fence refuses.
  kv::EtcdKvOptions::CallObserver observe_etcd_call;
  std::function<void()> on_fenced;
};

// Members are destroyed bottom-up: the Store before the leadership it is
// fenced by, both before the KvStore they use.
struct OpenedStore {
  std::unique_ptr<kv::KvStore> kv;
  std::unique_ptr<kv::LeaderLease> leader;
  std::unique_ptr<Store> store;
};

// For etcd, blocks until this replica leads (see LeaderLease::Campaign for
// `waiting` and `on_lost`).
absl::StatusOr<OpenedStore> OpenStore(const StoreOptions& options,
                                      const kv::LeaderLease::Waiting& waiting,
                                      kv::LeaderLease::OnLost on_lost);

// Who leads, as the leader key's value holds it: the replica's name and the
// address its API is reached at (empty when the leader did not publish one).
struct LeaderInfo {
  std::string name;
  std::string address;
  friend bool operator==(const LeaderInfo& a, const LeaderInfo& b) {
    return a.name == b.name && a.address == b.address;
  }
};
// "<name> <address>": names and addresses hold no spaces (main checks
// --replica-name and --advertise-address), so the first space splits them.
std::string FormatLeaderValue(const LeaderInfo& leader);
LeaderInfo ParseLeaderValue(absl::string_view value);

// The etcd client's certificate files (--etcd-cert, --etcd-ca) for the
// expiry gauge; none unless the store is etcd. The client re-reads them
// every etcd_tls_reload_interval, so they are watched as reloaded: the
// gauge follows the files on disk.
std::vector<WatchedCertFile> EtcdCertFiles(const StoreOptions& options);

}  // namespace iommu

#endif  // SERVER_OPEN_STORE_H_
