// The request queue behind the batcher: one bounded queue, two stages.
//
// A request enters unrouted (Enqueue). A worker takes unrouted requests in arrival order
// (TakeUnrouted), computes their router weights in one batch, and hands each back with its
// cluster key (AddRouted). NextBatch then forms batches of requests that share a key: a group
// is ready when it holds max_batch_size requests or its oldest request has waited
// max_queue_delay; among ready groups the one with the oldest request goes first.
// With unfused_available (native families) a batch may instead mix keys: NextBatchPlan asks
// a BatchModeChooser (batch_mode.h) for one key's fused batch or an unfused batch of the
// oldest requests of any keys, from the measured costs of both (RecordBatch, RecordFusion).
// Requests past their deadline or cancelled are removed whenever the queue is touched, and
// completed with DEADLINE_EXCEEDED or CANCELLED through their `done` callback, exactly once.
// Requests taken by TakeUnrouted keep counting against max_queue_size until they come back
// (AddRouted) or the worker gives up on them (DropRouting), so routing cannot overfill it.
//
// The queue has no threads and takes `now` as an argument, so tests drive it deterministically;
// BatchWorkers (batch_workers.h) runs it with threads.
//
//   RequestQueue q({.max_queue_size = 1024, .max_batch_size = 8, .max_queue_delay_us = 2000});
//   RETURN_IF_ERROR(q.Enqueue(request, now));        // RESOURCE_EXHAUSTED when full
//   auto unrouted = q.TakeUnrouted(64, now);
//   q.AddRouted(std::move(r), "g10:0=10", now);
//   std::vector<PendingRequest> batch = q.NextBatch(now);
//
// Thread-safety: thread-safe (one internal mutex); `done` callbacks run without it held.
#ifndef TWIN_SERVER_REQUEST_QUEUE_H_
#define TWIN_SERVER_REQUEST_QUEUE_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "server/batch_mode.h"

namespace twin {

// The payload the server attaches (input tensors, options, reply slot); opaque here.
class RequestPayload {
 public:
  virtual ~RequestPayload() = default;
};

struct PendingRequest {
  uint64_t id = 0;                         // assigned by Enqueue
  absl::Time enqueued;                     // set by Enqueue
  // Set by Enqueue when an estimate was in force: the predicted wait until the request's
  // batch starts, before the correction learned from earlier predictions.
  absl::Duration predicted_start = absl::InfiniteDuration();
  absl::Time deadline = absl::InfiniteFuture();
  std::shared_ptr<std::atomic<bool>> cancelled;  // may be null
  std::string key;                         // cluster key, set by AddRouted
  std::shared_ptr<RequestPayload> payload;
  // Called once with a non-OK status when the queue drops the request (deadline, cancel,
  // shutdown). Not called for requests handed out by TakeUnrouted/NextBatch.
  std::function<void(const absl::Status&)> done;
};

// How long a service-time estimate stays in force without a new measurement.
inline constexpr absl::Duration kServiceEstimateTtl = absl::Seconds(1);

struct RequestQueueOptions {
  int max_queue_size = 1024;        // unrouted + being routed + routed requests
  int max_batch_size = 8;
  int64_t max_queue_delay_us = 2000;
  // Deadline-aware admission: a request whose deadline comes before the queue's expected wait
  // (the requests ahead at the measured service time per request / parallelism, corrected by
  // how far earlier predictions missed, then the measured time of one batch of its own) is
  // refused at once with RESOURCE_EXHAUSTED saying
  // so, instead of waiting to expire (DEADLINE_EXCEEDED instead when even its own batch alone
  // would take longer than the deadline: then the load is not the reason). Off until a
  // service time has been measured (RecordService), and again once no measurement has come
  // for kServiceEstimateTtl (an estimate that refused everything would otherwise never be
  // corrected); requests without a deadline are never refused by it.
  bool deadline_admission = true;
  int parallelism = 1;  // batch workers serving the queue
  // Mixed batches (native families, the unfused path): requests of any keys in one batch,
  // chosen per batch against one key's fused batch by `modes` (batch_mode.h; its
  // max_batch_size is this queue's). Off: every batch holds one key.
  bool unfused_available = false;
  BatchModeOptions modes;
};

// INVALID_ARGUMENT naming the field when a size is below 1 or the delay is negative. The
// RequestQueue constructor raises such values to the nearest valid one instead; config loaders
// call this first to report the mistake.
absl::Status ValidateRequestQueueOptions(const RequestQueueOptions& options);

struct RequestQueueStats {
  int64_t waiting = 0;  // unrouted + routed
  int64_t unrouted = 0;
  int64_t in_routing = 0;  // taken by TakeUnrouted, not yet back through AddRouted/DropRouting
  int64_t groups = 0;
  uint64_t rejected_full = 0;
  uint64_t rejected_late = 0;  // refused at admission: could not be answered before the deadline
  uint64_t expired = 0;
  uint64_t cancelled = 0;
};

class RequestQueue {
 public:
  explicit RequestQueue(RequestQueueOptions options);
  ~RequestQueue();  // defined where State is complete

