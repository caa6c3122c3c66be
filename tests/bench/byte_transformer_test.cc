#include "bench/zoo/byte_transformer.h"

#include <ATen/ATen.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <set>
#include <string>
#include <vector>

#include "bench/zoo/byte_zoo.h"
#include "core/model/script_model.h"
#include "core/text/tokenizer.h"
#include "tests/testing/rounding.h"
#include "tests/testing/temp_dir.h"

namespace twin::zoo {
namespace {

using ::testing::HasSubstr;
using twin::testing::ForwardError;

// A block of the small transformer: the embedding sum, attention (scores over dim / heads,
// softmax, the weighted sum over positions), two LayerNorms and the two feed-forward layers,
// then the masked mean pool: about 8 chained stages per layer, none wider than ff_dim.
double FeatureBound(const ByteTransformerOptions& o, const at::Tensor& reference) {
  return ForwardError(static_cast<int>(8 * o.layers), std::max(o.ff_dim, o.max_len),
                      reference.abs().max().item<double>());
}

double MaxAbsDiff(const at::Tensor& a, const at::Tensor& b) {
  return (a - b).abs().max().item<double>();
}

ByteTransformerOptions Small(int64_t classes, bool mlm = false) {
  ByteTransformerOptions o;
  o.layers = 1;
  o.dim = 16;
  o.heads = 2;
  o.ff_dim = 32;
  o.max_len = 16;
  o.num_classes = classes;
  o.dropout = 0.0;
  o.with_mlm = mlm;
  return o;
}

// Two classes told apart by their bytes: runs of 'a'..'c' versus runs of 'x'..'z'.
TokenizedExamples TwoClassData(int64_t rows) {
  std::vector<std::string> texts;
  std::vector<int64_t> labels;
  for (int64_t i = 0; i < rows; ++i) {
    const int64_t label = i % 2;
    std::string text;
    for (int64_t j = 0; j < 6 + i % 5; ++j) text += static_cast<char>((label ? 'x' : 'a') + j % 3);
    texts.push_back(text);
    labels.push_back(label);
  }
  TokenizerSpec spec;
  spec.max_length = 16;
  auto tokenizer = Tokenizer::Create(spec);
  EXPECT_TRUE(tokenizer.ok());
  auto batch = (*tokenizer)->Encode(texts);
  EXPECT_TRUE(batch.ok());
  return {batch->input_ids, batch->attention_mask, at::tensor(labels, at::kLong)};
}

std::set<std::string> Names(const torch::jit::Module& m) {
  std::set<std::string> names;
  for (const auto& p : m.named_parameters(true)) names.insert(p.name);
  return names;
}

TEST(ByteTransformerTest, FollowsTheModelConvention) {
  auto module = MakeByteTransformer(Small(3));
  ASSERT_TRUE(module.ok()) << module.status();
  TokenizedExamples data = TwoClassData(4);
  at::Tensor features = module->run_method("embed", data.input_ids, data.attention_mask).toTensor();
  at::Tensor logits = module->forward({data.input_ids, data.attention_mask}).toTensor();
  EXPECT_EQ(features.sizes(), (std::vector<int64_t>{4, 16}));
  EXPECT_EQ(logits.sizes(), (std::vector<int64_t>{4, 3}));
  std::set<std::string> names = Names(*module);
  for (const char* name : {"tok.weight", "pos.weight", "layer0.qkv.weight", "layer0.fc2.bias",
                           "norm.weight", "head.weight", "head.bias"}) {
    EXPECT_TRUE(names.count(name)) << name;
  }
  EXPECT_FALSE(names.count("mlm.bias"));
}

TEST(ByteTransformerTest, PaddingDoesNotChangeFeatures) {
  const ByteTransformerOptions o = Small(2);
  auto module = MakeByteTransformer(o);
  ASSERT_TRUE(module.ok());
  TokenizedExamples data = TwoClassData(2);
  const int64_t len = data.attention_mask[0].sum().item<int64_t>();
  at::Tensor ids = data.input_ids.slice(0, 0, 1).slice(1, 0, len);
  at::Tensor mask = data.attention_mask.slice(0, 0, 1).slice(1, 0, len);
  at::Tensor padded_ids = at::cat({ids, at::zeros({1, 5}, at::kLong)}, 1);
  at::Tensor padded_mask = at::cat({mask, at::zeros({1, 5}, at::kLong)}, 1);
  at::Tensor a = module->run_method("embed", ids, mask).toTensor();
  at::Tensor b = module->run_method("embed", padded_ids, padded_mask).toTensor();
  // Padding changes the shapes of the products (and so the kernels' summation order) only.
  EXPECT_LE(MaxAbsDiff(a, b), FeatureBound(o, a));
}

TEST(ByteTransformerTest, RouteFeaturesPoolEveryLayerAndCountByteNgrams) {
  ByteTransformerOptions o = Small(2);
  o.layers = 2;
  o.route_ngram_buckets = 64;
  auto module = MakeByteTransformer(o);
  ASSERT_TRUE(module.ok()) << module.status();
  TokenizedExamples data = TwoClassData(3);
  at::Tensor f =
      module->run_method("route_features", data.input_ids, data.attention_mask).toTensor();
  ASSERT_EQ(f.sizes(), (std::vector<int64_t>{3, 3 * 16 + 64}));
  // The last pooled block is embed()'s output.
  at::Tensor embed = module->run_method("embed", data.input_ids, data.attention_mask).toTensor();
  EXPECT_LE(MaxAbsDiff(f.slice(1, 2 * 16, 3 * 16), embed), FeatureBound(o, embed));
  // n bytes (bos and padding excluded) have n 1-grams, n-1 2-grams and n-2 3-grams.
  at::Tensor counts = at::expm1(f.slice(1, 3 * 16)).sum(1);
  for (int64_t i = 0; i < 3; ++i) {
    const int64_t n = data.attention_mask[i].sum().item<int64_t>() - 1;  // minus bos
    // log1p then expm1 of each bucket (a few u each, relative), then a float32 sum over the
    // buckets; the counts add up to 3n - 3.
    const double bound = (testing::Float32SumError(o.route_ngram_buckets) +
                          4 * testing::kFloat32Unit) * (3.0 * n);
    EXPECT_NEAR(counts[i].item<double>(), 3.0 * n - 3.0, bound) << i;
  }
  // Padding changes nothing.
  at::Tensor padded_ids = at::cat({data.input_ids, at::zeros({3, 4}, at::kLong)}, 1);
  at::Tensor padded_mask = at::cat({data.attention_mask, at::zeros({3, 4}, at::kLong)}, 1);
  at::Tensor g = module->run_method("route_features", padded_ids, padded_mask).toTensor();
  EXPECT_LE(MaxAbsDiff(f, g), FeatureBound(o, f));
  // Different bytes land in different buckets: the classes' n-gram parts differ.
  EXPECT_FALSE(at::allclose(f[0].slice(0, 3 * 16), f[1].slice(0, 3 * 16)));

  o.route_ngram_buckets = 0;
  auto without = MakeByteTransformer(o);
  ASSERT_TRUE(without.ok());
  EXPECT_FALSE(without->find_method("route_features").has_value());
}

TEST(ByteTransformerTest, RebuildKeepsEveryWeightAndAddsTheCurrentMethods) {
  ByteTransformerOptions old_code = Small(3);
  old_code.route_ngram_buckets = 0;  // a module saved before route_features existed
  auto saved = MakeByteTransformer(old_code);
  ASSERT_TRUE(saved.ok());
  {
    torch::NoGradGuard no_grad;
    for (const auto& p : saved->named_parameters(true)) p.value.add_(0.01);
  }
  auto rebuilt = RebuildWithCurrentCode(*saved, Small(2));  // classes come from the saved head
  ASSERT_TRUE(rebuilt.ok()) << rebuilt.status();
  EXPECT_TRUE(rebuilt->find_method("route_features").has_value());
  TokenizedExamples data = TwoClassData(4);
  at::Tensor a = saved->forward({data.input_ids, data.attention_mask}).toTensor();
  at::Tensor b = rebuilt->forward({data.input_ids, data.attention_mask}).toTensor();
  ASSERT_EQ(b.sizes(), (std::vector<int64_t>{4, 3}));
  EXPECT_TRUE(at::equal(a, b));

  ByteTransformerOptions wider = Small(3);
  wider.dim = 32;
  auto mismatch = RebuildWithCurrentCode(*saved, wider);
  ASSERT_FALSE(mismatch.ok());
  EXPECT_THAT(std::string(mismatch.status().message()), HasSubstr("different preset"));
}

TEST(ByteTransformerTest, RejectsBadOptions) {
  ByteTransformerOptions o = Small(2);
  o.heads = 3;  // does not divide 16
  auto module = MakeByteTransformer(o);
  ASSERT_FALSE(module.ok());
  EXPECT_EQ(module.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(module.status().message()), HasSubstr("heads=3"));
}

TEST(ByteTransformerTest, PretrainingLowersTheMaskedByteLoss) {
  TokenizedExamples corpus = TwoClassData(32);
  TrainOptions t;
  t.batch_size = 16;
  t.learning_rate = 3e-3;
  t.steps = 1;
  auto fresh = MakeByteTransformer(Small(2, /*mlm=*/true));
  ASSERT_TRUE(fresh.ok());
  auto first = PretrainMaskedBytes(*fresh, corpus, t);
  ASSERT_TRUE(first.ok()) << first.status();
  t.steps = 80;
  auto trained = MakeByteTransformer(Small(2, /*mlm=*/true));
  auto last = PretrainMaskedBytes(*trained, corpus, t);
  ASSERT_TRUE(last.ok()) << last.status();
  EXPECT_LT(last->final_loss, 0.7 * first->final_loss);
}

TEST(ByteTransformerTest, PretrainingNeedsTheMlmHead) {
  auto module = MakeByteTransformer(Small(2));
  ASSERT_TRUE(module.ok());
  auto stats = PretrainMaskedBytes(*module, TwoClassData(4), TrainOptions{});
  ASSERT_FALSE(stats.ok());
  EXPECT_THAT(std::string(stats.status().message()), HasSubstr("with_mlm"));
}

TEST(ByteTransformerTest, FineTuningLearnsASeparableTask) {
  auto module = MakeByteTransformer(Small(2));
  ASSERT_TRUE(module.ok());
  TokenizedExamples data = TwoClassData(32);
  TrainOptions t;
  t.steps = 60;
  t.batch_size = 16;
  t.learning_rate = 3e-3;
  ASSERT_TRUE(FineTune(*module, data, t).ok());
  auto accuracy = ClassifierAccuracy(*module, data);
  ASSERT_TRUE(accuracy.ok());
  EXPECT_EQ(*accuracy, 1.0);
}

TEST(ByteTransformerTest, FineTuningChecksLabels) {
  auto module = MakeByteTransformer(Small(2));
  ASSERT_TRUE(module.ok());
  TokenizedExamples data = TwoClassData(4);
  data.labels = at::Tensor();
  auto stats = FineTune(*module, data, TrainOptions{});
  ASSERT_FALSE(stats.ok());
  EXPECT_THAT(std::string(stats.status().message()), HasSubstr("labels must be [N]"));
}

TEST(ByteTransformerTest, ExportDropsTheMlmHeadAndKeepsTheEncoder) {
  auto trained = MakeByteTransformer(Small(2, /*mlm=*/true));
  ASSERT_TRUE(trained.ok());
  ByteTransformerOptions o = Small(5);
  o.seed = 99;
  auto exported = ExportClassifier(*trained, o);
  ASSERT_TRUE(exported.ok()) << exported.status();
  std::set<std::string> names = Names(*exported);
  EXPECT_FALSE(names.count("mlm.bias"));
  EXPECT_FALSE(names.count("mlm.dense.weight"));
  TokenizedExamples data = TwoClassData(3);
  at::Tensor a = trained->run_method("embed", data.input_ids, data.attention_mask).toTensor();
  at::Tensor b = exported->run_method("embed", data.input_ids, data.attention_mask).toTensor();
  EXPECT_TRUE(at::allclose(a, b));
  at::Tensor logits = exported->forward({data.input_ids, data.attention_mask}).toTensor();
  EXPECT_EQ(logits.size(1), 5);
}

TEST(ByteTransformerTest, SavedExpertLoadsAsAScriptModel) {
  testing::TempDir dir;
  auto module = MakeByteTransformer(Small(3));
  ASSERT_TRUE(module.ok());
  module->save(dir.Join("expert.pt"));
  auto loaded = ScriptModel::Load(dir.Join("expert.pt"));
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  TokenizedExamples data = TwoClassData(2);
  auto logits = (*loaded)->Forward(data.input_ids, data.attention_mask);
  ASSERT_TRUE(logits.ok()) << logits.status();
  EXPECT_EQ(logits->sizes(), (std::vector<int64_t>{2, 3}));
}

TEST(ByteZooDataTest, UnescapesTsvText) {
  auto text = UnescapeTsvText("a\\nb\\tc\\\\d");
  ASSERT_TRUE(text.ok());
  EXPECT_EQ(*text, "a\nb\tc\\d");
  auto bad = UnescapeTsvText("tab\\x");
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(std::string(bad.status().message()), HasSubstr("invalid escape '\\x'"));
}

TEST(ByteZooDataTest, ReadsSplitsAndChecksLabels) {
  testing::TempDir dir;
  testing::WriteFileOrDie(dir.Join("t.train.tsv"), "spam\tbuy now\\n!\nham\thello\n");
  testing::WriteFileOrDie(dir.Join("t.test.tsv"), "ham\tok\nother\tno\n");
  testing::WriteFileOrDie(dir.Join("t.bad.tsv"), "ham\tok\nno tab here\n");
  std::vector<std::string> labels;
  auto train = ReadTsvSplit(dir.Join("t.train.tsv"), &labels);
  ASSERT_TRUE(train.ok()) << train.status();
  EXPECT_EQ(labels, (std::vector<std::string>{"ham", "spam"}));
  EXPECT_EQ(train->labels, (std::vector<int64_t>{1, 0}));
  EXPECT_EQ(train->texts[0], "buy now\n!");
  auto test = ReadTsvSplit(dir.Join("t.test.tsv"), &labels);
  ASSERT_FALSE(test.ok());
  EXPECT_THAT(std::string(test.status().message()), HasSubstr("label 'other'"));
  auto bad = ReadTsvSplit(dir.Join("t.bad.tsv"), &labels);
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(std::string(bad.status().message()), HasSubstr("t.bad.tsv:2"));
  auto missing = ReadTsvSplit(dir.Join("none.tsv"), &labels);
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
}

TEST(ByteZooDataTest, KnowsItsSizes) {
  auto lite = ByteZooPreset("lite");
  auto full = ByteZooPreset("full");
  ASSERT_TRUE(lite.ok() && full.ok());
  EXPECT_LT(lite->model.dim, full->model.dim);
  EXPECT_EQ(full->model.layers, 4);
  EXPECT_EQ(lite->tasks.size(), 5u);
  EXPECT_EQ(ByteZooPreset("huge").status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace twin::zoo
