// Prometheus metrics of twin-server (prometheus-cpp), served on their own port at /metrics.
//
// Names (all prefixed twin_):
//   requests_total{task,code}            counter   finished requests by answering task and status
//   request_latency_seconds{stage}       histogram queue | route | fuse | forward | total
//   batch_size                           histogram requests per forward batch
//   cache_hits_total, cache_misses_total, cache_nearest_total, cache_fusions_throttled_total,
//   cache_deferred_total (misses served while their key fuses in the background),
//   cache_evictions_total,
//   cache_rejected_admissions_total      counters
//   cache_entries, cache_bytes           gauges
//   fusions_total, fusion_failures_total counters; fusion_seconds_total counter
//   router_top_task_total{task}          counter   router's top task per routed request
//   in_flight_requests                   gauge     accepted and not yet answered
//   queue_waiting                        gauge
//   artifact_info{version}               gauge (1 for the serving version)
//   artifact_loaded_timestamp_seconds    gauge     when the serving version was swapped in
//   reloads_total{outcome}               counter   loaded | unchanged | failed (version checks)
//   reload_failures_total                counter   failed loads (the old version kept serving)
//   reload_duration_seconds              histogram fetch + verify + load + warm-up, loaded ones
//   ready                                gauge     1 when serving
//   weights_resident_bytes{part}         gauge     the serving version's weights by part:
//                                                  shared (theta*), twins (factors + dense
//                                                  deltas), heads, router, experts (experts
//                                                  mode); cached fused sets are cache_bytes
//   serving_mode_info{mode}              gauge     twin | static | experts (value 1)
// Generation (causal LM versions; mode: unfused | static, how the sequence's steps ran):
//   generations_total{task,code,finish}  counter   finished Generate calls (finish: stop |
//                                                  length, "" when code is not OK)
//   generation_ttft_seconds{mode}        histogram arrival to the first new token
//   generation_inter_token_seconds{mode} histogram between a sequence's consecutive tokens
//   generated_tokens_total{mode}         counter
//   generation_active_sequences          gauge     admitted sequences (decoding or prefilling)
//   kv_cache_bytes                       gauge     KV memory the admitted sequences reserve
//
// Thread-safety: all methods are thread-safe (prometheus-cpp metrics are atomic).
#ifndef TWIN_SERVER_METRICS_H_
#define TWIN_SERVER_METRICS_H_

#include <atomic>
#include <map>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "server/fused_cache.h"

namespace prometheus {
class Registry;
class Counter;
class Gauge;
class Histogram;
template <typename T>
class Family;
}  // namespace prometheus

namespace twin {

struct StageTimes {
  double queue_s = 0, route_s = 0, fuse_s = 0, forward_s = 0, total_s = 0;
};

class ServerMetrics {
 public:
  // Serves /metrics over HTTP on `address` ("0.0.0.0:9090"; port 0 picks one); an empty
  // address means no HTTP endpoint.
  static absl::StatusOr<std::unique_ptr<ServerMetrics>> Create(const std::string& address);
  ~ServerMetrics();

  // The port the exposer listens on (resolved when the address asked for port 0).
  int port() const { return port_; }

  void RecordRequest(const std::string& task, const std::string& code, const StageTimes& t);
  void RecordBatch(int size);
  // One forward of the model body (embed() for several tasks' rows, or one task's forward()).
  void RecordBodyForward();
  void RecordRoute(const std::string& top_task);
  // A refused Admin call: reason unauthenticated | permission_denied | no_token.
  void RecordAdminDenied(const std::string& reason);
  // `cache` identifies the servable's cache the stats come from (one per loaded version).
  void UpdateCache(const void* cache, const FusedCacheStats& stats);
  // outcome: "loaded", "unchanged" or "failed".
  void RecordReload(const std::string& outcome, double seconds);
  void AddInFlight(int64_t delta);
  void SetQueueWaiting(int64_t n);
  void SetVersion(const std::string& version);
  void SetReady(bool ready);
  bool ready() const { return ready_.load(); }  // what /readyz reports
  // The serving version's resident weights (replaces the previous version's figures).
  void SetWeightBytes(uint64_t shared, uint64_t twins, uint64_t heads, uint64_t router,
                      uint64_t experts);
  void SetServingMode(const std::string& mode);
  // Generation.
  void RecordGeneration(const std::string& task, const std::string& code,
                        const std::string& finish);
  void RecordFirstToken(const std::string& mode, double seconds);
  void RecordInterToken(const std::string& mode, double seconds);
  void RecordGeneratedTokens(const std::string& mode, int64_t tokens);
  void SetGenerationActive(int64_t sequences);
  void SetKvCacheBytes(int64_t bytes);
  // The text exposition of every metric (what /metrics serves).
  std::string Scrape() const;

 private:
  ServerMetrics() = default;
  struct Impl;
  std::unique_ptr<Impl> impl_;
  int port_ = 0;
  std::atomic<bool> ready_{false};
};

}  // namespace twin

#endif  // TWIN_SERVER_METRICS_H_
