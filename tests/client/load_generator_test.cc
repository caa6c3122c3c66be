// The load generator against the in-process fake: counts, accuracy, routing, errors, modes.
#include "client/load_generator.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <set>

#include "tests/testing/fake_twin_service.h"

namespace twin::client {
namespace {

using ::testing::HasSubstr;
using twin::testing::FakeServer;
using twin::testing::FakeTwinService;
using twin::testing::StartFakeServer;

constexpr int kItemsPerTask = 8;

// Two tasks; task0's labels agree with the fake's answers, task1's never do. The fake routes
// every request without a task to task0, so routing is right exactly for task0's examples.
Workload TwoTaskWorkload() {
  Workload workload;
  workload.tasks = {"task0", "task1"};
  workload.items.resize(2);
  for (int t = 0; t < 2; ++t) {
    for (int i = 0; i < kItemsPerTask; ++i) {
      WorkItem item;
      item.task = workload.tasks[t];
      item.request.mutable_tokens()->add_input_ids(i);
      item.request.mutable_tokens()->add_input_ids(t + 2);
      const int fake_label = FakeTwinService::ExpectedLabel(item.request);
      item.label_index = t == 0 ? fake_label : 1 - fake_label;
      workload.items[t].push_back(item);
    }
  }
  return workload;
}

class LoadGeneratorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto server = StartFakeServer();
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = std::move(*server);
    ClientOptions options;
    options.target = server_->address();
    auto client = TwinClient::Create(options);
    ASSERT_TRUE(client.ok()) << client.status();
    client_ = std::move(*client);
    auto mix = TaskMix::Parse("", workload_.tasks);
    ASSERT_TRUE(mix.ok()) << mix.status();
    mix_ = *mix;
  }

  LoadResult Run(const LoadOptions& options) {
    auto result = RunLoad(client_.get(), workload_, mix_, options);
    EXPECT_TRUE(result.ok()) << result.status();
    return result.ok() ? *result : LoadResult();
  }

  static LoadOptions CountBound(int64_t requests) {
    LoadOptions options;
    options.duration = absl::ZeroDuration();
    options.max_requests = requests;
    return options;
  }

  std::unique_ptr<FakeServer> server_;
  std::unique_ptr<TwinClient> client_;
  Workload workload_ = TwoTaskWorkload();
  TaskMix mix_;
};

TEST_F(LoadGeneratorTest, ClosedLoopCountsAccuracyRoutingAndCacheHits) {
  LoadOptions options = CountBound(40);
  options.concurrency = 4;
  const LoadResult result = Run(options);
  EXPECT_EQ(result.sent, 40);
  EXPECT_EQ(result.ok, 40);
  EXPECT_EQ(result.failed, 0);
  EXPECT_EQ(result.dropped, 0);
  EXPECT_EQ(server_->service().infer_calls(), 40);
  const TaskStats& task0 = result.per_task.at("task0");
  const TaskStats& task1 = result.per_task.at("task1");
  EXPECT_EQ(task0.ok + task1.ok, 40);
  EXPECT_EQ(task0.correct, task0.ok);
  EXPECT_EQ(task1.correct, 0);
  EXPECT_EQ(result.labelled, 40);
  EXPECT_EQ(result.correct, task0.ok);
  EXPECT_DOUBLE_EQ(result.accuracy(), task0.ok / 40.0);
  EXPECT_EQ(result.routed, 40);
  EXPECT_EQ(result.routed_correct, task0.ok);
  EXPECT_EQ(task1.routed_correct, 0);
  EXPECT_EQ(result.cache_hits, 20);  // the fake hits on every second call
  EXPECT_DOUBLE_EQ(result.cache_hit_ratio(), 0.5);
  EXPECT_DOUBLE_EQ(result.server_time.queue_us, 1.0);
  EXPECT_DOUBLE_EQ(result.server_time.total_us, 10.0);
  EXPECT_LE(result.latency_p50, result.latency_p90);
  EXPECT_LE(result.latency_p90, result.latency_p99);
  EXPECT_LE(result.latency_p99, result.latency_max);
  EXPECT_GT(result.latency_max, absl::ZeroDuration());
  const std::string summary = result.Summary();
  EXPECT_THAT(summary, HasSubstr("sent 40, ok 40, failed 0"));
  EXPECT_THAT(summary, HasSubstr("cache hit ratio: 0.5000 (20/40 ok)"));
  EXPECT_THAT(summary, HasSubstr("task1"));
}

