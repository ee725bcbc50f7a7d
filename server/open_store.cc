#include "server/open_store.h"

#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "server/kv/etcd_kv_store.h"
#include "server/kv/kv_backed_store.h"
#include "server/kv/sqlite_kv_store.h"
#include "server/sqlite_store.h"

namespace iommu {

std::string FormatLeaderValue(const LeaderInfo& leader) {
  if (leader.address.empty()) return leader.name;
  return absl::StrCat(leader.name, " ", leader.address);
}

LeaderInfo ParseLeaderValue(absl::string_view value) {
  const size_t space = value.find(' ');
  if (space == absl::string_view::npos) return {std::string(value), ""};
  return {std::string(value.substr(0, space)), std::string(value.substr(space + 1))};
}

absl::StatusOr<OpenedStore> OpenStore(const StoreOptions& options,
                                      const kv::LeaderLease::Waiting& waiting,
                                      kv::LeaderLease::OnLost on_lost) {
  OpenedStore out;
  kv::KvBackedStoreOptions backed;
  backed.answer_ttl = options.answer_ttl;
  switch (options.spec.kind) {
    case StoreSpec::Kind::kSqlite: {
      ASSIGN_OR_RETURN(out.store, OpenSqliteStore(options.spec.path));
      return out;
    }
    case StoreSpec::Kind::kSqliteKv: {
      kv::SqliteKvOptions o;
      // One file, one writer (its inode lock): a broker's largest change (a
      // node drained with all its containers) need not be split.
      o.limits.max_txn_ops = 1 << 20;
      backed.max_txn_ops = o.limits.max_txn_ops;
      ASSIGN_OR_RETURN(out.kv, kv::OpenSqliteKvStore(options.spec.path, o));
      break;
    }
    case StoreSpec::Kind::kEtcd: {
      kv::EtcdKvOptions o;
      o.endpoints = options.spec.endpoints;
      // The broker's keys are "<prefix>/state/...", "<prefix>/leader": a
      // prefix ending in '/' would make them "//state".
      std::string prefix = options.etcd_prefix;
      while (absl::EndsWith(prefix, "/")) prefix.pop_back();
      if (prefix.empty() || prefix[0] != '/') {
        return absl::InvalidArgumentError(absl::StrCat(
            "--etcd-prefix: \"", options.etcd_prefix, "\" must start with '/' and name a key "
            "prefix of its own, e.g. /iommu-broker"));
      }
      o.prefix = prefix;
      o.tls_cert_file = options.etcd_cert_file;
      o.tls_key_file = options.etcd_key_file;
      o.tls_ca_file = options.etcd_ca_file;
      o.tls_reload_interval = options.etcd_tls_reload_interval;
      o.limits.max_txn_ops = options.etcd_max_txn_ops;
      // Leases outlive the process: those of remembered answers must (a
      // retry after a failover replays them). A broker that stops hands
      // leadership over at once all the same: LeaderLease revokes its own.
      o.revoke_leases_on_close = false;
      o.observe_call = options.observe_etcd_call;
      backed.max_txn_ops = options.etcd_max_txn_ops;
      // etcd clusters compact themselves (--auto-compaction-*), for every
      // user of the cluster at once.
      backed.keep_revisions = 0;
      ASSIGN_OR_RETURN(out.kv, kv::OpenEtcdKvStore(o));
      kv::LeaderLeaseOptions lo;
      lo.holder = FormatLeaderValue({options.replica_name, options.advertise_address});
      lo.ttl_seconds = options.leader_ttl_seconds;
      ASSIGN_OR_RETURN(out.leader,
                       kv::LeaderLease::Campaign(out.kv.get(), lo, waiting, std::move(on_lost)));
      backed.fence_key = out.leader->key();
      backed.fence_revision = out.leader->fence_revision();
      backed.on_fenced = options.on_fenced;
      break;
    }
  }
  out.store = std::make_unique<kv::KvBackedStore>(out.kv.get(), backed);
  return out;
}

std::vector<WatchedCertFile> EtcdCertFiles(const StoreOptions& options) {
  std::vector<WatchedCertFile> out;
  if (options.spec.kind != StoreSpec::Kind::kEtcd) return out;
  if (!options.etcd_cert_file.empty()) {
    out.push_back({"etcd_cert", options.etcd_cert_file, /*reloaded=*/true, options.etcd_key_file});
  }
  if (!options.etcd_ca_file.empty()) {
    out.push_back({"etcd_ca", options.etcd_ca_file, /*reloaded=*/true, ""});
  }
  return out;
}

}  // namespace iommu
