#include "server/fused_cache.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <stdexcept>
#include <thread>
#include <vector>

#include "absl/synchronization/notification.h"

namespace twin {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

class FakeValue : public FusedValue {
 public:
  explicit FakeValue(uint64_t bytes) : bytes_(bytes) {}
  uint64_t bytes() const override { return bytes_; }

 private:
  uint64_t bytes_;
};

// A key over three tasks from tenths, e.g. Key(7, 0, 3) is "g10:0=7,2=3".
ClusterKey Key(int a, int b, int c) {
  return QuantizeWeights({a / 10.0, b / 10.0, c / 10.0}, ClusterKeyOptions{0, 10});
}

// A fuse function that makes values of `bytes` bytes and counts its calls.
FuseFunction Fuser(uint64_t bytes, std::atomic<int>* calls) {
  return [bytes, calls](const std::vector<double>&) -> absl::StatusOr<std::shared_ptr<FusedValue>> {
    ++*calls;
    return std::make_shared<FakeValue>(bytes);
  };
}

FusedCacheOptions Options(uint64_t capacity_bytes) {
  FusedCacheOptions options;
  options.capacity_bytes = capacity_bytes;
  return options;
}

// Waits (bounded) until `cache` has counted `misses` misses: every such lookup has then either
// started the fusion or joined it, so a fuse function can hold them all in flight together.
void AwaitMisses(const FusedWeightCache& cache, uint64_t misses) {
  for (int i = 0; i < 5000 && cache.stats().misses < misses; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
}

TEST(FusedWeightCacheTest, HitAfterMiss) {
  FusedWeightCache cache(Options(1000));
  std::atomic<int> calls{0};
  const ClusterKey key = Key(7, 0, 3);

  absl::StatusOr<CacheLookup> first = cache.Lookup(key, Fuser(100, &calls));
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_EQ(first->source, CacheLookup::kFused);
  EXPECT_EQ(first->served_key, "g10:0=7,2=3");
  EXPECT_EQ(first->value->bytes(), 100u);

  absl::StatusOr<CacheLookup> second = cache.Lookup(key, Fuser(100, &calls));
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_EQ(second->source, CacheLookup::kHit);
  EXPECT_EQ(second->value, first->value);
  EXPECT_EQ(second->served_key, key.text);
  EXPECT_EQ(second->fuse_seconds, 0.0);
  EXPECT_EQ(calls, 1);

  const FusedCacheStats stats = cache.stats();
  EXPECT_EQ(stats.hits, 1u);
  EXPECT_EQ(stats.misses, 1u);
  EXPECT_EQ(stats.fusions, 1u);
  EXPECT_EQ(stats.entries, 1u);
  EXPECT_EQ(stats.bytes, 100u);
  EXPECT_GE(stats.fusion_seconds, 0.0);
}

TEST(FusedWeightCacheTest, PopularKeyEvictsLeastRecentlyUsedByBytes) {
  FusedWeightCache cache(Options(300));  // admit_min_requests = 2
  std::atomic<int> calls{0};
  const ClusterKey a = Key(10, 0, 0), b = Key(0, 10, 0), c = Key(0, 0, 10), d = Key(5, 5, 0);
  for (const ClusterKey& key : {a, b, c}) ASSERT_TRUE(cache.Lookup(key, Fuser(100, &calls)).ok());
  ASSERT_TRUE(cache.Lookup(a, Fuser(100, &calls)).ok());  // hit: a becomes most recent
  EXPECT_THAT(cache.Keys(), ElementsAre(a.text, c.text, b.text));

  // First request of d: served, but the cache is full and d is not popular yet.
  absl::StatusOr<CacheLookup> once = cache.Lookup(d, Fuser(150, &calls));
  ASSERT_TRUE(once.ok());
  EXPECT_EQ(once->source, CacheLookup::kFused);
  EXPECT_THAT(cache.Keys(), ElementsAre(a.text, c.text, b.text));

  // Second request: popular, so it evicts from the LRU end until 150 bytes are free (b, c).
  ASSERT_TRUE(cache.Lookup(d, Fuser(150, &calls)).ok());
  EXPECT_THAT(cache.Keys(), ElementsAre(d.text, a.text));

  const FusedCacheStats stats = cache.stats();
  EXPECT_EQ(stats.hits, 1u);
  EXPECT_EQ(stats.misses, 5u);
  EXPECT_EQ(stats.nearest, 0u);
  EXPECT_EQ(stats.fusions, 5u);
  EXPECT_EQ(stats.fusion_failures, 0u);
  EXPECT_EQ(stats.evictions, 2u);
  EXPECT_EQ(stats.rejected_admissions, 1u);
  EXPECT_EQ(stats.entries, 2u);
  EXPECT_EQ(stats.bytes, 250u);
  EXPECT_EQ(calls, 5);
}

TEST(FusedWeightCacheTest, ContainsSaysWhatIsCachedWithoutCountingALookup) {
  FusedWeightCache cache(Options(300));  // admit_min_requests = 2
  std::atomic<int> calls{0};
  const ClusterKey a = Key(10, 0, 0), b = Key(0, 10, 0), c = Key(0, 0, 10), d = Key(5, 5, 0);
  EXPECT_FALSE(cache.Contains(a.text));
  for (const ClusterKey& key : {a, b, c}) ASSERT_TRUE(cache.Lookup(key, Fuser(100, &calls)).ok());
  EXPECT_TRUE(cache.Contains(a.text));
  EXPECT_TRUE(cache.Contains(c.text));
  // Asking does not make d popular or a recent: d's first lookup is still not admitted, and
  // d's second evicts a (least recent) and then b.
  EXPECT_FALSE(cache.Contains(d.text));
  EXPECT_FALSE(cache.Contains(d.text));
  EXPECT_TRUE(cache.Contains(a.text));
  ASSERT_TRUE(cache.Lookup(d, Fuser(150, &calls)).ok());
  EXPECT_FALSE(cache.Contains(d.text));
  ASSERT_TRUE(cache.Lookup(d, Fuser(150, &calls)).ok());
  EXPECT_TRUE(cache.Contains(d.text));
  EXPECT_FALSE(cache.Contains(a.text));
  EXPECT_FALSE(cache.Contains(b.text));
  EXPECT_TRUE(cache.Contains(c.text));
  EXPECT_EQ(cache.stats().hits, 0u);
  cache.Clear();
  EXPECT_FALSE(cache.Contains(a.text));
}

TEST(FusedWeightCacheTest, FrequencyWindowForgetsOldRequests) {
  FusedCacheOptions options = Options(100);
  options.frequency_window = 2;
  FusedWeightCache cache(options);
  std::atomic<int> calls{0};
  const ClusterKey a = Key(10, 0, 0), x = Key(0, 10, 0), y = Key(0, 0, 10);
  ASSERT_TRUE(cache.Lookup(a, Fuser(100, &calls)).ok());
  ASSERT_TRUE(cache.Lookup(x, Fuser(100, &calls)).ok());
  ASSERT_TRUE(cache.Lookup(y, Fuser(100, &calls)).ok());
  // The window now holds {y, x}: the earlier x fell out, so x counts once and cannot evict.
  ASSERT_TRUE(cache.Lookup(x, Fuser(100, &calls)).ok());
  EXPECT_THAT(cache.Keys(), ElementsAre(a.text));
  EXPECT_EQ(cache.stats().rejected_admissions, 3u);
  // {x, x}: popular.
  ASSERT_TRUE(cache.Lookup(x, Fuser(100, &calls)).ok());
  EXPECT_THAT(cache.Keys(), ElementsAre(x.text));
  EXPECT_EQ(cache.stats().evictions, 1u);
}

TEST(FusedWeightCacheTest, ValueLargerThanCapacityIsServedButNeverKept) {
  FusedWeightCache cache(Options(100));
  std::atomic<int> calls{0};
  const ClusterKey small = Key(10, 0, 0), huge = Key(0, 10, 0);
  ASSERT_TRUE(cache.Lookup(small, Fuser(50, &calls)).ok());
  for (int i = 0; i < 3; ++i) {
    absl::StatusOr<CacheLookup> r = cache.Lookup(huge, Fuser(150, &calls));
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->source, CacheLookup::kFused);
    EXPECT_EQ(r->value->bytes(), 150u);
  }
  // Popular, but it could never fit: nothing was evicted for it.
  EXPECT_THAT(cache.Keys(), ElementsAre(small.text));
  const FusedCacheStats stats = cache.stats();
  EXPECT_EQ(stats.fusions, 4u);
  EXPECT_EQ(stats.rejected_admissions, 3u);
  EXPECT_EQ(stats.evictions, 0u);
  EXPECT_EQ(stats.bytes, 50u);
}

TEST(FusedWeightCacheTest, NearestServesTheNearestCachedEntry) {
  FusedCacheOptions options = Options(1000);
  options.miss_policy = FusedCacheOptions::kNearest;
  options.max_nearest_distance = 0.3;
  FusedWeightCache cache(options);
  std::atomic<int> calls{0};
  const ClusterKey a = Key(7, 0, 3), e = Key(5, 0, 5);  // 0.4 apart: e is fused too
  absl::StatusOr<CacheLookup> cached_a = cache.Lookup(a, Fuser(100, &calls));
  ASSERT_TRUE(cached_a.ok());
  ASSERT_TRUE(cache.Lookup(e, Fuser(100, &calls)).ok());  // e is further away but more recent

  // (6,1,3) is 0.2 from a and 0.4 from e.
  const ClusterKey b = Key(6, 1, 3);
  absl::StatusOr<CacheLookup> near = cache.Lookup(b, Fuser(100, &calls));
  ASSERT_TRUE(near.ok()) << near.status();
  EXPECT_EQ(near->source, CacheLookup::kNearest);
  EXPECT_EQ(near->served_key, a.text);
  EXPECT_EQ(near->value, cached_a->value);
  EXPECT_EQ(calls, 2);
  EXPECT_THAT(cache.Keys(), ElementsAre(a.text, e.text));  // serving a made it most recent

  // Asked again, b is popular: fused now and admitted.
  absl::StatusOr<CacheLookup> fused = cache.Lookup(b, Fuser(100, &calls));
  ASSERT_TRUE(fused.ok());
  EXPECT_EQ(fused->source, CacheLookup::kFused);
  EXPECT_EQ(fused->served_key, b.text);
  EXPECT_EQ(calls, 3);
  EXPECT_THAT(cache.Keys(), ElementsAre(b.text, a.text, e.text));

  const FusedCacheStats stats = cache.stats();
  EXPECT_EQ(stats.misses, 4u);
  EXPECT_EQ(stats.nearest, 1u);
  EXPECT_EQ(stats.hits, 0u);
  EXPECT_EQ(stats.fusions, 3u);
}

TEST(FusedWeightCacheTest, NearestFusesWhenNothingIsNearEnough) {
  FusedCacheOptions options = Options(1000);
  options.miss_policy = FusedCacheOptions::kNearest;
  options.max_nearest_distance = 0.1;
  FusedWeightCache cache(options);
  std::atomic<int> calls{0};
  ASSERT_TRUE(cache.Lookup(Key(7, 0, 3), Fuser(100, &calls)).ok());
  absl::StatusOr<CacheLookup> r = cache.Lookup(Key(6, 0, 4), Fuser(100, &calls));  // 0.2 away
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->source, CacheLookup::kFused);
  EXPECT_EQ(r->served_key, "g10:0=6,2=4");
  EXPECT_EQ(calls, 2);
  EXPECT_EQ(cache.stats().nearest, 0u);
}