// A reply from the wrong task is wrong even when its label index equals the example's.
TEST_F(LoadGeneratorTest, AnswerFromAnotherTaskIsNeverCorrect) {
  for (WorkItem& item : workload_.items[1]) {
    item.label_index = FakeTwinService::ExpectedLabel(item.request);  // the fake's answer
  }
  LoadOptions options = CountBound(40);
  const LoadResult routed = Run(options);  // the fake answers every routed request as task0
  EXPECT_GT(routed.per_task.at("task1").ok, 0);
  EXPECT_EQ(routed.per_task.at("task1").correct, 0);
  options.send_task = true;  // now the fake answers as task1, with the same label index
  const LoadResult named = Run(options);
  EXPECT_EQ(named.per_task.at("task1").correct, named.per_task.at("task1").ok);
}

TEST_F(LoadGeneratorTest, SendTaskMakesTheServerAnswerWithThatTask) {
  LoadOptions options = CountBound(20);
  options.concurrency = 2;
  options.send_task = true;
  const LoadResult result = Run(options);
  EXPECT_EQ(result.ok, 20);
  EXPECT_EQ(result.routed, 0);
  EXPECT_EQ(result.correct, result.per_task.at("task0").ok);
  EXPECT_THAT(result.Summary(), HasSubstr("routing accuracy: n/a"));
}

TEST_F(LoadGeneratorTest, FailedCallsAreCountedByCode) {
  server_->service().FailEveryNth(4, grpc::Status(grpc::StatusCode::UNAVAILABLE, "flaky"));
  LoadOptions options = CountBound(40);
  options.concurrency = 3;
  const LoadResult result = Run(options);
  EXPECT_EQ(result.sent, 40);
  EXPECT_EQ(result.failed, 10);
  EXPECT_EQ(result.ok, 30);
  ASSERT_EQ(result.errors_by_code.size(), 1u);
  EXPECT_EQ(result.errors_by_code.at("UNAVAILABLE"), 10);
  EXPECT_EQ(result.labelled, 30);  // failed calls say nothing about accuracy
  EXPECT_THAT(result.Summary(), HasSubstr("errors: UNAVAILABLE=10"));
}

TEST_F(LoadGeneratorTest, SlowServerGivesDeadlineExceeded) {
  server_->service().SetDelay(absl::Seconds(30));
  LoadOptions options = CountBound(3);
  options.timeout = absl::Milliseconds(100);
  const LoadResult result = Run(options);
  EXPECT_EQ(result.failed, 3);
  EXPECT_EQ(result.errors_by_code.at("DEADLINE_EXCEEDED"), 3);
  EXPECT_EQ(result.latency_max, absl::ZeroDuration());  // latency is over ok replies only
}

TEST_F(LoadGeneratorTest, ClosedLoopOverStreams) {
  server_->service().FailEveryNth(5, grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "bad"));
  LoadOptions options = CountBound(30);
  options.concurrency = 2;
  options.use_streams = true;
  options.stream_window = 4;
  const LoadResult result = Run(options);
  EXPECT_EQ(result.sent, 30);
  EXPECT_EQ(result.ok, 24);
  EXPECT_EQ(result.errors_by_code.at("INVALID_ARGUMENT"), 6);
  EXPECT_EQ(result.per_task.at("task0").correct, result.per_task.at("task0").ok);
  EXPECT_EQ(server_->service().stream_messages(), 30);
  EXPECT_EQ(server_->service().streams_opened(), 2);
  EXPECT_EQ(server_->service().infer_calls(), 0);
}

TEST_F(LoadGeneratorTest, StreamThatStopsAnsweringIsGivenUpOn) {
  server_->service().SetDelay(absl::Seconds(30));
  LoadOptions options = CountBound(5);
  options.use_streams = true;
  options.timeout = absl::Milliseconds(100);
  const LoadResult result = Run(options);
  EXPECT_EQ(result.sent, 1);  // the window of 1 never frees up
  EXPECT_EQ(result.errors_by_code.at("DEADLINE_EXCEEDED"), 1);
}

TEST_F(LoadGeneratorTest, OpenLoopForADuration) {
  LoadOptions options;
  options.mode = LoadOptions::Mode::kOpenLoop;
  options.rate_per_s = 100;
  options.duration = absl::Milliseconds(300);
  const LoadResult result = Run(options);
  EXPECT_GT(result.sent + result.dropped, 0);
  EXPECT_EQ(result.ok + result.failed, result.sent);
  EXPECT_EQ(result.failed, 0);
  EXPECT_EQ(result.correct, result.per_task.count("task0") ? result.per_task.at("task0").ok : 0);
  EXPECT_EQ(server_->service().infer_calls(), result.sent);
}

