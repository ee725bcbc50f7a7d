#include "server/kv/etcd_watch.h"

#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"

namespace iommu {
namespace kv {
namespace {

namespace pb = ::etcdserverpb;

}  // namespace

EtcdWatch::EtcdWatch(std::shared_ptr<Endpoint> endpoint, pb::WatchCreateRequest create,
                     std::string prefix, int64_t max_pending, WatchCallback callback)
    : endpoint_(std::move(endpoint)),
      create_(std::move(create)),
      prefix_(std::move(prefix)),
      max_pending_(max_pending),
      callback_(std::move(callback)) {}

EtcdWatch::~EtcdWatch() {
  {
    absl::MutexLock l(&mu_);
    stopping_ = true;
  }
  ctx_.TryCancel();
  if (reader_.joinable()) reader_.join();
  if (deliverer_.joinable()) deliverer_.join();
}

absl::Status EtcdWatch::Start(absl::Duration timeout) {
  reader_ = std::thread([this] { ReadLoop(); });
  deliverer_ = std::thread([this] { DeliverLoop(); });
  absl::MutexLock l(&mu_);
  auto started = [this]()
                     ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return created_ || !start_error_.ok(); };
  if (!mu_.AwaitWithTimeout(absl::Condition(&started), timeout)) {
    return absl::UnavailableError(absl::StrCat("etcd at ", endpoint_->address,
                                               " did not confirm a watch within ",
                                               absl::FormatDuration(timeout)));
  }
  return start_error_;
}

void EtcdWatch::ReadLoop() {
  stream_ = endpoint_->watch->Watch(&ctx_);
  pb::WatchRequest req;
  *req.mutable_create_request() = create_;
  absl::Status end;
  if (!stream_->Write(req)) {
    end = FromGrpc(stream_->Finish(), "watch create", endpoint_->address, absl::ZeroDuration());
    if (end.ok()) {
      end = absl::UnavailableError(
          absl::StrCat("etcd at ", endpoint_->address, " closed a watch stream at creation"));
    }
    Fail(end);
    return;
  }
  pb::WatchResponse resp;
  while (stream_->Read(&resp)) {
    if (resp.created()) {
      absl::MutexLock l(&mu_);
      created_ = true;
    }
    if (resp.canceled()) {
      if (resp.compact_revision() > 0) {
        end = absl::OutOfRangeError(absl::StrCat("watch: history compacted; revisions below ",
                                                 resp.compact_revision(),
                                                 " are gone, relist and watch from there"));
      } else {
        end = absl::UnavailableError(absl::StrCat("etcd at ", endpoint_->address,
                                                  " canceled a watch: ", resp.cancel_reason()));
      }
      break;
    }
    if (resp.events_size() == 0) continue;
    std::vector<WatchBatch> batches;
    for (const mvccpb::Event& e : resp.events()) {
      const int64_t rev = e.kv().mod_revision();
      if (batches.empty() || batches.back().revision != rev) {
        batches.push_back(WatchBatch{rev, {}});
      }
      Event ev;
      ev.type = e.type() == mvccpb::Event::DELETE ? EventType::kDelete : EventType::kPut;
      ev.kv = StripPrefix(e.kv(), prefix_);
      if (e.has_prev_kv()) ev.prev_kv = StripPrefix(e.prev_kv(), prefix_);
      batches.back().events.push_back(std::move(ev));
    }
    absl::MutexLock l(&mu_);
    if (stopping_ || failed_) break;
    for (WatchBatch& b : batches) {
      pending_events_ += b.events.size();
      queue_.emplace_back(std::move(b));
    }
    if (pending_events_ > max_pending_) {
      queue_.clear();
      queue_.emplace_back(absl::ResourceExhaustedError(
          absl::StrCat("watch fell behind: more than ", max_pending_,
                       " events waiting for its callback; relist and watch again")));
      failed_ = true;
      ctx_.TryCancel();
      break;
    }
  }
  const grpc::Status finish = stream_->Finish();
  if (end.ok()) {
    end = absl::UnavailableError(absl::StrCat("watch stream to etcd at ", endpoint_->address,
                                              " ended: ", finish.error_message()));
  }
  Fail(end);
}

void EtcdWatch::Fail(const absl::Status& s) {
  absl::MutexLock l(&mu_);
  reader_done_ = true;
  if (!created_ && start_error_.ok()) {
    start_error_ = s;  // Watch() returns it; the callback never runs.
    return;
  }
  if (stopping_ || failed_) return;
  failed_ = true;
  queue_.emplace_back(s);
}

void EtcdWatch::DeliverLoop() {
  while (true) {
    Item item;
    {
      absl::MutexLock l(&mu_);
      auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return stopping_ || !queue_.empty() || (reader_done_ && !start_error_.ok());
      };
      mu_.Await(absl::Condition(&ready));
      if (stopping_ || queue_.empty()) return;
      item = std::move(queue_.front());
      queue_.pop_front();
      if (auto* b = std::get_if<WatchBatch>(&item)) pending_events_ -= b->events.size();
    }
    if (auto* b = std::get_if<WatchBatch>(&item)) {
      callback_(*b);
    } else {
      callback_(std::get<absl::Status>(item));
      return;
    }
  }
}

}  // namespace kv
}  // namespace iommu