// One client varying top_k or temperature could force a fusion per request. With a budget,
// misses beyond it are served by the nearest cached set, whatever its distance.
TEST(FusedWeightCacheTest, FusionsBeyondTheBudgetAreServedByTheNearestSet) {
  FusedCacheOptions options = Options(10000);
  options.admit_min_requests = 1;
  options.max_fusions_per_s = 1e-9;  // no refill within the test
  options.fusion_burst = 2;
  FusedWeightCache cache(options);
  std::atomic<int> calls{0};
  ASSERT_EQ(cache.Lookup(Key(10, 0, 0), Fuser(100, &calls))->source, CacheLookup::kFused);
  ASSERT_EQ(cache.Lookup(Key(0, 10, 0), Fuser(100, &calls))->source, CacheLookup::kFused);
  // The budget of two is spent: a third key (far from both) gets the nearest one.
  absl::StatusOr<CacheLookup> third = cache.Lookup(Key(0, 1, 9), Fuser(100, &calls));
  ASSERT_TRUE(third.ok()) << third.status();
  EXPECT_EQ(third->source, CacheLookup::kNearest);
  EXPECT_EQ(third->served_key, Key(0, 10, 0).text);
  EXPECT_EQ(calls, 2);
  // Keys already cached are hits as before.
  EXPECT_EQ(cache.Lookup(Key(10, 0, 0), Fuser(100, &calls))->source, CacheLookup::kHit);
  const FusedCacheStats stats = cache.stats();
  EXPECT_EQ(stats.fusions, 2u);
  EXPECT_EQ(stats.throttled, 1u);
  EXPECT_EQ(stats.nearest, 1u);

  // With an empty cache there is nothing to fall back on: it fuses.
  FusedWeightCache empty(options);
  EXPECT_EQ(empty.Lookup(Key(10, 0, 0), Fuser(100, &calls))->source, CacheLookup::kFused);
  EXPECT_EQ(empty.Lookup(Key(0, 10, 0), Fuser(100, &calls))->source, CacheLookup::kFused);
  EXPECT_EQ(empty.Lookup(Key(0, 0, 10), Fuser(100, &calls))->source, CacheLookup::kNearest);
}

