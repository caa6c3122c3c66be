#include "server/fused_cache.h"

#include <algorithm>
#include <deque>
#include <exception>
#include <iterator>
#include <limits>
#include <list>
#include <thread>
#include <unordered_map>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace twin {
namespace {

struct Entry {
  ClusterKey key;
  std::shared_ptr<FusedValue> value;
  uint64_t bytes = 0;
};

// One fusion in progress; the lookups that join it wait for `done` under the cache mutex.
struct Flight {
  bool done = false;
  absl::StatusOr<std::shared_ptr<FusedValue>> result;
  double seconds = 0.0;
  uint64_t generation = 0;  // the cache generation the fusion started in
};

// Runs `fuse` and turns exceptions and null values into errors, so that a misbehaving fuse
// function can neither crash the server nor leave waiters blocked forever.
absl::StatusOr<std::shared_ptr<FusedValue>> RunFuse(const FuseFunction& fuse,
                                                    const ClusterKey& key) {
  absl::StatusOr<std::shared_ptr<FusedValue>> result;
  try {
    result = fuse(key.weights);
  } catch (const std::exception& e) {
    result = absl::InternalError(absl::StrCat("exception: ", e.what()));
  } catch (...) {
    result = absl::InternalError("unknown exception");
  }
  if (result.ok() && *result == nullptr) result = absl::InternalError("fuse returned no value");
  if (!result.ok()) {
    return absl::Status(
        result.status().code(),
        absl::StrCat("fusing weights for cluster key ", key.text, ": ", result.status().message()));
  }
  return result;
}

}  // namespace

struct FusedWeightCache::Impl {
  explicit Impl(FusedCacheOptions o) : options(o) {
    // Below 1 the rules degenerate; 1 means "every key is popular" / "remember one lookup".
    options.admit_min_requests = std::max(options.admit_min_requests, 1);
    options.frequency_window = std::max(options.frequency_window, 1);
  }

