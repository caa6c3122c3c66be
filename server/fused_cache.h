// The fused-weight cache: one fused weight set per cluster key, bounded in bytes.
//
// Policy:
//   - LRU eviction by bytes (capacity_bytes).
//   - Admission: a key that misses is fused and served; it is kept in the cache only if there
//     is free room, or if it has been requested at least admit_min_requests times within the
//     last frequency_window lookups (a popular key may evict LRU entries; a one-off may not).
//   - Miss policy kFuse fuses now. kNearest serves the cached entry whose weights are nearest
//     (L1, at most max_nearest_distance) unless the missing key is itself popular (then it is
//     fused now and admitted); with no entry near enough it fuses now.
//   - Concurrent lookups of the same missing key fuse once (single flight); the others wait
//     and get the same value (source kFused) or the same error.
//   - Every lookup, hit or miss, counts towards popularity. A value larger than capacity_bytes
//     is served but never kept. A fusion error (or a null value) is returned, annotated with
//     the key, to every waiter and nothing is cached.
//   - background_fusion: a miss does not wait for its fusion when anything is cached. It is
//     served now by the nearest cached set (any distance, source kNearest) and its key is
//     fused on the cache's own thread (at most max_pending_fusions keys queued, one fusion at a
//     time, each through the fusion budget), then admitted like any other. Lookups of that key
//     while it is queued or fusing are served the same way. With nothing cached a miss fuses
//     now.
//   - Clear() drops the entries; fusions already running finish and serve their waiters but
//     are not inserted (they may have used the weights that were current before the Clear).
//
//   FusedWeightCache cache(options);
//   ASSIGN_OR_RETURN(CacheLookup r, cache.Lookup(key, [&](const std::vector<double>& w) {
//     return engine.Fuse(w); }));
//   r.value->...   // shared_ptr keeps the entry alive even if it is evicted meanwhile
//
// Thread-safety: all methods are thread-safe. The fuse function runs without the lock held,
// on the thread of the lookup that missed first, or (background_fusion) on the cache's thread,
// which the destructor stops after the fusion in progress (queued ones are dropped). The cache must outlive every Lookup in
// progress.
#ifndef TWIN_SERVER_FUSED_CACHE_H_
#define TWIN_SERVER_FUSED_CACHE_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "server/cluster_key.h"

namespace twin {

// What the cache stores; the server's implementation holds a model with fused parameters.
class FusedValue {
 public:
  virtual ~FusedValue() = default;
  virtual uint64_t bytes() const = 0;
};

using FuseFunction =
    std::function<absl::StatusOr<std::shared_ptr<FusedValue>>(const std::vector<double>&)>;

struct FusedCacheOptions {
  uint64_t capacity_bytes = 1ull << 30;  // 1 GiB
  int admit_min_requests = 2;            // requests within the window to displace others
  int frequency_window = 1000;           // lookups remembered for admission counting
  enum MissPolicy { kFuse, kNearest };
  MissPolicy miss_policy = kFuse;
  double max_nearest_distance = 0.4;  // L1 between quantised weight vectors
  // Fusions started per second, at most (0: no limit), with bursts of fusion_burst (0: one
  // second's worth, at least 1). A miss beyond the budget is served by the nearest cached set
  // at any distance (fusing only when the cache is empty), so one client varying top_k or
  // temperature cannot make every request pay a fusion while others wait behind it.
  double max_fusions_per_s = 0.0;
  double fusion_burst = 0.0;
  // Misses are served by the nearest cached set while their key fuses in the background.
  bool background_fusion = false;
  int max_pending_fusions = 4;
};

struct CacheLookup {
  std::shared_ptr<FusedValue> value;
  enum Source { kHit, kFused, kNearest };
  Source source = kFused;
  std::string served_key;     // the key whose weights were used (differs for kNearest)
  double fuse_seconds = 0.0;  // the fusion this lookup ran or waited for; 0 otherwise
};

struct FusedCacheStats {
  uint64_t hits = 0;
  uint64_t misses = 0;   // lookups not served from the cache by their own key
  uint64_t nearest = 0;  // misses served by a nearby entry
  uint64_t throttled = 0;  // of those, served so because the fusion budget was spent
  uint64_t deferred = 0;   // of those, served so while their key fuses in the background
  uint64_t evictions = 0;
  uint64_t fusions = 0;          // calls of the fuse function, failed ones included
  uint64_t fusion_failures = 0;  // of those, the ones that returned an error or null
  double fusion_seconds = 0.0;   // summed over all fusions
  uint64_t entries = 0;
  uint64_t bytes = 0;
  uint64_t rejected_admissions = 0;  // fused but not kept (no room, too big, or stale)
};

class FusedWeightCache {
 public:
  explicit FusedWeightCache(FusedCacheOptions options);
  ~FusedWeightCache();

  absl::StatusOr<CacheLookup> Lookup(const ClusterKey& key, const FuseFunction& fuse);

  FusedCacheStats stats() const;
  // Drops every entry (e.g. after a model reload).
  void Clear();
  // Keys currently cached, most recently used first.
  std::vector<std::string> Keys() const;
  // Whether the key whose text is `key_text` has fused weights cached now (no lookup is
  // recorded, nothing is touched).
  bool Contains(const std::string& key_text) const;
  // Up to `max` cached cluster keys, most recently used first (to pre-fuse them in a new
  // version's cache before it serves).
  std::vector<ClusterKey> HotKeys(size_t max) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace twin

#endif  // TWIN_SERVER_FUSED_CACHE_H_
