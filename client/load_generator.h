// Load generation against a TwinMerge server: closed loop or open loop, always bounded.
//
// Closed loop: `concurrency` workers each send one request, wait for its reply, and send the
// next (unary Infer, or with use_streams one InferStream per worker carrying up to
// stream_window requests in flight). Throughput is what the server sustains at that
// concurrency.
// Open loop: requests arrive as a Poisson process at rate_per_s, sent as non-blocking calls so
// a slow reply never delays the schedule. At most max_outstanding calls are in flight; an
// arrival beyond that is dropped and counted (the honest way to show overload).
//
// A run stops by itself: after `duration` or after `max_requests` requests (arrivals, in open
// loop), whichever comes first; at least one must be set. Calls in flight at the end are
// waited for (each is bounded by `timeout`); then Run() returns.
//
//   LoadOptions options;
//   options.concurrency = 8;
//   options.max_requests = 1000;
//   ASSIGN_OR_RETURN(LoadResult result, RunLoad(client.get(), workload, mix, options));
//   std::cout << result.Summary();
//
// Thread-safety: RunLoad() is a blocking call that uses the client from several threads
// (TwinClient is thread-safe); the workload and mix are only read.
#ifndef TWIN_CLIENT_LOAD_GENERATOR_H_
#define TWIN_CLIENT_LOAD_GENERATOR_H_

#include <cstdint>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "client/load_stats.h"
#include "client/twin_client.h"
#include "client/workload.h"

namespace twin::client {

struct LoadOptions {
  enum class Mode { kClosedLoop, kOpenLoop };
  Mode mode = Mode::kClosedLoop;
  // Closed loop: number of workers (each one call, or one stream, at a time).
  int concurrency = 1;
  // Closed loop: drive InferStreams instead of unary calls.
  bool use_streams = false;
  // Closed loop with streams: requests in flight per stream.
  int stream_window = 1;
  // Open loop: mean arrivals per second.
  double rate_per_s = 0;
  // Open loop: calls in flight at most; arrivals beyond are dropped.
  int max_outstanding = 256;
  // Stop after this long (zero = no time bound).
  absl::Duration duration = absl::Seconds(10);
  // Stop after this many requests (0 = no count bound).
  int64_t max_requests = 0;
  // Name the example's task in each request (otherwise the server routes).
  bool send_task = false;
  // Deadline of each call (for streams: how long to wait for a reply before giving up).
  absl::Duration timeout = absl::Seconds(5);
  // Per-request router temperatures drawn log-uniformly from [temperature_min,
  // temperature_max] (0, 0: the server's default): many distinct router-weight mixtures.
  double temperature_min = 0;
  double temperature_max = 0;
  // Seeds the task mix, the example choice, the arrival times and the temperatures.
  uint64_t seed = 1;
};

// Runs one load test. INVALID_ARGUMENT for inconsistent options (no bound, no rate, ...);
// failed calls are counted in the result, not returned as errors.
absl::StatusOr<LoadResult> RunLoad(TwinClient* client, const Workload& workload,
                                   const TaskMix& mix, const LoadOptions& options);

}  // namespace twin::client

#endif  // TWIN_CLIENT_LOAD_GENERATOR_H_
