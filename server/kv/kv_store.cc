#include "server/kv/kv_store.h"

#include <utility>

namespace iommu {
namespace kv {
namespace {

class RealClock final : public Clock {
 public:
  absl::Time Now() override { return absl::Now(); }
};

}  // namespace

Clock* Clock::Real() {
  static Clock* const clock = new RealClock();
  return clock;
}

absl::StatusOr<TxnResponse> KvStore::Put(std::string key, std::string value, int64_t lease) {
  TxnRequest txn;
  txn.then_ops.emplace_back(PutOp{std::move(key), std::move(value), lease, false});
  return Txn(txn);
}

absl::StatusOr<TxnResponse> KvStore::DeleteRange(std::string key, std::string range_end) {
  TxnRequest txn;
  txn.then_ops.emplace_back(DeleteRangeOp{std::move(key), std::move(range_end), false});
  return Txn(txn);
}

absl::StatusOr<std::optional<KeyValue>> KvStore::Get(std::string key) {
  RangeRequest r;
  r.key = std::move(key);
  absl::StatusOr<RangeResponse> resp = Range(r);
  if (!resp.ok()) return resp.status();
  if (resp->kvs.empty()) return std::optional<KeyValue>();
  return std::optional<KeyValue>(std::move(resp->kvs[0]));
}

std::string PrefixRangeEnd(const std::string& prefix) {
  std::string end = prefix;
  while (!end.empty()) {
    unsigned char& last = reinterpret_cast<unsigned char&>(end.back());
    if (last < 0xff) {
      ++last;
      return end;
    }
    end.pop_back();
  }
  return std::string(1, '\0');
}

}  // namespace kv
}  // namespace iommu
