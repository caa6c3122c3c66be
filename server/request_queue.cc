#include "server/request_queue.h"

#include <algorithm>
#include <cmath>
#include <deque>
#include <functional>
#include <map>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace twin {
namespace {

// Weight of the newest sample in every smoothed estimate of the queue: recent batches
// dominate, so estimates follow load changes (batches fill up under load and the cost per
// request drops) within tens of batches.
constexpr double kSmoothing = 0.1;

void Smooth(double& smoothed, double sample) { smoothed += kSmoothing * (sample - smoothed); }

// A request leaving the queue without being handed out, with the status its `done` gets.
// Completions are collected under the mutex and run after it is released, so a callback may
// re-enter the queue (or take its own locks) without deadlocking.
struct Completion {
  PendingRequest request;
  absl::Status status;
};

void RunCompletions(std::vector<Completion>& completions) {
  for (Completion& c : completions) c.request.done(c.status);
  completions.clear();
}

bool IsCancelled(const PendingRequest& r) { return r.cancelled != nullptr && r.cancelled->load(); }

// OK while the request may still be served; otherwise the status it is completed with.
absl::Status DropReason(const PendingRequest& r, absl::Time now) {
  if (IsCancelled(r)) return absl::CancelledError("request cancelled while queued");
  if (r.deadline <= now) {
    return absl::DeadlineExceededError(absl::StrCat("deadline exceeded after waiting ",
                                                    absl::ToInt64Milliseconds(now - r.enqueued),
                                                    "ms in queue"));
  }
  return absl::OkStatus();
}

RequestQueueOptions Sanitize(RequestQueueOptions options) {
  options.max_queue_size = std::max(options.max_queue_size, 1);
  options.max_batch_size = std::max(options.max_batch_size, 1);
  options.max_queue_delay_us = std::max<int64_t>(options.max_queue_delay_us, 0);
  options.parallelism = std::max(options.parallelism, 1);
  return options;
}

}  // namespace

absl::Status ValidateRequestQueueOptions(const RequestQueueOptions& options) {
  if (options.max_queue_size < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_queue_size must be at least 1, got ", options.max_queue_size));
  }
  if (options.max_batch_size < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_batch_size must be at least 1, got ", options.max_batch_size));
  }
  if (options.max_queue_delay_us < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_queue_delay_us must not be negative, got ", options.max_queue_delay_us));
  }
  return absl::OkStatus();
}

struct RequestQueue::State {
  explicit State(const RequestQueueOptions& o)
      : chooser(ChooserOptions(o)), unfused_available(o.unfused_available) {}
  static BatchModeOptions ChooserOptions(const RequestQueueOptions& o) {
    BatchModeOptions m = o.modes;
    m.max_batch_size = o.max_batch_size;
    m.unfused_available = o.unfused_available;
    if (!o.unfused_available) m.fused_available = true;
    return m;
  }
  BatchModeChooser chooser;
  bool unfused_available;
  std::function<bool(const std::string&)> resident;
  std::deque<PendingRequest> unrouted;
  // Per key, in arrival (id) order. The number of distinct keys is small (bounded by the
  // cluster-key grid and by the queue size), so scanning all groups is cheap.
  std::map<std::string, std::deque<PendingRequest>> groups;
  int64_t routed = 0;
  int64_t in_routing = 0;
  uint64_t next_id = 1;
  bool closed = false;
  bool flushing = false;  // Flush(): every group is ready
  absl::Status close_status;
  uint64_t rejected_full = 0;
  uint64_t rejected_late = 0;
  uint64_t expired = 0;
  uint64_t cancelled = 0;
  // Smoothed seconds per request and per call of each stage (0: not measured yet), and when
  // the last measurement came.
  double route_s = 0;
  double run_s = 0;
  double route_call_s = 0;
  double run_call_s = 0;
  absl::Time measured_at = absl::InfinitePast();
  // How the predicted wait until a request's batch starts compared with the wait it had:
  // smoothed error (actual - predicted) and smoothed absolute deviation from it, seconds, as
  // TCP estimates its retransmission timeout. Under sustained overload the queue sits at the
  // admission limit, so most admitted requests are predicted just in time: without this margin
  // every underestimate becomes an expired request that held a place in the queue.
  double start_error = 0;
  double start_deviation = 0;

