// iommu-store-migrate: moves a stopped broker's whole state from one store to
// another, e.g. from its SQLite file to an etcd cluster (one command line):
//
//   iommu-store-migrate --from=sqlite:/var/lib/iommu-broker/broker.db
//       --to=etcd://10.0.0.1:2379,10.0.0.2:2379,10.0.0.3:2379
//
// Stores are named as the broker's --store names them. The destination must
// be empty; what was written is read back and compared before the tool says
// what it moved. The source broker must be stopped (its file is locked while
// it runs) and no broker may lead on the destination (the tool takes the
// leadership itself while it writes).
#include <unistd.h>

#include <iostream>
#include <string>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "common/flag_spelling.h"
#include "common/version.h"
#include "server/open_store.h"
#include "server/store_migration.h"
#include "server/store_spec.h"

ABSL_FLAG(std::string, from, "", "Required. The store to read, as the broker's --store names it "
          "(sqlite:FILE, sqlite-kv:FILE, etcd://HOST:PORT,...)");
ABSL_FLAG(std::string, to, "", "Required. The empty store to write, named the same way");
ABSL_FLAG(std::string, etcd_prefix, "/iommu-broker",
          "for an etcd store: the key prefix the broker uses (its --etcd-prefix)");
ABSL_FLAG(std::string, etcd_cert, "", "for an etcd store: client certificate (mTLS)");
ABSL_FLAG(std::string, etcd_key, "", "for an etcd store: its private key");
ABSL_FLAG(std::string, etcd_ca, "", "for an etcd store: CA that signed etcd's certificate");
ABSL_FLAG(int64_t, etcd_max_txn_ops, 128, "for an etcd store: the cluster's --max-txn-ops");
ABSL_FLAG(int64_t, batch_records, 100,
          "records per write; with etcd at most --etcd-max-txn-ops - 1");

namespace {

int Fail(int code, const absl::Status& s) {
  std::cerr << "iommu-store-migrate: " << s.message() << " (" << absl::StatusCodeToString(s.code())
            << ")\n";
  return code;
}

absl::StatusOr<iommu::OpenedStore> Open(const std::string& flag, const std::string& value) {
  iommu::StoreOptions o;
  absl::StatusOr<iommu::StoreSpec> spec = iommu::ParseStoreSpec(value, "");
  if (!spec.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--", flag, spec.status().message().substr(std::string("--store").size())));
  }
  o.spec = *spec;
  o.etcd_prefix = absl::GetFlag(FLAGS_etcd_prefix);
  o.etcd_cert_file = absl::GetFlag(FLAGS_etcd_cert);
  o.etcd_key_file = absl::GetFlag(FLAGS_etcd_key);
  o.etcd_ca_file = absl::GetFlag(FLAGS_etcd_ca);
  o.etcd_max_txn_ops = absl::GetFlag(FLAGS_etcd_max_txn_ops);
  char host[256] = {};
  gethostname(host, sizeof(host) - 1);
  o.replica_name = absl::StrCat("iommu-store-migrate@", host);
  // No waiting: a broker leading on it means it is in use.
  return iommu::OpenStore(o, nullptr, nullptr);
}

}  // namespace

int main(int argc, char** argv) {
  iommu::InstallFlagsUsage(
      "iommu-store-migrate",
      "moves a stopped broker's state into an empty store.\n"
      "Usage: iommu-store-migrate --from=sqlite:/var/lib/iommu-broker/broker.db "
      "--to=etcd://HOST:2379,...");
  iommu::ParseFlags(argc, argv);
  if (absl::GetFlag(FLAGS_from).empty() || absl::GetFlag(FLAGS_to).empty()) {
    return Fail(2, absl::InvalidArgumentError("--from and --to: both required"));
  }
  if (absl::GetFlag(FLAGS_from) == absl::GetFlag(FLAGS_to)) {
    return Fail(2, absl::InvalidArgumentError("--to: must name another store than --from"));
  }
  absl::StatusOr<iommu::OpenedStore> from = Open("from", absl::GetFlag(FLAGS_from));
  if (!from.ok()) {
    return Fail(from.status().code() == absl::StatusCode::kInvalidArgument ? 2 : 1,
                from.status());
  }
  absl::StatusOr<iommu::OpenedStore> to = Open("to", absl::GetFlag(FLAGS_to));
  if (!to.ok()) {
    return Fail(to.status().code() == absl::StatusCode::kInvalidArgument ? 2 : 1, to.status());
  }
  absl::StatusOr<iommu::MigrationReport> report = iommu::MigrateStore(
      from->store.get(), to->store.get(), absl::GetFlag(FLAGS_batch_records));
  if (!report.ok()) {
    return Fail(report.status().code() == absl::StatusCode::kInvalidArgument ? 2 : 1,
                report.status());
  }
  std::cout << iommu::DescribeMigration(*report) << " from " << absl::GetFlag(FLAGS_from)
            << " to " << absl::GetFlag(FLAGS_to)
            << "; remembered answers to past requests were not moved\n";
  return 0;
}
