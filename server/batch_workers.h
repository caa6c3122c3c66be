// Worker threads that drive a RequestQueue: route unrouted requests in batches, then run
// ready batches, sleeping until new work arrives or the next group's delay expires.
// Inference never runs on gRPC threads: RPC handlers only Enqueue and Notify.
//
//   BatchWorkers workers(&queue, &processor, {.num_threads = 1});
//   workers.Start();
//   ... queue.Enqueue(...); workers.Notify();
//   workers.Drain();   // finish everything queued, then stop the threads
//
// Each worker alternates between routing one group of unrouted requests and running one ready
// batch, so a steady stream of arrivals cannot starve the batches already routed.
//
// Thread-safety: Notify() may be called from any thread; Start/Drain/Stop from one owner.
// The processor is called from all worker threads at once and must be thread-safe.
#ifndef TWIN_SERVER_BATCH_WORKERS_H_
#define TWIN_SERVER_BATCH_WORKERS_H_

#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "server/request_queue.h"

namespace twin {

class BatchProcessor {
 public:
  virtual ~BatchProcessor() = default;
  // Sets (*keys)[i] to the cluster key of requests[i]. A request that cannot be routed gets an
  // empty key, and the processor completes it itself (done with an error) before returning.
  virtual void Route(std::vector<PendingRequest>& requests, std::vector<std::string>* keys) = 0;
  // Runs one batch of requests sharing a key and completes every one of them.
  virtual void Run(std::vector<PendingRequest> batch) = 0;
  // Runs a batch in `mode` (unfused: requests of any keys, see RequestQueue::NextBatchPlan)
  // and completes every request; returns the seconds of it spent fusing weights (a cache
  // miss), which the queue's mode choice counts apart from the forward. The default runs the
  // batch with Run() and reports no fusion.
  virtual double RunBatch(std::vector<PendingRequest> batch, BatchMode mode) {
    (void)mode;
    Run(std::move(batch));
    return 0;
  }
};

struct BatchWorkersOptions {
  int num_threads = 1;
  int max_route_batch = 64;  // unrouted requests routed together
};

class BatchWorkers {
 public:
  BatchWorkers(RequestQueue* queue, BatchProcessor* processor, BatchWorkersOptions options);
  ~BatchWorkers();  // Stop()

  void Start();
  void Notify();
  // Processes everything already queued (new Enqueues should be refused by the caller first),
  // then joins the threads.
  void Drain();
  // Joins the threads without processing what is left (the queue should be Closed first).
  void Stop();

 private:
  void Loop();
  // One step of Loop each; true when they did work.
  bool RouteSome();
  bool RunOne();
  RequestQueue* queue_;
  BatchProcessor* processor_;
  const BatchWorkersOptions options_;
  absl::Mutex mu_;
  absl::CondVar wake_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  bool draining_ ABSL_GUARDED_BY(mu_) = false;
  uint64_t generation_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<std::thread> threads_;
};

}  // namespace twin

#endif  // TWIN_SERVER_BATCH_WORKERS_H_
