// Generation end to end: a Llama-family zoo (tests/core/model/hf_decoder_test_zoo.h) merged by
// twin-merge and served by twin-server's Generate: streamed tokens and text, routing once per
// prompt, greedy determinism, seeded sampling, stop sequences, concurrent (continuously
// batched) sequences equal to the same sequences one at a time, cancellation freeing the KV
// cache, KV admission, static mode, and every bad input.
#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>
#include <gmock/gmock.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <limits>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "core/model/generation.h"
#include "core/model/hf_decoder.h"
#include "core/store/manifest.h"
#include "merge_offline/merge_config.h"
#include "merge_offline/merge_job.h"
#include "server/generator.h"
#include "server/server_config.h"
#include "server/twin_server.h"
#include "tests/core/model/hf_decoder_test_zoo.h"
#include "tests/core/model/hf_test_zoo.h"
#include "tests/testing/rounding.h"
#include "tests/testing/temp_dir.h"
#include "twinmerge/v1/twinmerge.grpc.pb.h"

namespace twin {
namespace {

using ::testing::HasSubstr;
using twin::testing::TempDir;
using twinmerge::v1::GenerateRequest;
using twinmerge::v1::GenerateResponse;

// One Generate call's replies, put together.
struct Generation {
  grpc::Status status;
  std::vector<GenerateResponse> replies;
  std::vector<int64_t> tokens;
  std::string text;
  std::string finish;
  GenerateResponse first, last;
};

class GenerateTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { Build({}, ""); }
  // The zoo written with `options`, merged with its merge.yaml + `extra_yaml`.
  static void Build(const twin::testing::HfDecoderTestZooOptions& options,
                    const std::string& extra_yaml) {
    dir_ = new TempDir();
    zoo_ = new twin::testing::HfDecoderTestZoo(
        twin::testing::WriteHfDecoderTestZoo(dir_->path(), options));
    auto config = ParseMergeConfig(zoo_->merge_yaml + extra_yaml, dir_->path());
    ASSERT_TRUE(config.ok()) << config.status();
    MergeJobOptions merge;
    merge.quiet = true;
    auto result = RunMergeJob(*config, merge);
    ASSERT_TRUE(result.ok()) << result.status();
  }
  static void TearDownTestSuite() {
    delete zoo_;
    delete dir_;
    zoo_ = nullptr;
    dir_ = nullptr;
  }

  ServerConfig Config() {
    ServerConfig c;
    c.listen_address = "127.0.0.1:0";
    c.admin_listen_address = "127.0.0.1:0";
    c.metrics_address = "";
    c.artifact_uri = dir_->Join("store");
    c.cache_dir = dir_->Join(absl::StrCat("cache-", counter_++));
    c.device = "cpu";
    c.warmup_requests = 1;
    c.drain_timeout_ms = 2000;
    c.generation.default_max_new_tokens = 8;
    c.generation.max_new_tokens = 64;
    return c;
  }

  std::unique_ptr<TwinServer> Start(const ServerConfig& config) {
    auto server = TwinServer::Start(config);
    EXPECT_TRUE(server.ok()) << server.status();
    if (!server.ok()) return nullptr;
    absl::Status loaded = (*server)->LoadVersion();
    EXPECT_TRUE(loaded.ok()) << loaded;
    stub_ = twinmerge::v1::TwinMerge::NewStub(grpc::CreateChannel(
        absl::StrCat("127.0.0.1:", (*server)->port()), grpc::InsecureChannelCredentials()));
    return *std::move(server);
  }

  // `cancel_after` > 0: cancels the call after that many replies.
  Generation Generate(const GenerateRequest& request, int cancel_after = 0) {
    Generation g;
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
    auto reader = stub_->Generate(&context, request);
    GenerateResponse reply;
    while (reader->Read(&reply)) {
      g.replies.push_back(reply);
      g.tokens.insert(g.tokens.end(), reply.token_ids().begin(), reply.token_ids().end());
      g.text += reply.text();
      if (!reply.finish_reason().empty()) g.finish = reply.finish_reason();
      if (cancel_after > 0 && static_cast<int>(g.replies.size()) == cancel_after) {
        context.TryCancel();
      }
    }
    g.status = reader->Finish();
    if (!g.replies.empty()) {
      g.first = g.replies.front();
      g.last = g.replies.back();
    }
    return g;
  }

