// twin-eval on a zoo in Hugging Face form: BERT directories merged by twin-merge, then every
// method evaluated by the native engine (twin rows mixed per row, unfused) and by TorchScript.
// Test labels are each expert's own predictions on rows whose top two logits are further apart
// than the rounding bound, so the expert and the full-rank oracle twin must score exactly 1 on
// both engines.
#include <ATen/ATen.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <map>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "bench/eval/eval.h"
#include "bench/eval/eval_inputs.h"
#include "bench/eval/evaluator.h"
#include "bench/eval/twin_factors.h"
#include "core/io/safetensors.h"
#include "core/model/hf_config.h"
#include "core/model/hf_encoder.h"
#include "core/model/layer_params.h"
#include "merge_offline/merge_config.h"
#include "merge_offline/merge_job.h"
#include "tests/core/model/hf_test_zoo.h"
#include "tests/testing/rounding.h"
#include "tests/testing/temp_dir.h"

namespace twin::eval {
namespace {

using ::testing::HasSubstr;
using twin::testing::TempDir;

class EvalNativeTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new TempDir();
    twin::testing::HfTestZooOptions zo;
    zo.ratio = 1.0;  // full rank: the oracle twin is each expert up to rounding
    zoo_ = new twin::testing::HfTestZoo(twin::testing::WriteHfTestZoo(dir_->path(), zo));
    auto config = ParseMergeConfig(zoo_->merge_yaml, dir_->path());
    ASSERT_TRUE(config.ok()) << config.status();
    MergeJobOptions mo;
    mo.quiet = true;
    auto merged = RunMergeJob(*config, mo);
    ASSERT_TRUE(merged.ok()) << merged.status();

    auto tokenizer = twin::testing::PublishedTokenizer(zoo_->store, dir_->Join("fetch"));
    ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
    // Two forwards computed differently (TorchScript, native; fused, unfused) differ by at most
    // ForwardError each; the full-rank factors reproduce each weight up to one more inner
    // product's rounding per layer: 4x the bound of one forward.
    const twin::testing::HfTestModel& m = zoo_->base;
    for (size_t t = 0; t < zoo_->tasks.size(); ++t) {
      // Each task's texts with another task's words mixed in, so that predictions vary.
      std::vector<std::string> texts = twin::testing::HfTestZooTexts(static_cast<int>(t), 48);
      const std::vector<std::string> other =
          twin::testing::HfTestZooTexts(static_cast<int>((t + 1) % 3), 48);
      for (size_t i = 0; i < texts.size(); i += 2) texts[i] += " " + other[i];
      auto batch = (*tokenizer)->Encode(texts);
      ASSERT_TRUE(batch.ok()) << batch.status();
      auto logits = twin::testing::HfDirLogits(zoo_->expert_dirs[t], batch->input_ids,
                                               batch->attention_mask);
      ASSERT_TRUE(logits.ok()) << logits.status();
      const double scale = logits->abs().max().item<double>();
      const double bound =
          4 * twin::testing::ForwardError(twin::testing::HfForwardDepth(m) + 4,
                                          twin::testing::HfForwardWidth(m, batch->input_ids.size(1)),
                                          scale);
      auto top = logits->topk(2, 1);
      at::Tensor margin = std::get<0>(top).select(1, 0) - std::get<0>(top).select(1, 1);
      at::Tensor keep = margin.gt(2 * bound).nonzero().squeeze(1);
      ASSERT_GT(keep.size(0), 24) << zoo_->tasks[t];
      ASSERT_TRUE(WriteSafetensors(
                      dir_->Join(absl::StrCat(zoo_->tasks[t], ".test.safetensors")),
                      {{"input_ids", batch->input_ids.index_select(0, keep)},
                       {"attention_mask", batch->attention_mask.index_select(0, keep)},
                       {"labels", std::get<1>(top).select(1, 0).index_select(0, keep)}})
                      .ok());
    }
    EvalSources sources;
    sources.zoo_dir = dir_->path();
    auto inputs = LoadEvalInputs(sources);
    ASSERT_TRUE(inputs.ok()) << inputs.status();
    inputs_ = new EvalInputs(*std::move(inputs));

    EvalOptions o;
    o.lambdas = {0.3};
    o.ties_lambdas = {1.0};
    o.ratios = {1.0};
    o.energy = 0;
    o.key_grids = {4};
    o.batch_size = 16;
    o.progress = false;
    auto native = RunEvaluation(*inputs_, o);
    ASSERT_TRUE(native.ok()) << native.status();
    native_ = new EvalResult(*std::move(native));
    o.engine = "torchscript";
    auto script = RunEvaluation(*inputs_, o);
    ASSERT_TRUE(script.ok()) << script.status();
    script_ = new EvalResult(*std::move(script));
  }
  static void TearDownTestSuite() {
    delete script_;
    delete native_;
    delete inputs_;
    delete zoo_;
    delete dir_;
  }

