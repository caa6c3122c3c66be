#include "core/model/generation.h"

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <map>
#include <memory>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/merge/twin_weights.h"
#include "core/model/hf_decoder.h"
#include "core/model/layer_params.h"
#include "core/model/mixed_params.h"
#include "core/model/sampling.h"
#include "tests/core/model/hf_decoder_test_models.h"
#include "tests/testing/rounding.h"
#include "tests/testing/temp_dir.h"

namespace twin {
namespace {

using ::testing::HasSubstr;
using testing::HfTestDecoder;
using testing::TempDir;

// ---- TokenSampler ----

at::Tensor Logits(std::vector<double> values) {
  return at::tensor(values, at::kDouble).to(at::kFloat);
}

at::Tensor LogProbs(const std::vector<double>& p) {
  std::vector<double> l;
  for (double x : p) l.push_back(std::log(x));
  return Logits(l);
}

std::vector<double> Frequencies(TokenSampler& s, const at::Tensor& logits, int draws) {
  std::vector<int> count(logits.numel(), 0);
  for (int i = 0; i < draws; ++i) {
    absl::StatusOr<int64_t> t = s.Next(logits);
    EXPECT_TRUE(t.ok()) << t.status();
    ++count[*t];
  }
  std::vector<double> f;
  for (int c : count) f.push_back(static_cast<double>(c) / draws);
  return f;
}

// Within 5 standard deviations of a binomial frequency.
void ExpectFrequency(double got, double p, int draws, const std::string& what) {
  EXPECT_NEAR(got, p, 5 * std::sqrt(p * (1 - p) / draws) + 1e-12) << what;
}

TEST(TokenSamplerTest, GreedyTakesTheFirstLargest) {
  TokenSampler s = *TokenSampler::Create({});
  EXPECT_EQ(*s.Next(Logits({0.1, 3.0, -1.0, 3.0})), 1);
  const double nan = std::numeric_limits<double>::quiet_NaN();
  EXPECT_EQ(*s.Next(Logits({nan, -5.0, nan})), 1);  // NaN is never chosen
  const double inf = std::numeric_limits<double>::infinity();
  EXPECT_FALSE(s.Next(Logits({nan, -inf})).ok());
  EXPECT_FALSE(s.Next(at::zeros({2, 2})).ok());
}

TEST(TokenSamplerTest, SamplesTheSoftmaxAtTemperature) {
  constexpr int kDraws = 20000;
  const at::Tensor logits = LogProbs({0.5, 0.3, 0.2});
  TokenSampler t1 = *TokenSampler::Create({.temperature = 1.0, .seed = 3});
  const std::vector<double> f1 = Frequencies(t1, logits, kDraws);
  ExpectFrequency(f1[0], 0.5, kDraws, "T=1 token 0");
  ExpectFrequency(f1[1], 0.3, kDraws, "T=1 token 1");
  ExpectFrequency(f1[2], 0.2, kDraws, "T=1 token 2");
  // T = 0.5 squares the probabilities: 0.25, 0.09, 0.04 over 0.38.
  TokenSampler t05 = *TokenSampler::Create({.temperature = 0.5, .seed = 4});
  const std::vector<double> f05 = Frequencies(t05, logits, kDraws);
  ExpectFrequency(f05[0], 0.25 / 0.38, kDraws, "T=0.5 token 0");
  ExpectFrequency(f05[2], 0.04 / 0.38, kDraws, "T=0.5 token 2");
}

TEST(TokenSamplerTest, TopKAndTopPCutTheTail) {
  constexpr int kDraws = 5000;
  const at::Tensor logits = LogProbs({0.5, 0.3, 0.2});
  TokenSampler k2 = *TokenSampler::Create({.temperature = 1.0, .top_k = 2, .seed = 5});
  const std::vector<double> fk = Frequencies(k2, logits, kDraws);
  EXPECT_EQ(fk[2], 0.0);
  ExpectFrequency(fk[0], 0.5 / 0.8, kDraws, "top_k 2");
  TokenSampler k1 = *TokenSampler::Create({.temperature = 1.0, .top_k = 1, .seed = 5});
  EXPECT_EQ(Frequencies(k1, logits, 100)[0], 1.0);
  // top_p 0.6: 0.5 is not enough, 0.5 + 0.3 is.
  TokenSampler p6 = *TokenSampler::Create({.temperature = 1.0, .top_p = 0.6, .seed = 6});
  const std::vector<double> fp = Frequencies(p6, logits, kDraws);
  EXPECT_EQ(fp[2], 0.0);
  ExpectFrequency(fp[1], 0.3 / 0.8, kDraws, "top_p 0.6");
  TokenSampler p4 = *TokenSampler::Create({.temperature = 1.0, .top_p = 0.4, .seed = 6});
  EXPECT_EQ(Frequencies(p4, logits, 100)[0], 1.0);
}

TEST(TokenSamplerTest, ASeedGivesTheSameTokens) {
  const at::Tensor logits = at::randn({50});
  auto draw = [&](uint64_t seed) {
    TokenSampler s = *TokenSampler::Create({.temperature = 1.0, .seed = seed});
    std::vector<int64_t> out;
    for (int i = 0; i < 200; ++i) out.push_back(*s.Next(logits));
    return out;
  };
  EXPECT_EQ(draw(11), draw(11));
  EXPECT_NE(draw(11), draw(12));
}

TEST(TokenSamplerTest, BadValuesNameTheField) {
  auto message = [](const SamplingOptions& o) {
    return std::string(TokenSampler::Create(o).status().message());
  };
  EXPECT_THAT(message({.temperature = -1}), HasSubstr("temperature"));
  EXPECT_THAT(message({.temperature = std::numeric_limits<double>::quiet_NaN()}),
              HasSubstr("temperature"));
  EXPECT_THAT(message({.top_k = -2}), HasSubstr("top_k"));
  EXPECT_THAT(message({.top_p = 0}), HasSubstr("top_p"));
  EXPECT_THAT(message({.top_p = 1.5}), HasSubstr("top_p"));
}

// ---- ContinuousBatch ----

struct Model {
  TempDir dir;
  HfCausalLm lm;
};

std::unique_ptr<Model> MakeModel(const HfTestDecoder& m = HfTestDecoder()) {
  auto model = std::make_unique<Model>();
  testing::WriteHfDecoderDir(model->dir.path(), m);
  absl::StatusOr<HfCausalLm> lm = LoadHfCausalLm(model->dir.path());
  EXPECT_TRUE(lm.ok()) << lm.status();
  model->lm = std::move(*lm);
  return model;
}

ContinuousBatch::ParamsFor Dense(const std::map<std::string, at::Tensor>& weights) {
  return [&weights](const std::vector<StepRow>&)
             -> absl::StatusOr<std::unique_ptr<LayerParams>> {
    return std::unique_ptr<LayerParams>(new DenseParams(weights));
  };
}

struct Generated {
  std::vector<int64_t> tokens;
  FinishReason finish = FinishReason::kNone;
};

// Steps until every sequence has ended; events gathered per tag.
std::map<uint64_t, Generated> Drain(ContinuousBatch& batch,
                                    const ContinuousBatch::ParamsFor& params) {
  std::map<uint64_t, Generated> runs;
  for (int step = 0; batch.active() > 0 && step < 1000; ++step) {
    absl::StatusOr<std::vector<GenerationEvent>> events = batch.Step(params);
    EXPECT_TRUE(events.ok()) << events.status();
    if (!events.ok()) break;
    for (const GenerationEvent& e : *events) {
      if (e.token >= 0) runs[e.tag].tokens.push_back(e.token);
      runs[e.tag].finish = e.finish;
    }
  }
  return runs;
}

GenerationRequest Request(std::vector<int64_t> prompt, int64_t max_new, uint64_t tag,
                          SamplingOptions sampling = {}) {
  GenerationRequest r;
  r.prompt = std::move(prompt);
  r.max_new_tokens = max_new;
  r.sampling = sampling;
  r.tag = tag;
  return r;
}

// Greedy by hand: recompute the whole sequence each step, no cache.
std::vector<int64_t> GreedyByRecomputation(const HfDecoder& dec, const LayerParams& params,
                                           std::vector<int64_t> seq, int64_t n) {
  std::vector<int64_t> out;
  for (int64_t i = 0; i < n; ++i) {
    const at::Tensor logits = *dec.Logits({seq}, params);
    const int64_t next = logits[0][static_cast<int64_t>(seq.size()) - 1].argmax().item<int64_t>();
    out.push_back(next);
    seq.push_back(next);
  }
  return out;
}

TEST(ContinuousBatchTest, GreedyEqualsRecomputationAndIsDeterministic) {
  auto model = MakeModel();
  const HfDecoder& dec = *model->lm.decoder;
  DenseParams params(model->lm.weights);
  const std::vector<int64_t> prompt = {5, 17, 3, 42, 8};
  const std::vector<int64_t> want = GreedyByRecomputation(dec, params, prompt, 12);
  for (int run = 0; run < 2; ++run) {
    ContinuousBatch batch(dec, {});
    ASSERT_TRUE(batch.Add(Request(prompt, 12, 1)).ok());
    std::map<uint64_t, Generated> runs = Drain(batch, Dense(model->lm.weights));
    EXPECT_EQ(runs[1].tokens, want) << "run " << run;
    EXPECT_EQ(runs[1].finish, FinishReason::kLength);
    EXPECT_EQ(batch.kv_bytes(), 0);
  }
}

TEST(ContinuousBatchTest, SequencesJoiningBetweenStepsAnswerAsAlone) {
  auto model = MakeModel();
  const HfDecoder& dec = *model->lm.decoder;
  const std::vector<GenerationRequest> requests = {
      Request({1, 2, 3, 4, 5, 6}, 10, 0),
      Request({9, 8, 7}, 7, 1, {.temperature = 0.9, .top_k = 20, .seed = 77}),
      Request({11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21}, 9, 2),
      Request({30}, 12, 3, {.temperature = 1.2, .top_p = 0.9, .seed = 78}),
  };
  std::map<uint64_t, Generated> alone;
  for (const GenerationRequest& r : requests) {
    ContinuousBatch one(dec, {});
    ASSERT_TRUE(one.Add(r).ok());
    alone[r.tag] = Drain(one, Dense(model->lm.weights))[r.tag];
    ASSERT_EQ(alone[r.tag].tokens.size(), static_cast<size_t>(r.max_new_tokens));
  }
  // Together: 0 and 1 at once, 2 after two steps, 3 after five; prompt chunks of at most 4
  // tokens a step, so prefill and decode share steps.
  ContinuousBatch batch(dec, {.max_step_tokens = 6});
  std::map<uint64_t, Generated> together;
  auto step = [&] {
    absl::StatusOr<std::vector<GenerationEvent>> events = batch.Step(Dense(model->lm.weights));
    ASSERT_TRUE(events.ok()) << events.status();
    for (const GenerationEvent& e : *events) {
      together[e.tag].tokens.push_back(e.token);
      together[e.tag].finish = e.finish;
    }
  };
  ASSERT_TRUE(batch.Add(requests[0]).ok());
  ASSERT_TRUE(batch.Add(requests[1]).ok());
  step();
  step();
  ASSERT_TRUE(batch.Add(requests[2]).ok());
  step();
  step();
  step();
  ASSERT_TRUE(batch.Add(requests[3]).ok());
  for (int i = 0; i < 100 && batch.active() > 0; ++i) step();
  for (const GenerationRequest& r : requests) {
    EXPECT_EQ(together[r.tag].tokens, alone[r.tag].tokens) << "sequence " << r.tag;
    EXPECT_EQ(together[r.tag].finish, FinishReason::kLength);
  }
}

TEST(ContinuousBatchTest, StopTokensStopSequencesAndTheContextEnd) {
  auto model = MakeModel();
  const HfDecoder& dec = *model->lm.decoder;
  const std::vector<int64_t> prompt = {4, 4, 7};
  ContinuousBatch probe(dec, {});
  ASSERT_TRUE(probe.Add(Request(prompt, 8, 0)).ok());
  const std::vector<int64_t> free_run = Drain(probe, Dense(model->lm.weights))[0].tokens;
  ASSERT_EQ(free_run.size(), 8u);
  // The first position at which a token occurs that did not occur before it.
  size_t at = 2;
  while (std::find(free_run.begin(), free_run.begin() + at, free_run[at]) !=
         free_run.begin() + at) {
    ++at;
    ASSERT_LT(at, free_run.size());
  }
  {
    ContinuousBatch batch(dec, {});
    GenerationRequest r = Request(prompt, 8, 0);
    r.stop_token_ids = {free_run[at]};
    ASSERT_TRUE(batch.Add(r).ok());
    Generated run = Drain(batch, Dense(model->lm.weights))[0];
    EXPECT_EQ(run.finish, FinishReason::kStop);
    EXPECT_EQ(run.tokens, std::vector<int64_t>(free_run.begin(), free_run.begin() + at + 1));
  }
  {
    ContinuousBatch batch(dec, {});
    GenerationRequest r = Request(prompt, 8, 0);
    r.stop_token_sequences = {{free_run[at - 1], free_run[at]}};
    ASSERT_TRUE(batch.Add(r).ok());
    Generated run = Drain(batch, Dense(model->lm.weights))[0];
    EXPECT_EQ(run.finish, FinishReason::kStop);
    EXPECT_LE(run.tokens.size(), at + 1);
    EXPECT_EQ(run.tokens,
              std::vector<int64_t>(free_run.begin(), free_run.begin() + run.tokens.size()));
  }
  {
    // 60 prompt tokens in a 64-position model: 5 tokens fit (the last predicted at position 63).
    ContinuousBatch batch(dec, {});
    ASSERT_TRUE(batch.Add(Request(std::vector<int64_t>(60, 3), 50, 0)).ok());
    Generated run = Drain(batch, Dense(model->lm.weights))[0];
    EXPECT_EQ(run.finish, FinishReason::kLength);
    EXPECT_EQ(run.tokens.size(), 5u);
  }
}

TEST(ContinuousBatchTest, KvBudgetCancellationAndBadRequests) {
  auto model = MakeModel();
  const HfDecoder& dec = *model->lm.decoder;
  const GenerationRequest r = Request({1, 2, 3}, 13, 0);  // 16 positions
  ContinuousBatch batch(dec, {.kv_budget_bytes = 2 * dec.CacheBytes(16)});
  absl::StatusOr<uint64_t> a = batch.Add(r), b = batch.Add(r);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(batch.kv_bytes(), 2 * dec.CacheBytes(16));
  absl::StatusOr<uint64_t> c = batch.Add(r);
  EXPECT_EQ(c.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(std::string(c.status().message()), HasSubstr("budget full"));
  GenerationRequest huge = Request({1}, 40, 0);
  EXPECT_THAT(std::string(batch.Add(huge).status().message()),
              HasSubstr("larger than the whole KV budget"));
  // A cancel frees the cache with the next step, which reports it.
  batch.Cancel(*a);
  absl::StatusOr<std::vector<GenerationEvent>> events = batch.Step(Dense(model->lm.weights));
  ASSERT_TRUE(events.ok()) << events.status();
  ASSERT_FALSE(events->empty());
  EXPECT_EQ((*events)[0].id, *a);
  EXPECT_EQ((*events)[0].finish, FinishReason::kCancelled);
  EXPECT_EQ(batch.kv_bytes(), dec.CacheBytes(16));
  EXPECT_EQ(batch.active(), 1u);
  EXPECT_TRUE(batch.Add(r).ok());
  // A failed forward ends the step's sequences and frees their caches.
  absl::StatusOr<std::vector<GenerationEvent>> failed =
      batch.Step([](const std::vector<StepRow>&)
                     -> absl::StatusOr<std::unique_ptr<LayerParams>> {
        return absl::UnavailableError("no weights");
      });
  EXPECT_EQ(failed.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(batch.active(), 0u);
  EXPECT_EQ(batch.kv_bytes(), 0);

  auto refused = [&](GenerationRequest bad, const std::string& field) {
    absl::StatusOr<uint64_t> id = batch.Add(std::move(bad));
    EXPECT_EQ(id.status().code(), absl::StatusCode::kInvalidArgument) << field;
    EXPECT_THAT(std::string(id.status().message()), HasSubstr(field));
  };
  refused(Request({}, 4, 0), "prompt: empty");
  refused(Request(std::vector<int64_t>(64, 1), 4, 0), "prompt: 64 tokens");
  refused(Request({1}, 0, 0), "max_new_tokens");
  refused(Request({1, 96}, 4, 0), "token id 96");
  refused(Request({1}, 4, 0, {.top_p = 2}), "top_p");
  refused(Request({1}, 4, 0, {.temperature = -0.5}), "temperature");
}

// Sequences with different mixtures in one batch through the unfused path answer as each
// alone with its fused weights (tied and untied heads; sampled with one seed, so that the
// mixtures' answers differ through their weights alone).
class MixedGenerationTest : public ::testing::TestWithParam<bool> {};

TEST_P(MixedGenerationTest, MixedWeightsDecodeTogetherAsFusedAlone) {
  HfTestDecoder m;
  m.tie = GetParam();
  auto model = MakeModel(m);
  const HfDecoder& dec = *model->lm.decoder;
  // Two tasks: rank-2 factors on every matrix, dense deltas on the norms.
  std::vector<TaskTwin> tasks;
  for (int t = 0; t < 2; ++t) {
    TaskTwin twin;
    twin.task = absl::StrCat("task", t);
    for (const auto& [name, w] : model->lm.weights) {
      if (w.dim() == 2) {
        twin.factors[name] = {0.2 * at::randn({w.size(0), 2}), 0.2 * at::randn({w.size(1), 2})};
      } else {
        twin.dense[name] = 0.05 * at::randn(w.sizes());
      }
    }
    tasks.push_back(std::move(twin));
  }
  NamedTensors shared(model->lm.weights.begin(), model->lm.weights.end());
  absl::StatusOr<std::unique_ptr<TwinWeights>> twins =
      TwinWeights::Create(std::move(shared), std::move(tasks));
  ASSERT_TRUE(twins.ok()) << twins.status();
  const std::vector<std::vector<double>> mixes = {{1.0, 0.0}, {0.3, 0.7}, {0.0, 0.0}};
  std::vector<GenerationRequest> requests;
  for (size_t i = 0; i < mixes.size(); ++i) {
    GenerationRequest r =
        Request({3, static_cast<int64_t>(10 + i), 7, 1}, 8, i, {.temperature = 1.0, .seed = 5});
    r.weights = mixes[i];
    requests.push_back(r);
  }
  std::map<uint64_t, Generated> alone;
  std::vector<std::map<std::string, at::Tensor>> fused(mixes.size());
  for (size_t i = 0; i < mixes.size(); ++i) {
    absl::StatusOr<NamedTensors> f = (*twins)->Fuse(mixes[i]);
    ASSERT_TRUE(f.ok()) << f.status();
    fused[i] = std::map<std::string, at::Tensor>(f->begin(), f->end());
    ContinuousBatch one(dec, {});
    ASSERT_TRUE(one.Add(requests[i]).ok());
    alone[i] = Drain(one, Dense(fused[i]))[i];
  }
  for (MixStrategy strategy : {MixStrategy::kGrouped, MixStrategy::kStacked}) {
    ContinuousBatch batch(dec, {});
    for (const GenerationRequest& r : requests) ASSERT_TRUE(batch.Add(r).ok());
    const TwinWeights& tw = **twins;
    std::map<uint64_t, Generated> together =
        Drain(batch,
              [&](const std::vector<StepRow>& rows)
                  -> absl::StatusOr<std::unique_ptr<LayerParams>> {
                std::vector<std::vector<double>> w;
                for (const StepRow& row : rows) w.push_back(*row.weights);
                absl::StatusOr<MixedParams> p = MixedParams::Create(tw, w, strategy);
                if (!p.ok()) return p.status();
                return std::unique_ptr<LayerParams>(new MixedParams(std::move(*p)));
              });
    for (size_t i = 0; i < mixes.size(); ++i) {
      EXPECT_EQ(together[i].tokens, alone[i].tokens)
          << MixStrategyName(strategy) << " sequence " << i;
    }
  }
  // The mixtures give different answers (so equality above means something).
  EXPECT_NE(alone[0].tokens, alone[2].tokens);
  EXPECT_NE(alone[1].tokens, alone[2].tokens);

  // reuse_decode_params: the decoding rows' params are made again only when the rows change
  // (a sequence joins after three steps, so the decoding group changes once it has read its
  // prompt), and the answers stay those of each sequence alone.
  const TwinWeights& tw = **twins;
  int made = 0;
  const ContinuousBatch::ParamsFor mixed =
      [&](const std::vector<StepRow>& rows)
      -> absl::StatusOr<std::unique_ptr<LayerParams>> {
    ++made;
    std::vector<std::vector<double>> w;
    for (const StepRow& row : rows) w.push_back(*row.weights);
    absl::StatusOr<MixedParams> p = MixedParams::Create(tw, w, MixStrategy::kStacked);
    if (!p.ok()) return p.status();
    return std::unique_ptr<LayerParams>(new MixedParams(std::move(*p)));
  };
  ContinuousBatch batch(dec, {.reuse_decode_params = true});
  ASSERT_TRUE(batch.Add(requests[0]).ok());
  ASSERT_TRUE(batch.Add(requests[1]).ok());
  std::map<uint64_t, Generated> reused;
  int steps = 0;
  for (; steps < 100 && batch.active() > 0; ++steps) {
    if (steps == 3) ASSERT_TRUE(batch.Add(requests[2]).ok());
    absl::StatusOr<std::vector<GenerationEvent>> events = batch.Step(mixed);
    ASSERT_TRUE(events.ok()) << events.status();
    for (const GenerationEvent& e : *events) {
      if (e.token >= 0) reused[e.tag].tokens.push_back(e.token);
    }
  }
  for (size_t i = 0; i < mixes.size(); ++i) {
    EXPECT_EQ(reused[i].tokens, alone[i].tokens) << "reused params, sequence " << i;
  }
  // Made for: the first prompts, the first decoding pair, the third prompt, the decoding
  // triple, and the pair left when 0 and 1 finish before 2 (joined later).
  EXPECT_EQ(made, 5) << steps << " steps";
}

INSTANTIATE_TEST_SUITE_P(Heads, MixedGenerationTest, ::testing::Values(false, true),
                         [](const auto& info) { return info.param ? "tied" : "untied"; });

}  // namespace
}  // namespace twin
