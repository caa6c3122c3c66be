// twin-eval on a causal-LM zoo: Llama directories merged by twin-merge (full rank, so the
// task-given twin is each expert up to rounding), then every method scored by the generative
// evaluation. Each task's test targets are its own expert's greedy continuation of the prompt,
// kept only where every step's top two logits are further apart than the rounding bound, so the
// expert and the full-rank task-given twin must both score an exact match of 1.
#include "bench/eval/generative_eval.h"

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "bench/eval/eval.h"
#include "bench/eval/eval_inputs.h"
#include "bench/zoo/causal_eval.h"
#include "core/model/hf_decoder.h"
#include "core/model/layer_params.h"
#include "merge_offline/merge_config.h"
#include "merge_offline/merge_job.h"
#include "tests/core/model/hf_decoder_test_zoo.h"
#include "tests/testing/rounding.h"
#include "tests/testing/temp_dir.h"

namespace twin::eval {
namespace {

using ::testing::HasSubstr;
using twin::testing::TempDir;

constexpr int kTargetTokens = 3;
constexpr int kExamples = 24;  // prompts per task before the margin filter

std::map<std::string, at::Tensor> ByName(const NamedTensors& tensors) {
  return std::map<std::string, at::Tensor>(tensors.begin(), tensors.end());
}

class GenerativeEvalTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { Build(""); }
  // The zoo merged with merge.yaml + `extra_yaml`, evaluated with `ratios`.
  static void Build(const std::string& extra_yaml, std::vector<double> ratios = {1.0, 0.1}) {
    dir_ = new TempDir();
    twin::testing::HfDecoderTestZooOptions zo;
    zo.ratio = 1.0;
    zoo_ =
        new twin::testing::HfDecoderTestZoo(twin::testing::WriteHfDecoderTestZoo(dir_->path(), zo));
    // The examples the loader reads (targets replaced below by each expert's continuation).
    for (size_t t = 0; t < zoo_->tasks.size(); ++t) {
      std::vector<zoo::CausalPair> pairs;
      const std::vector<std::string> prompts =
          twin::testing::HfDecoderTestZooPrompts(static_cast<int>(t), 40 + kExamples);
      for (int i = 40; i < 40 + kExamples; ++i) pairs.push_back({prompts[i], "ab"});
      auto jsonl = zoo::CausalPairsJsonl(pairs);
      ASSERT_TRUE(jsonl.ok()) << jsonl.status();
      for (const char* split : {"test", "validation"}) {
        std::ofstream(dir_->Join(absl::StrCat(zoo_->tasks[t], ".", split, ".jsonl"))) << *jsonl;
      }
    }
    auto config = ParseMergeConfig(zoo_->merge_yaml + extra_yaml, dir_->path());
    ASSERT_TRUE(config.ok()) << config.status();
    MergeJobOptions mo;
    mo.quiet = true;
    auto merged = RunMergeJob(*config, mo);
    ASSERT_TRUE(merged.ok()) << merged.status();

    EvalSources s;
    s.zoo_dir = dir_->path();
    s.store_uri = "file://" + zoo_->store;
    s.cache_dir = dir_->Join("cache");
    auto inputs = LoadEvalInputs(s);
    ASSERT_TRUE(inputs.ok()) << inputs.status();
    ASSERT_TRUE(inputs->generative());
    inputs_ = new EvalInputs(*std::move(inputs));
    auto lm = LoadHfCausalLm(zoo_->base_dir);
    ASSERT_TRUE(lm.ok()) << lm.status();
    decoder_ = lm->decoder.release();
    ASSERT_NO_FATAL_FAILURE(UseExpertContinuations());

    EvalOptions o;
    o.lambdas = {0.3, 1.0};
    o.ties_lambdas = {1.0};
    o.ratios = std::move(ratios);
    o.energy = 0;
    o.progress = false;
    o.batch_size = 5;  // several batches, the last one short
    auto result = RunGenerativeEvaluation(*inputs_, o);
    ASSERT_TRUE(result.ok()) << result.status();
    result_ = new GenerativeResult(*std::move(result));
  }
  static void TearDownTestSuite() {
    delete result_;
    delete decoder_;
    delete inputs_;
    delete zoo_;
    delete dir_;
    result_ = nullptr;
    decoder_ = nullptr;
    inputs_ = nullptr;
    zoo_ = nullptr;
    dir_ = nullptr;
  }

