#include "server/push_queue.h"

#include <utility>

namespace iommu {

PushQueue::PushQueue(int workers) {
  if (workers < 1) workers = 1;
  for (int i = 0; i < workers; ++i) threads_.emplace_back([this] { Run(); });
}

PushQueue::~PushQueue() {
  {
    absl::MutexLock l(&mu_);
    stopping_ = true;
  }
  for (std::thread& t : threads_) t.join();
}

void PushQueue::Enqueue(const std::string& shard, const std::string& key,
                        std::function<void()> work) {
  absl::MutexLock l(&mu_);
  if (stopping_) return;
  Shard& s = shards_[shard];
  auto [it, inserted] = s.items.insert_or_assign(key, std::move(work));
  if (!inserted) return;  // Replaced the queued item; it keeps its turn.
  s.order.push_back(key);
  ++queued_;
  if (!s.busy && s.order.size() == 1) ready_.push_back(shard);
}

void PushQueue::Run() {
  for (;;) {
    std::string shard_name;
    std::function<void()> work;
    {
      absl::MutexLock l(&mu_);
      auto has_work = [this] {
        mu_.AssertHeld();
        return stopping_ || !ready_.empty();
      };
      mu_.Await(absl::Condition(&has_work));
      if (stopping_) return;
      shard_name = std::move(ready_.front());
      ready_.pop_front();
      Shard& s = shards_[shard_name];
      const std::string key = std::move(s.order.front());
      s.order.pop_front();
      auto it = s.items.find(key);
      work = std::move(it->second);
      s.items.erase(it);
      s.busy = true;
      --queued_;
      ++running_;
    }
    work();
    absl::MutexLock l(&mu_);
    auto s = shards_.find(shard_name);
    s->second.busy = false;
    --running_;
    if (!s->second.order.empty()) {
      ready_.push_back(shard_name);  // Behind the shards that waited meanwhile.
    } else {
      shards_.erase(s);
    }
  }
}

void PushQueue::WaitIdle() {
  absl::MutexLock l(&mu_);
  auto idle = [this] {
    mu_.AssertHeld();
    return queued_ == 0 && running_ == 0;
  };
  mu_.Await(absl::Condition(&idle));
}

size_t PushQueue::pending() const {
  absl::MutexLock l(&mu_);
  return queued_ + running_;
}

}  // namespace iommu
