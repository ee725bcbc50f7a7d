// Closed-loop benchmark of the SQLite KvStore's durable txns, next to raw
// SQLite commits on the same disk (issue 13: "commits as close to the disk's
// sync floor as group commit allows").
//
// Each client thread loops: Txn(compare mod_revision(own key) == last seen,
// then put own key + put its twin) — the shape etcd's benchmark txn-put and
// bench/broker_load.sh's etcd row use — issuing the next as soon as the last
// returned. Then, on a fresh file in the same directory, one thread commits
// raw SQLite transactions (WAL, synchronous=FULL) of 2 and of 32 rows.
//
//   bazel run -c opt //bench:kv_store_bench -- --dir=/var/tmp --seconds=5 --threads=1,32
//
// Prints one line per measurement: txn/s, p50/p99 in ms, failed compares,
// errors.
#include <sqlite3.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "server/kv/sqlite_kv_store.h"

ABSL_FLAG(std::string, dir, "", "directory for the database files (default $TMPDIR or /tmp)");
ABSL_FLAG(double, seconds, 5, "measured duration of each run");
ABSL_FLAG(std::string, threads, "1,32", "client thread counts, one run each");
ABSL_FLAG(int, value_bytes, 128, "bytes per value");
ABSL_FLAG(bool, mutex_deadlock_detection, false,
          "keep Abseil's lock-order graph on (the broker daemon turns it off, as here by "
          "default; Debian's Abseil otherwise maintains it on every lock)");
ABSL_FLAG(int, rounds, 1,
          "repeat every measurement this many times, interleaved, so that ratios are taken "
          "seconds apart on a disk whose fsync latency drifts");