  static GenerateRequest Tokens(const std::vector<int64_t>& ids, int max_new = 12) {
    GenerateRequest r;
    r.mutable_tokens()->mutable_input_ids()->Add(ids.begin(), ids.end());
    r.set_max_new_tokens(max_new);
    r.set_ignore_eos(true);
    return r;
  }
  static GenerateRequest Text(const std::string& text, int max_new = 12) {
    GenerateRequest r;
    r.set_text(text);
    r.set_max_new_tokens(max_new);
    r.set_ignore_eos(true);
    return r;
  }

  // The gauge's value in the server's metrics text.
  static double Gauge(TwinServer& server, const std::string& name) {
    for (absl::string_view line : absl::StrSplit(server.metrics().Scrape(), '\n')) {
      if (absl::StartsWith(line, name + " ")) {
        double v = 0;
        if (absl::SimpleAtod(line.substr(name.size() + 1), &v)) return v;
      }
    }
    return std::numeric_limits<double>::quiet_NaN();
  }

  static TempDir* dir_;
  static twin::testing::HfDecoderTestZoo* zoo_;
  static int counter_;
  std::unique_ptr<twinmerge::v1::TwinMerge::Stub> stub_;
};

TempDir* GenerateTest::dir_ = nullptr;
twin::testing::HfDecoderTestZoo* GenerateTest::zoo_ = nullptr;
int GenerateTest::counter_ = 0;

TEST(StopPrefixTest, HoldsBackOnlyWhatMayStartAStop) {
  EXPECT_EQ(StopPrefixLength("hello wor", {"world"}), 3u);
  EXPECT_EQ(StopPrefixLength("hello", {"world"}), 0u);
  EXPECT_EQ(StopPrefixLength("abcab", {"abc", "bx"}), 2u);
  EXPECT_EQ(StopPrefixLength("xyz", {}), 0u);
  EXPECT_EQ(StopPrefixLength("xa", {"ab"}), 1u);
  // A whole stop is not a prefix to hold (the caller cuts it).
  EXPECT_EQ(StopPrefixLength("ab", {"ab"}), 0u);
}

TEST_F(GenerateTest, StreamsTokensAndTextRoutedOnce) {
  auto server = Start(Config());
  ASSERT_NE(server, nullptr);
  auto info = server->ModelInfo();
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->model_kind(), "generation");
  EXPECT_EQ(info->max_context_tokens(), zoo_->base.max_positions);
  for (int t = 0; t < 3; ++t) {
    const std::string prompt = twin::testing::HfDecoderTestZooPrompts(t, 1)[0];
    Generation g = Generate(Text(prompt, 10));
    ASSERT_TRUE(g.status.ok()) << g.status.error_message();
    EXPECT_EQ(g.tokens.size(), 10u);
    EXPECT_EQ(g.finish, "length");
    EXPECT_EQ(g.last.usage().generated_tokens(), 10);
    EXPECT_EQ(g.last.usage().prompt_tokens(), static_cast<int>(prompt.size()));
    EXPECT_GT(g.last.usage().time_to_first_token_us(), 0);
    EXPECT_GE(g.last.usage().total_us(), g.last.usage().time_to_first_token_us());
    // Routing on the first reply only; the prompt's own task on top.
    ASSERT_GT(g.first.router_weights_size(), 0);
    EXPECT_EQ(g.first.router_weights(0).task(), zoo_->tasks[t]) << prompt;
    EXPECT_EQ(g.first.task(), zoo_->tasks[t]);
    EXPECT_EQ(g.first.batch_mode(), "unfused");
    EXPECT_EQ(g.first.artifact_version(), "v1");
    for (size_t i = 1; i < g.replies.size(); ++i) {
      EXPECT_EQ(g.replies[i].router_weights_size(), 0);
    }
    // The pieces are the decoded tokens (byte-level: every id below 256 is its byte).
    std::string bytes;
    for (int64_t id : g.tokens) {
      ASSERT_GE(id, 0);
      ASSERT_LT(id, zoo_->base.vocab);
      if (id < 256) bytes += static_cast<char>(id);
    }
    auto tokenizer = twin::testing::PublishedTokenizer(zoo_->store, dir_->Join("tok"));
    ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
    EXPECT_EQ(g.text, (*tokenizer)->Decode(g.tokens));
  }
  server->Shutdown();
}