TEST(FusedWeightCacheTest, FusionErrorsPropagateAndAreNotCached) {
  FusedWeightCache cache(Options(1000));
  const ClusterKey key = Key(7, 0, 3);
  int calls = 0;
  FuseFunction failing =
      [&calls](const std::vector<double>&) -> absl::StatusOr<std::shared_ptr<FusedValue>> {
    ++calls;
    return absl::InvalidArgumentError("bad tensor layer.0.weight");
  };
  absl::StatusOr<CacheLookup> r = cache.Lookup(key, failing);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("g10:0=7,2=3"));
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("bad tensor layer.0.weight"));
  EXPECT_THAT(cache.Keys(), IsEmpty());

  std::atomic<int> good_calls{0};
  ASSERT_TRUE(cache.Lookup(key, Fuser(100, &good_calls)).ok());  // fused again, not a hit
  EXPECT_EQ(calls, 1);
  EXPECT_EQ(good_calls, 1);

  const FusedCacheStats stats = cache.stats();
  EXPECT_EQ(stats.fusions, 2u);
  EXPECT_EQ(stats.fusion_failures, 1u);
  EXPECT_EQ(stats.misses, 2u);
  EXPECT_EQ(stats.entries, 1u);
}

TEST(FusedWeightCacheTest, NullValuesAndExceptionsBecomeErrors) {
  FusedWeightCache cache(Options(1000));
  absl::StatusOr<CacheLookup> null = cache.Lookup(
      Key(10, 0, 0), [](const std::vector<double>&) -> absl::StatusOr<std::shared_ptr<FusedValue>> {
        return std::shared_ptr<FusedValue>();
      });
  EXPECT_EQ(null.status().code(), absl::StatusCode::kInternal);
  EXPECT_THAT(std::string(null.status().message()), HasSubstr("g10:0=10"));

  absl::StatusOr<CacheLookup> thrown = cache.Lookup(
      Key(0, 10, 0), [](const std::vector<double>&) -> absl::StatusOr<std::shared_ptr<FusedValue>> {
        throw std::runtime_error("out of memory");
      });
  EXPECT_EQ(thrown.status().code(), absl::StatusCode::kInternal);
  EXPECT_THAT(std::string(thrown.status().message()), HasSubstr("out of memory"));
  EXPECT_EQ(cache.stats().fusion_failures, 2u);
  EXPECT_THAT(cache.Keys(), IsEmpty());
}

