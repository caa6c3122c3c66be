#include "client/load_stats.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace twin::client {
namespace {

double Ratio(int64_t numerator, int64_t denominator) {
  return denominator == 0 ? 0.0 : static_cast<double>(numerator) / denominator;
}

std::string Millis(absl::Duration d) {
  return absl::StrFormat("%.2f ms", absl::ToDoubleMilliseconds(d));
}

bool LabelMatches(const WorkItem& item, const twinmerge::v1::InferResponse& reply) {
  // A reply from another task's head is wrong, whatever its label index.
  if (!item.task.empty() && reply.task() != item.task) return false;
  if (item.label_index >= 0) return reply.label_index() == item.label_index;
  return reply.label() == item.label;
}

std::string RatioLine(double ratio, int64_t numerator, int64_t denominator,
                      const char* what) {
  if (denominator == 0) return absl::StrCat("n/a (no ", what, ")");
  return absl::StrFormat("%.4f (%d/%d %s)", ratio, numerator, denominator, what);
}

}  // namespace

double LoadResult::accuracy() const { return Ratio(correct, labelled); }
double LoadResult::routing_accuracy() const { return Ratio(routed_correct, routed); }
double LoadResult::cache_hit_ratio() const { return Ratio(cache_hits, ok); }

std::string LoadResult::Summary() const {
  std::string out = absl::StrFormat(
      "requests: sent %d, ok %d, failed %d, dropped %d in %.2f s -> %.1f replies/s\n", sent, ok,
      failed, dropped, absl::ToDoubleSeconds(elapsed), throughput_per_s);
  absl::StrAppend(&out, "latency (ok replies, client side): mean ", Millis(latency_mean),
                  ", p50 ", Millis(latency_p50), ", p90 ", Millis(latency_p90), ", p99 ",
                  Millis(latency_p99), ", max ", Millis(latency_max), "\n");
  if (!errors_by_code.empty()) {
    absl::StrAppend(&out, "errors:");
    for (const auto& [code, count] : errors_by_code) absl::StrAppend(&out, " ", code, "=", count);
    absl::StrAppend(&out, "\n");
  }
  absl::StrAppend(&out, "accuracy: ", RatioLine(accuracy(), correct, labelled, "labelled"),
                  "\n");
  absl::StrAppend(&out, "routing accuracy: ",
                  RatioLine(routing_accuracy(), routed_correct, routed, "sent without a task"),
                  "\n");
  absl::StrAppend(&out, "cache hit ratio: ", RatioLine(cache_hit_ratio(), cache_hits, ok, "ok"),
                  "\n");
  absl::StrAppend(&out,
                  absl::StrFormat("server time (mean us): queue %.1f, route %.1f, fuse %.1f, "
                                  "forward %.1f, total %.1f\n",
                                  server_time.queue_us, server_time.route_us,
                                  server_time.fuse_us, server_time.forward_us,
                                  server_time.total_us));
  for (const auto& [task, stats] : per_task) {
    absl::StrAppend(&out, absl::StrFormat("  %-20s sent %d, ok %d", task, stats.sent, stats.ok));
    if (stats.labelled > 0) {
      absl::StrAppend(&out, absl::StrFormat(", accuracy %.4f",
                                            Ratio(stats.correct, stats.labelled)));
    }
    if (stats.routed > 0) {
      absl::StrAppend(&out, absl::StrFormat(", routing %.4f",
                                            Ratio(stats.routed_correct, stats.routed)));
    }
    absl::StrAppend(&out, "\n");
  }
  return out;
}

namespace {

std::string JsonString(const std::string& text) {
  std::string out = "\"";
  for (const char c : text) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (static_cast<unsigned char>(c) < 0x20) {
      out += absl::StrFormat("\\u%04x", static_cast<unsigned char>(c));
    } else {
      out += c;
    }
  }
  return out + "\"";
}

double Ms(absl::Duration d) { return absl::ToDoubleMilliseconds(d); }

}  // namespace