  // Remembers one lookup of `text` and forgets the oldest beyond the window.
  void RecordLookup(const std::string& text) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    window.push_back(text);
    ++window_counts[text];
    while (static_cast<int>(window.size()) > options.frequency_window) {
      auto it = window_counts.find(window.front());
      if (--it->second == 0) window_counts.erase(it);
      window.pop_front();
    }
  }

  bool Popular(const std::string& text) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    auto it = window_counts.find(text);
    return it != window_counts.end() && it->second >= options.admit_min_requests;
  }

  void Touch(std::list<Entry>::iterator it) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    lru.splice(lru.begin(), lru, it);
  }

  // Takes one fusion from the token bucket; false when the budget is spent.
  bool TakeFusionToken(absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    if (options.max_fusions_per_s <= 0.0) return true;
    const double burst = options.fusion_burst > 0.0
                             ? options.fusion_burst
                             : std::max(1.0, options.max_fusions_per_s);
    if (last_refill == absl::InfinitePast()) {
      tokens = burst;
    } else {
      tokens = std::min(burst, tokens + absl::ToDoubleSeconds(now - last_refill) *
                                            options.max_fusions_per_s);
    }
    last_refill = now;
    if (tokens < 1.0) return false;
    tokens -= 1.0;
    return true;
  }

  // The cached entry nearest to `key` within `max_distance`; most recently used first on
  // ties. lru.end() when none is near enough.
  std::list<Entry>::iterator Nearest(const ClusterKey& key, double max_distance)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    auto best = lru.end();
    double best_distance = max_distance;
    for (auto it = lru.begin(); it != lru.end(); ++it) {
      const double distance = WeightDistance(key.weights, it->key.weights);
      if (distance < best_distance || (best == lru.end() && distance <= best_distance)) {
        best = it;
        best_distance = distance;
      }
    }
    return best;
  }

  // A miss answered by another cached entry.
  CacheLookup ServeNearest(std::list<Entry>::iterator near) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    Touch(near);
    ++stats.nearest;
    return CacheLookup{near->value, CacheLookup::kNearest, near->key.text, 0.0};
  }

  void EvictLru() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    const Entry& victim = lru.back();
    bytes_used -= victim.bytes;
    index.erase(victim.key.text);
    lru.pop_back();
    ++stats.evictions;
  }

  // Applies the admission rule to a freshly fused value of `key`, whose fusion started in
  // `started_generation` (a value fused before a Clear() is stale and never kept).
  void Admit(const ClusterKey& key, const std::shared_ptr<FusedValue>& value,
             uint64_t started_generation) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    const uint64_t bytes = value->bytes();
    const uint64_t free_bytes = options.capacity_bytes - bytes_used;
    const bool keep = started_generation == generation && bytes <= options.capacity_bytes &&
                      (bytes <= free_bytes || Popular(key.text));
    if (!keep) {
      ++stats.rejected_admissions;
      return;
    }
    auto existing = index.find(key.text);
    if (existing != index.end()) {  // defensive: single flight should make this unreachable
      bytes_used -= existing->second->bytes;
      lru.erase(existing->second);
      index.erase(existing);
    }
    while (options.capacity_bytes - bytes_used < bytes) EvictLru();
    lru.push_front(Entry{key, value, bytes});
    index[key.text] = lru.begin();
    bytes_used += bytes;
  }

  // Finishes a fusion of `key` started in `flight`: stats, admission, waiters, the slot.
  void Finish(const ClusterKey& key, const std::shared_ptr<Flight>& flight,
              absl::StatusOr<std::shared_ptr<FusedValue>> result, double seconds)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    ++stats.fusions;
    stats.fusion_seconds += seconds;
    if (result.ok()) {
      Admit(key, *result, flight->generation);
    } else {
      ++stats.fusion_failures;
    }
    flight->result = std::move(result);
    flight->seconds = seconds;
    flight->done = true;
    // Clear() may have detached this flight and a newer one may own the slot now.
    if (auto slot = flights.find(key.text); slot != flights.end() && slot->second == flight) {
      flights.erase(slot);
    }
  }

  // The background thread: fuses queued keys one at a time until stopped.
  void BackgroundLoop() {
    absl::MutexLock lock(&mu);
    while (true) {
      mu.Await(absl::Condition(
          +[](Impl* s) ABSL_NO_THREAD_SAFETY_ANALYSIS { return s->stopping || !s->pending.empty(); },
          this));
      if (stopping) return;
      Pending job = std::move(pending.front());
      pending.pop_front();
      mu.Unlock();
      const absl::Time start = absl::Now();
      absl::StatusOr<std::shared_ptr<FusedValue>> result = RunFuse(job.fuse, job.key);
      const double seconds = absl::ToDoubleSeconds(absl::Now() - start);
      mu.Lock();
      Finish(job.key, job.flight, std::move(result), seconds);
    }
  }

  struct Pending {
    ClusterKey key;
    FuseFunction fuse;
    std::shared_ptr<Flight> flight;
  };

  FusedCacheOptions options;
  mutable absl::Mutex mu;
  std::deque<Pending> pending ABSL_GUARDED_BY(mu);
  bool stopping ABSL_GUARDED_BY(mu) = false;
  std::thread background;
  std::list<Entry> lru ABSL_GUARDED_BY(mu);  // most recently used first
  std::unordered_map<std::string, std::list<Entry>::iterator> index ABSL_GUARDED_BY(mu);
  uint64_t bytes_used ABSL_GUARDED_BY(mu) = 0;
  std::deque<std::string> window ABSL_GUARDED_BY(mu);
  std::unordered_map<std::string, int> window_counts ABSL_GUARDED_BY(mu);
  std::unordered_map<std::string, std::shared_ptr<Flight>> flights ABSL_GUARDED_BY(mu);
  uint64_t generation ABSL_GUARDED_BY(mu) = 0;  // bumped by Clear()
  FusedCacheStats stats ABSL_GUARDED_BY(mu);
  double tokens ABSL_GUARDED_BY(mu) = 0.0;  // fusion budget left
  absl::Time last_refill ABSL_GUARDED_BY(mu) = absl::InfinitePast();
};

FusedWeightCache::FusedWeightCache(FusedCacheOptions options)
    : impl_(std::make_unique<Impl>(options)) {
  if (impl_->options.background_fusion) {
    impl_->background = std::thread([impl = impl_.get()] { impl->BackgroundLoop(); });
  }
}

