// `twin-client bench --generate`: closed-loop Generate load (N workers, each one stream at a
// time) over a workload's texts as prompts, measuring what users of a generation service feel:
// time to first token (TTFT, client side: from the call to the first reply with a token),
// inter-token latency (between consecutive token replies; the tokens of a reply holding
// several share its gap evenly), generated tokens per second over the run, and requests per
// second.
//
//   GenerateBenchOptions o;
//   o.concurrency = 8;
//   o.duration = absl::Seconds(20);
//   ASSIGN_OR_RETURN(GenerateBenchResult r, RunGenerateBench(&client, workload, mix, o));
//   std::cout << r.Summary();
//
// Thread-safety: RunGenerateBench blocks; its workers share the client.
#ifndef TWIN_CLIENT_GENERATE_BENCH_H_
#define TWIN_CLIENT_GENERATE_BENCH_H_

#include <cstdint>
#include <map>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "client/twin_client.h"
#include "client/workload.h"

namespace twin::client {

struct GenerateBenchOptions {
  int concurrency = 1;
  absl::Duration duration = absl::Seconds(10);  // zero: until max_requests
  int64_t max_requests = 0;                     // 0: no limit
  int32_t max_new_tokens = 32;
  bool ignore_eos = true;  // every request generates max_new_tokens (comparable runs)
  bool send_task = false;
  float sample_temperature = 0;  // 0: greedy
  uint64_t seed = 1;
  absl::Duration timeout = absl::Seconds(60);
};

struct LatencySummary {
  int64_t count = 0;
  double mean_ms = 0, p50_ms = 0, p90_ms = 0, p99_ms = 0;
};

struct GenerateBenchResult {
  int64_t ok = 0;
  int64_t failed = 0;
  std::map<std::string, int64_t> errors;  // status code name -> count
  int64_t tokens = 0;                     // generated, by the successful calls
  double seconds = 0;
  LatencySummary ttft, inter_token, total;
  double tokens_per_s() const { return seconds > 0 ? tokens / seconds : 0; }
  double requests_per_s() const { return seconds > 0 ? ok / seconds : 0; }
  std::string Summary() const;
  std::string Json() const;
};

absl::StatusOr<GenerateBenchResult> RunGenerateBench(TwinClient* client,
                                                     const Workload& workload,
                                                     const TaskMix& mix,
                                                     const GenerateBenchOptions& options);

}  // namespace twin::client

#endif  // TWIN_CLIENT_GENERATE_BENCH_H_
