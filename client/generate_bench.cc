#include "client/generate_bench.h"

#include <algorithm>
#include <atomic>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "client/load_stats.h"

namespace twin::client {
namespace {

LatencySummary Summarise(std::vector<absl::Duration> sample) {
  LatencySummary s;
  s.count = static_cast<int64_t>(sample.size());
  if (sample.empty()) return s;
  std::sort(sample.begin(), sample.end());
  absl::Duration sum;
  for (absl::Duration d : sample) sum += d;
  s.mean_ms = absl::ToDoubleMilliseconds(sum) / static_cast<double>(sample.size());
  s.p50_ms = absl::ToDoubleMilliseconds(Percentile(sample, 0.5));
  s.p90_ms = absl::ToDoubleMilliseconds(Percentile(sample, 0.9));
  s.p99_ms = absl::ToDoubleMilliseconds(Percentile(sample, 0.99));
  return s;
}

std::string LatencyLine(const std::string& name, const LatencySummary& s) {
  return absl::StrFormat("%-12s mean %8.2f ms  p50 %8.2f  p90 %8.2f  p99 %8.2f  (n=%d)\n", name,
                         s.mean_ms, s.p50_ms, s.p90_ms, s.p99_ms, s.count);
}

std::string LatencyJson(const LatencySummary& s) {
  return absl::StrFormat(
      "{\"count\": %d, \"mean_ms\": %.4f, \"p50_ms\": %.4f, \"p90_ms\": %.4f, \"p99_ms\": %.4f}",
      s.count, s.mean_ms, s.p50_ms, s.p90_ms, s.p99_ms);
}

twinmerge::v1::GenerateRequest ToGenerate(const WorkItem& item,
                                          const GenerateBenchOptions& options) {
  twinmerge::v1::GenerateRequest r;
  if (item.request.has_tokens()) {
    r.mutable_tokens()->mutable_input_ids()->CopyFrom(item.request.tokens().input_ids());
  } else {
    r.set_text(item.request.text());
  }
  if (options.send_task) r.set_task(item.task);
  r.set_max_new_tokens(options.max_new_tokens);
  r.set_ignore_eos(options.ignore_eos);
  r.mutable_sampling()->set_temperature(options.sample_temperature);
  return r;
}

}  // namespace

std::string GenerateBenchResult::Summary() const {
  std::string out = absl::StrFormat(
      "generate: %d ok, %d failed in %.2f s: %.2f requests/s, %.1f generated tokens/s\n", ok,
      failed, seconds, requests_per_s(), tokens_per_s());
  for (const auto& [code, n] : errors) absl::StrAppend(&out, "  ", code, ": ", n, "\n");
  absl::StrAppend(&out, LatencyLine("ttft", ttft), LatencyLine("inter-token", inter_token),
                  LatencyLine("total", total));
  return out;
}

std::string GenerateBenchResult::Json() const {
  std::string errors_json;
  for (const auto& [code, n] : errors) {
    absl::StrAppend(&errors_json, errors_json.empty() ? "" : ", ", "\"", code, "\": ", n);
  }
  return absl::StrFormat(
      "{\"ok\": %d, \"failed\": %d, \"errors\": {%s}, \"seconds\": %.4f, \"tokens\": %d, "
      "\"tokens_per_s\": %.4f, \"requests_per_s\": %.4f, \"ttft\": %s, \"inter_token\": %s, "
      "\"total\": %s}\n",
      ok, failed, errors_json, seconds, tokens, tokens_per_s(), requests_per_s(),
      LatencyJson(ttft), LatencyJson(inter_token), LatencyJson(total));
}

absl::StatusOr<GenerateBenchResult> RunGenerateBench(TwinClient* client,
                                                     const Workload& workload,
                                                     const TaskMix& mix,
                                                     const GenerateBenchOptions& options) {
  if (options.concurrency < 1) return absl::InvalidArgumentError("concurrency must be >= 1");
  if (options.duration <= absl::ZeroDuration() && options.max_requests <= 0) {
    return absl::InvalidArgumentError("give a duration or a number of requests");
  }
  absl::Mutex mu;
  GenerateBenchResult result;
  std::vector<absl::Duration> ttft, gaps, totals;
  std::atomic<int64_t> issued{0};
  const absl::Time start = absl::Now();
  const absl::Time end = options.duration > absl::ZeroDuration() ? start + options.duration
                                                                  : absl::InfiniteFuture();
  auto worker = [&](int w) {
    WorkloadSampler sampler(&workload, &mix, options.seed + 7919 * static_cast<uint64_t>(w));
    while (absl::Now() < end) {
      if (options.max_requests > 0 && issued.fetch_add(1) >= options.max_requests) break;
      const twinmerge::v1::GenerateRequest request = ToGenerate(sampler.Next(), options);
      const absl::Time sent = absl::Now();
      absl::Time last = sent;
      bool first = true;
      int64_t tokens = 0;
      std::vector<absl::Duration> my_gaps;
      absl::Duration my_ttft;
      absl::Status status = client->Generate(
          request,
          [&](const twinmerge::v1::GenerateResponse& reply) {
            const int n = reply.token_ids_size();
            if (n == 0) return true;
            const absl::Time now = absl::Now();
            if (first) {
              my_ttft = now - sent;
              first = false;
              for (int i = 1; i < n; ++i) my_gaps.push_back(absl::ZeroDuration());
            } else {
              // Tokens that arrived together share the gap since the previous reply.
              for (int i = 0; i < n; ++i) my_gaps.push_back((now - last) / n);
            }
            last = now;
            tokens += n;
            return true;
          },
          options.timeout);
      const absl::Duration total = absl::Now() - sent;
      absl::MutexLock lock(&mu);
      if (status.ok()) {
        ++result.ok;
        result.tokens += tokens;
        if (!first) ttft.push_back(my_ttft);
        gaps.insert(gaps.end(), my_gaps.begin(), my_gaps.end());
        totals.push_back(total);
      } else {
        ++result.failed;
        ++result.errors[absl::StatusCodeToString(status.code())];
      }
    }
  };
  std::vector<std::thread> workers;
  for (int w = 0; w < options.concurrency; ++w) workers.emplace_back(worker, w);
  for (std::thread& t : workers) t.join();
  result.seconds = absl::ToDoubleSeconds(absl::Now() - start);
  result.ttft = Summarise(std::move(ttft));
  result.inter_token = Summarise(std::move(gaps));
  result.total = Summarise(std::move(totals));
  return result;
}

}  // namespace twin::client
