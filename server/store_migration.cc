#include "server/store_migration.h"

#include <algorithm>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status_macros.h"
#include "server/model/stored_records.h"

namespace iommu {

absl::StatusOr<MigrationReport> MigrateStore(Store* from, Store* to, int64_t batch_records) {
  if (batch_records < 1) {
    return absl::InvalidArgumentError("batch_records: must be at least 1");
  }
  ASSIGN_OR_RETURN(std::vector<StoreRecord> records, from->LoadAll());
  // A state no broker would load is not copied anywhere: refused before the
  // destination is touched, naming what is wrong.
  if (absl::Status s = model::CheckStoredRecords(records); !s.ok()) {
    return absl::DataLossError(absl::StrCat("source: ", s.message(), "; nothing was moved"));
  }
  ASSIGN_OR_RETURN(std::vector<StoreRecord> existing, to->LoadAll());
  if (!existing.empty()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "destination: holds ", existing.size(), " records already (first: ", existing[0].kind,
        " \"", existing[0].id, "\"); a migration writes only into an empty store"));
  }
  MigrationReport report;
  for (size_t i = 0; i < records.size(); i += static_cast<size_t>(batch_records)) {
    WriteBatch batch;
    const size_t end = std::min(records.size(), i + static_cast<size_t>(batch_records));
    batch.puts.assign(records.begin() + i, records.begin() + end);
    RETURN_IF_ERROR(to->Commit(batch));
    ++report.batches;
  }
  for (const StoreRecord& r : records) ++report.records_by_kind[r.kind];
  report.records = static_cast<int64_t>(records.size());

  ASSIGN_OR_RETURN(std::vector<StoreRecord> written, to->LoadAll());
  auto same = [](const StoreRecord& a, const StoreRecord& b) {
    return a.kind == b.kind && a.id == b.id && a.value == b.value;
  };
  if (written.size() != records.size() ||
      !std::equal(written.begin(), written.end(), records.begin(), same)) {
    return absl::DataLossError(absl::StrCat(
        "destination: read back ", written.size(), " records that differ from the ",
        records.size(), " written; do not start a broker on it"));
  }
  return report;
}

std::string DescribeMigration(const MigrationReport& report) {
  std::vector<std::string> kinds;
  for (const auto& [kind, n] : report.records_by_kind) kinds.push_back(absl::StrCat(kind, ": ", n));
  return absl::StrCat("moved ", report.records, " records (", absl::StrJoin(kinds, ", "), ") in ",
                      report.batches, report.batches == 1 ? " batch" : " batches");
}

}  // namespace iommu
