// The behavioural contract of KvStore (kv_store.h) as a GoogleTest suite,
// parameterized by a factory so that every implementation runs the very
// same tests: SQLite (sqlite_kv_store_test.cc) and etcd
// (tests/etcd_kv_store_test.cc, against a real etcd). Instantiate:
//
//   INSTANTIATE_TEST_SUITE_P(Sqlite, KvConformanceTest,
//                            ::testing::Values(KvConformanceParam{"sqlite", factory}),
//                            [](const auto& info) { return info.param.name; });
//
// Tests compare revisions relative to the store's starting one, never to
// absolute numbers, and never measure time: leases run on a FakeClock the
// factory must wire into the store (or, for a store that cannot take one,
// see KvConformanceParam::leases_follow_injected_clock).
//
// Thread-safety: FakeClock is thread-safe; the rest is test code.
#ifndef SERVER_KV_KV_CONFORMANCE_H_
#define SERVER_KV_KV_CONFORMANCE_H_

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "gtest/gtest.h"
#include "server/kv/kv_store.h"

namespace iommu {
namespace kv {

class FakeClock final : public Clock {
 public:
  absl::Time Now() override {
    absl::MutexLock l(&mu_);
    return now_;
  }
  void Advance(absl::Duration d) {
    absl::MutexLock l(&mu_);
    now_ += d;
  }

 private:
  absl::Mutex mu_;
  absl::Time now_ ABSL_GUARDED_BY(mu_) = absl::FromUnixSeconds(1700000000);
};

// What a test asks of a fresh store.
struct KvStoreConfig {
  Clock* clock = nullptr;  // Lease expiry must follow it.
  KvLimits limits;
  int64_t watch_max_pending_events = 100000;
};

// Makes a fresh, empty store for each test (a new file, a new etcd prefix).
using KvStoreFactory =
    std::function<absl::StatusOr<std::unique_ptr<KvStore>>(const KvStoreConfig& config)>;

struct KvConformanceParam {
  std::string name;
  KvStoreFactory factory;
  // Whether lease expiry follows KvStoreConfig::clock. A store whose leases
  // run on a clock the test cannot control (etcd's) sets false: the FakeClock
  // lease tests are skipped and their real-time variants run instead (short
  // real TTLs, bounds instead of exact remaining times).
  bool leases_follow_injected_clock = true;
};

class KvConformanceTest : public ::testing::TestWithParam<KvConformanceParam> {
 protected:
  void SetUp() override;
  // A store with `config` (its clock replaced by clock_).
  std::unique_ptr<KvStore> Make(KvStoreConfig config);

  // Helpers that record a failure (and return a default) on error.
  TxnResponse MustPut(const std::string& key, const std::string& value, int64_t lease = 0);
  TxnResponse MustTxn(const TxnRequest& txn);
  RangeResponse MustRange(const std::string& key, const std::string& range_end = "",
                          int64_t revision = 0, int64_t limit = 0);
  int64_t Revision();

  FakeClock clock_;
  std::unique_ptr<KvStore> store_;
  int64_t rev0_ = 0;  // The revision the fresh store started at.
};

// The keys of a range response, in order.
std::vector<std::string> Keys(const RangeResponse& r);

}  // namespace kv
}  // namespace iommu

#endif  // SERVER_KV_KV_CONFORMANCE_H_