TEST(FusedWeightCacheTest, ConcurrentMissesFuseOnce) {
  constexpr int kThreads = 8;
  FusedWeightCache cache(Options(1000));
  const ClusterKey key = Key(7, 0, 3);
  std::atomic<int> calls{0};
  FuseFunction slow =
      [&](const std::vector<double>&) -> absl::StatusOr<std::shared_ptr<FusedValue>> {
    ++calls;
    AwaitMisses(cache, kThreads);  // every lookup is now in flight with this one
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    return std::make_shared<FakeValue>(100);
  };
  std::vector<absl::StatusOr<CacheLookup>> results(kThreads);
  std::vector<std::thread> threads;
  for (int i = 0; i < kThreads; ++i) {
    threads.emplace_back([&, i] { results[i] = cache.Lookup(key, slow); });
  }
  for (std::thread& t : threads) t.join();

  EXPECT_EQ(calls, 1);
  for (const auto& r : results) {
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->source, CacheLookup::kFused);
    EXPECT_EQ(r->value, results[0]->value);
  }
  const FusedCacheStats stats = cache.stats();
  EXPECT_EQ(stats.misses, static_cast<uint64_t>(kThreads));
  EXPECT_EQ(stats.fusions, 1u);
  EXPECT_EQ(stats.entries, 1u);
}