  // Expert t's weights: its merged tensors and its head (when the version keeps heads).
  static DenseParams ExpertParams(size_t t) { return WithHead(inputs_->experts[t], t); }
  static DenseParams WithHead(const NamedTensors& body, size_t t) {
    std::map<std::string, at::Tensor> tensors = ByName(body);
    for (const auto& [name, tensor] : inputs_->heads[t]) tensors[name] = tensor;
    return DenseParams(std::move(tensors));
  }
  void SetUp() override { ASSERT_NE(result_, nullptr) << "the evaluation did not run"; }

  // The bound on one logit between two float32 evaluations of rows of `len` ids (other batch,
  // other kernels, factors in place of the dense weights: 4x one forward's bound, as for the
  // encoder zoo), with the largest logit as the scale.
  static double LogitBound(int64_t len, double scale) {
    const twin::testing::HfTestDecoder& m = zoo_->base;
    return 4 * twin::testing::ForwardError(twin::testing::HfDecoderDepth(m),
                                           twin::testing::HfDecoderWidth(m, len), scale);
  }

  // Replaces each task's test examples by its expert's greedy continuation of the prompt, kept
  // when every step's margin exceeds twice the logit bound.
  static void UseExpertContinuations() {
    c10::InferenceMode guard;
    for (size_t t = 0; t < inputs_->tasks.size(); ++t) {
      const DenseParams expert = ExpertParams(t);
      std::vector<zoo::CausalExample> kept;
      for (const zoo::CausalExample& e : inputs_->tasks[t].causal_test) {
        std::vector<int64_t> row = e.prompt;
        bool clear = true;
        for (int k = 0; k < kTargetTokens; ++k) {
          auto logits = decoder_->Logits({row}, expert);
          ASSERT_TRUE(logits.ok()) << logits.status();
          const at::Tensor last = (*logits)[0][-1];
          const auto top = last.topk(2);
          const double margin = (std::get<0>(top)[0] - std::get<0>(top)[1]).item<double>();
          const double scale = last.abs().max().item<double>();
          clear = clear && margin > 2 * LogitBound(static_cast<int64_t>(row.size()), scale);
          row.push_back(std::get<1>(top)[0].item<int64_t>());
        }
        if (!clear) continue;
        kept.push_back({e.prompt, std::vector<int64_t>(row.end() - kTargetTokens, row.end())});
      }
      ASSERT_GE(kept.size(), 8u) << zoo_->tasks[t];
      inputs_->tasks[t].causal_test = std::move(kept);
    }
  }

  static const GenerativeMethod& Method(const std::string& id) {
    const GenerativeMethod* m = result_->Find(id);
    EXPECT_NE(m, nullptr) << id;
    static const GenerativeMethod kNone;
    return m == nullptr ? kNone : *m;
  }

