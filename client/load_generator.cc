#include "client/load_generator.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"

namespace twin::client {
namespace {

using twinmerge::v1::InferRequest;
using twinmerge::v1::InferResponse;

// Extra wait, past the last call's deadline, for its completion to be delivered.
constexpr absl::Duration kCompletionGrace = absl::Seconds(1);

// Decides whether one more request may start: before the end time and under the count.
// Thread-safe.
class Budget {
 public:
  Budget(const LoadOptions& options, absl::Time start)
      : end_(options.duration > absl::ZeroDuration() ? start + options.duration
                                                     : absl::InfiniteFuture()),
        max_requests_(options.max_requests) {}

  bool Claim() {
    if (absl::Now() >= end_) return false;
    return max_requests_ <= 0 || claimed_.fetch_add(1) < max_requests_;
  }
  absl::Time end() const { return end_; }

 private:
  const absl::Time end_;
  const int64_t max_requests_;
  std::atomic<int64_t> claimed_{0};
};

// Shared by the workers of one run.
struct RunContext {
  TwinClient* client;
  const Workload* workload;
  const TaskMix* mix;
  const LoadOptions* options;
  Budget* budget;
  std::shared_ptr<LoadRecorder> recorder;
  std::atomic<int64_t> next_id{0};

  InferRequest MakeRequest(const WorkItem& item, std::string* id) {
    InferRequest request = item.request;
    *id = absl::StrCat(next_id.fetch_add(1));
    request.set_request_id(*id);
    if (options->send_task) request.set_task(item.task);
    if (options->temperature_max > 0) {
      request.mutable_routing()->set_temperature(static_cast<float>(Temperature(*id)));
    }
    return request;
  }
  // Log-uniform in [temperature_min, temperature_max], a pure function of the seed and the id
  // (so workers need no shared generator).
  double Temperature(const std::string& id) const {
    uint64_t x = options->seed * 0x9E3779B97F4A7C15ull + std::hash<std::string>()(id);
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    x ^= x >> 31;
    const double u = static_cast<double>(x >> 11) / static_cast<double>(1ull << 53);
    const double lo = std::log(options->temperature_min);
    const double hi = std::log(options->temperature_max);
    return std::exp(lo + u * (hi - lo));
  }
};

absl::Status Validate(const Workload& workload, const TaskMix& mix, const LoadOptions& o) {
  if (workload.size() == 0) return absl::InvalidArgumentError("the workload has no examples");
  if (mix.weights().size() != workload.tasks.size()) {
    return absl::InvalidArgumentError("the task mix was not parsed for this workload's tasks");
  }
  if (o.duration < absl::ZeroDuration() || o.max_requests < 0) {
    return absl::InvalidArgumentError("duration and max_requests must be >= 0");
  }
  if (o.temperature_max != 0 || o.temperature_min != 0) {
    if (!(o.temperature_min > 0 && o.temperature_max >= o.temperature_min &&
          std::isfinite(o.temperature_max))) {
      return absl::InvalidArgumentError("temperatures need 0 < min <= max");
    }
  }
  if (o.duration == absl::ZeroDuration() && o.max_requests == 0) {
    return absl::InvalidArgumentError("a load run needs a duration or a request count");
  }
  if (o.timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("the per-call timeout must be > 0");
  }
  if (o.mode == LoadOptions::Mode::kClosedLoop) {
    if (o.concurrency < 1) return absl::InvalidArgumentError("concurrency must be >= 1");
    if (o.use_streams && o.stream_window < 1) {
      return absl::InvalidArgumentError("stream_window must be >= 1");
    }
    return absl::OkStatus();
  }
  if (o.use_streams) return absl::InvalidArgumentError("streams are closed-loop only");
  if (!(o.rate_per_s > 0) || !std::isfinite(o.rate_per_s)) {
    return absl::InvalidArgumentError("open loop needs a finite rate_per_s > 0");
  }
  if (o.max_outstanding < 1) return absl::InvalidArgumentError("max_outstanding must be >= 1");
  return absl::OkStatus();
}

void UnaryWorker(RunContext* run, uint64_t seed) {
  WorkloadSampler sampler(run->workload, run->mix, seed);
  while (run->budget->Claim()) {
    const WorkItem& item = sampler.Next();
    std::string id;
    const InferRequest request = run->MakeRequest(item, &id);
    run->recorder->RecordSent(item);
    const absl::Time start = absl::Now();
    absl::StatusOr<InferResponse> reply = run->client->Infer(request, run->options->timeout);
    run->recorder->Record(item, run->options->send_task, absl::Now() - start, reply.status(),
                          reply.ok() ? *reply : InferResponse::default_instance());
  }
}

// One stream with up to stream_window requests in flight: this thread writes, a second one
// reads and matches replies to requests by request_id.
void StreamWorker(RunContext* run, uint64_t seed) {
  struct InFlight {
    const WorkItem* item;
    absl::Time sent;
  };
  const LoadOptions& options = *run->options;
  absl::StatusOr<std::unique_ptr<InferStream>> opened = run->client->OpenStream();
  if (!opened.ok()) return;
  InferStream& stream = **opened;

  absl::Mutex mu;
  std::map<std::string, InFlight> in_flight;  // guarded by mu
  bool reader_done = false;                   // guarded by mu
  std::thread reader([&] {
    InferResponse reply;
    while (stream.Read(&reply)) {
      InFlight entry;
      {
        absl::MutexLock lock(&mu);
        auto it = in_flight.find(reply.request_id());
        if (it == in_flight.end()) continue;  // not ours (or already given up on)
        entry = it->second;
        in_flight.erase(it);
      }
      run->recorder->Record(*entry.item, options.send_task, absl::Now() - entry.sent,
                            ReplyStatus(reply), reply);
    }
    absl::MutexLock lock(&mu);
    reader_done = true;
  });

  WorkloadSampler sampler(run->workload, run->mix, seed);
  bool stuck = false;  // a full window saw no reply within the timeout
  while (true) {
    {
      absl::MutexLock lock(&mu);
      auto has_slot = [&] {
        return reader_done || static_cast<int>(in_flight.size()) < options.stream_window;
      };
      const absl::Time wait_until = std::min(run->budget->end(), absl::Now() + options.timeout);
      mu.AwaitWithDeadline(absl::Condition(&has_slot), wait_until);
      if (reader_done) break;
      if (!has_slot()) {
        stuck = absl::Now() < run->budget->end();
        break;
      }
    }
    if (!run->budget->Claim()) break;
    const WorkItem& item = sampler.Next();
    std::string id;
    const InferRequest request = run->MakeRequest(item, &id);
    run->recorder->RecordSent(item);
    {
      absl::MutexLock lock(&mu);
      in_flight[id] = InFlight{&item, absl::Now()};
    }
    if (!stream.Write(request).ok()) break;
  }
  stream.WritesDone().IgnoreError();

  // Give the last replies one timeout to arrive, then cancel so the reader ends.
  bool cancelled = false;
  {
    absl::MutexLock lock(&mu);
    auto drained = [&] { return reader_done || in_flight.empty(); };
    if (!stuck) mu.AwaitWithDeadline(absl::Condition(&drained), absl::Now() + options.timeout);
    cancelled = !drained();
  }
  if (cancelled) stream.Cancel();
  reader.join();
  const absl::Status finish = stream.Finish();
  const absl::Status lost =
      cancelled ? absl::DeadlineExceededError("no reply on the stream within the timeout")
      : finish.ok() ? absl::UnavailableError("the stream ended without this reply")
                    : finish;
  for (const auto& [id, entry] : in_flight) {
    run->recorder->Record(*entry.item, options.send_task, absl::Now() - entry.sent, lost,
                          InferResponse::default_instance());
  }
}

LoadResult RunClosedLoop(RunContext* run) {
  const absl::Time start = absl::Now();
  std::vector<std::thread> workers;
  for (int i = 0; i < run->options->concurrency; ++i) {
    const uint64_t seed = run->options->seed + static_cast<uint64_t>(i);
    if (run->options->use_streams) {
      workers.emplace_back(StreamWorker, run, seed);
    } else {
      workers.emplace_back(UnaryWorker, run, seed);
    }
  }
  for (std::thread& worker : workers) worker.join();
  return run->recorder->Result(absl::Now() - start);
}

// State the completion callbacks touch; shared so a callback that outlives RunOpenLoop() is
// harmless.
struct OpenLoopState {
  absl::Mutex mu;
  int outstanding ABSL_GUARDED_BY(mu) = 0;
};

LoadResult RunOpenLoop(RunContext* run) {
  const LoadOptions& options = *run->options;
  auto state = std::make_shared<OpenLoopState>();
  std::shared_ptr<LoadRecorder> recorder = run->recorder;
  std::mt19937_64 arrivals_rng(options.seed);
  std::exponential_distribution<double> gap_s(options.rate_per_s);
  WorkloadSampler sampler(run->workload, run->mix, options.seed + 1);

  const absl::Time start = absl::Now();
  absl::Time next_arrival = start;
  while (true) {
    next_arrival += absl::Seconds(gap_s(arrivals_rng));
    if (next_arrival >= run->budget->end()) break;
    // Arrivals keep their schedule: when behind, the next one is sent at once.
    const absl::Duration wait = next_arrival - absl::Now();
    if (wait > absl::ZeroDuration()) absl::SleepFor(wait);
    if (!run->budget->Claim()) break;
    const WorkItem& item = sampler.Next();
    {
      absl::MutexLock lock(&state->mu);
      if (state->outstanding >= options.max_outstanding) {
        recorder->RecordDrop();
        continue;
      }
      ++state->outstanding;
    }
    std::string id;
    const InferRequest request = run->MakeRequest(item, &id);
    recorder->RecordSent(item);
    const absl::Time sent = absl::Now();
    const bool send_task = options.send_task;
    // The callback may outlive this run (and the workload): it keeps its own copy of the truth.
    WorkItem truth;
    truth.task = item.task;
    truth.label_index = item.label_index;
    truth.label = item.label;
    run->client->InferAsync(
        request, options.timeout,
        [state, recorder, truth = std::move(truth), sent,
         send_task](absl::StatusOr<InferResponse> reply) {
          recorder->Record(truth, send_task, absl::Now() - sent, reply.status(),
                           reply.ok() ? *reply : InferResponse::default_instance());
          absl::MutexLock lock(&state->mu);
          --state->outstanding;
        });
  }
  // Every call ends by its deadline; wait for the completions.
  {
    absl::MutexLock lock(&state->mu);
    auto idle = [&state] { return state->outstanding == 0; };
    state->mu.AwaitWithDeadline(absl::Condition(&idle),
                                absl::Now() + options.timeout + kCompletionGrace);
  }
  return recorder->Result(absl::Now() - start);
}

}  // namespace

absl::StatusOr<LoadResult> RunLoad(TwinClient* client, const Workload& workload,
                                   const TaskMix& mix, const LoadOptions& options) {
  if (absl::Status status = Validate(workload, mix, options); !status.ok()) return status;
  Budget budget(options, absl::Now());
  RunContext run{client, &workload, &mix, &options, &budget,
                 std::make_shared<LoadRecorder>()};
  if (options.mode == LoadOptions::Mode::kClosedLoop) return RunClosedLoop(&run);
  return RunOpenLoop(&run);
}

}  // namespace twin::client