TEST(FusedWeightCacheTest, ConcurrentMissesShareOneError) {
  constexpr int kThreads = 4;
  FusedWeightCache cache(Options(1000));
  std::atomic<int> calls{0};
  FuseFunction failing =
      [&](const std::vector<double>&) -> absl::StatusOr<std::shared_ptr<FusedValue>> {
    ++calls;
    AwaitMisses(cache, kThreads);
    return absl::ResourceExhaustedError("device memory");
  };
  std::vector<absl::StatusOr<CacheLookup>> results(kThreads);
  std::vector<std::thread> threads;
  for (int i = 0; i < kThreads; ++i) {
    threads.emplace_back([&, i] { results[i] = cache.Lookup(Key(7, 0, 3), failing); });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(calls, 1);
  for (const auto& r : results) {
    EXPECT_EQ(r.status().code(), absl::StatusCode::kResourceExhausted);
    EXPECT_THAT(std::string(r.status().message()), HasSubstr("device memory"));
  }
  EXPECT_EQ(cache.stats().fusion_failures, 1u);
}

TEST(FusedWeightCacheTest, ClearDropsEntriesAndKeepsCounters) {
  FusedWeightCache cache(Options(1000));
  std::atomic<int> calls{0};
  ASSERT_TRUE(cache.Lookup(Key(10, 0, 0), Fuser(100, &calls)).ok());
  ASSERT_TRUE(cache.Lookup(Key(0, 10, 0), Fuser(100, &calls)).ok());
  cache.Clear();
  EXPECT_THAT(cache.Keys(), IsEmpty());
  FusedCacheStats stats = cache.stats();
  EXPECT_EQ(stats.entries, 0u);
  EXPECT_EQ(stats.bytes, 0u);
  EXPECT_EQ(stats.fusions, 2u);
  absl::StatusOr<CacheLookup> again = cache.Lookup(Key(10, 0, 0), Fuser(100, &calls));
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->source, CacheLookup::kFused);
}

TEST(FusedWeightCacheTest, ClearDuringFusionDoesNotInsertTheStaleValue) {
  FusedWeightCache cache(Options(1000));
  const ClusterKey key = Key(7, 0, 3);
  absl::Notification started, release;
  std::atomic<int> calls{0};
  FuseFunction fuse =
      [&](const std::vector<double>&) -> absl::StatusOr<std::shared_ptr<FusedValue>> {
    if (++calls == 1) {  // the fusion that began before Clear() waits until after it
      started.Notify();
      release.WaitForNotification();
    }
    return std::make_shared<FakeValue>(100);
  };
  absl::StatusOr<CacheLookup> stale;
  std::thread before([&] { stale = cache.Lookup(key, fuse); });
  started.WaitForNotification();
  cache.Clear();
  // A lookup after Clear() must not join the stale fusion: it fuses on its own.
  absl::StatusOr<CacheLookup> fresh = cache.Lookup(key, fuse);
  release.Notify();
  before.join();

  ASSERT_TRUE(stale.ok()) << stale.status();
  ASSERT_TRUE(fresh.ok()) << fresh.status();
  EXPECT_EQ(stale->source, CacheLookup::kFused);
  EXPECT_NE(stale->value, fresh->value);
  EXPECT_EQ(calls, 2);
  EXPECT_THAT(cache.Keys(), ElementsAre(key.text));
  absl::StatusOr<CacheLookup> hit = cache.Lookup(key, fuse);
  ASSERT_TRUE(hit.ok());
  EXPECT_EQ(hit->source, CacheLookup::kHit);
  EXPECT_EQ(hit->value, fresh->value);
  EXPECT_EQ(cache.stats().rejected_admissions, 1u);
}

}  // namespace
}  // namespace twin