TEST_F(GenerateTest, GreedyIsDeterministicAndSamplingFollowsTheSeed) {
  auto server = Start(Config());
  ASSERT_NE(server, nullptr);
  const GenerateRequest greedy = Tokens({97, 98, 99, 32, 100}, 16);
  Generation a = Generate(greedy), b = Generate(greedy);
  ASSERT_TRUE(a.status.ok()) << a.status.error_message();
  EXPECT_EQ(a.tokens, b.tokens);
  GenerateRequest sampled = greedy;
  sampled.mutable_sampling()->set_temperature(1.5f);
  sampled.mutable_sampling()->set_top_p(0.95f);
  sampled.mutable_sampling()->set_seed(7);
  Generation s1 = Generate(sampled), s2 = Generate(sampled);
  ASSERT_TRUE(s1.status.ok()) << s1.status.error_message();
  EXPECT_EQ(s1.tokens, s2.tokens);
  EXPECT_EQ(s1.last.usage().seed(), 7u);
  // Other seeds draw other sequences (16 tokens at temperature 1.5 over 260 ids: the chance
  // that all of four seeds repeat seed 7's sequence is nil).
  int differ = 0;
  for (uint64_t seed : {8, 9, 10, 11}) {
    sampled.mutable_sampling()->set_seed(seed);
    differ += Generate(sampled).tokens != s1.tokens;
  }
  EXPECT_GT(differ, 0);
  // Seed 0: the server draws one and reports it; replaying it gives the same tokens.
  sampled.mutable_sampling()->set_seed(0);
  Generation drawn = Generate(sampled);
  ASSERT_TRUE(drawn.status.ok());
  sampled.mutable_sampling()->set_seed(drawn.last.usage().seed());
  EXPECT_EQ(Generate(sampled).tokens, drawn.tokens);
  server->Shutdown();
}

TEST_F(GenerateTest, StopSequencesEndTheTextWhereTheyStart) {
  auto server = Start(Config());
  ASSERT_NE(server, nullptr);
  GenerateRequest request = Text("abc def", 24);
  Generation full = Generate(request);
  ASSERT_TRUE(full.status.ok()) << full.status.error_message();
  ASSERT_GE(full.text.size(), 6u);
  // A stop string taken from the middle of the full text: its characters from the third on,
  // two of them (whole UTF-8 characters: a stop must be valid UTF-8).
  auto next_char = [&](size_t i) {
    do ++i;
    while (i < full.text.size() && (static_cast<unsigned char>(full.text[i]) & 0xC0) == 0x80);
    return i;
  };
  const size_t begin = next_char(next_char(0));
  ASSERT_LT(begin, full.text.size());
  const std::string stop = full.text.substr(begin, next_char(next_char(begin)) - begin);
  const size_t at = full.text.find(stop);
  request.add_stop(stop);
  Generation stopped = Generate(request);
  ASSERT_TRUE(stopped.status.ok()) << stopped.status.error_message();
  EXPECT_EQ(stopped.finish, "stop");
  EXPECT_EQ(stopped.text, full.text.substr(0, at));
  EXPECT_LT(stopped.tokens.size(), full.tokens.size());
  // The tokens are the full run's first ones.
  EXPECT_TRUE(std::equal(stopped.tokens.begin(), stopped.tokens.end(), full.tokens.begin()));
  server->Shutdown();
}

TEST_F(GenerateTest, EosEndsGenerationUnlessIgnored) {
  auto server = Start(Config());
  ASSERT_NE(server, nullptr);
  // Force the eos: a model whose greedy path reaches id 256 is not guaranteed, so check the
  // rule on whatever the model does: with ignore_eos the run is max_new_tokens long; without,
  // it ends at its first eos, if any, with finish "stop".
  GenerateRequest request = Tokens({104, 105}, 48);
  Generation ignoring = Generate(request);
  ASSERT_TRUE(ignoring.status.ok());
  EXPECT_EQ(ignoring.tokens.size(), 48u);
  request.set_ignore_eos(false);
  Generation stopping = Generate(request);
  ASSERT_TRUE(stopping.status.ok());
  auto eos = std::find(ignoring.tokens.begin(), ignoring.tokens.end(), twin::testing::kZooEosId);
  if (eos == ignoring.tokens.end()) {
    EXPECT_EQ(stopping.tokens, ignoring.tokens);
    EXPECT_EQ(stopping.finish, "length");
  } else {
    EXPECT_EQ(stopping.tokens, std::vector<int64_t>(ignoring.tokens.begin(), eos + 1));
    EXPECT_EQ(stopping.finish, "stop");
  }
  server->Shutdown();
}

