#include "server/metrics.h"

#include <prometheus/counter.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>
#include <prometheus/text_serializer.h>

#include <algorithm>
#include <exception>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/status_macros.h"
#include "server/metrics_http.h"

namespace twin {
namespace {

// Latency buckets from 100 us to ~30 s.
prometheus::Histogram::BucketBoundaries LatencyBuckets() {
  return {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
          0.1,    0.25,    0.5,    1.0,   2.5,    5.0,   10.0, 30.0};
}

}  // namespace

struct ServerMetrics::Impl {
  std::shared_ptr<prometheus::Registry> registry = std::make_shared<prometheus::Registry>();
  std::unique_ptr<MetricsHttpServer> http;

  prometheus::Family<prometheus::Counter>& requests =
      prometheus::BuildCounter().Name("twin_requests_total")
          .Help("Finished requests by answering task and gRPC status code").Register(*registry);
  prometheus::Family<prometheus::Histogram>& latency =
      prometheus::BuildHistogram().Name("twin_request_latency_seconds")
          .Help("Server-side time per request by stage").Register(*registry);
  prometheus::Histogram& queue_latency = latency.Add({{"stage", "queue"}}, LatencyBuckets());
  prometheus::Histogram& route_latency = latency.Add({{"stage", "route"}}, LatencyBuckets());
  prometheus::Histogram& fuse_latency = latency.Add({{"stage", "fuse"}}, LatencyBuckets());
  prometheus::Histogram& forward_latency = latency.Add({{"stage", "forward"}}, LatencyBuckets());
  prometheus::Histogram& total_latency = latency.Add({{"stage", "total"}}, LatencyBuckets());
  prometheus::Histogram& batch_size =
      prometheus::BuildHistogram().Name("twin_batch_size").Help("Requests per forward batch")
          .Register(*registry).Add({}, prometheus::Histogram::BucketBoundaries{
                                           1, 2, 4, 8, 16, 32, 64, 128});
  prometheus::Family<prometheus::Counter>& admin_denied =
      prometheus::BuildCounter().Name("twin_admin_denied_total")
          .Help("Admin calls refused by the token check, by reason").Register(*registry);
  prometheus::Family<prometheus::Counter>& router_top =
      prometheus::BuildCounter().Name("twin_router_top_task_total")
          .Help("Router's top task per routed request").Register(*registry);

  prometheus::Counter& body_forwards = Counter(
      "twin_body_forwards_total",
      "Forwards of the model body: one per batch when the heads split (classify()), else one "
      "per task in the batch");
  prometheus::Counter& cache_hits = Counter("twin_cache_hits_total", "Fused-weight cache hits");
  prometheus::Counter& cache_misses =
      Counter("twin_cache_misses_total", "Lookups not served by their own cluster key");
  prometheus::Counter& cache_nearest =
      Counter("twin_cache_nearest_total", "Misses served from the nearest cached cluster");
  prometheus::Counter& cache_deferred = Counter(
      "twin_cache_deferred_total",
      "Misses served from the nearest cached cluster while their key fuses in the background");
  prometheus::Counter& cache_throttled = Counter(
      "twin_cache_fusions_throttled_total",
      "Misses served from the nearest cached cluster because the fusion budget was spent");
  prometheus::Counter& cache_evictions =
      Counter("twin_cache_evictions_total", "Fused weight sets evicted");
  prometheus::Counter& cache_rejected =
      Counter("twin_cache_rejected_admissions_total", "Fused sets served but not kept");
  prometheus::Counter& fusions = Counter("twin_fusions_total", "Fused weight sets built");
  prometheus::Counter& fusion_failures =
      Counter("twin_fusion_failures_total", "Fusions that failed");
  prometheus::Counter& fusion_seconds =
      Counter("twin_fusion_seconds_total", "Time spent fusing weights");
  prometheus::Gauge& cache_entries = Gauge("twin_cache_entries", "Fused weight sets cached");
  prometheus::Gauge& cache_bytes = Gauge("twin_cache_bytes", "Bytes of cached fused weights");
  prometheus::Gauge& in_flight = Gauge("twin_in_flight_requests", "Accepted, not yet answered");
  prometheus::Gauge& queue_waiting = Gauge("twin_queue_waiting", "Requests waiting in the queue");
  prometheus::Gauge& ready = Gauge("twin_ready", "1 when the server reports SERVING");
  prometheus::Family<prometheus::Gauge>& weights =
      prometheus::BuildGauge().Name("twin_weights_resident_bytes")
          .Help("Bytes of the serving version's resident weights by part").Register(*registry);
  prometheus::Family<prometheus::Gauge>& mode =
      prometheus::BuildGauge().Name("twin_serving_mode_info")
          .Help("What answers requests: twin, static or experts (value 1)").Register(*registry);
  prometheus::Family<prometheus::Gauge>& artifact =
      prometheus::BuildGauge().Name("twin_artifact_info")
          .Help("The artifact version being served (value 1)").Register(*registry);

