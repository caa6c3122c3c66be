#include "server/request_queue.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <map>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "server/batch_workers.h"

namespace twin {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

const absl::Time kT0 = absl::FromUnixSeconds(1000000);

absl::Time At(int64_t us) { return kT0 + absl::Microseconds(us); }

// Records every `done` call of the requests it builds, by the request's tag.
class DoneLog {
 public:
  PendingRequest Make(int tag, absl::Time deadline = absl::InfiniteFuture()) {
    PendingRequest r;
    r.deadline = deadline;
    r.done = [this, tag](const absl::Status& s) { calls_[tag].push_back(s); };
    return r;
  }
  int Count(int tag) const {
    auto it = calls_.find(tag);
    return it == calls_.end() ? 0 : static_cast<int>(it->second.size());
  }
  const absl::Status& Status(int tag) const { return calls_.at(tag).front(); }
  int Total() const {
    int n = 0;
    for (const auto& [tag, v] : calls_) n += static_cast<int>(v.size());
    return n;
  }

 private:
  std::map<int, std::vector<absl::Status>> calls_;
};

std::vector<uint64_t> Ids(const std::vector<PendingRequest>& rs) {
  std::vector<uint64_t> ids;
  for (const PendingRequest& r : rs) ids.push_back(r.id);
  return ids;
}

RequestQueueOptions Opts(int max_queue_size, int max_batch_size, int64_t delay_us) {
  return RequestQueueOptions{max_queue_size, max_batch_size, delay_us};
}

// Enqueues `n` requests at `now` and routes them all to `key`.
void EnqueueRouted(RequestQueue& q, DoneLog& log, int n, const std::string& key, absl::Time now,
                   int first_tag = 0) {
  for (int i = 0; i < n; ++i) ASSERT_TRUE(q.Enqueue(log.Make(first_tag + i), now).ok());
  for (PendingRequest& r : q.TakeUnrouted(n, now)) q.AddRouted(std::move(r), key, now);
}

TEST(RequestQueueTest, TakeUnroutedIsFifoWithMonotonicIds) {
  RequestQueue q(Opts(16, 8, 1000));
  DoneLog log;
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(q.Enqueue(log.Make(i), At(i)).ok());
  std::vector<PendingRequest> first = q.TakeUnrouted(3, At(10));
  EXPECT_THAT(Ids(first), ElementsAre(1, 2, 3));
  EXPECT_EQ(first[0].enqueued, At(0));
  EXPECT_EQ(first[2].enqueued, At(2));
  EXPECT_THAT(Ids(q.TakeUnrouted(10, At(10))), ElementsAre(4, 5));
  EXPECT_TRUE(q.TakeUnrouted(10, At(10)).empty());
  EXPECT_FALSE(q.HasUnrouted());
  EXPECT_EQ(q.stats().in_routing, 5);
  EXPECT_EQ(log.Total(), 0);  // handed-out requests are never completed by the queue
}

TEST(RequestQueueTest, GroupsByKeyAndCapsBatchSize) {
  RequestQueue q(Opts(16, 3, 1000));
  DoneLog log;
  for (int i = 0; i < 7; ++i) ASSERT_TRUE(q.Enqueue(log.Make(i), At(0)).ok());
  std::vector<PendingRequest> taken = q.TakeUnrouted(7, At(0));
  for (int i = 0; i < 7; ++i) q.AddRouted(std::move(taken[i]), i % 2 == 0 ? "a" : "b", At(0));
  EXPECT_EQ(q.stats().groups, 2);
  EXPECT_EQ(q.stats().waiting, 7);
  EXPECT_EQ(q.stats().in_routing, 0);

  // "a" holds ids 1,3,5,7 (full); "b" holds 2,4,6 (full at max_batch_size 3).
  std::vector<PendingRequest> b1 = q.NextBatch(At(0));
  EXPECT_THAT(Ids(b1), ElementsAre(1, 3, 5));
  for (const PendingRequest& r : b1) EXPECT_EQ(r.key, "a");
  std::vector<PendingRequest> b2 = q.NextBatch(At(0));
  EXPECT_THAT(Ids(b2), ElementsAre(2, 4, 6));
  EXPECT_EQ(b2[0].key, "b");
  // The remaining "a" request is alone: it waits for the delay.
  EXPECT_TRUE(q.NextBatch(At(999)).empty());
  EXPECT_THAT(Ids(q.NextBatch(At(1000))), ElementsAre(7));
  EXPECT_EQ(q.stats().groups, 0);
  EXPECT_EQ(q.stats().waiting, 0);
  EXPECT_EQ(log.Total(), 0);
}

TEST(RequestQueueTest, GroupReadyExactlyAtMaxQueueDelay) {
  RequestQueue q(Opts(16, 8, 2000));
  DoneLog log;
  EnqueueRouted(q, log, 2, "k", At(100));
  EXPECT_TRUE(q.NextBatch(At(100)).empty());
  EXPECT_TRUE(q.NextBatch(At(2099)).empty());
  EXPECT_THAT(Ids(q.NextBatch(At(2100))), ElementsAre(1, 2));
}

TEST(RequestQueueTest, FullGroupReadyImmediately) {
  RequestQueue q(Opts(16, 4, 1000000));
  DoneLog log;
  EnqueueRouted(q, log, 3, "k", At(0));
  EXPECT_TRUE(q.NextBatch(At(0)).empty());
  EnqueueRouted(q, log, 1, "k", At(5), 3);
  EXPECT_EQ(q.NextReadyTime(), At(0));  // ready since its oldest request arrived
  EXPECT_THAT(Ids(q.NextBatch(At(5))), ElementsAre(1, 2, 3, 4));
}

TEST(RequestQueueTest, OldestReadyGroupGoesFirstAcrossKeys) {
  RequestQueue q(Opts(16, 2, 1000));
  DoneLog log;
  EnqueueRouted(q, log, 1, "z", At(0), 0);    // id 1, oldest, alone
  EnqueueRouted(q, log, 1, "a", At(10), 1);   // id 2
  EnqueueRouted(q, log, 2, "m", At(20), 2);   // ids 3,4: full, ready now
  // Only "m" is ready at t=20 even though "z" and "a" are older.
  EXPECT_THAT(Ids(q.NextBatch(At(20))), ElementsAre(3, 4));
  // Both "z" and "a" are ready later; "z" holds the oldest request, despite sorting last.
  std::vector<PendingRequest> first = q.NextBatch(At(5000));
  ASSERT_EQ(first.size(), 1u);
  EXPECT_EQ(first[0].key, "z");
  std::vector<PendingRequest> second = q.NextBatch(At(5000));
  ASSERT_EQ(second.size(), 1u);
  EXPECT_EQ(second[0].key, "a");
}

TEST(RequestQueueTest, GroupKeepsArrivalOrderWhenRoutedOutOfOrder) {
  RequestQueue q(Opts(16, 8, 0));
  DoneLog log;
  for (int i = 0; i < 4; ++i) ASSERT_TRUE(q.Enqueue(log.Make(i), At(i)).ok());
  std::vector<PendingRequest> early = q.TakeUnrouted(2, At(4));
  std::vector<PendingRequest> late = q.TakeUnrouted(2, At(4));
  for (PendingRequest& r : late) q.AddRouted(std::move(r), "k", At(5));
  for (PendingRequest& r : early) q.AddRouted(std::move(r), "k", At(6));
  std::vector<PendingRequest> batch = q.NextBatch(At(6));
  EXPECT_THAT(Ids(batch), ElementsAre(1, 2, 3, 4));
  EXPECT_EQ(batch[0].enqueued, At(0));  // routing keeps the enqueue time
}

TEST(RequestQueueTest, FullQueueRejectsUntilRequestsLeave) {
  RequestQueue q(Opts(2, 8, 1000));
  DoneLog log;
  ASSERT_TRUE(q.Enqueue(log.Make(0), At(0)).ok());
  ASSERT_TRUE(q.Enqueue(log.Make(1), At(0)).ok());
  absl::Status full = q.Enqueue(log.Make(2), At(0));
  EXPECT_EQ(full.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(std::string(full.message()), HasSubstr("request queue is full (2 waiting)"));
  EXPECT_EQ(q.stats().rejected_full, 1u);

  // Requests being routed still hold their place, and routing them back does not double-count.
  std::vector<PendingRequest> taken = q.TakeUnrouted(2, At(1));
  EXPECT_EQ(q.Enqueue(log.Make(3), At(1)).code(), absl::StatusCode::kResourceExhausted);
  q.AddRouted(std::move(taken[0]), "k", At(1));
  EXPECT_EQ(q.Enqueue(log.Make(4), At(1)).code(), absl::StatusCode::kResourceExhausted);
  // A request the router gave up on frees its place.
  q.DropRouting(1);
  ASSERT_TRUE(q.Enqueue(log.Make(5), At(2)).ok());
  EXPECT_EQ(q.Enqueue(log.Make(6), At(2)).code(), absl::StatusCode::kResourceExhausted);
  // Handing a batch out frees its place too.
  EXPECT_EQ(q.NextBatch(At(1001)).size(), 1u);
  EXPECT_TRUE(q.Enqueue(log.Make(7), At(1001)).ok());
  EXPECT_EQ(q.stats().rejected_full, 4u);
  EXPECT_EQ(log.Total(), 0);  // rejected requests are answered by the caller, not `done`
}

TEST(RequestQueueTest, ExpiredRequestIsCompletedOnceAndNeverHandedOut) {
  RequestQueue q(Opts(16, 8, 10000));
  DoneLog log;
  ASSERT_TRUE(q.Enqueue(log.Make(0, At(5000)), At(0)).ok());
  ASSERT_TRUE(q.Enqueue(log.Make(1), At(0)).ok());
  std::vector<PendingRequest> taken = q.TakeUnrouted(2, At(0));
  for (PendingRequest& r : taken) q.AddRouted(std::move(r), "k", At(0));
  EXPECT_TRUE(q.NextBatch(At(4999)).empty());
  EXPECT_EQ(log.Count(0), 0);
  EXPECT_TRUE(q.NextBatch(At(5000)).empty());  // expires at its deadline; group not ready
  ASSERT_EQ(log.Count(0), 1);
  EXPECT_EQ(log.Status(0).code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_THAT(std::string(log.Status(0).message()),
              HasSubstr("deadline exceeded after waiting 5ms in queue"));
  EXPECT_THAT(Ids(q.NextBatch(At(10000))), ElementsAre(2));
  EXPECT_EQ(log.Count(0), 1);
  EXPECT_EQ(log.Count(1), 0);
  EXPECT_EQ(q.stats().expired, 1u);
  EXPECT_EQ(q.stats().waiting, 0);
}

TEST(RequestQueueTest, ExpiredUnroutedRequestIsNotTakenForRouting) {
  RequestQueue q(Opts(16, 8, 1000));
  DoneLog log;
  ASSERT_TRUE(q.Enqueue(log.Make(0, At(10)), At(0)).ok());
  ASSERT_TRUE(q.Enqueue(log.Make(1), At(0)).ok());
  EXPECT_THAT(Ids(q.TakeUnrouted(8, At(10))), ElementsAre(2));
  EXPECT_EQ(log.Count(0), 1);
  EXPECT_EQ(log.Status(0).code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_EQ(q.stats().in_routing, 1);
}

TEST(RequestQueueTest, CancelledRequestIsCompletedWithCancelled) {
  RequestQueue q(Opts(16, 8, 1000));
  DoneLog log;
  auto flag = std::make_shared<std::atomic<bool>>(false);
  PendingRequest r = log.Make(0);
  r.cancelled = flag;
  ASSERT_TRUE(q.Enqueue(std::move(r), At(0)).ok());
  ASSERT_TRUE(q.Enqueue(log.Make(1), At(0)).ok());
  flag->store(true);
  EXPECT_THAT(Ids(q.TakeUnrouted(8, At(1))), ElementsAre(2));
  ASSERT_EQ(log.Count(0), 1);
  EXPECT_EQ(log.Status(0).code(), absl::StatusCode::kCancelled);
  EXPECT_EQ(q.stats().cancelled, 1u);
  q.NextBatch(At(2));
  EXPECT_EQ(log.Count(0), 1);
}

TEST(RequestQueueTest, CancelledWhileRoutedIsDropped) {
  RequestQueue q(Opts(16, 8, 1000));
  DoneLog log;
  auto flag = std::make_shared<std::atomic<bool>>(false);
  PendingRequest r = log.Make(0);
  r.cancelled = flag;
  ASSERT_TRUE(q.Enqueue(std::move(r), At(0)).ok());
  for (PendingRequest& t : q.TakeUnrouted(8, At(0))) q.AddRouted(std::move(t), "k", At(0));
  flag->store(true);
  EXPECT_TRUE(q.NextBatch(At(5000)).empty());
  EXPECT_EQ(log.Status(0).code(), absl::StatusCode::kCancelled);
  EXPECT_EQ(q.NextReadyTime(), absl::InfiniteFuture());
}

TEST(RequestQueueTest, EnqueueRejectsBadOrDeadRequestsWithoutCallingDone) {
  RequestQueue q(Opts(16, 8, 1000));
  DoneLog log;
  PendingRequest no_done;
  absl::Status s = q.Enqueue(std::move(no_done), At(0));
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), HasSubstr("done callback"));
  EXPECT_EQ(q.Enqueue(log.Make(0, At(0)), At(0)).code(), absl::StatusCode::kDeadlineExceeded);
  PendingRequest cancelled = log.Make(1);
  cancelled.cancelled = std::make_shared<std::atomic<bool>>(true);
  EXPECT_EQ(q.Enqueue(std::move(cancelled), At(0)).code(), absl::StatusCode::kCancelled);
  EXPECT_EQ(log.Total(), 0);
  EXPECT_EQ(q.stats().waiting, 0);
}

TEST(RequestQueueTest, CloseCompletesWaitingRequestsAndRefusesNewOnes) {
  RequestQueue q(Opts(16, 2, 1000));
  DoneLog log;
  EnqueueRouted(q, log, 3, "k", At(0), 0);  // tags 0,1,2 routed
  std::vector<PendingRequest> handed_out = q.NextBatch(At(0));  // tags 0,1
  ASSERT_EQ(handed_out.size(), 2u);
  ASSERT_TRUE(q.Enqueue(log.Make(3), At(1)).ok());
  ASSERT_TRUE(q.Enqueue(log.Make(4), At(1)).ok());
  std::vector<PendingRequest> routing = q.TakeUnrouted(1, At(1));  // tag 3

  q.Close(absl::UnavailableError("draining for restart"));
  for (int tag : {2, 4}) {
    ASSERT_EQ(log.Count(tag), 1) << tag;
    EXPECT_EQ(log.Status(tag).code(), absl::StatusCode::kUnavailable);
    EXPECT_EQ(log.Status(tag).message(), "draining for restart");
  }
  EXPECT_EQ(log.Count(0), 0);  // handed out before Close: the worker owns them
  EXPECT_EQ(log.Count(1), 0);
  EXPECT_EQ(log.Count(3), 0);

  // A request that was being routed is completed when it comes back.
  q.AddRouted(std::move(routing[0]), "k", At(2));
  ASSERT_EQ(log.Count(3), 1);
  EXPECT_EQ(log.Status(3).message(), "draining for restart");

  absl::Status refused = q.Enqueue(log.Make(5), At(3));
  EXPECT_EQ(refused.code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(refused.message(), "server is shutting down");
  EXPECT_EQ(log.Count(5), 0);
  EXPECT_EQ(q.stats().waiting, 0);
  EXPECT_TRUE(q.NextBatch(At(10000)).empty());
}

TEST(RequestQueueTest, NextReadyTimeFollowsOldestGroupHead) {
  RequestQueue q(Opts(16, 3, 2000));
  DoneLog log;
  EXPECT_EQ(q.NextReadyTime(), absl::InfiniteFuture());
  ASSERT_TRUE(q.Enqueue(log.Make(0), At(0)).ok());
  EXPECT_EQ(q.NextReadyTime(), absl::InfiniteFuture());  // unrouted requests do not count
  for (PendingRequest& r : q.TakeUnrouted(1, At(0))) q.AddRouted(std::move(r), "b", At(0));
  EXPECT_EQ(q.NextReadyTime(), At(2000));
  EnqueueRouted(q, log, 1, "a", At(500), 1);
  EXPECT_EQ(q.NextReadyTime(), At(2000));
  EXPECT_EQ(q.NextBatch(At(2000)).size(), 1u);  // "b" leaves
  EXPECT_EQ(q.NextReadyTime(), At(2500));
  EXPECT_EQ(q.NextBatch(At(2500)).size(), 1u);
  EXPECT_EQ(q.NextReadyTime(), absl::InfiniteFuture());
}

TEST(RequestQueueTest, OptionsAreValidated) {
  EXPECT_TRUE(ValidateRequestQueueOptions(RequestQueueOptions{}).ok());
  absl::Status s = ValidateRequestQueueOptions(Opts(0, 8, 1000));
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), HasSubstr("max_queue_size"));
  EXPECT_THAT(std::string(ValidateRequestQueueOptions(Opts(4, 0, 1000)).message()),
              HasSubstr("max_batch_size"));
  EXPECT_THAT(std::string(ValidateRequestQueueOptions(Opts(4, 4, -1)).message()),
              HasSubstr("max_queue_delay_us"));
  // The constructor raises a zero batch size to one instead of looping forever.
  RequestQueue q(Opts(4, 0, 0));
  EXPECT_EQ(q.options().max_batch_size, 1);
}

// --- BatchWorkers ---------------------------------------------------------------------------

struct TestPayload : RequestPayload {
  explicit TestPayload(int i, std::string k) : index(i), key(std::move(k)) {}
  int index;
  std::string key;  // empty: the router refuses the request
};

// Routes by the payload's key; records every batch it runs and completes each request once.
// A batch's `keys` holds both the routed and the payload keys, so one key means a correct,
// single-key batch.
class FakeProcessor : public BatchProcessor {
 public:
  void Route(std::vector<PendingRequest>& requests, std::vector<std::string>* keys) override {
    for (size_t i = 0; i < requests.size(); ++i) {
      const auto& p = static_cast<const TestPayload&>(*requests[i].payload);
      (*keys)[i] = p.key;
      if (p.key.empty()) requests[i].done(absl::InvalidArgumentError("no route"));
    }
  }
  void Run(std::vector<PendingRequest> batch) override {
    std::vector<int> indices;
    std::set<std::string> keys;
    for (PendingRequest& r : batch) {
      const auto& p = static_cast<const TestPayload&>(*r.payload);
      indices.push_back(p.index);
      keys.insert(r.key);
      keys.insert(p.key);
      r.done(absl::OkStatus());  // the server's reply path; counted as completion here
    }
    absl::MutexLock lock(&mu_);
    batches_.push_back({indices, keys});
  }

