#include "server/batch_workers.h"

#include <algorithm>
#include <utility>

#include "absl/time/clock.h"

namespace twin {
namespace {

// Idle workers re-check the queue at least this often, so a missed wake-up (say, a caller that
// enqueues without Notify) delays work by at most this much.
constexpr absl::Duration kMaxIdleWait = absl::Milliseconds(100);

}  // namespace

BatchWorkers::BatchWorkers(RequestQueue* queue, BatchProcessor* processor,
                           BatchWorkersOptions options)
    : queue_(queue),
      processor_(processor),
      options_{std::max(options.num_threads, 1), std::max(options.max_route_batch, 1)} {}

BatchWorkers::~BatchWorkers() { Stop(); }

void BatchWorkers::Start() {
  if (!threads_.empty()) return;
  {
    absl::MutexLock lock(&mu_);
    stopping_ = false;
    draining_ = false;
  }
  for (int i = 0; i < options_.num_threads; ++i) threads_.emplace_back([this] { Loop(); });
}

void BatchWorkers::Notify() {
  absl::MutexLock lock(&mu_);
  ++generation_;
  wake_.SignalAll();
}

void BatchWorkers::Drain() {
  {
    absl::MutexLock lock(&mu_);
    draining_ = true;
    ++generation_;
    wake_.SignalAll();
  }
  for (std::thread& t : threads_) t.join();
  threads_.clear();
}

void BatchWorkers::Stop() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
    ++generation_;
    wake_.SignalAll();
  }
  for (std::thread& t : threads_) t.join();
  threads_.clear();
}

bool BatchWorkers::RouteSome() {
  std::vector<PendingRequest> requests =
      queue_->TakeUnrouted(options_.max_route_batch, absl::Now());
  if (requests.empty()) return false;
  std::vector<std::string> keys(requests.size());
  const absl::Time start = absl::Now();
  processor_->Route(requests, &keys);
  queue_->RecordService(RequestQueue::Stage::kRoute, static_cast<int>(requests.size()),
                        absl::Now() - start);
  keys.resize(requests.size());
  const absl::Time now = absl::Now();
  int unroutable = 0;
  for (size_t i = 0; i < requests.size(); ++i) {
    if (keys[i].empty()) {
      ++unroutable;  // the processor has completed it
    } else {
      queue_->AddRouted(std::move(requests[i]), std::move(keys[i]), now);
    }
  }
  if (unroutable > 0) queue_->DropRouting(unroutable);
  Notify();  // routed groups may be ready now: let idle workers share them
  return true;
}

bool BatchWorkers::RunOne() {
  RequestQueue::Batch batch = queue_->NextBatchPlan(absl::Now());
  if (batch.requests.empty()) return false;
  const int size = static_cast<int>(batch.requests.size());
  const absl::Time start = absl::Now();
  const double fuse_s = processor_->RunBatch(std::move(batch.requests), batch.mode);
  const absl::Duration busy = absl::Now() - start;
  queue_->RecordService(RequestQueue::Stage::kRun, size, busy);
  const absl::Duration fusion = absl::Seconds(std::max(0.0, fuse_s));
  queue_->RecordBatch(batch.mode, size, std::max(absl::ZeroDuration(), busy - fusion));
  if (fuse_s > 0) queue_->RecordFusion(fusion);
  return true;
}

void BatchWorkers::Loop() {
  while (true) {
    uint64_t seen;
    {
      absl::MutexLock lock(&mu_);
      if (stopping_) return;
      seen = generation_;  // read before looking at the queue, so no Notify is missed
    }
    const bool routed = RouteSome();
    const bool ran = RunOne();
    if (routed || ran) continue;

    const RequestQueueStats stats = queue_->stats();
    const absl::Time wake_at = std::min(queue_->NextReadyTime(), absl::Now() + kMaxIdleWait);
    absl::MutexLock lock(&mu_);
    if (stopping_) return;
    // While draining, a worker leaves once nothing is queued or being routed; the delay of
    // groups that are not full still applies (it is milliseconds).
    if (draining_ && stats.waiting == 0 && stats.in_routing == 0) return;
    while (generation_ == seen && !stopping_) {
      if (wake_.WaitWithDeadline(&mu_, wake_at)) break;  // timed out
    }
  }
}

}  // namespace twin