  prometheus::Family<prometheus::Counter>& reloads =
      prometheus::BuildCounter().Name("twin_reloads_total")
          .Help("Version checks and loads by outcome: loaded, unchanged, failed")
          .Register(*registry);
  prometheus::Counter& reload_failures =
      Counter("twin_reload_failures_total", "Loads of an artifact version that failed");
  prometheus::Histogram& reload_seconds =
      prometheus::BuildHistogram().Name("twin_reload_duration_seconds")
          .Help("Fetch, verify, load and warm-up time of versions swapped in")
          .Register(*registry).Add({}, prometheus::Histogram::BucketBoundaries{
                                           0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300});
  prometheus::Gauge& loaded_at =
      Gauge("twin_artifact_loaded_timestamp_seconds", "When the serving version was swapped in");

  prometheus::Family<prometheus::Counter>& generations =
      prometheus::BuildCounter().Name("twin_generations_total")
          .Help("Finished Generate calls by task, gRPC status code and finish reason")
          .Register(*registry);
  prometheus::Family<prometheus::Histogram>& ttft =
      prometheus::BuildHistogram().Name("twin_generation_ttft_seconds")
          .Help("Time from a Generate call's arrival to its first new token, by batch mode")
          .Register(*registry);
  prometheus::Family<prometheus::Histogram>& inter_token =
      prometheus::BuildHistogram().Name("twin_generation_inter_token_seconds")
          .Help("Time between a sequence's consecutive new tokens, by batch mode")
          .Register(*registry);
  prometheus::Family<prometheus::Counter>& generated =
      prometheus::BuildCounter().Name("twin_generated_tokens_total")
          .Help("New tokens generated, by batch mode").Register(*registry);
  prometheus::Gauge& active_sequences =
      Gauge("twin_generation_active_sequences", "Admitted sequences (prefilling or decoding)");
  prometheus::Gauge& kv_cache_bytes =
      Gauge("twin_kv_cache_bytes", "KV-cache memory reserved by the admitted sequences");

  absl::Mutex mu;
  // Last stats seen per cache (each servable has its own cache; a few versions may overlap).
  std::vector<std::pair<const void*, FusedCacheStats>> last_cache ABSL_GUARDED_BY(mu);
  prometheus::Gauge* version_gauge ABSL_GUARDED_BY(mu) = nullptr;