  // On error the request was not queued and `done` is not called: the caller answers it.
  // INVALID_ARGUMENT without `done`; DEADLINE_EXCEEDED / CANCELLED if already so;
  // UNAVAILABLE after Close; RESOURCE_EXHAUSTED when full.
  absl::Status Enqueue(PendingRequest request, absl::Time now);
  // The refusal Enqueue would give a request with `deadline` at `now` (counted in stats), or
  // OK, without queueing anything: lets a caller refuse before it spends work preparing the
  // request. Enqueue decides again.
  absl::Status Admit(absl::Time deadline, absl::Time now);
  // Up to max_count unrouted requests, oldest first.
  std::vector<PendingRequest> TakeUnrouted(int max_count, absl::Time now);
  // Returns the request to the queue in its key's group (keeps its enqueue time; does not count
  // against max_queue_size twice). Within a group requests stay in arrival order even when
  // routed out of order. After Close the request is completed with the close status instead.
  void AddRouted(PendingRequest request, std::string key, absl::Time now);
  // Releases the capacity of `n` requests taken by TakeUnrouted that will not come back
  // (their router failed and completed them).
  void DropRouting(int n);
  // Up to max_batch_size requests of one key, or empty if no group is ready.
  std::vector<PendingRequest> NextBatch(absl::Time now);
  // The next batch and how to run it. Without unfused_available: NextBatch's batch, fused.
  // With it, once a group is ready (full or delayed) or max_batch_size requests wait in all,
  // the BatchModeChooser picks one key's fused batch or an unfused batch of the oldest
  // requests of any keys. Empty requests: nothing ready.
  struct Batch {
    BatchMode mode = BatchMode::kFused;
    std::vector<PendingRequest> requests;
    std::string reason;  // the chooser's
  };
  Batch NextBatchPlan(absl::Time now);
  // Which keys have fused weights resident (the fused cache); unknown keys count as resident
  // when not set. Called under the queue's lock: must not call back into the queue.
  void SetResidency(std::function<bool(const std::string& key)> resident);
  // Which modes the servable now serving offers (a reload may change it): unfused batches
  // only with unfused_available, fused ones only with fused_available (at least one is).
  void SetModes(bool unfused_available, bool fused_available);
  // A finished batch's mode, rows and time, and one fusion's time, for the chooser's costs.
  void RecordBatch(BatchMode mode, int rows, absl::Duration busy);
  void RecordFusion(absl::Duration busy);
  // When the next group becomes ready by delay (InfiniteFuture if nothing is routed). A full
  // group is ready already and reports its oldest request's enqueue time.
  absl::Time NextReadyTime() const;
  bool HasUnrouted() const;
  // Reports that a worker spent `busy` on one call of a stage (routing or the forward) over
  // `requests` requests, finishing at `now`; the smoothed cost per request and per call of
  // both stages drives deadline-aware admission.
  enum class Stage { kRoute, kRun };
  void RecordService(Stage stage, int requests, absl::Duration busy, absl::Time now = absl::Now());
  // The expected wait of a request enqueued now (ZeroDuration before any measurement).
  absl::Duration ExpectedWait() const;
  // From now on every group is ready at once, full or not: nothing more will arrive to fill
  // it (the drain at shutdown), so waiting out max_queue_delay_us only delays answers.
  void Flush();
  // Completes every waiting request with `status` (shutdown; an OK status is replaced by
  // UNAVAILABLE) and refuses new ones.
  void Close(const absl::Status& status);
  RequestQueueStats stats() const;
  const RequestQueueOptions& options() const { return options_; }
  bool unfused_available() const;

 private:
  struct State;
  const RequestQueueOptions options_;
  mutable absl::Mutex mu_;
  std::unique_ptr<State> state_ ABSL_GUARDED_BY(mu_);
};

}  // namespace twin

#endif  // TWIN_SERVER_REQUEST_QUEUE_H_