TEST_F(GenerateTest, ConcurrentSequencesEqualOneAtATime) {
  auto server = Start(Config());
  ASSERT_NE(server, nullptr);
  // Different tasks (different router weights), prompt lengths and lengths to generate, so
  // sequences join and leave the batch at different steps.
  std::vector<GenerateRequest> requests;
  for (int t = 0; t < 3; ++t) {
    for (const std::string& p : twin::testing::HfDecoderTestZooPrompts(t, 3)) {
      requests.push_back(Text(p, 6 + static_cast<int>(requests.size()) % 7));
    }
  }
  std::vector<Generation> alone;
  for (const GenerateRequest& r : requests) alone.push_back(Generate(r));
  std::vector<Generation> together(requests.size());
  std::vector<std::thread> callers;
  for (size_t i = 0; i < requests.size(); ++i) {
    callers.emplace_back([&, i] { together[i] = Generate(requests[i]); });
  }
  for (std::thread& c : callers) c.join();
  for (size_t i = 0; i < requests.size(); ++i) {
    ASSERT_TRUE(alone[i].status.ok()) << alone[i].status.error_message();
    ASSERT_TRUE(together[i].status.ok()) << together[i].status.error_message();
    EXPECT_EQ(together[i].tokens, alone[i].tokens) << requests[i].text();
    EXPECT_EQ(together[i].text, alone[i].text);
    EXPECT_EQ(together[i].first.task(), alone[i].first.task());
  }
  server->Shutdown();
}

TEST_F(GenerateTest, CancellationFreesTheCache) {
  ServerConfig config = Config();
  config.metrics_address = "127.0.0.1:0";
  auto server = Start(config);
  ASSERT_NE(server, nullptr);
  Generation g = Generate(Tokens({97, 98}, 60), /*cancel_after=*/2);
  EXPECT_EQ(g.status.error_code(), grpc::StatusCode::CANCELLED);
  EXPECT_LT(g.tokens.size(), 60u);
  // The worker ends the sequence before its next step, which frees the cache.
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  while (Gauge(*server, "twin_kv_cache_bytes") != 0 && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(5));
  }
  EXPECT_EQ(Gauge(*server, "twin_kv_cache_bytes"), 0);
  EXPECT_EQ(Gauge(*server, "twin_generation_active_sequences"), 0);
  // The server goes on serving.
  EXPECT_TRUE(Generate(Tokens({97, 98}, 3)).status.ok());
  server->Shutdown();
}