  // The measured cost of one place in the queue: a request's routing and forward over the
  // workers (0 before any measurement). Measured at the batch sizes the load produces, so it
  // already holds how well requests batch.
  double PlaceSeconds(const RequestQueueOptions& o) const {
    return (route_s + run_s) / o.parallelism;
  }
  // The time of a request's own batch once it is at the front: one routing call and one
  // forward, as measured. Not max_batch_size places: when batches are small the cost per
  // place is high, and that product would call every deadline hopeless.
  double BatchSeconds() const { return route_call_s + run_call_s; }
  // The time until a request that joins the queue now is answered: every request ahead, then
  // its own batch. The batching delay is left out: under the load that makes admission
  // matter, groups fill before it runs out.
  double PredictedStartSeconds(const RequestQueueOptions& o) const {
    return static_cast<double>(Occupancy()) * PlaceSeconds(o);
  }
  // Two deviations: most of the observed errors fall inside it.
  double MarginSeconds() const { return start_error + 2 * start_deviation; }
  double ExpectedWaitSeconds(const RequestQueueOptions& o) const {
    return std::max(0.0, PredictedStartSeconds(o) + MarginSeconds()) + BatchSeconds();
  }
  // A request of a batch that starts at `now` reports how its prediction fared.
  void RecordStart(const PendingRequest& r, absl::Time now) {
    if (r.predicted_start == absl::InfiniteDuration()) return;
    const double error = absl::ToDoubleSeconds((now - r.enqueued) - r.predicted_start);
    Smooth(start_error, error);
    Smooth(start_deviation, std::abs(error - start_error));
  }
  // Whether the estimate may refuse requests at `now`: measured, and recently.
  bool EstimateInForce(absl::Time now) const {
    return now - measured_at <= kServiceEstimateTtl;
  }
  // How long a group may wait to fill: none once flushing.
  absl::Duration BatchDelay(const RequestQueueOptions& o) const {
    return flushing ? absl::ZeroDuration() : absl::Microseconds(o.max_queue_delay_us);
  }

  int64_t Occupancy() const { return static_cast<int64_t>(unrouted.size()) + routed + in_routing; }

  // Moves expired and cancelled requests out of `requests` into `out`. Returns how many.
  int64_t Purge(std::deque<PendingRequest>& requests, absl::Time now,
                std::vector<Completion>& out) {
    auto dead = [now](const PendingRequest& r) { return !DropReason(r, now).ok(); };
    if (std::none_of(requests.begin(), requests.end(), dead)) return 0;  // the common case
    std::deque<PendingRequest> kept;
    int64_t removed = 0;
    for (PendingRequest& r : requests) {
      absl::Status why = DropReason(r, now);
      if (why.ok()) {
        kept.push_back(std::move(r));
        continue;
      }
      // An expired request's batch would have started later still: its error counts too (a
      // lower bound), or the worst predictions would never be seen.
      if (!absl::IsCancelled(why)) RecordStart(r, now);
      ++(absl::IsCancelled(why) ? cancelled : expired);
      ++removed;
      out.push_back({std::move(r), std::move(why)});
    }
    requests.swap(kept);
    return removed;
  }