  static const MethodResult* Twin(const EvalResult& r, const std::string& routing) {
    for (const MethodResult& m : r.methods) {
      if (m.family == "twin" && m.routing == routing) return &m;
    }
    return nullptr;
  }

  static TempDir* dir_;
  static twin::testing::HfTestZoo* zoo_;
  static EvalInputs* inputs_;
  static EvalResult* native_;
  static EvalResult* script_;
};

TempDir* EvalNativeTest::dir_ = nullptr;
twin::testing::HfTestZoo* EvalNativeTest::zoo_ = nullptr;
EvalInputs* EvalNativeTest::inputs_ = nullptr;
EvalResult* EvalNativeTest::native_ = nullptr;
EvalResult* EvalNativeTest::script_ = nullptr;

TEST_F(EvalNativeTest, ExpertsAreReadFromTheirHuggingFaceDirectories) {
  ASSERT_NE(inputs_, nullptr);
  EXPECT_FALSE(inputs_->native_config_path.empty());
  ASSERT_EQ(inputs_->experts.size(), zoo_->tasks.size());
  for (size_t t = 0; t < zoo_->tasks.size(); ++t) {
    auto expert = LoadHfModel(zoo_->expert_dirs[t]);
    ASSERT_TRUE(expert.ok()) << expert.status();
    ASSERT_EQ(inputs_->experts[t].size(), expert->body.size()) << zoo_->tasks[t];
    for (const auto& [name, tensor] : inputs_->experts[t]) {
      ASSERT_EQ(expert->body.count(name), 1u) << name;
      EXPECT_TRUE(at::equal(tensor, expert->body.at(name))) << zoo_->tasks[t] << " " << name;
    }
    ASSERT_EQ(inputs_->heads[t].size(), expert->head.size());
    for (const auto& [name, tensor] : inputs_->heads[t]) {
      EXPECT_EQ(name.rfind("classifier.", 0), 0u) << name;
      EXPECT_TRUE(at::equal(tensor, expert->head.at(name))) << name;
    }
  }
}

TEST_F(EvalNativeTest, AutoRunsTheNativeModel) {
  ASSERT_NE(native_, nullptr);
  ASSERT_NE(script_, nullptr);
  EXPECT_EQ(native_->engine, "native");
  EXPECT_EQ(script_->engine, "torchscript");
  EXPECT_EQ(native_->methods.size(), script_->methods.size());
}

TEST_F(EvalNativeTest, ExpertsAndTheFullRankOracleTwinScoreTheirOwnLabels) {
  ASSERT_NE(native_, nullptr);
  ASSERT_NE(script_, nullptr);
  for (const EvalResult* r : {native_, script_}) {
    const MethodResult* expert = r->Find("expert");
    const MethodResult* oracle = Twin(*r, "oracle");
    ASSERT_NE(expert, nullptr);
    ASSERT_NE(oracle, nullptr);
    for (size_t t = 0; t < zoo_->tasks.size(); ++t) {
      EXPECT_EQ(expert->given[t], 1.0) << r->engine << " " << zoo_->tasks[t];
      // One-hot mixtures through the engine's twin path: unfused per row (native), fused
      // (TorchScript).
      EXPECT_EQ(oracle->given[t], 1.0) << r->engine << " " << zoo_->tasks[t];
    }
  }
  // The base with the experts' heads is not the experts: the labels tell models apart.
  const MethodResult* base = native_->Find("base");
  ASSERT_NE(base, nullptr);
  EXPECT_LT(Mean(base->given), 1.0);
}

TEST_F(EvalNativeTest, RouterRowsCountTheSameDistinctMixturesOnBothEngines) {
  ASSERT_NE(native_, nullptr);
  ASSERT_NE(script_, nullptr);
  const MethodResult* a = Twin(*native_, "router");
  const MethodResult* b = Twin(*script_, "router");
  ASSERT_NE(a, nullptr);
  ASSERT_NE(b, nullptr);
  EXPECT_EQ(a->fusions, b->fusions);
  EXPECT_GT(a->fusions, 3);  // exact router weights: many distinct mixtures
}