  prometheus::Counter& Counter(const std::string& name, const std::string& help) {
    return prometheus::BuildCounter().Name(name).Help(help).Register(*registry).Add({});
  }
  prometheus::Gauge& Gauge(const std::string& name, const std::string& help) {
    return prometheus::BuildGauge().Name(name).Help(help).Register(*registry).Add({});
  }
};

absl::StatusOr<std::unique_ptr<ServerMetrics>> ServerMetrics::Create(const std::string& address) {
  std::unique_ptr<ServerMetrics> metrics(new ServerMetrics());
  metrics->impl_ = std::make_unique<Impl>();
  if (!address.empty()) {
    ServerMetrics* raw = metrics.get();
    ASSIGN_OR_RETURN(metrics->impl_->http,
                     MetricsHttpServer::Start(address, [raw] { return raw->Scrape(); },
                                              [raw] { return raw->ready(); }));
    metrics->port_ = metrics->impl_->http->port();
  }
  return metrics;
}

ServerMetrics::~ServerMetrics() {
  // Stop serving scrapes before the registry goes away.
  if (impl_ && impl_->http) impl_->http->Stop();
}

void ServerMetrics::RecordRequest(const std::string& task, const std::string& code,
                                  const StageTimes& t) {
  impl_->requests.Add({{"task", task.empty() ? "none" : task}, {"code", code}}).Increment();
  if (code != "OK") return;
  impl_->queue_latency.Observe(t.queue_s);
  impl_->route_latency.Observe(t.route_s);
  impl_->fuse_latency.Observe(t.fuse_s);
  impl_->forward_latency.Observe(t.forward_s);
  impl_->total_latency.Observe(t.total_s);
}

void ServerMetrics::RecordBatch(int size) { impl_->batch_size.Observe(size); }

void ServerMetrics::RecordBodyForward() { impl_->body_forwards.Increment(); }

void ServerMetrics::RecordAdminDenied(const std::string& reason) {
  impl_->admin_denied.Add({{"reason", reason}}).Increment();
}

void ServerMetrics::RecordRoute(const std::string& top_task) {
  impl_->router_top.Add({{"task", top_task}}).Increment();
}

void ServerMetrics::UpdateCache(const void* cache, const FusedCacheStats& s) {
  absl::MutexLock lock(&impl_->mu);
  auto& seen = impl_->last_cache;
  auto it = std::find_if(seen.begin(), seen.end(), [&](const auto& e) { return e.first == cache; });
  if (it == seen.end()) {
    // A cache not seen before (a new version's) starts from zero. Few versions overlap.
    constexpr size_t kMaxCachesTracked = 4;
    if (seen.size() == kMaxCachesTracked) seen.erase(seen.begin());
    seen.emplace_back(cache, FusedCacheStats{});
    it = seen.end() - 1;
  }
  FusedCacheStats& last = it->second;
  // Cache stats are cumulative; counters advance by the difference (a stat that went down
  // belongs to a new cache at a reused address: count it from zero).
  auto delta = [](uint64_t now, uint64_t before) { return now >= before ? now - before : now; };
  impl_->cache_hits.Increment(delta(s.hits, last.hits));
  impl_->cache_misses.Increment(delta(s.misses, last.misses));
  impl_->cache_nearest.Increment(delta(s.nearest, last.nearest));
  impl_->cache_throttled.Increment(delta(s.throttled, last.throttled));
  impl_->cache_deferred.Increment(delta(s.deferred, last.deferred));
  impl_->cache_evictions.Increment(delta(s.evictions, last.evictions));
  impl_->cache_rejected.Increment(delta(s.rejected_admissions, last.rejected_admissions));
  impl_->fusions.Increment(delta(s.fusions, last.fusions));
  impl_->fusion_failures.Increment(delta(s.fusion_failures, last.fusion_failures));
  impl_->fusion_seconds.Increment(s.fusion_seconds >= last.fusion_seconds
                                      ? s.fusion_seconds - last.fusion_seconds
                                      : s.fusion_seconds);
  impl_->cache_entries.Set(static_cast<double>(s.entries));
  impl_->cache_bytes.Set(static_cast<double>(s.bytes));
  last = s;
}

void ServerMetrics::RecordReload(const std::string& outcome, double seconds) {
  impl_->reloads.Add({{"outcome", outcome}}).Increment();
  if (outcome == "failed") impl_->reload_failures.Increment();
  if (outcome == "loaded") {
    impl_->reload_seconds.Observe(seconds);
    impl_->loaded_at.SetToCurrentTime();
  }
}

void ServerMetrics::AddInFlight(int64_t delta) {
  // Increments commute: concurrent updates cannot leave a stale value behind, as Set(n) with
  // values computed before the call could.
  impl_->in_flight.Increment(static_cast<double>(delta));
}
void ServerMetrics::SetQueueWaiting(int64_t n) {
  impl_->queue_waiting.Set(static_cast<double>(n));
}
void ServerMetrics::SetReady(bool ready) {
  ready_.store(ready);
  impl_->ready.Set(ready ? 1.0 : 0.0);
}

void ServerMetrics::SetWeightBytes(uint64_t shared, uint64_t twins, uint64_t heads,
                                   uint64_t router, uint64_t experts) {
  impl_->weights.Add({{"part", "shared"}}).Set(static_cast<double>(shared));
  impl_->weights.Add({{"part", "twins"}}).Set(static_cast<double>(twins));
  impl_->weights.Add({{"part", "heads"}}).Set(static_cast<double>(heads));
  impl_->weights.Add({{"part", "router"}}).Set(static_cast<double>(router));
  impl_->weights.Add({{"part", "experts"}}).Set(static_cast<double>(experts));
}

void ServerMetrics::SetServingMode(const std::string& mode) {
  impl_->mode.Add({{"mode", mode}}).Set(1.0);
}

void ServerMetrics::RecordGeneration(const std::string& task, const std::string& code,
                                     const std::string& finish) {
  impl_->generations.Add({{"task", task.empty() ? "none" : task}, {"code", code},
                          {"finish", finish}})
      .Increment();
}

void ServerMetrics::RecordFirstToken(const std::string& mode, double seconds) {
  impl_->ttft.Add({{"mode", mode}}, LatencyBuckets()).Observe(seconds);
}

void ServerMetrics::RecordInterToken(const std::string& mode, double seconds) {
  impl_->inter_token.Add({{"mode", mode}}, LatencyBuckets()).Observe(seconds);
}

void ServerMetrics::RecordGeneratedTokens(const std::string& mode, int64_t tokens) {
  impl_->generated.Add({{"mode", mode}}).Increment(static_cast<double>(tokens));
}

void ServerMetrics::SetGenerationActive(int64_t sequences) {
  impl_->active_sequences.Set(static_cast<double>(sequences));
}

void ServerMetrics::SetKvCacheBytes(int64_t bytes) {
  impl_->kv_cache_bytes.Set(static_cast<double>(bytes));
}

void ServerMetrics::SetVersion(const std::string& version) {
  absl::MutexLock lock(&impl_->mu);
  if (impl_->version_gauge != nullptr) impl_->artifact.Remove(impl_->version_gauge);
  impl_->version_gauge = &impl_->artifact.Add({{"version", version}});
  impl_->version_gauge->Set(1.0);
}

std::string ServerMetrics::Scrape() const {
  prometheus::TextSerializer serializer;
  return serializer.Serialize(impl_->registry->Collect());
}

}  // namespace twin