  // Why a request with `deadline` arriving at `now` is refused (counted), or OK: the queue is
  // closed or full, the deadline has passed or is shorter than one batch, or the expected
  // wait is past it (deadline-aware admission).
  absl::Status Refusal(const RequestQueueOptions& o, absl::Time deadline, absl::Time now) {
    const bool estimate = o.deadline_admission && EstimateInForce(now);
    // Whether `seconds` from now (0: not measured yet) is past the deadline.
    auto late = [&](double seconds) {
      return estimate && seconds > 0 && deadline != absl::InfiniteFuture() &&
             now + absl::Seconds(seconds) > deadline;
    };
    if (closed) return absl::UnavailableError("server is shutting down");
    if (deadline <= now) {
      ++expired;
      return absl::DeadlineExceededError("deadline passed before the request was queued");
    }
    if (Occupancy() >= o.max_queue_size) {
      ++rejected_full;
      return absl::ResourceExhaustedError(
          absl::StrCat("request queue is full (", Occupancy(), " waiting)"));
    }
    if (const double alone = BatchSeconds(); late(alone)) {
      // Not even an empty queue could answer in time: the deadline, not the load, is why.
      ++expired;
      return absl::DeadlineExceededError(absl::StrFormat(
          "the deadline in %.2f ms is shorter than one batch's service time (%.2f ms)",
          absl::ToDoubleMilliseconds(deadline - now), alone * 1e3));
    }
    if (const double wait = ExpectedWaitSeconds(o); late(wait)) {
      ++rejected_late;
      return absl::ResourceExhaustedError(absl::StrFormat(
          "the queue's expected wait is %.1f ms (%d requests ahead at %.2f ms each, %+.2f ms "
          "observed error margin, then %.2f ms for its own batch), past the request's "
          "deadline in %.1f ms: refused now rather than answered late",
          wait * 1e3, Occupancy(), PlaceSeconds(o) * 1e3, MarginSeconds() * 1e3,
          BatchSeconds() * 1e3, absl::ToDoubleMilliseconds(deadline - now)));
    }
    return absl::OkStatus();
  }

  void PurgeAll(absl::Time now, std::vector<Completion>& out) {
    Purge(unrouted, now, out);
    for (auto it = groups.begin(); it != groups.end();) {
      routed -= Purge(it->second, now, out);
      it = it->second.empty() ? groups.erase(it) : std::next(it);
    }
  }
};

RequestQueue::RequestQueue(RequestQueueOptions options)
    : options_(Sanitize(options)), state_(std::make_unique<State>(options_)) {}

RequestQueue::~RequestQueue() = default;

absl::Status RequestQueue::Enqueue(PendingRequest request, absl::Time now) {
  if (!request.done) return absl::InvalidArgumentError("request has no done callback");
  std::vector<Completion> completions;
  absl::Status status;
  {
    absl::MutexLock lock(&mu_);
    State& s = *state_;
    s.PurgeAll(now, completions);  // frees the capacity held by dead requests first
    if (!s.closed && IsCancelled(request)) {
      ++s.cancelled;
      status = absl::CancelledError("request cancelled before it was queued");
    } else {
      status = s.Refusal(options_, request.deadline, now);
    }
    if (status.ok()) {
      request.id = s.next_id++;
      request.enqueued = now;
      if (options_.deadline_admission && s.EstimateInForce(now)) {
        request.predicted_start = absl::Seconds(s.PredictedStartSeconds(options_));
      }
      s.unrouted.push_back(std::move(request));
    }
  }
  RunCompletions(completions);
  return status;
}

absl::Status RequestQueue::Admit(absl::Time deadline, absl::Time now) {
  std::vector<Completion> completions;
  absl::Status status;
  {
    absl::MutexLock lock(&mu_);
    state_->PurgeAll(now, completions);
    status = state_->Refusal(options_, deadline, now);
  }
  RunCompletions(completions);
  return status;
}

std::vector<PendingRequest> RequestQueue::TakeUnrouted(int max_count, absl::Time now) {
  std::vector<PendingRequest> taken;
  std::vector<Completion> completions;
  {
    absl::MutexLock lock(&mu_);
    State& s = *state_;
    s.PurgeAll(now, completions);
    while (static_cast<int>(taken.size()) < max_count && !s.unrouted.empty()) {
      taken.push_back(std::move(s.unrouted.front()));
      s.unrouted.pop_front();
    }
    s.in_routing += static_cast<int64_t>(taken.size());
  }
  RunCompletions(completions);
  return taken;
}