namespace iommu {
namespace {

std::string Dir() {
  std::string d = absl::GetFlag(FLAGS_dir);
  if (d.empty()) d = std::getenv("TMPDIR") ? std::getenv("TMPDIR") : "/tmp";
  return d;
}

void RemoveDb(const std::string& path) {
  for (const char* suffix : {"", "-wal", "-shm"}) unlink((path + suffix).c_str());
}

double Percentile(std::vector<double>* v, double p) {
  if (v->empty()) return 0;
  const size_t i = std::min(v->size() - 1, static_cast<size_t>(p * v->size()));
  std::nth_element(v->begin(), v->begin() + i, v->end());
  return (*v)[i];
}

double RunKv(int threads) {
  const std::string path = absl::StrCat(Dir(), "/kv_store_bench_", getpid(), ".db");
  RemoveDb(path);
  auto store = kv::OpenSqliteKvStore(path);
  if (!store.ok()) {
    std::fprintf(stderr, "open %s: %s\n", path.c_str(), store.status().ToString().c_str());
    std::exit(1);
  }
  const std::string value(absl::GetFlag(FLAGS_value_bytes), 'v');
  std::atomic<bool> stop{false};
  std::atomic<int64_t> failed{0}, errors{0};
  std::vector<std::vector<double>> lat(threads);
  std::vector<std::thread> workers;
  const absl::Time start = absl::Now();
  for (int t = 0; t < threads; ++t) {
    workers.emplace_back([&, t] {
      const std::string key = absl::StrCat("bench/", t), twin = absl::StrCat("bench/", t, "/b");
      int64_t mod = 0;
      while (!stop.load(std::memory_order_relaxed)) {
        kv::TxnRequest txn;
        txn.compares.push_back(kv::Compare::ModRevision(key, kv::CompareOp::kEqual, mod));
        txn.then_ops.emplace_back(kv::PutOp{key, value});
        txn.then_ops.emplace_back(kv::PutOp{twin, value});
        const absl::Time t0 = absl::Now();
        absl::StatusOr<kv::TxnResponse> r = (*store)->Txn(txn);
        lat[t].push_back(absl::ToDoubleMilliseconds(absl::Now() - t0));
        if (!r.ok()) {
          ++errors;
        } else if (!r->succeeded) {
          ++failed;
        } else {
          mod = r->revision;
        }
      }
    });
  }
  absl::SleepFor(absl::Seconds(absl::GetFlag(FLAGS_seconds)));
  stop = true;
  for (auto& w : workers) w.join();
  const double secs = absl::ToDoubleSeconds(absl::Now() - start);
  std::vector<double> all;
  for (auto& v : lat) all.insert(all.end(), v.begin(), v.end());
  const size_t n = all.size();
  std::printf(
      "kv txn (cmp mod + 2 puts)  threads=%-3d txns=%-7zu %9.0f txn/s  p50=%.3f ms  "
      "p99=%.3f ms  failed_compares=%lld errors=%lld\n",
      threads, n, n / secs, Percentile(&all, 0.5), Percentile(&all, 0.99),
      static_cast<long long>(failed.load()), static_cast<long long>(errors.load()));
  store->reset();
  RemoveDb(path);
  return n / secs;
}

bool Exec(sqlite3* db, const char* sql) {
  char* err = nullptr;
  if (sqlite3_exec(db, sql, nullptr, nullptr, &err) != SQLITE_OK) {
    std::fprintf(stderr, "sqlite: %s: %s\n", sql, err ? err : "?");
    sqlite3_free(err);
    return false;
  }
  return true;
}

// One thread, one connection: the floor a commit pipeline builds on.
double RunRawSqlite(int rows_per_commit) {
  const std::string path = absl::StrCat(Dir(), "/kv_store_bench_raw_", getpid(), ".db");
  RemoveDb(path);
  sqlite3* db = nullptr;
  if (sqlite3_open(path.c_str(), &db) != SQLITE_OK || !Exec(db, "PRAGMA journal_mode=WAL") ||
      !Exec(db, "PRAGMA synchronous=FULL") ||
      !Exec(db,
            "CREATE TABLE t (k BLOB, rev INTEGER, v BLOB, PRIMARY KEY (k, rev)) "
            "WITHOUT ROWID")) {
    std::exit(1);
  }
  sqlite3_stmt* ins = nullptr;
  sqlite3_prepare_v2(db, "INSERT INTO t VALUES (?, ?, ?)", -1, &ins, nullptr);
  const std::string value(absl::GetFlag(FLAGS_value_bytes), 'v');
  std::vector<double> lat;
  int64_t rev = 0;
  const absl::Time start = absl::Now();
  const absl::Time end = start + absl::Seconds(absl::GetFlag(FLAGS_seconds));
  while (absl::Now() < end) {
    const absl::Time t0 = absl::Now();
    Exec(db, "BEGIN IMMEDIATE");
    ++rev;
    for (int i = 0; i < rows_per_commit; ++i) {
      const std::string key = absl::StrCat("bench/", i);
      sqlite3_reset(ins);
      sqlite3_bind_blob(ins, 1, key.data(), key.size(), SQLITE_TRANSIENT);
      sqlite3_bind_int64(ins, 2, rev);
      sqlite3_bind_blob(ins, 3, value.data(), value.size(), SQLITE_STATIC);
      sqlite3_step(ins);
    }
    Exec(db, "COMMIT");
    lat.push_back(absl::ToDoubleMilliseconds(absl::Now() - t0));
  }
  const double secs = absl::ToDoubleSeconds(absl::Now() - start);
  std::printf(
      "raw sqlite commit of %2d rows threads=1   commits=%-7zu %7.0f commits/s "
      "(%.0f rows/s)  p50=%.3f ms  p99=%.3f ms\n",
      rows_per_commit, lat.size(), lat.size() / secs, lat.size() * rows_per_commit / secs,
      Percentile(&lat, 0.5), Percentile(&lat, 0.99));
  sqlite3_finalize(ins);
  sqlite3_close(db);
  RemoveDb(path);
  return lat.size() / secs;
}

}  // namespace
}  // namespace iommu

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  absl::SetMutexDeadlockDetectionMode(absl::GetFlag(FLAGS_mutex_deadlock_detection)
                                          ? absl::OnDeadlockCycle::kAbort
                                          : absl::OnDeadlockCycle::kIgnore);
  std::printf("directory: %s\n", iommu::Dir().c_str());
  std::vector<int> counts;
  for (absl::string_view t : absl::StrSplit(absl::GetFlag(FLAGS_threads), ',')) {
    int n = 0;
    if (!absl::SimpleAtoi(t, &n) || n <= 0) {
      std::fprintf(stderr, "--threads: \"%s\" is not a positive count\n", std::string(t).c_str());
      return 2;
    }
    counts.push_back(n);
  }
  for (int round = 0; round < absl::GetFlag(FLAGS_rounds); ++round) {
    std::printf("round %d\n", round + 1);
    const double raw = iommu::RunRawSqlite(2);
    for (int n : counts) {
      const double kv = iommu::RunKv(n);
      std::printf("  ratio kv txn/s at %d threads / raw 2-row commits/s = %.2f\n", n, kv / raw);
    }
    iommu::RunRawSqlite(32);
  }
  return 0;
}