namespace twin {
namespace {

// A fuse function that blocks until `release` is notified (then behaves like Fuser).
FuseFunction BlockingFuser(uint64_t bytes, std::atomic<int>* calls,
                           absl::Notification* release) {
  return [=](const std::vector<double>&) -> absl::StatusOr<std::shared_ptr<FusedValue>> {
    ++*calls;
    release->WaitForNotification();
    return std::make_shared<FakeValue>(bytes);
  };
}

void AwaitFusions(const FusedWeightCache& cache, uint64_t fusions) {
  for (int i = 0; i < 5000 && cache.stats().fusions < fusions; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
}

// background_fusion: with anything cached a miss is answered at once by the nearest set while
// its key fuses on the cache's thread; later lookups hit the new entry.
TEST(FusedWeightCacheTest, BackgroundFusionServesTheNearestSetWithoutWaiting) {
  FusedCacheOptions options = Options(1000);
  options.background_fusion = true;
  FusedWeightCache cache(options);
  std::atomic<int> calls{0};
  // Nothing cached: the first miss fuses now.
  auto first = cache.Lookup(Key(10, 0, 0), Fuser(10, &calls));
  ASSERT_TRUE(first.ok());
  EXPECT_EQ(first->source, CacheLookup::kFused);

  absl::Notification release;
  std::atomic<int> blocked{0};
  // The fusion of 0=6,1=4 blocks; the lookups must still return, served by 0=10.
  for (int i = 0; i < 3; ++i) {
    auto served = cache.Lookup(Key(6, 4, 0), BlockingFuser(10, &blocked, &release));
    ASSERT_TRUE(served.ok());
    EXPECT_EQ(served->source, CacheLookup::kNearest);
    EXPECT_EQ(served->served_key, Key(10, 0, 0).text);
    EXPECT_EQ(served->fuse_seconds, 0.0);
  }
  EXPECT_EQ(cache.stats().deferred, 3u);
  release.Notify();
  AwaitFusions(cache, 2);
  for (int i = 0; i < 1000 && cache.Keys().size() < 2; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  EXPECT_EQ(blocked.load(), 1);  // one fusion for the three misses
  auto hit = cache.Lookup(Key(6, 4, 0), Fuser(10, &calls));
  ASSERT_TRUE(hit.ok());
  EXPECT_EQ(hit->source, CacheLookup::kHit);
  EXPECT_EQ(calls.load(), 1);
}

// The queue is bounded; keys beyond it are served by the nearest set and not fused; the
// destructor does not wait for queued fusions.
TEST(FusedWeightCacheTest, BackgroundQueueIsBoundedAndDroppedAtDestruction) {
  FusedCacheOptions options = Options(1000);
  options.background_fusion = true;
  options.max_pending_fusions = 1;
  absl::Notification release;
  std::atomic<int> calls{0}, blocked{0};
  {
    FusedWeightCache cache(options);
    ASSERT_TRUE(cache.Lookup(Key(10, 0, 0), Fuser(10, &calls)).ok());
    // The first deferred key starts fusing (and blocks), the second waits in the queue, the
    // third finds the queue full.
    ASSERT_TRUE(cache.Lookup(Key(9, 1, 0), BlockingFuser(10, &blocked, &release)).ok());
    for (int i = 0; i < 5000 && blocked.load() == 0; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    ASSERT_EQ(blocked.load(), 1);
    ASSERT_TRUE(cache.Lookup(Key(8, 2, 0), BlockingFuser(10, &blocked, &release)).ok());
    auto third = cache.Lookup(Key(7, 3, 0), BlockingFuser(10, &blocked, &release));
    ASSERT_TRUE(third.ok());
    EXPECT_EQ(third->source, CacheLookup::kNearest);
    EXPECT_EQ(cache.stats().deferred, 3u);
    release.Notify();  // the running fusion finishes; the destructor drops the queued one
  }
  EXPECT_LE(blocked.load(), 2);
}

// The fusion budget applies to background fusions too.
TEST(FusedWeightCacheTest, BackgroundFusionsSpendTheFusionBudget) {
  FusedCacheOptions options = Options(1000);
  options.background_fusion = true;
  options.max_fusions_per_s = 0.001;  // one token, refilled after ~17 minutes
  options.fusion_burst = 1;
  FusedWeightCache cache(options);
  std::atomic<int> calls{0};
  ASSERT_TRUE(cache.Lookup(Key(10, 0, 0), Fuser(10, &calls)).ok());  // the token
  auto deferred = cache.Lookup(Key(0, 10, 0), Fuser(10, &calls));
  ASSERT_TRUE(deferred.ok());
  EXPECT_EQ(deferred->source, CacheLookup::kNearest);
  EXPECT_EQ(cache.stats().throttled, 1u);
  EXPECT_EQ(cache.stats().deferred, 0u);
  EXPECT_EQ(calls.load(), 1);
}

}  // namespace
}  // namespace twin