  static TempDir* dir_;
  static twin::testing::HfDecoderTestZoo* zoo_;
  static EvalInputs* inputs_;
  static HfDecoder* decoder_;
  static GenerativeResult* result_;
};

TempDir* GenerativeEvalTest::dir_ = nullptr;
twin::testing::HfDecoderTestZoo* GenerativeEvalTest::zoo_ = nullptr;
EvalInputs* GenerativeEvalTest::inputs_ = nullptr;
HfDecoder* GenerativeEvalTest::decoder_ = nullptr;
GenerativeResult* GenerativeEvalTest::result_ = nullptr;

TEST_F(GenerativeEvalTest, LoadsTheCausalZooAndItsExamples) {
  ASSERT_EQ(inputs_->tasks.size(), 3u);
  EXPECT_EQ(inputs_->router_input.features, "ngram");
  EXPECT_TRUE(inputs_->native_config_path.empty());
  for (size_t t = 0; t < 3; ++t) {
    EXPECT_EQ(inputs_->tasks[t].name, zoo_->tasks[t]);
    EXPECT_TRUE(inputs_->heads[t].empty());
    // The validation file as read: bos + prompt bytes, the target "ab" + eos.
    ASSERT_EQ(inputs_->tasks[t].causal_validation.size(), static_cast<size_t>(kExamples));
    EXPECT_EQ(inputs_->tasks[t].causal_validation[0].target,
              (std::vector<int64_t>{'a', 'b', twin::testing::kZooEosId}));
  }
  EXPECT_EQ(result_->tasks, zoo_->tasks);
  EXPECT_EQ(result_->family, std::string("llama"));
}

TEST_F(GenerativeEvalTest, ExpertsAndTheFullRankTaskGivenTwinMatchEveryTarget) {
  const GenerativeMethod& expert = Method("expert");
  const GenerativeMethod& twin = Method("twin:ratio=1:task");
  ASSERT_EQ(expert.exact.size(), 3u);
  ASSERT_EQ(twin.exact.size(), 3u);
  for (size_t t = 0; t < 3; ++t) {
    EXPECT_EQ(expert.exact[t], 1.0) << zoo_->tasks[t];
    EXPECT_EQ(twin.exact[t], 1.0) << zoo_->tasks[t];
    // Each log-probability moves by at most twice the largest logit change; the scale is the
    // largest logit of the expert on the scored rows.
    int64_t longest = 0;
    std::vector<std::vector<int64_t>> rows;
    for (const auto& e : inputs_->tasks[t].causal_test) {
      longest = std::max<int64_t>(longest, e.prompt.size() + e.target.size());
      rows.push_back(e.prompt);
      rows.back().insert(rows.back().end(), e.target.begin(), e.target.end());
    }
    auto logits = decoder_->Logits(rows, ExpertParams(t));
    ASSERT_TRUE(logits.ok()) << logits.status();
    const double scale = logits->abs().max().item<double>();
    EXPECT_NEAR(twin.loss[t], expert.loss[t], 2 * LogitBound(longest, scale)) << zoo_->tasks[t];
  }
  EXPECT_DOUBLE_EQ(result_->NormalizedExact(expert), 100.0);
  EXPECT_NEAR(result_->NormalizedExact(twin), 100.0, 1e-9);
  EXPECT_DOUBLE_EQ(result_->NormalizedLoss(Method("base")), 0.0);
  for (size_t t = 0; t < 3; ++t) EXPECT_TRUE(result_->Counted(t));
}

TEST_F(GenerativeEvalTest, BaseSharedAndStaticRowsAreTheirWeightsScoredDirectly) {
  const std::pair<std::string, const NamedTensors*> rows[] = {{"base", &inputs_->base},
                                                              {"shared", &inputs_->shared}};
  for (const auto& [id, theta] : rows) {
    const GenerativeMethod& m = Method(id);
    ASSERT_EQ(m.exact.size(), 3u) << id;
    for (size_t t = 0; t < 3; ++t) {
      auto s =
          zoo::ScoreCausalLm(*decoder_, DenseParams(ByName(*theta)), inputs_->tasks[t].causal_test);
      ASSERT_TRUE(s.ok()) << s.status();
      EXPECT_EQ(m.exact[t], s->exact_match) << id << " " << t;
      EXPECT_NEAR(m.loss[t], s->mean_loss, 1e-9 + 1e-6 * s->mean_loss) << id << " " << t;
    }
  }
  // Task arithmetic at the chosen lambda is base + lambda x the sum of the task vectors.
  const GenerativeMethod& ta = Method("task_arithmetic");
  ASSERT_TRUE(ta.lambda == 0.3 || ta.lambda == 1.0) << ta.lambda;
  EvalOptions o;
  auto theta = StaticMerge(*inputs_, o, MergeMethod::kTaskArithmetic, ta.lambda);
  ASSERT_TRUE(theta.ok()) << theta.status();
  const at::Tensor& base = inputs_->base[0].second;
  at::Tensor want = base.clone();
  for (const NamedTensors& e : inputs_->experts) want += ta.lambda * (e[0].second - base);
  EXPECT_TRUE(at::allclose((*theta)[0].second, want, 1e-5, 1e-6));
  ASSERT_EQ(result_->searches.size(), 3u);
  EXPECT_EQ(result_->searches[0].validation_mean.size(), 2u);
  for (const char* id : {"linear", "ties", "dare_task_arithmetic", "twin:ratio=0.1:router",
                         "twin:ratio=0.1:task", "twin:ratio=1:router"}) {
    EXPECT_EQ(Method(id).exact.size(), 3u) << id;
  }
}

TEST_F(GenerativeEvalTest, RoutesEachPromptToItsTask) {
  ASSERT_EQ(result_->routing.accuracy.size(), 3u);
  for (size_t t = 0; t < 3; ++t) {
    EXPECT_EQ(result_->routing.accuracy[t], 1.0) << zoo_->tasks[t];
    const int64_t n = static_cast<int64_t>(inputs_->tasks[t].causal_test.size());
    EXPECT_EQ(result_->routing.confusion[t][t], n);
  }
  EXPECT_EQ(result_->router_top_k, 2);
  ASSERT_EQ(result_->storage.size(), 2u);
  EXPECT_GT(result_->storage[0].twin_bytes, result_->storage[1].twin_bytes);  // ratio 1 > 0.1
}

TEST_F(GenerativeEvalTest, ReportsMarkdownAndJson) {
  RunInfo info;
  info.command = "twin-eval --zoo Z";
  const std::string md = GenerativeMarkdown(*result_, info);
  for (const char* part :
       {"# Twin-Merging quality on the generative zoo", "## Exact match", "## Mean target loss",
        "## Twin-Merging rank sweep", "## Routing accuracy", "## Lambda search", "## Storage",
        "| Twin-Merging, ratio=1, task given |", "| task arithmetic |", "twin-eval --zoo Z"}) {
    EXPECT_THAT(md, HasSubstr(part));
  }
  const nlohmann::json j = nlohmann::json::parse(GenerativeJson(*result_, info));
  ASSERT_EQ(j["methods"].size(), result_->methods.size());
  EXPECT_EQ(j["methods"][1]["id"], "expert");
  EXPECT_DOUBLE_EQ(j["methods"][1]["normalized_exact"].get<double>(), 100.0);
  EXPECT_EQ(j["tasks"].size(), 3u);
  EXPECT_EQ(j["routing"]["confusion"].size(), 3u);
}

TEST_F(GenerativeEvalTest, RefusesTheWrongEvaluationAndMissingFiles) {
  auto classify = RunEvaluation(*inputs_, EvalOptions{});
  ASSERT_FALSE(classify.ok());
  EXPECT_THAT(std::string(classify.status().message()), HasSubstr("RunGenerativeEvaluation"));
  EvalOptions o;
  o.key_top_k = 4;
  EXPECT_FALSE(RunGenerativeEvaluation(*inputs_, o).ok());

  TempDir copy;
  std::filesystem::copy(
      dir_->path(), copy.path(),
      std::filesystem::copy_options::recursive | std::filesystem::copy_options::overwrite_existing);
  std::filesystem::remove(copy.Join(zoo_->tasks[1] + ".test.jsonl"));
  EvalSources s;
  s.zoo_dir = copy.path();
  s.store_uri = "file://" + zoo_->store;
  s.cache_dir = copy.Join("cache");
  auto missing = LoadEvalInputs(s);
  ASSERT_FALSE(missing.ok());
  EXPECT_THAT(std::string(missing.status().message()), HasSubstr(zoo_->tasks[1] + ".test.jsonl"));
}

// A version keeping each expert's LM head (head_pattern '^lm_head\.'): the experts are their
// merged tensors plus their own head, theta* reads each task's head for its examples, and the
// full-rank task-given twin (theta* + the whole task vector + the task's head) is the expert.
class GenerativeEvalHeadsTest : public GenerativeEvalTest {
 protected:
  static void SetUpTestSuite() { Build("head_pattern: '^lm_head\\.'\n", {1.0}); }
};

TEST_F(GenerativeEvalHeadsTest, EachTaskReadsItsOwnLmHead) {
  for (size_t t = 0; t < 3; ++t) {
    ASSERT_EQ(inputs_->heads[t].size(), 1u);
    EXPECT_EQ(inputs_->heads[t][0].first, "lm_head.weight");
    for (const auto& [name, tensor] : inputs_->shared) EXPECT_NE(name, "lm_head.weight");
  }
  EXPECT_EQ(result_->lm_head_pattern, "^lm_head\\.");
  const GenerativeMethod& expert = Method("expert");
  const GenerativeMethod& twin = Method("twin:ratio=1:task");
  for (size_t t = 0; t < 3; ++t) {
    EXPECT_EQ(expert.exact[t], 1.0) << zoo_->tasks[t];
    EXPECT_EQ(twin.exact[t], 1.0) << zoo_->tasks[t];
  }
  // theta* with task t's head, scored directly.
  const GenerativeMethod& shared = Method("shared");
  for (size_t t = 0; t < 3; ++t) {
    auto s = zoo::ScoreCausalLm(*decoder_, WithHead(inputs_->shared, t),
                                inputs_->tasks[t].causal_test);
    ASSERT_TRUE(s.ok()) << s.status();
    EXPECT_EQ(shared.exact[t], s->exact_match) << t;
    EXPECT_NEAR(shared.loss[t], s->mean_loss, 1e-9 + 1e-6 * s->mean_loss) << t;
  }
  RunInfo info;
  const std::string md = GenerativeMarkdown(*result_, info);
  EXPECT_THAT(md, HasSubstr("keeps its expert's LM head"));
  EXPECT_THAT(md, HasSubstr("the T experts' own LM heads"));
}

TEST(GenerativeEvalHeadsRefusalTest, OnlyTheLmHeadMayBeKeptPerTask) {
  TempDir dir;
  twin::testing::HfDecoderTestZooOptions zo;
  const twin::testing::HfDecoderTestZoo zoo =
      twin::testing::WriteHfDecoderTestZoo(dir.path(), zo);
  for (const std::string& task : zoo.tasks) {
    auto jsonl = zoo::CausalPairsJsonl({{"abc", "ab"}});
    ASSERT_TRUE(jsonl.ok());
    std::ofstream(dir.Join(task + ".test.jsonl")) << *jsonl;
  }
  auto config = ParseMergeConfig(zoo.merge_yaml + "head_pattern: '^model\\.norm\\.'\n", dir.path());
  ASSERT_TRUE(config.ok()) << config.status();
  MergeJobOptions mo;
  mo.quiet = true;
  ASSERT_TRUE(RunMergeJob(*config, mo).ok());
  EvalSources s;
  s.zoo_dir = dir.path();
  s.store_uri = "file://" + zoo.store;
  s.cache_dir = dir.Join("cache");
  auto inputs = LoadEvalInputs(s);
  ASSERT_TRUE(inputs.ok()) << inputs.status();
  EvalOptions o;
  o.progress = false;
  auto result = RunGenerativeEvaluation(*inputs, o);
  ASSERT_FALSE(result.ok());
  EXPECT_THAT(std::string(result.status().message()), HasSubstr("'model.norm.weight'"));
  EXPECT_THAT(std::string(result.status().message()), HasSubstr("only its LM head"));
}

}  // namespace
}  // namespace twin::eval