TEST_F(LoadGeneratorTest, OpenLoopForACount) {
  LoadOptions options = CountBound(20);
  options.mode = LoadOptions::Mode::kOpenLoop;
  options.rate_per_s = 400;
  const LoadResult result = Run(options);
  EXPECT_EQ(result.sent + result.dropped, 20);
  EXPECT_EQ(result.ok, result.sent);
}

TEST_F(LoadGeneratorTest, OpenLoopDropsArrivalsBeyondTheOutstandingCap) {
  server_->service().SetDelay(absl::Milliseconds(300));
  LoadOptions options = CountBound(30);
  options.mode = LoadOptions::Mode::kOpenLoop;
  options.rate_per_s = 300;
  options.max_outstanding = 1;
  const LoadResult result = Run(options);
  EXPECT_EQ(result.sent + result.dropped, 30);
  EXPECT_GT(result.dropped, 0);
  EXPECT_THAT(result.Summary(), HasSubstr("dropped"));
}

TEST_F(LoadGeneratorTest, InconsistentOptionsAreRejected) {
  LoadOptions unbounded;
  unbounded.duration = absl::ZeroDuration();
  EXPECT_THAT(RunLoad(client_.get(), workload_, mix_, unbounded).status().message(),
              HasSubstr("duration or a request count"));
  LoadOptions no_rate = CountBound(1);
  no_rate.mode = LoadOptions::Mode::kOpenLoop;
  EXPECT_THAT(RunLoad(client_.get(), workload_, mix_, no_rate).status().message(),
              HasSubstr("rate_per_s"));
  LoadOptions no_workers = CountBound(1);
  no_workers.concurrency = 0;
  EXPECT_EQ(RunLoad(client_.get(), workload_, mix_, no_workers).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(RunLoad(client_.get(), Workload(), mix_, CountBound(1)).status().code(),
            absl::StatusCode::kInvalidArgument);
}

// --temperatures: every request carries its own temperature in [min, max], log-uniform, so
// the server sees many router-weight mixtures; the same seed gives the same temperatures.
TEST_F(LoadGeneratorTest, PerRequestTemperaturesSpanTheRange) {
  LoadOptions options = CountBound(200);
  options.temperature_min = 0.25;
  options.temperature_max = 4.0;
  const LoadResult result = Run(options);
  EXPECT_EQ(result.ok, 200);
  const std::vector<float> t = server_->service().temperatures();
  ASSERT_EQ(t.size(), 200u);
  int below_one = 0;
  std::set<float> distinct;
  for (float x : t) {
    EXPECT_GE(x, 0.25f);
    EXPECT_LE(x, 4.0f);
    below_one += x < 1.0f;
    distinct.insert(x);
  }
  EXPECT_GT(distinct.size(), 190u);
  // Log-uniform: half below the geometric mean 1 (binomial, 200 draws: far inside 60..140).
  EXPECT_GT(below_one, 60);
  EXPECT_LT(below_one, 140);

  LoadOptions bad = CountBound(1);
  bad.temperature_min = 2;
  bad.temperature_max = 1;
  EXPECT_THAT(RunLoad(client_.get(), workload_, mix_, bad).status().message(),
              HasSubstr("temperatures need 0 < min <= max"));
  bad.temperature_min = 0;
  EXPECT_FALSE(RunLoad(client_.get(), workload_, mix_, bad).ok());
}

// The JSON form of a result carries the same counts as the result.
TEST_F(LoadGeneratorTest, JsonCarriesTheFigures) {
  LoadOptions options = CountBound(10);
  const LoadResult result = Run(options);
  const std::string json = result.Json();
  EXPECT_THAT(json, HasSubstr("\"sent\": 10, \"ok\": 10, \"failed\": 0"));
  EXPECT_THAT(json, HasSubstr("\"per_task\": {\"task0\": {"));
  EXPECT_THAT(json, HasSubstr("\"latency_ms\": {\"mean\": "));
  EXPECT_EQ(json.back(), '\n');
}

TEST(PercentileTest, NearestRank) {
  std::vector<absl::Duration> sample;
  for (int i = 1; i <= 100; ++i) sample.push_back(absl::Milliseconds(i));
  EXPECT_EQ(Percentile(sample, 0.5), absl::Milliseconds(50));
  EXPECT_EQ(Percentile(sample, 0.9), absl::Milliseconds(90));
  EXPECT_EQ(Percentile(sample, 0.99), absl::Milliseconds(99));
  EXPECT_EQ(Percentile(sample, 1.0), absl::Milliseconds(100));
  EXPECT_EQ(Percentile({}, 0.5), absl::ZeroDuration());
  EXPECT_EQ(Percentile({absl::Milliseconds(3)}, 0.01), absl::Milliseconds(3));
}

}  // namespace
}  // namespace twin::client
