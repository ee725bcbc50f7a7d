// The handle of a watch on etcd (what EtcdKvStore::Watch returns), apart
// from the store because it is a different kind of object: a long-lived
// bidi stream with two threads of its own and a queue between them, where
// the store makes one unary call at a time. Internal to
// //server/kv:etcd_kv_store.
//
// Thread-safe: the callback runs on the watch's own delivery thread, one
// call at a time; destroying the handle (never from inside its callback, as
// for every WatchHandle) stops both threads before it returns.
#ifndef SERVER_KV_ETCD_WATCH_H_
#define SERVER_KV_ETCD_WATCH_H_

#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <thread>
#include <variant>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "etcd/etcdserver/etcdserverpb/rpc.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "server/kv/etcd_internal.h"
#include "server/kv/kv_store.h"

namespace iommu {
namespace kv {

// A watch: one bidi stream, a reader thread turning responses into batches
// (one per revision) and a delivery thread running the callback. The handle
// owns both; destroying it cancels the stream and joins them.
class EtcdWatch final : public WatchHandle {
 public:
  // Watches what `create` asks for on `endpoint`, handing `callback` the
  // events with their keys stripped of `prefix`; more than `max_pending`
  // undelivered events end the watch with RESOURCE_EXHAUSTED. Nothing is
  // sent before Start.
  EtcdWatch(std::shared_ptr<Endpoint> endpoint, etcdserverpb::WatchCreateRequest create,
            std::string prefix, int64_t max_pending, WatchCallback callback);
  EtcdWatch(const EtcdWatch&) = delete;
  EtcdWatch& operator=(const EtcdWatch&) = delete;

  ~EtcdWatch() override;

  // Starts the threads and waits until etcd confirms the watch. Errors:
  // UNAVAILABLE when etcd does not confirm within `timeout`; etcd's reason
  // when it refuses.
  absl::Status Start(absl::Duration timeout);

 private:
  using Item = std::variant<WatchBatch, absl::Status>;

  void ReadLoop();
  // Queues the final error unless the watch is being destroyed or failed.
  void Fail(const absl::Status& s);
  void DeliverLoop();

  // Constant after construction.
  const std::shared_ptr<Endpoint> endpoint_;
  const etcdserverpb::WatchCreateRequest create_;
  const std::string prefix_;
  const int64_t max_pending_;
  const WatchCallback callback_;

  grpc::ClientContext ctx_;  // TryCancel is thread-safe.
  // Used only by the reader thread.
  std::unique_ptr<grpc::ClientReaderWriter<etcdserverpb::WatchRequest, etcdserverpb::WatchResponse>>
      stream_;

  absl::Mutex mu_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  bool created_ ABSL_GUARDED_BY(mu_) = false;
  bool failed_ ABSL_GUARDED_BY(mu_) = false;  // The final error is queued.
  bool reader_done_ ABSL_GUARDED_BY(mu_) = false;
  absl::Status start_error_ ABSL_GUARDED_BY(mu_);
  std::deque<Item> queue_ ABSL_GUARDED_BY(mu_);
  int64_t pending_events_ ABSL_GUARDED_BY(mu_) = 0;

  std::thread reader_;
  std::thread deliverer_;
};

}  // namespace kv
}  // namespace iommu

#endif  // SERVER_KV_ETCD_WATCH_H_