std::string LoadResult::Json() const {
  std::string out = absl::StrFormat(
      "{\"elapsed_s\": %.6f, \"sent\": %d, \"ok\": %d, \"failed\": %d, \"dropped\": %d, "
      "\"throughput_per_s\": %.3f, \"latency_ms\": {\"mean\": %.4f, \"p50\": %.4f, "
      "\"p90\": %.4f, \"p99\": %.4f, \"max\": %.4f}, \"labelled\": %d, \"correct\": %d, "
      "\"routed\": %d, \"routed_correct\": %d, \"cache_hits\": %d, "
      "\"server_time_us\": {\"queue\": %.2f, \"route\": %.2f, \"fuse\": %.2f, "
      "\"forward\": %.2f, \"total\": %.2f}",
      absl::ToDoubleSeconds(elapsed), sent, ok, failed, dropped, throughput_per_s,
      Ms(latency_mean), Ms(latency_p50), Ms(latency_p90), Ms(latency_p99), Ms(latency_max),
      labelled, correct, routed, routed_correct, cache_hits, server_time.queue_us,
      server_time.route_us, server_time.fuse_us, server_time.forward_us, server_time.total_us);
  absl::StrAppend(&out, ", \"errors\": {");
  bool first = true;
  for (const auto& [code, count] : errors_by_code) {
    absl::StrAppend(&out, first ? "" : ", ", JsonString(code), ": ", count);
    first = false;
  }
  absl::StrAppend(&out, "}, \"per_task\": {");
  first = true;
  for (const auto& [task, t] : per_task) {
    absl::StrAppend(&out, first ? "" : ", ", JsonString(task),
                    absl::StrFormat(": {\"sent\": %d, \"ok\": %d, \"labelled\": %d, "
                                    "\"correct\": %d, \"routed\": %d, \"routed_correct\": %d}",
                                    t.sent, t.ok, t.labelled, t.correct, t.routed,
                                    t.routed_correct));
    first = false;
  }
  absl::StrAppend(&out, "}}\n");
  return out;
}

absl::Duration Percentile(std::vector<absl::Duration> sample, double p) {
  if (sample.empty()) return absl::ZeroDuration();
  const size_t rank = static_cast<size_t>(std::ceil(p * sample.size()));
  const size_t index = std::min(sample.size() - 1, rank == 0 ? 0 : rank - 1);
  std::nth_element(sample.begin(), sample.begin() + index, sample.end());
  return sample[index];
}

void LoadRecorder::RecordSent(const WorkItem& item) {
  absl::MutexLock lock(&mu_);
  ++totals_.sent;
  ++totals_.per_task[item.task].sent;
}

void LoadRecorder::Record(const WorkItem& item, bool task_sent, absl::Duration latency,
                          const absl::Status& status,
                          const twinmerge::v1::InferResponse& reply) {
  absl::MutexLock lock(&mu_);
  if (!status.ok()) {
    ++totals_.failed;
    ++totals_.errors_by_code[absl::StatusCodeToString(status.code())];
    return;
  }
  TaskStats& task = totals_.per_task[item.task];
  ++totals_.ok;
  ++task.ok;
  latencies_.push_back(latency);
  if (item.has_label()) {
    const bool correct = LabelMatches(item, reply);
    ++totals_.labelled;
    ++task.labelled;
    totals_.correct += correct;
    task.correct += correct;
  }
  if (!task_sent) {
    const bool routed_correct = reply.task() == item.task;
    ++totals_.routed;
    ++task.routed;
    totals_.routed_correct += routed_correct;
    task.routed_correct += routed_correct;
  }
  totals_.cache_hits += reply.cache_hit();
  time_sums_.queue_us += reply.timing().queue_us();
  time_sums_.route_us += reply.timing().route_us();
  time_sums_.fuse_us += reply.timing().fuse_us();
  time_sums_.forward_us += reply.timing().forward_us();
  time_sums_.total_us += reply.timing().total_us();
}

void LoadRecorder::RecordDrop() {
  absl::MutexLock lock(&mu_);
  ++totals_.dropped;
}

int64_t LoadRecorder::sent() const {
  absl::MutexLock lock(&mu_);
  return totals_.sent;
}

int64_t LoadRecorder::finished() const {
  absl::MutexLock lock(&mu_);
  return totals_.ok + totals_.failed;
}

LoadResult LoadRecorder::Result(absl::Duration elapsed) const {
  absl::MutexLock lock(&mu_);
  LoadResult result = totals_;
  result.elapsed = elapsed;
  const double seconds = absl::ToDoubleSeconds(elapsed);
  result.throughput_per_s = seconds > 0 ? result.ok / seconds : 0.0;
  if (!latencies_.empty()) {
    absl::Duration sum;
    for (absl::Duration d : latencies_) sum += d;
    result.latency_mean = sum / static_cast<int64_t>(latencies_.size());
    result.latency_p50 = Percentile(latencies_, 0.50);
    result.latency_p90 = Percentile(latencies_, 0.90);
    result.latency_p99 = Percentile(latencies_, 0.99);
    result.latency_max = *std::max_element(latencies_.begin(), latencies_.end());
    const double n = static_cast<double>(latencies_.size());
    result.server_time = {time_sums_.queue_us / n, time_sums_.route_us / n,
                          time_sums_.fuse_us / n, time_sums_.forward_us / n,
                          time_sums_.total_us / n};
  }
  return result;
}

}  // namespace twin::client
