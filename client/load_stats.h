// What a load run measured (LoadResult) and the thread-safe recorder that collects it.
//
// Latency is client-side wall time from just before a request is sent to its reply, over
// successful replies only (a failed call's time says more about the deadline than the server).
// Accuracy compares the reply's label with the example's known label, and counts a reply
// from another task than the example's as wrong (its label index means another label set);
// routing accuracy
// compares the reply's task with the example's true task, counted only for requests sent
// without a task (otherwise the server just echoes it).
//
// Thread-safety: LoadRecorder is thread-safe; LoadResult is a plain value.
#ifndef TWIN_CLIENT_LOAD_STATS_H_
#define TWIN_CLIENT_LOAD_STATS_H_

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "client/workload.h"
#include "twinmerge/v1/twinmerge.pb.h"

namespace twin::client {

struct TaskStats {
  int64_t sent = 0;            // requests issued (drops excluded)
  int64_t ok = 0;              // successful replies
  int64_t labelled = 0;        // successful replies whose true label is known
  int64_t correct = 0;         // ... whose label matches it
  int64_t routed = 0;          // successful replies to requests sent without a task
  int64_t routed_correct = 0;  // ... that name the true task
};

// Mean of the server's reported TimeSplit over successful replies, in microseconds.
struct MeanTimeSplit {
  double queue_us = 0;
  double route_us = 0;
  double fuse_us = 0;
  double forward_us = 0;
  double total_us = 0;
};

struct LoadResult {
  absl::Duration elapsed;
  int64_t sent = 0;
  int64_t ok = 0;
  int64_t failed = 0;
  int64_t dropped = 0;  // open loop: arrivals not sent because too many were outstanding
  std::map<std::string, int64_t> errors_by_code;  // "DEADLINE_EXCEEDED" -> count
  double throughput_per_s = 0;                    // successful replies per second
  absl::Duration latency_mean;
  absl::Duration latency_p50;
  absl::Duration latency_p90;
  absl::Duration latency_p99;
  absl::Duration latency_max;
  int64_t labelled = 0;
  int64_t correct = 0;
  int64_t routed = 0;
  int64_t routed_correct = 0;
  int64_t cache_hits = 0;
  MeanTimeSplit server_time;
  std::map<std::string, TaskStats> per_task;

  // Ratios in [0, 1]; 0 when nothing was counted.
  double accuracy() const;
  double routing_accuracy() const;
  double cache_hit_ratio() const;
  // A human-readable multi-line report.
  std::string Summary() const;
  // The same figures as one JSON object (latencies in milliseconds), for scripts.
  std::string Json() const;
};

// The p-quantile (0 < p <= 1) by the nearest-rank rule; zero for an empty sample.
absl::Duration Percentile(std::vector<absl::Duration> sorted_sample, double p);

class LoadRecorder {
 public:
  // Counts a request as sent, before its reply, so calls that never finish still count.
  void RecordSent(const WorkItem& item);
  // One finished call. `reply` is read only when `status` is OK.
  void Record(const WorkItem& item, bool task_sent, absl::Duration latency,
              const absl::Status& status, const twinmerge::v1::InferResponse& reply);
  void RecordDrop();
  int64_t sent() const;
  int64_t finished() const;  // ok + failed
  // The result over everything recorded, for a run that took `elapsed`.
  LoadResult Result(absl::Duration elapsed) const;

 private:
  mutable absl::Mutex mu_;
  LoadResult totals_ ABSL_GUARDED_BY(mu_);
  std::vector<absl::Duration> latencies_ ABSL_GUARDED_BY(mu_);
  MeanTimeSplit time_sums_ ABSL_GUARDED_BY(mu_);
};

}  // namespace twin::client

#endif  // TWIN_CLIENT_LOAD_STATS_H_