// limits.max_in_flight_per_client counts Generate streams: a client at its limit is refused at
// once (RESOURCE_EXHAUSTED naming the limit), another client is not, and the slot comes back
// when the stream ends.
TEST_F(GenerateTest, OneClientsStreamsCountAgainstItsLimit) {
  ServerConfig config = Config();
  config.max_in_flight_per_client = 1;
  auto server = Start(config);
  ASSERT_NE(server, nullptr);
  // The first stream's first reply blocks the generation until `release`: its slot is held.
  absl::Notification first_reply, release, first_done;
  absl::Status first_status;
  GenerateCallbacks held;
  held.write = [&](twinmerge::v1::GenerateResponse) {
    if (!first_reply.HasBeenNotified()) first_reply.Notify();
    release.WaitForNotification();
  };
  held.done = [&](const absl::Status& status) {
    first_status = status;
    first_done.Notify();
  };
  auto never = std::make_shared<std::atomic<bool>>(false);
  server->SubmitGenerate(Tokens({97, 98}, 4), absl::InfiniteFuture(), never, "10.0.0.1", held);
  ASSERT_TRUE(first_reply.WaitForNotificationWithTimeout(absl::Seconds(30)));

  struct Outcome {
    absl::Notification done;
    absl::Status status;
  };
  auto submit = [&](const std::string& client, Outcome& outcome) {
    GenerateCallbacks callbacks;
    callbacks.write = [](twinmerge::v1::GenerateResponse) {};
    callbacks.done = [&outcome](const absl::Status& status) {
      outcome.status = status;
      outcome.done.Notify();
    };
    server->SubmitGenerate(Tokens({97, 98}, 2), absl::InfiniteFuture(), never, client,
                           std::move(callbacks));
  };
  Outcome refused, other;
  submit("10.0.0.1", refused);
  ASSERT_TRUE(refused.done.HasBeenNotified());  // answered inline
  EXPECT_EQ(refused.status.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(std::string(refused.status.message()), HasSubstr("has 1 requests in flight"));
  EXPECT_THAT(std::string(refused.status.message()), HasSubstr("limits.max_in_flight_per_client"));
  submit("10.0.0.2", other);  // another address: queued behind the first
  release.Notify();
  ASSERT_TRUE(first_done.WaitForNotificationWithTimeout(absl::Seconds(30)));
  EXPECT_TRUE(first_status.ok()) << first_status;
  ASSERT_TRUE(other.done.WaitForNotificationWithTimeout(absl::Seconds(30)));
  EXPECT_TRUE(other.status.ok()) << other.status;
  // The first client's slot is free again.
  Outcome again;
  submit("10.0.0.1", again);
  ASSERT_TRUE(again.done.WaitForNotificationWithTimeout(absl::Seconds(30)));
  EXPECT_TRUE(again.status.ok()) << again.status;
  server->Shutdown();
}

TEST_F(GenerateTest, KvBudgetRefusesWhatCanNeverFit) {
  ServerConfig config = Config();
  // One byte: no sequence's cache ever fits.
  config.generation.kv_cache_bytes = 1;
  config.warmup_requests = 0;
  auto server = Start(config);
  ASSERT_NE(server, nullptr);
  Generation g = Generate(Tokens({97, 98}, 4));
  EXPECT_EQ(g.status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_THAT(g.status.error_message(), HasSubstr("generation.kv_cache_bytes"));
  server->Shutdown();
}

TEST_F(GenerateTest, StaticModeRunsThetaStarAlone) {
  ServerConfig config = Config();
  config.mode = ServingMode::kStatic;
  auto server = Start(config);
  ASSERT_NE(server, nullptr);
  Generation g = Generate(Tokens({97, 98, 99}, 5));
  ASSERT_TRUE(g.status.ok()) << g.status.error_message();
  EXPECT_EQ(g.first.batch_mode(), "static");
  EXPECT_EQ(g.first.router_weights_size(), 0);
  EXPECT_EQ(g.tokens.size(), 5u);
  server->Shutdown();
}

TEST_F(GenerateTest, BadRequestsNameTheField) {
  ServerConfig config = Config();
  config.generation.max_stop_sequences = 2;
  auto server = Start(config);
  ASSERT_NE(server, nullptr);
  struct Case {
    GenerateRequest request;
    std::string field;
  };
  std::vector<Case> cases;
  cases.push_back({GenerateRequest(), "no prompt"});
  cases.push_back({Text(""), "text is empty"});
  cases.push_back({Tokens({}), "tokens.input_ids is empty"});
  cases.push_back({Tokens({1, 999}), "tokens.input_ids[1]"});
  cases.push_back({Tokens({1, -2}), "tokens.input_ids[1]"});
  cases.push_back({Tokens(std::vector<int64_t>(zoo_->base.max_positions, 97)), "prompt limit"});
  cases.push_back({Text(std::string(zoo_->base.max_positions + 5, 'a')), "prompt limit"});
  cases.push_back({Tokens({1, 2}, -1), "max_new_tokens"});
  cases.push_back({Tokens({1, 2}, 65), "max_new_tokens"});
  GenerateRequest r = Tokens({1, 2});
  r.mutable_sampling()->set_temperature(-1);
  cases.push_back({r, "sampling.temperature"});
  r = Tokens({1, 2});
  r.mutable_sampling()->set_temperature(std::nanf(""));
  cases.push_back({r, "sampling.temperature"});
  r = Tokens({1, 2});
  r.mutable_sampling()->set_top_k(-3);
  cases.push_back({r, "sampling.top_k"});
  r = Tokens({1, 2});
  r.mutable_sampling()->set_top_p(1.5f);
  cases.push_back({r, "sampling.top_p"});
  r = Tokens({1, 2});
  r.set_task("nope");
  cases.push_back({r, "unknown task 'nope'"});
  r = Tokens({1, 2});
  r.mutable_routing()->set_top_k(9);
  cases.push_back({r, "routing.top_k"});
  r = Tokens({1, 2});
  for (int i = 0; i < 3; ++i) r.add_stop("x");
  cases.push_back({r, "stop has 3"});
  r = Tokens({1, 2});
  r.add_stop("");
  cases.push_back({r, "stop[0] is empty"});
  r = Tokens({1, 2});
  r.mutable_tokens()->add_attention_mask(1);
  r.mutable_tokens()->add_attention_mask(0);
  cases.push_back({r, "tokens.attention_mask[1]"});
  for (const Case& c : cases) {
    Generation g = Generate(c.request);
    EXPECT_EQ(g.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << c.field;
    EXPECT_THAT(g.status.error_message(), HasSubstr(c.field));
    EXPECT_TRUE(g.replies.empty()) << c.field;
  }
  // Classification on a generative version.
  twinmerge::v1::InferRequest infer;
  infer.set_text("abc");
  twinmerge::v1::InferResponse reply;
  grpc::ClientContext context;
  grpc::Status status = stub_->Infer(&context, infer, &reply);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_THAT(status.error_message(), HasSubstr("use Generate"));
  // A task given: that task's twin, weights one-hot.
  r = Tokens({1, 2});
  r.set_task("beta");
  Generation g = Generate(r);
  ASSERT_TRUE(g.status.ok()) << g.status.error_message();
  ASSERT_EQ(g.first.router_weights_size(), 1);
  EXPECT_EQ(g.first.router_weights(0).task(), "beta");
  EXPECT_EQ(g.first.router_weights(0).weight(), 1.0f);
  server->Shutdown();
}


// A version that keeps each expert's LM head (head_pattern '^lm_head\.'), with full-rank twins
// (ratio 1): a sequence of a named task runs theta* plus that task's whole task vector and reads
// that task's own head, so it generates what the expert itself generates.
class PerTaskLmHeadTest : public GenerateTest {
 protected:
  static void SetUpTestSuite() { Build({.ratio = 1.0}, "head_pattern: '^lm_head\\.'\n"); }

  // Greedy tokens of expert `task` itself, through the decoder without the server, when every
  // step's top two logits are further apart than twice the bound on a logit between two
  // float32 evaluations (the served path sums theta* and the factors in another order; 4x one
  // forward's bound, as twin-eval's test takes it); nullopt when a step is that close.
  static std::optional<std::vector<int64_t>> ClearExpertGreedy(int task,
                                                               const std::vector<int64_t>& prompt,
                                                               int n) {
    absl::StatusOr<HfCausalLm> lm = LoadHfCausalLm(zoo_->expert_dirs[task]);
    EXPECT_TRUE(lm.ok()) << lm.status();
    if (!lm.ok()) return std::nullopt;
    const DenseParams params(lm->weights);
    std::vector<int64_t> row = prompt;
    c10::InferenceMode guard;
    for (int k = 0; k < n; ++k) {
      absl::StatusOr<at::Tensor> logits = lm->decoder->Logits({row}, params);
      EXPECT_TRUE(logits.ok()) << logits.status();
      if (!logits.ok()) return std::nullopt;
      const at::Tensor last = (*logits)[0][-1];
      const auto top = last.topk(2);
      const double margin = (std::get<0>(top)[0] - std::get<0>(top)[1]).item<double>();
      const double bound =
          4 * twin::testing::ForwardError(twin::testing::HfDecoderDepth(zoo_->base),
                                          twin::testing::HfDecoderWidth(zoo_->base, row.size()),
                                          last.abs().max().item<double>());
      if (!(margin > 2 * bound)) return std::nullopt;
      row.push_back(std::get<1>(top)[0].item<int64_t>());
    }
    return std::vector<int64_t>(row.end() - n, row.end());
  }
};

TEST_F(PerTaskLmHeadTest, ANamedTaskGeneratesAsItsExpert) {
  auto server = Start(Config());
  ASSERT_NE(server, nullptr);
  std::vector<GenerateRequest> requests;
  std::vector<std::vector<int64_t>> expected;
  for (int t = 0; t < 3; ++t) {
    // The first of the task's prompts whose expert continuation is clear of rounding.
    std::optional<std::vector<int64_t>> want;
    std::vector<int64_t> ids;
    for (const std::string& prompt : twin::testing::HfDecoderTestZooPrompts(t, 16)) {
      ids.assign(prompt.begin(), prompt.end());  // ids 0-255 are the bytes
      want = ClearExpertGreedy(t, ids, 8);
      if (want) break;
    }
    ASSERT_TRUE(want.has_value()) << zoo_->tasks[t] << ": no prompt with clear margins";
    GenerateRequest r = Tokens(ids, 8);
    r.set_task(zoo_->tasks[t]);
    requests.push_back(r);
    expected.push_back(*want);
  }
  for (int t = 0; t < 3; ++t) {
    Generation g = Generate(requests[t]);
    ASSERT_TRUE(g.status.ok()) << g.status.error_message();
    EXPECT_EQ(g.tokens, expected[t]) << zoo_->tasks[t];
    EXPECT_EQ(g.first.task(), zoo_->tasks[t]);
  }
  // The three tasks' sequences decoded together: each row still reads its own head.
  std::vector<Generation> together(3);
  std::vector<std::thread> callers;
  for (int t = 0; t < 3; ++t) callers.emplace_back([&, t] { together[t] = Generate(requests[t]); });
  for (std::thread& c : callers) c.join();
  for (int t = 0; t < 3; ++t) {
    ASSERT_TRUE(together[t].status.ok()) << together[t].status.error_message();
    EXPECT_EQ(together[t].tokens, expected[t]) << zoo_->tasks[t];
  }
  // Without a named task the router picks the task, and with it the head.
  Generation routed = Generate(Text(twin::testing::HfDecoderTestZooPrompts(1, 1)[0], 4));
  ASSERT_TRUE(routed.status.ok()) << routed.status.error_message();
  EXPECT_EQ(routed.first.task(), zoo_->tasks[1]);
  server->Shutdown();
}

TEST_F(PerTaskLmHeadTest, StaticModeReadsTheTasksHeadOverThetaStar) {
  ServerConfig config = Config();
  config.mode = ServingMode::kStatic;
  auto server = Start(config);
  ASSERT_NE(server, nullptr);
  // One prompt, three heads over the same theta*: the heads' answers differ.
  std::set<std::vector<int64_t>> answers;
  for (int t = 0; t < 3; ++t) {
    GenerateRequest r = Tokens({97, 98, 99, 32, 100}, 8);
    r.set_task(zoo_->tasks[t]);
    Generation g = Generate(r);
    ASSERT_TRUE(g.status.ok()) << g.status.error_message();
    EXPECT_EQ(g.first.batch_mode(), "static");
    EXPECT_EQ(g.first.task(), zoo_->tasks[t]);
    EXPECT_EQ(g.tokens.size(), 8u);
    answers.insert(g.tokens);
  }
  EXPECT_GT(answers.size(), 1u);
  // No task named: routed for its head only.
  Generation routed = Generate(Text(twin::testing::HfDecoderTestZooPrompts(2, 1)[0], 4));
  ASSERT_TRUE(routed.status.ok()) << routed.status.error_message();
  EXPECT_EQ(routed.first.task(), zoo_->tasks[2]);
  EXPECT_EQ(routed.first.router_weights_size(), 0);
  server->Shutdown();
}

// Only an untied LM head may be kept per task: a version keeping another tensor per task is
// refused at load, naming it.
TEST(PerTaskTensorsTest, OtherPerTaskTensorsAreRefused) {
  TempDir dir;
  const twin::testing::HfDecoderTestZoo zoo = twin::testing::WriteHfDecoderTestZoo(dir.path());
  auto config = ParseMergeConfig(zoo.merge_yaml + "head_pattern: '^model\\.norm\\.'\n", dir.path());
  ASSERT_TRUE(config.ok()) << config.status();
  MergeJobOptions options;
  options.quiet = true;
  ASSERT_TRUE(RunMergeJob(*config, options).ok());
  ServerConfig c;
  c.listen_address = "127.0.0.1:0";
  c.admin_listen_address = "127.0.0.1:0";
  c.metrics_address = "";
  c.artifact_uri = zoo.store;
  c.cache_dir = dir.Join("cache");
  c.device = "cpu";
  auto server = TwinServer::Start(c);
  ASSERT_TRUE(server.ok()) << server.status();
  const absl::Status loaded = (*server)->LoadVersion();
  EXPECT_EQ(loaded.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(loaded.message()), HasSubstr("'model.norm.weight'"));
  EXPECT_THAT(std::string(loaded.message()), HasSubstr("kept per task"));
  (*server)->Shutdown();
}

}  // namespace
}  // namespace twin