void RequestQueue::AddRouted(PendingRequest request, std::string key, absl::Time now) {
  std::vector<Completion> completions;
  {
    absl::MutexLock lock(&mu_);
    State& s = *state_;
    s.in_routing = std::max<int64_t>(s.in_routing - 1, 0);
    if (s.closed) {
      completions.push_back({std::move(request), s.close_status});
    } else {
      request.key = key;
      std::deque<PendingRequest>& group = s.groups[std::move(key)];
      // Routing batches may finish out of order across workers; keep the group sorted by id so
      // its front is its oldest request. Usually this is an append.
      auto pos = group.end();
      while (pos != group.begin() && std::prev(pos)->id > request.id) --pos;
      group.insert(pos, std::move(request));
      ++s.routed;
    }
  }
  RunCompletions(completions);
}

void RequestQueue::DropRouting(int n) {
  absl::MutexLock lock(&mu_);
  state_->in_routing = std::max<int64_t>(state_->in_routing - n, 0);
}

std::vector<PendingRequest> RequestQueue::NextBatch(absl::Time now) {
  return NextBatchPlan(now).requests;
}

RequestQueue::Batch RequestQueue::NextBatchPlan(absl::Time now) {
  Batch batch;
  std::vector<Completion> completions;
  {
    absl::MutexLock lock(&mu_);
    State& s = *state_;
    s.PurgeAll(now, completions);
    const absl::Duration delay = s.BatchDelay(options_);
    auto chosen = s.groups.end();
    for (auto it = s.groups.begin(); it != s.groups.end(); ++it) {
      const PendingRequest& head = it->second.front();
      const bool ready = static_cast<int>(it->second.size()) >= options_.max_batch_size ||
                         now - head.enqueued >= delay;
      if (ready && (chosen == s.groups.end() || head.id < chosen->second.front().id)) chosen = it;
    }
    const bool mixed_full = s.unfused_available && s.routed >= options_.max_batch_size;
    if (chosen != s.groups.end() || mixed_full) {
      auto take = [&](std::deque<PendingRequest>& group) {
        s.RecordStart(group.front(), now);
        batch.requests.push_back(std::move(group.front()));
        group.pop_front();
      };
      if (s.unfused_available) {
        std::vector<WaitingGroup> waiting;
        waiting.reserve(s.groups.size());
        for (const auto& [key, group] : s.groups) {
          waiting.push_back(WaitingGroup{key, static_cast<int>(group.size()),
                                         group.front().enqueued,
                                         !s.resident || s.resident(key)});
        }
        BatchModeDecision d = s.chooser.Choose(waiting, now);
        batch.mode = d.mode;
        batch.reason = d.reason;
        if (d.mode == BatchMode::kFused) {
          chosen = s.groups.find(d.key);
        } else {
          // The oldest requests of every key, in arrival order.
          while (static_cast<int>(batch.requests.size()) < options_.max_batch_size &&
                 !s.groups.empty()) {
            auto oldest = s.groups.begin();
            for (auto it = s.groups.begin(); it != s.groups.end(); ++it) {
              if (it->second.front().id < oldest->second.front().id) oldest = it;
            }
            take(oldest->second);
            if (oldest->second.empty()) s.groups.erase(oldest);
          }
          chosen = s.groups.end();
        }
      } else {
        batch.reason = "only mode";
      }
      if (chosen != s.groups.end()) {
        std::deque<PendingRequest>& group = chosen->second;
        while (static_cast<int>(batch.requests.size()) < options_.max_batch_size &&
               !group.empty()) {
          take(group);
        }
        if (group.empty()) s.groups.erase(chosen);
      }
      s.routed -= static_cast<int64_t>(batch.requests.size());
    }
  }
  RunCompletions(completions);
  return batch;
}

void RequestQueue::SetModes(bool unfused_available, bool fused_available) {
  absl::MutexLock lock(&mu_);
  state_->unfused_available = unfused_available;
  state_->chooser.SetModes(unfused_available, fused_available || !unfused_available);
}