FusedWeightCache::~FusedWeightCache() {
  if (!impl_->background.joinable()) return;
  {
    absl::MutexLock lock(&impl_->mu);
    impl_->stopping = true;
    // Queued fusions are dropped; their flights complete so no one can wait on them forever.
    for (Impl::Pending& job : impl_->pending) {
      job.flight->result = absl::CancelledError("the cache is shutting down");
      job.flight->done = true;
    }
    impl_->pending.clear();
  }
  impl_->background.join();
}

absl::StatusOr<CacheLookup> FusedWeightCache::Lookup(const ClusterKey& key,
                                                     const FuseFunction& fuse) {
  Impl& s = *impl_;
  absl::MutexLock lock(&s.mu);
  s.RecordLookup(key.text);

  if (auto hit = s.index.find(key.text); hit != s.index.end()) {
    s.Touch(hit->second);
    ++s.stats.hits;
    return CacheLookup{hit->second->value, CacheLookup::kHit, key.text, 0.0};
  }
  ++s.stats.misses;

  if (s.options.miss_policy == FusedCacheOptions::kNearest && !s.Popular(key.text)) {
    if (auto near = s.Nearest(key, s.options.max_nearest_distance); near != s.lru.end()) {
      return s.ServeNearest(near);
    }
  }

  if (s.options.background_fusion && !s.lru.empty()) {
    auto near = s.Nearest(key, std::numeric_limits<double>::infinity());
    if (!s.flights.count(key.text) &&
        static_cast<int>(s.pending.size()) < std::max(s.options.max_pending_fusions, 1)) {
      if (!s.TakeFusionToken(absl::Now())) {
        ++s.stats.throttled;
        return s.ServeNearest(near);
      }
      auto flight = std::make_shared<Flight>();
      flight->generation = s.generation;
      s.flights[key.text] = flight;
      s.pending.push_back(Impl::Pending{key, fuse, flight});
    }
    ++s.stats.deferred;
    return s.ServeNearest(near);
  }

  std::shared_ptr<Flight> flight;
  if (auto joined = s.flights.find(key.text); joined != s.flights.end()) {
    flight = joined->second;
    s.mu.Await(absl::Condition(&flight->done));
  } else {
    if (!s.TakeFusionToken(absl::Now())) {
      if (auto near = s.Nearest(key, std::numeric_limits<double>::infinity());
          near != s.lru.end()) {
        ++s.stats.throttled;
        return s.ServeNearest(near);
      }
    }
    flight = std::make_shared<Flight>();
    flight->generation = s.generation;
    s.flights[key.text] = flight;

    s.mu.Unlock();
    const absl::Time start = absl::Now();
    absl::StatusOr<std::shared_ptr<FusedValue>> result = RunFuse(fuse, key);
    const double seconds = absl::ToDoubleSeconds(absl::Now() - start);
    s.mu.Lock();
    s.Finish(key, flight, std::move(result), seconds);
  }
  if (!flight->result.ok()) return flight->result.status();
  return CacheLookup{*flight->result, CacheLookup::kFused, key.text, flight->seconds};
}

FusedCacheStats FusedWeightCache::stats() const {
  absl::MutexLock lock(&impl_->mu);
  FusedCacheStats stats = impl_->stats;
  stats.entries = impl_->lru.size();
  stats.bytes = impl_->bytes_used;
  return stats;
}

void FusedWeightCache::Clear() {
  absl::MutexLock lock(&impl_->mu);
  impl_->lru.clear();
  impl_->index.clear();
  impl_->bytes_used = 0;
  // Running fusions keep serving their own waiters; new lookups must not join them.
  impl_->flights.clear();
  ++impl_->generation;
}

std::vector<std::string> FusedWeightCache::Keys() const {
  absl::MutexLock lock(&impl_->mu);
  std::vector<std::string> keys;
  keys.reserve(impl_->lru.size());
  for (const Entry& entry : impl_->lru) keys.push_back(entry.key.text);
  return keys;
}

bool FusedWeightCache::Contains(const std::string& key_text) const {
  absl::MutexLock lock(&impl_->mu);
  return impl_->index.count(key_text) > 0;
}

std::vector<ClusterKey> FusedWeightCache::HotKeys(size_t max) const {
  absl::MutexLock lock(&impl_->mu);
  std::vector<ClusterKey> keys;
  for (const Entry& entry : impl_->lru) {
    if (keys.size() >= max) break;
    keys.push_back(entry.key);
  }
  return keys;
}

}  // namespace twin