  struct Batch {
    std::vector<int> indices;
    std::set<std::string> keys;
  };
  std::vector<Batch> batches() {
    absl::MutexLock lock(&mu_);
    return batches_;
  }

 private:
  absl::Mutex mu_;
  std::vector<Batch> batches_ ABSL_GUARDED_BY(mu_);
};

// Thread-safe count of `done` calls per request index.
class Completions {
 public:
  explicit Completions(int n) : counts_(n) {}
  std::function<void(const absl::Status&)> Callback(int index) {
    return [this, index](const absl::Status& s) {
      absl::MutexLock lock(&mu_);
      counts_[index].push_back(s.code());
    };
  }
  std::vector<std::vector<absl::StatusCode>> counts() {
    absl::MutexLock lock(&mu_);
    return counts_;
  }

 private:
  absl::Mutex mu_;
  std::vector<std::vector<absl::StatusCode>> counts_ ABSL_GUARDED_BY(mu_);
};

PendingRequest MakeWorkerRequest(int index, const std::string& key, Completions& completions) {
  PendingRequest r;
  r.payload = std::make_shared<TestPayload>(index, key);
  r.done = completions.Callback(index);
  return r;
}

TEST(BatchWorkersTest, DrainRunsEveryRequestOnceInSingleKeyBatches) {
  constexpr int kProducers = 4;
  constexpr int kPerProducer = 50;
  constexpr int kTotal = kProducers * kPerProducer;
  const std::vector<std::string> keys = {"g10:0=10", "g10:1=10", "g10:0=5,1=5"};
  RequestQueue queue(Opts(1024, 8, 1000));
  FakeProcessor processor;
  Completions completions(kTotal);
  BatchWorkersOptions options;
  options.num_threads = 3;
  options.max_route_batch = 16;
  BatchWorkers workers(&queue, &processor, options);
  workers.Start();

  std::vector<std::thread> producers;
  for (int p = 0; p < kProducers; ++p) {
    producers.emplace_back([&, p] {
      for (int i = 0; i < kPerProducer; ++i) {
        const int index = p * kPerProducer + i;
        EXPECT_TRUE(queue.Enqueue(MakeWorkerRequest(index, keys[index % 3], completions),
                                  absl::Now())
                        .ok());
        workers.Notify();
      }
    });
  }
  for (std::thread& t : producers) t.join();
  workers.Drain();

  std::vector<int> runs(kTotal, 0);
  for (const FakeProcessor::Batch& b : processor.batches()) {
    EXPECT_LE(b.indices.size(), 8u);
    EXPECT_EQ(b.keys.size(), 1u);  // one key, and the one its payload asked for
    for (int index : b.indices) ++runs[index];
  }
  for (int i = 0; i < kTotal; ++i) EXPECT_EQ(runs[i], 1) << "request " << i;
  std::vector<std::vector<absl::StatusCode>> done = completions.counts();
  for (int i = 0; i < kTotal; ++i) {
    EXPECT_THAT(done[i], ElementsAre(absl::StatusCode::kOk)) << "request " << i;
  }
  EXPECT_EQ(queue.stats().waiting, 0);
  EXPECT_EQ(queue.stats().in_routing, 0);
}

TEST(BatchWorkersTest, UnroutableRequestIsCompletedByRouterAndNeverRun) {
  RequestQueue queue(Opts(8, 8, 1000));
  FakeProcessor processor;
  Completions completions(3);
  BatchWorkers workers(&queue, &processor, BatchWorkersOptions{});
  ASSERT_TRUE(queue.Enqueue(MakeWorkerRequest(0, "k", completions), absl::Now()).ok());
  ASSERT_TRUE(queue.Enqueue(MakeWorkerRequest(1, "", completions), absl::Now()).ok());
  ASSERT_TRUE(queue.Enqueue(MakeWorkerRequest(2, "k", completions), absl::Now()).ok());
  workers.Start();
  workers.Notify();
  workers.Drain();

  std::vector<FakeProcessor::Batch> batches = processor.batches();
  std::vector<int> ran;
  for (const FakeProcessor::Batch& b : batches) ran.insert(ran.end(), b.indices.begin(), b.indices.end());
  EXPECT_THAT(ran, ::testing::UnorderedElementsAre(0, 2));
  std::vector<std::vector<absl::StatusCode>> done = completions.counts();
  EXPECT_THAT(done[1], ElementsAre(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(done[0], ElementsAre(absl::StatusCode::kOk));
  EXPECT_EQ(queue.stats().in_routing, 0);  // its place in the queue was released
}

TEST(BatchWorkersTest, StopAfterCloseReturnsWithoutRunningLeftovers) {
  // A delay far longer than any test: these groups never become ready on their own.
  RequestQueue queue(Opts(8, 8, absl::ToInt64Microseconds(absl::Hours(1))));
  FakeProcessor processor;
  Completions completions(4);
  BatchWorkersOptions options;
  options.num_threads = 2;
  BatchWorkers workers(&queue, &processor, options);
  workers.Start();
  for (int i = 0; i < 4; ++i) {
    ASSERT_TRUE(queue.Enqueue(MakeWorkerRequest(i, "k", completions), absl::Now()).ok());
  }
  workers.Notify();
  queue.Close(absl::UnavailableError("shutting down"));
  workers.Stop();

  EXPECT_TRUE(processor.batches().empty());
  std::vector<std::vector<absl::StatusCode>> done = completions.counts();
  for (int i = 0; i < 4; ++i) {
    EXPECT_THAT(done[i], ElementsAre(absl::StatusCode::kUnavailable)) << "request " << i;
  }
  workers.Stop();  // a second Stop (and the destructor's) is a no-op
}

}  // namespace
}  // namespace twin

namespace twin {
namespace {

// Deadline-aware admission: once a service time is measured, a request whose deadline comes
// before the queue's expected wait is refused at once, saying why; requests without a deadline,
// or with time to spare, are queued; the option turns it off.
TEST(RequestQueueDeadlineTest, RefusesAtOnceWhatWouldMissItsDeadline) {
  DoneLog log;
  RequestQueueOptions options = Opts(100, 8, 1000);
  options.parallelism = 2;
  RequestQueue q(options);
  // Nothing measured yet: even a tight deadline is queued.
  ASSERT_TRUE(q.Enqueue(log.Make(0, At(1000)), At(0)).ok());
  EXPECT_EQ(q.ExpectedWait(), absl::ZeroDuration());
  // 8 requests routed in one 8 ms call and run in one 72 ms batch: 10 ms each, two workers:
  // 5 ms per place; a request's own batch (one route call, one forward) takes 80 ms.
  q.RecordService(RequestQueue::Stage::kRoute, 8, absl::Milliseconds(8), At(0));
  q.RecordService(RequestQueue::Stage::kRun, 8, absl::Milliseconds(72), At(0));
  for (int i = 1; i <= 5; ++i) ASSERT_TRUE(q.Enqueue(log.Make(i), At(0)).ok());
  // Six ahead at 5 ms a place, then its own batch: 110 ms.
  EXPECT_EQ(q.ExpectedWait(), absl::Milliseconds(110));
  absl::Status late = q.Enqueue(log.Make(10, At(100'000)), At(0));
  EXPECT_EQ(late.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(late.message(), HasSubstr("expected wait is 110.0 ms (6 requests ahead at 5.00 ms "
                                        "each, +0.00 ms observed error margin, then 80.00 ms "
                                        "for its own batch)"));
  EXPECT_THAT(late.message(), HasSubstr("deadline in 100.0 ms"));
  EXPECT_EQ(q.stats().rejected_late, 1u);
  EXPECT_EQ(log.Count(10), 0);  // refused at Enqueue, not through `done`
  EXPECT_TRUE(q.Enqueue(log.Make(11, At(120'000)), At(0)).ok());
  // A deadline shorter than its own batch: DEADLINE_EXCEEDED, whatever the queue holds.
  absl::Status hopeless = q.Enqueue(log.Make(13, At(60'000)), At(0));
  EXPECT_EQ(hopeless.code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_THAT(hopeless.message(), HasSubstr("shorter than one batch's service time (80.00 ms)"));
  EXPECT_TRUE(q.Enqueue(log.Make(12), At(0)).ok());  // no deadline

  // The estimate follows the measurements (smoothed): a slower forward raises it.
  const absl::Duration before = q.ExpectedWait();
  q.RecordService(RequestQueue::Stage::kRun, 8, absl::Milliseconds(800), At(0));
  EXPECT_GT(q.ExpectedWait(), before);

  RequestQueueOptions off = options;
  off.deadline_admission = false;
  RequestQueue q_off(off);
  q_off.RecordService(RequestQueue::Stage::kRun, 1, absl::Seconds(10), At(0));
  EXPECT_TRUE(q_off.Enqueue(log.Make(20, At(1000)), At(0)).ok());
}

// Small batches cost more per request, but a request's own batch is one batch, not
// max_batch_size places: with batches of 2 at 4 ms, a 66 ms deadline is not hopeless (16 places
// at 2 ms would have called it so and refused every request).
TEST(RequestQueueDeadlineTest, OwnBatchIsTheMeasuredBatchNotMaxBatchSizePlaces) {
  DoneLog log;
  RequestQueueOptions options = Opts(1000, 16, 1000);
  RequestQueue q(options);
  for (int i = 0; i < 20; ++i) {
    q.RecordService(RequestQueue::Stage::kRoute, 2, absl::Milliseconds(1), At(0));
    q.RecordService(RequestQueue::Stage::kRun, 2, absl::Milliseconds(4), At(0));
  }
  EXPECT_TRUE(q.Enqueue(log.Make(0, At(66'000)), At(0)).ok());
  EXPECT_EQ(q.ExpectedWait(), absl::Microseconds(2500 + 5000));
}

// An estimate that refuses every request would never be corrected (refused requests are not
// served, so nothing is measured): after kServiceEstimateTtl without a measurement it no
// longer refuses, and the next measurement brings it back.
TEST(RequestQueueDeadlineTest, AStaleEstimateStopsRefusing) {
  DoneLog log;
  RequestQueue q(Opts(100, 8, 1000));
  q.RecordService(RequestQueue::Stage::kRun, 1, absl::Seconds(5), At(0));
  EXPECT_EQ(q.Enqueue(log.Make(0, At(1'000'000)), At(0)).code(),
            absl::StatusCode::kDeadlineExceeded);
  const absl::Time stale = At(0) + kServiceEstimateTtl + absl::Milliseconds(1);
  EXPECT_TRUE(q.Enqueue(log.Make(1, stale + absl::Seconds(1)), stale).ok());
  q.RecordService(RequestQueue::Stage::kRun, 1, absl::Seconds(5), stale);
  EXPECT_EQ(q.Enqueue(log.Make(2, stale + absl::Seconds(1)), stale).code(),
            absl::StatusCode::kDeadlineExceeded);
}

}  // namespace
// Admit answers what Enqueue would, without queueing: callers refuse before preparing work.
TEST(RequestQueueDeadlineTest, AdmitRefusesAsEnqueueWouldWithoutQueueing) {
  DoneLog log;
  RequestQueue q(Opts(2, 8, 1000));
  q.RecordService(RequestQueue::Stage::kRun, 8, absl::Milliseconds(80), At(0));
  EXPECT_TRUE(q.Admit(At(1'000'000), At(0)).ok());
  EXPECT_EQ(q.stats().waiting, 0);
  // Its own batch takes 80 ms: a 50 ms deadline is hopeless either way.
  EXPECT_EQ(q.Admit(At(50'000), At(0)).code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_EQ(q.Enqueue(log.Make(0, At(50'000)), At(0)).code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_EQ(q.Admit(At(0), At(0)).code(), absl::StatusCode::kDeadlineExceeded);
  ASSERT_TRUE(q.Enqueue(log.Make(1), At(0)).ok());
  ASSERT_TRUE(q.Enqueue(log.Make(2), At(0)).ok());
  EXPECT_EQ(q.Admit(absl::InfiniteFuture(), At(0)).code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(q.stats().rejected_full, 1u);
  EXPECT_EQ(q.stats().expired, 3u);
  q.Close(absl::UnavailableError("closing"));
  EXPECT_EQ(q.Admit(absl::InfiniteFuture(), At(0)).code(), absl::StatusCode::kUnavailable);
}

// Predictions that ran late widen the margin: a request whose batch started 30 ms after a
// predicted 0 ms (nothing ahead) makes the next estimate larger by the learned error.
TEST(RequestQueueDeadlineTest, LatePredictionsWidenTheMargin) {
  DoneLog log;
  RequestQueue q(Opts(100, 1, 0));
  q.RecordService(RequestQueue::Stage::kRun, 1, absl::Milliseconds(10), At(0));
  const absl::Duration before = q.ExpectedWait();
  EXPECT_EQ(before, absl::Milliseconds(10));  // nothing ahead, one batch
  ASSERT_TRUE(q.Enqueue(log.Make(0), At(0)).ok());
  ASSERT_EQ(q.TakeUnrouted(1, At(0)).size(), 1u);
  // (TakeUnrouted hands the request out; route it back under a key and take its batch late.)
  PendingRequest r;
  r.enqueued = At(0);
  r.predicted_start = absl::ZeroDuration();
  r.done = [](const absl::Status&) {};
  q.AddRouted(std::move(r), "k", At(0));
  ASSERT_EQ(q.NextBatch(At(30'000)).size(), 1u);
  // Error 30 ms: margin 0.1 * 30 + 2 * 0.1 * 0.9 * 30 = 8.4 ms on top of the 10 ms batch.
  EXPECT_NEAR(absl::ToDoubleMilliseconds(q.ExpectedWait()), 18.4, 1e-6);
}

}  // namespace twin

namespace twin {
namespace {

// A mixed-batch queue whose chooser has measured both modes: fused a batch of n rows costs
// 2 ms + 1 ms n, unfused 2 ms + 1.5 ms n.
std::unique_ptr<RequestQueue> MixedQueue(int max_batch_size, int64_t delay_us) {
  RequestQueueOptions o = Opts(64, max_batch_size, delay_us);
  o.unfused_available = true;
  o.modes.hysteresis = 0;
  auto q = std::make_unique<RequestQueue>(o);
  for (int i = 0; i < 4; ++i) {
    q->RecordBatch(BatchMode::kFused, 1, absl::Microseconds(3000));
    q->RecordBatch(BatchMode::kFused, 8, absl::Microseconds(10000));
    q->RecordBatch(BatchMode::kUnfused, 1, absl::Microseconds(3500));
    q->RecordBatch(BatchMode::kUnfused, 8, absl::Microseconds(14000));
  }
  return q;
}

TEST(RequestQueueMixedTest, DistinctKeysMakeOneUnfusedBatchInArrivalOrder) {
  std::unique_ptr<RequestQueue> queue = MixedQueue(8, 1000000);
  RequestQueue& q = *queue;
  DoneLog log;
  for (int i = 0; i < 8; ++i) {
    ASSERT_TRUE(q.Enqueue(log.Make(i), At(i)).ok());
  }
  // Routed out of order, each to its own key.
  std::vector<PendingRequest> taken = q.TakeUnrouted(8, At(10));
  for (int i = 7; i >= 0; --i) {
    q.AddRouted(std::move(taken[static_cast<size_t>(i)]), "k" + std::to_string(i), At(11));
  }
  // No group is full and the delay has not run out, but 8 requests wait in all: ready.
  EXPECT_EQ(q.NextReadyTime(), At(0));
  RequestQueue::Batch b = q.NextBatchPlan(At(12));
  EXPECT_EQ(b.mode, BatchMode::kUnfused);
  EXPECT_EQ(b.reason, "rate");
  EXPECT_THAT(Ids(b.requests), ElementsAre(1, 2, 3, 4, 5, 6, 7, 8));
  EXPECT_EQ(q.stats().waiting, 0);
  EXPECT_EQ(q.stats().groups, 0);
}

TEST(RequestQueueMixedTest, ADominantKeyGoesFusedAndTheRestWaits) {
  std::unique_ptr<RequestQueue> queue = MixedQueue(8, 1000000);
  RequestQueue& q = *queue;
  DoneLog log;
  EnqueueRouted(q, log, 6, "popular", At(0));
  EnqueueRouted(q, log, 1, "a", At(1), 10);
  EnqueueRouted(q, log, 1, "b", At(2), 20);
  // fused(popular): 6 rows in 8 ms = 750/s against unfused 8 rows in 14 ms = 571/s.
  RequestQueue::Batch b = q.NextBatchPlan(At(5));
  EXPECT_EQ(b.mode, BatchMode::kFused);
  EXPECT_THAT(Ids(b.requests), ElementsAre(1, 2, 3, 4, 5, 6));
  // Two requests of two keys left, no group ready: nothing until the delay.
  EXPECT_TRUE(q.NextBatchPlan(At(6)).requests.empty());
  EXPECT_EQ(q.stats().waiting, 2);
}

TEST(RequestQueueMixedTest, ANonResidentKeyIsServedUnfused) {
  std::unique_ptr<RequestQueue> queue = MixedQueue(8, 1000000);
  RequestQueue& q = *queue;
  q.RecordFusion(absl::Milliseconds(50));
  q.SetResidency([](const std::string& key) { return key != "cold"; });
  DoneLog log;
  EnqueueRouted(q, log, 6, "cold", At(0));
  EnqueueRouted(q, log, 2, "warm", At(1), 10);
  // fused(cold): 6 rows in 8 + 50 ms; fused(warm) 2 rows in 4 ms = 500/s; unfused 571/s.
  RequestQueue::Batch b = q.NextBatchPlan(At(5));
  EXPECT_EQ(b.mode, BatchMode::kUnfused);
  EXPECT_EQ(b.requests.size(), 8u);
}

TEST(RequestQueueMixedTest, WithoutTheUnfusedPathBatchesHoldOneKey) {
  RequestQueue q(Opts(64, 8, 1000000));
  DoneLog log;
  for (int i = 0; i < 8; ++i) EnqueueRouted(q, log, 1, "k" + std::to_string(i), At(i), i);
  EXPECT_EQ(q.NextReadyTime(), At(1000000));  // nothing full: the delay decides
  EXPECT_TRUE(q.NextBatchPlan(At(20)).requests.empty());
  RequestQueue::Batch b = q.NextBatchPlan(At(1000000));
  EXPECT_EQ(b.mode, BatchMode::kFused);
  EXPECT_EQ(b.reason, "only mode");
  EXPECT_THAT(Ids(b.requests), ElementsAre(1));
}

}  // namespace
}  // namespace twin