bool RequestQueue::unfused_available() const {
  absl::MutexLock lock(&mu_);
  return state_->unfused_available;
}

void RequestQueue::SetResidency(std::function<bool(const std::string& key)> resident) {
  absl::MutexLock lock(&mu_);
  state_->resident = std::move(resident);
}

void RequestQueue::RecordBatch(BatchMode mode, int rows, absl::Duration busy) {
  absl::MutexLock lock(&mu_);
  state_->chooser.RecordBatch(mode, rows, absl::ToDoubleSeconds(busy));
}

void RequestQueue::RecordFusion(absl::Duration busy) {
  absl::MutexLock lock(&mu_);
  state_->chooser.RecordFusion(absl::ToDoubleSeconds(busy));
}

absl::Time RequestQueue::NextReadyTime() const {
  absl::MutexLock lock(&mu_);
  const absl::Duration delay = state_->BatchDelay(options_);
  absl::Time next = absl::InfiniteFuture();
  // A mixed batch is ready as soon as max_batch_size requests wait in all.
  const bool mixed_full =
      state_->unfused_available && state_->routed >= options_.max_batch_size;
  for (const auto& [key, group] : state_->groups) {
    const absl::Time head = group.front().enqueued;
    const bool full = mixed_full || static_cast<int>(group.size()) >= options_.max_batch_size;
    next = std::min(next, full ? head : head + delay);
  }
  return next;
}

bool RequestQueue::HasUnrouted() const {
  absl::MutexLock lock(&mu_);
  return !state_->unrouted.empty();
}

void RequestQueue::RecordService(Stage stage, int requests, absl::Duration busy,
                                 absl::Time now) {
  if (requests <= 0 || busy < absl::ZeroDuration()) return;
  // The first measurement is taken as it is (0 means none yet), later ones smoothed.
  auto record = [](double& smoothed, double sample) {
    if (smoothed == 0) {
      smoothed = sample;
    } else {
      Smooth(smoothed, sample);
    }
  };
  const double call = absl::ToDoubleSeconds(busy);
  absl::MutexLock lock(&mu_);
  State& s = *state_;
  record(stage == Stage::kRoute ? s.route_s : s.run_s, call / requests);
  record(stage == Stage::kRoute ? s.route_call_s : s.run_call_s, call);
  s.measured_at = std::max(s.measured_at, now);
}

absl::Duration RequestQueue::ExpectedWait() const {
  absl::MutexLock lock(&mu_);
  return absl::Seconds(state_->ExpectedWaitSeconds(options_));
}

void RequestQueue::Flush() {
  absl::MutexLock lock(&mu_);
  state_->flushing = true;
}

void RequestQueue::Close(const absl::Status& status) {
  std::vector<Completion> completions;
  {
    absl::MutexLock lock(&mu_);
    State& s = *state_;
    s.closed = true;
    s.close_status = status.ok() ? absl::UnavailableError("server is shutting down") : status;
    for (PendingRequest& r : s.unrouted) completions.push_back({std::move(r), s.close_status});
    s.unrouted.clear();
    for (auto& [key, group] : s.groups) {
      for (PendingRequest& r : group) completions.push_back({std::move(r), s.close_status});
    }
    s.groups.clear();
    s.routed = 0;
  }
  RunCompletions(completions);
}

RequestQueueStats RequestQueue::stats() const {
  absl::MutexLock lock(&mu_);
  const State& s = *state_;
  RequestQueueStats stats;
  stats.unrouted = static_cast<int64_t>(s.unrouted.size());
  stats.waiting = stats.unrouted + s.routed;
  stats.in_routing = s.in_routing;
  stats.groups = static_cast<int64_t>(s.groups.size());
  stats.rejected_full = s.rejected_full;
  stats.rejected_late = s.rejected_late;
  stats.expired = s.expired;
  stats.cancelled = s.cancelled;
  return stats;
}

}  // namespace twin