// A multi-stage version (twin.from_layer 1, router.features prefix): twin-eval routes on the
// mean hidden state after layer 0 under theta*, as the server does; TorchScript cannot.
TEST(EvalPrefixTest, TheRouterReadsThePrefixOfTheNativeModel) {
  TempDir dir;
  twin::testing::HfTestZooOptions zo;
  zo.from_layer = 1;
  zo.router_features = "prefix";
  const twin::testing::HfTestZoo zoo = twin::testing::WriteHfTestZoo(dir.path(), zo);
  auto config = ParseMergeConfig(zoo.merge_yaml, dir.path());
  ASSERT_TRUE(config.ok()) << config.status();
  MergeJobOptions mo;
  mo.quiet = true;
  auto merged = RunMergeJob(*config, mo);
  ASSERT_TRUE(merged.ok()) << merged.status();
  auto tokenizer = twin::testing::PublishedTokenizer(zoo.store, dir.Join("fetch"));
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  std::vector<at::Tensor> ids(zoo.tasks.size()), masks(zoo.tasks.size());
  for (size_t t = 0; t < zoo.tasks.size(); ++t) {
    auto batch = (*tokenizer)->Encode(twin::testing::HfTestZooTexts(static_cast<int>(t), 8));
    ASSERT_TRUE(batch.ok()) << batch.status();
    ids[t] = batch->input_ids;
    masks[t] = batch->attention_mask;
    ASSERT_TRUE(WriteSafetensors(dir.Join(absl::StrCat(zoo.tasks[t], ".test.safetensors")),
                                 {{"input_ids", ids[t]},
                                  {"attention_mask", masks[t]},
                                  {"labels", at::zeros({ids[t].size(0)}, at::kLong)}})
                    .ok());
  }
  EvalSources sources;
  sources.zoo_dir = dir.path();
  auto inputs = LoadEvalInputs(sources);
  ASSERT_TRUE(inputs.ok()) << inputs.status();
  ASSERT_EQ(inputs->router_input.features, "prefix");
  // The twins twin-eval recomputes leave the prefix alone too, as the published ones do.
  EXPECT_EQ(inputs->shared_prefix.count("bert.encoder.layer.0.attention.self.query.weight"), 1u);
  EXPECT_EQ(inputs->shared_prefix.count("bert.embeddings.LayerNorm.bias"), 1u);
  EXPECT_EQ(inputs->shared_prefix.count("bert.encoder.layer.1.attention.self.query.weight"), 0u);
  RankPolicy full;
  full.kind = RankPolicy::kRatio;
  full.ratio = 1.0;
  auto rebuilt = BuildTwin(*inputs, full, SvdOptions{});
  ASSERT_TRUE(rebuilt.ok()) << rebuilt.status();
  EXPECT_EQ(rebuilt->weights->factor_stack("bert.encoder.layer.0.output.dense.weight"), nullptr);
  EXPECT_FALSE(rebuilt->weights->has_dense("bert.embeddings.LayerNorm.bias"));
  EXPECT_NE(rebuilt->weights->factor_stack("bert.encoder.layer.1.output.dense.weight"), nullptr);

  auto native = Evaluator::Create(&*inputs, 4, EvalEngine::kNative);
  ASSERT_TRUE(native.ok()) << native.status();
  auto weights = (*native)->RouterWeights(1.0, Split::kTest);
  ASSERT_TRUE(weights.ok()) << weights.status();
  auto encoder = HfEncoder::Create(*LoadHfEncoderConfigFile(inputs->native_config_path));
  ASSERT_TRUE(encoder.ok()) << encoder.status();
  DenseParams shared(std::map<std::string, at::Tensor>(inputs->shared.begin(),
                                                       inputs->shared.end()));
  const twin::testing::HfTestModel& m = zoo.base;
  for (size_t t = 0; t < zoo.tasks.size(); ++t) {
    auto prefix = (*encoder)->Prefix(ids[t], masks[t], shared, 1);
    ASSERT_TRUE(prefix.ok()) << prefix.status();
    auto pooled = MeanPool(*prefix, masks[t]);
    ASSERT_TRUE(pooled.ok()) << pooled.status();
    auto expected = inputs->router->Weights(*pooled, 1.0);
    ASSERT_TRUE(expected.ok()) << expected.status();
    // The evaluator orders each task's rows by length (stable): the same order here.
    const at::Tensor extent = masks[t].sum(1);
    const at::Tensor order = std::get<1>(extent.sort(/*stable=*/true, 0, false));
    const at::Tensor got = (*weights)[t];
    const at::Tensor want = expected->index_select(0, order);
    ASSERT_EQ(got.sizes(), want.sizes()) << zoo.tasks[t];
    // Padded to each batch's own length instead of the whole set's: rounding only.
    EXPECT_LE((got - want).abs().max().item<double>(),
              twin::testing::ProbabilityError(
                  twin::testing::HfForwardDepth(m) + 6,
                  twin::testing::HfForwardWidth(m, ids[t].size(1)), 10.0))
        << zoo.tasks[t];
  }
  auto script = Evaluator::Create(&*inputs, 4, EvalEngine::kTorchScript);
  ASSERT_TRUE(script.ok()) << script.status();
  auto refused = (*script)->RouterWeights(1.0, Split::kTest);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(refused.status().message(), HasSubstr("prefix"));
}

TEST(EvalEngineTest, NativeNeedsAVersionWithANativeModel) {
  EvalInputs in;
  in.tasks.emplace_back();
  in.version = "v-ts";
  auto ev = Evaluator::Create(&in, 8, EvalEngine::kNative);
  ASSERT_FALSE(ev.ok());
  EXPECT_EQ(ev.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(ev.status().message(), HasSubstr("v-ts has no native model"));
  auto bad = ParseEvalEngine("onnx");
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(bad.status().message(), HasSubstr("'onnx'"));
  EXPECT_EQ(*ParseEvalEngine("native"), EvalEngine::kNative);
}

}  // namespace
}  // namespace twin::eval
