#include "core/model/script_model.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "tests/testing/temp_dir.h"
#include "tests/testing/tiny_models.h"

namespace twin {
namespace {

using ::testing::HasSubstr;
using ::testing::UnorderedElementsAre;
using twin::testing::MakeTinyModel;
using twin::testing::TinyModelOptions;
using twin::testing::TempDir;

TEST(ScriptModelTest, ListsAndReplacesParametersAndRuns) {
  TempDir dir;
  ASSERT_NO_THROW(MakeTinyModel({32, 8, 3, 1}).save(dir.Join("m.pt")));
  auto model = ScriptModel::Load(dir.Join("m.pt"));
  ASSERT_TRUE(model.ok()) << model.status();

  std::vector<std::string> names;
  for (const auto& [name, t] : (*model)->NamedParameters()) names.push_back(name);
  EXPECT_THAT(names, UnorderedElementsAre("emb.weight", "enc.weight", "enc.bias", "head.weight",
                                          "head.bias"));

  at::Tensor ids = at::randint(32, {4, 6}, at::kLong);
  at::Tensor mask = at::ones({4, 6}, at::kLong);
  auto logits = (*model)->Forward(ids, mask);
  ASSERT_TRUE(logits.ok()) << logits.status();
  EXPECT_EQ(logits->sizes(), (std::vector<int64_t>{4, 3}));
  auto features = (*model)->Embed(ids, mask);
  ASSERT_TRUE(features.ok());
  EXPECT_EQ(features->sizes(), (std::vector<int64_t>{4, 8}));

  // A head with a different number of classes can be swapped in.
  at::Tensor w = at::zeros({5, 8});
  at::Tensor b = at::arange(5, at::kFloat);
  ASSERT_TRUE((*model)->SetParameters({{"head.weight", w}, {"head.bias", b}}).ok());
  auto swapped = (*model)->Forward(ids, mask);
  ASSERT_TRUE(swapped.ok()) << swapped.status();
  ASSERT_EQ(swapped->sizes(), (std::vector<int64_t>{4, 5}));
  EXPECT_TRUE(at::allclose(*swapped, b.expand({4, 5})));

  // Save + reload keeps the replaced parameters.
  ASSERT_TRUE((*model)->Save(dir.Join("m2.pt")).ok());
  auto reloaded = ScriptModel::Load(dir.Join("m2.pt"));
  ASSERT_TRUE(reloaded.ok());
  auto head = (*reloaded)->Parameter("head.bias");
  ASSERT_TRUE(head.ok());
  EXPECT_TRUE(at::equal(*head, b));
}

TEST(ScriptModelTest, ErrorsNameTheProblem) {
  TempDir dir;
  auto missing = ScriptModel::Load(dir.Join("nope.pt"));
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(missing.status().message()), HasSubstr("nope.pt"));

  twin::testing::WriteFileOrDie(dir.Join("junk.pt"), "not a zip archive");
  EXPECT_FALSE(ScriptModel::Load(dir.Join("junk.pt")).ok());

  torch::jit::Module no_embed("NoEmbed");
  no_embed.define("def forward(self, a: Tensor, b: Tensor) -> Tensor:\n  return a\n");
  auto wrapped = ScriptModel::Wrap(no_embed, "no_embed");
  ASSERT_FALSE(wrapped.ok());
  EXPECT_THAT(std::string(wrapped.status().message()), HasSubstr("embed"));

  auto model = ScriptModel::Wrap(MakeTinyModel({32, 8, 2, 1}), "tiny");
  ASSERT_TRUE(model.ok());
  auto bad = (*model)->SetParameter("enc.nothing", at::zeros({1}));
  EXPECT_EQ(bad.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(bad.message()), HasSubstr("enc.nothing"));
  EXPECT_EQ((*model)->SetParameter("nomodule.weight", at::zeros({1})).code(),
            absl::StatusCode::kNotFound);

  // Out-of-range token ids fail with a status, not an exception.
  auto oob = (*model)->Forward(at::full({1, 3}, 1000, at::kLong), at::ones({1, 3}, at::kLong));
  EXPECT_FALSE(oob.ok());
  EXPECT_THAT(std::string(oob.status().message()), HasSubstr("forward"));
}

TEST(ScriptModelTest, RouterFeaturesPreferRouteFeaturesAndFallBackToEmbed) {
  const at::Tensor ids = at::arange(6, at::kLong).view({2, 3});
  const at::Tensor mask = at::ones({2, 3}, at::kLong);

  auto plain = ScriptModel::Wrap(MakeTinyModel({32, 8, 3, 1}), "plain");
  ASSERT_TRUE(plain.ok()) << plain.status();
  EXPECT_EQ((*plain)->router_features_method(), "embed");
  auto embed = (*plain)->Embed(ids, mask);
  auto routed = (*plain)->RouterFeatures(ids, mask);
  ASSERT_TRUE(embed.ok() && routed.ok());
  EXPECT_TRUE(at::equal(*embed, *routed));

  torch::jit::Module m("WithRouteFeatures");
  m.define(
      "def embed(self, a: Tensor, b: Tensor) -> Tensor:\n  return a * 1.0\n"
      "def forward(self, a: Tensor, b: Tensor) -> Tensor:\n  return self.embed(a, b)\n"
      "def route_features(self, a: Tensor, b: Tensor) -> Tensor:\n"
      "  return torch.cat([self.embed(a, b), (a + b) * 1.0], 1)\n");
  auto with = ScriptModel::Wrap(m, "with");
  ASSERT_TRUE(with.ok()) << with.status();
  EXPECT_EQ((*with)->router_features_method(), "route_features");
  auto features = (*with)->RouterFeatures(ids, mask);
  ASSERT_TRUE(features.ok()) << features.status();
  EXPECT_TRUE(at::equal(*features, at::cat({ids, ids + 1}, 1).to(at::kFloat)));
  // A clone keeps the choice.
  auto clone = (*with)->Clone();
  ASSERT_TRUE(clone.ok());
  EXPECT_EQ((*clone)->router_features_method(), "route_features");

  // A failing route_features() names the method.
  auto bad = (*with)->RouterFeatures(ids, at::ones({2, 4}, at::kLong));
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(std::string(bad.status().message()), HasSubstr("route_features"));
}

// classify(features) is the head alone: Classify(Embed(x)) == Forward(x) for the tiny model,
// and CheckClassify refuses a classify() that is not forward()'s head, naming the difference.
TEST(ScriptModelTest, ClassifyIsTheHeadAloneAndIsCheckedAgainstForward) {
  const at::Tensor ids = at::randint(32, {3, 5}, at::kLong);
  const at::Tensor mask = at::ones({3, 5}, at::kLong);
  auto tiny = ScriptModel::Wrap(MakeTinyModel({32, 8, 3, 1}), "tiny");
  ASSERT_TRUE(tiny.ok()) << tiny.status();
  ASSERT_TRUE((*tiny)->has_classify());
  auto features = (*tiny)->Embed(ids, mask);
  ASSERT_TRUE(features.ok()) << features.status();
  auto split = (*tiny)->Classify(*features);
  auto forward = (*tiny)->Forward(ids, mask);
  ASSERT_TRUE(split.ok() && forward.ok());
  // The same operations on the same rows: bit-identical.
  EXPECT_TRUE(at::equal(*split, *forward));
  EXPECT_TRUE((*tiny)->CheckClassify(ids, mask).ok());
  // A clone keeps the method.
  auto clone = (*tiny)->Clone();
  ASSERT_TRUE(clone.ok());
  EXPECT_TRUE((*clone)->has_classify());

  // Without classify(): FailedPrecondition, not a crash.
  TinyModelOptions plain_options{32, 8, 3, 1};
  plain_options.with_classify = false;
  auto plain = ScriptModel::Wrap(MakeTinyModel(plain_options), "plain");
  ASSERT_TRUE(plain.ok());
  EXPECT_FALSE((*plain)->has_classify());
  EXPECT_EQ((*plain)->Classify(*features).status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ((*plain)->CheckClassify(ids, mask).code(), absl::StatusCode::kFailedPrecondition);

  // A classify() that scales the head's logits, and one of the wrong width.
  const char* kBody =
      "def embed(self, a: Tensor, b: Tensor) -> Tensor:\n  return (a * b) * 1.0\n"
      "def forward(self, a: Tensor, b: Tensor) -> Tensor:\n  return self.embed(a, b) + 1.0\n";
  torch::jit::Module scaled("Scaled");
  scaled.define(std::string(kBody) +
                "def classify(self, f: Tensor) -> Tensor:\n  return (f + 1.0) * 2.0\n");
  auto bad = ScriptModel::Wrap(scaled, "scaled");
  ASSERT_TRUE(bad.ok());
  absl::Status refused = (*bad)->CheckClassify(ids, mask);
  EXPECT_EQ(refused.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(refused.message()), HasSubstr("differs from forward(x)"));
  torch::jit::Module narrow("Narrow");
  narrow.define(std::string(kBody) +
                "def classify(self, f: Tensor) -> Tensor:\n  return (f + 1.0)[:, 0:2]\n");
  auto wrong = ScriptModel::Wrap(narrow, "narrow");
  ASSERT_TRUE(wrong.ok());
  refused = (*wrong)->CheckClassify(ids, mask);
  EXPECT_EQ(refused.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(refused.message()), HasSubstr("[3, 2]"));
  // One that throws names the method.
  torch::jit::Module throwing("Throwing");
  throwing.define(std::string(kBody) +
                  "def classify(self, f: Tensor) -> Tensor:\n  return torch.mm(f, f)\n");
  auto raises = ScriptModel::Wrap(throwing, "throwing");
  ASSERT_TRUE(raises.ok());
  refused = (*raises)->CheckClassify(ids, mask);
  EXPECT_FALSE(refused.ok());
  EXPECT_THAT(std::string(refused.message()), HasSubstr("classify"));
}

TEST(ScriptModelTest, VocabSizeFromTheEmbeddingTableThatEmbedIndexes) {
  // The tiny model's embed() is torch.embedding(self.emb.weight, input_ids): found in its graph.
  auto tiny = ScriptModel::Wrap(MakeTinyModel({32, 8, 3, 1}), "tiny");
  ASSERT_TRUE(tiny.ok()) << tiny.status();
  EXPECT_EQ((*tiny)->embedding_parameter(), "emb.weight");
  EXPECT_EQ((*tiny)->VocabSize(), 32);
  // It follows the parameter: stripped (as in a published architecture) it is unknown.
  ASSERT_TRUE((*tiny)->SetParameter("emb.weight", at::empty({0})).ok());
  EXPECT_EQ((*tiny)->VocabSize(), 0);
  ASSERT_TRUE((*tiny)->SetParameter("emb.weight", at::zeros({40, 8})).ok());
  EXPECT_EQ((*tiny)->VocabSize(), 40);

  // Through a submodule's method call (inlined) and beside a positional embedding.
  torch::jit::Module inner("Inner");
  inner.register_parameter("table", at::zeros({17, 4}), /*is_buffer=*/false);
  inner.define(
      "def lookup(self, ids: Tensor) -> Tensor:\n  return torch.embedding(self.table, ids)\n");
  torch::jit::Module outer("Outer");
  outer.register_parameter("pos", at::zeros({9, 4}), /*is_buffer=*/false);
  outer.register_module("words", inner);
  outer.define(
      "def embed(self, ids: Tensor, mask: Tensor) -> Tensor:\n"
      "  p = torch.embedding(self.pos, torch.arange(ids.size(1)))\n"
      "  return (self.words.lookup(ids) + p).mean(1)\n"
      "def forward(self, ids: Tensor, mask: Tensor) -> Tensor:\n  return self.embed(ids, mask)\n");
  auto nested = ScriptModel::Wrap(outer, "nested");
  ASSERT_TRUE(nested.ok()) << nested.status();
  EXPECT_EQ((*nested)->embedding_parameter(), "words.table");
  EXPECT_EQ((*nested)->VocabSize(), 17);

  // A declared vocab_size wins; without either the vocabulary is unknown.
  torch::jit::Module declared("Declared");
  declared.register_attribute(kVocabSizeAttribute, c10::IntType::get(), int64_t{1000});
  declared.define(
      "def embed(self, a: Tensor, b: Tensor) -> Tensor:\n  return a * 1.0\n"
      "def forward(self, a: Tensor, b: Tensor) -> Tensor:\n  return a * 1.0\n");
  auto with_attribute = ScriptModel::Wrap(declared, "declared");
  ASSERT_TRUE(with_attribute.ok()) << with_attribute.status();
  EXPECT_EQ((*with_attribute)->VocabSize(), 1000);
  torch::jit::Module bare("Bare");
  bare.define(
      "def embed(self, a: Tensor, b: Tensor) -> Tensor:\n  return a * 1.0\n"
      "def forward(self, a: Tensor, b: Tensor) -> Tensor:\n  return a * 1.0\n");
  auto unknown = ScriptModel::Wrap(bare, "bare");
  ASSERT_TRUE(unknown.ok()) << unknown.status();
  EXPECT_EQ((*unknown)->VocabSize(), 0);
}

TEST(ScriptModelTest, CloneIsIndependent) {
  auto model = ScriptModel::Wrap(MakeTinyModel({32, 8, 2, 1}), "tiny");
  ASSERT_TRUE(model.ok());
  auto clone = (*model)->Clone();
  ASSERT_TRUE(clone.ok());
  ASSERT_TRUE((*clone)->SetParameter("enc.bias", at::ones({8})).ok());
  EXPECT_TRUE(at::equal(*(*model)->Parameter("enc.bias"), at::zeros({8})));
  EXPECT_TRUE(at::equal(*(*clone)->Parameter("enc.bias"), at::ones({8})));
}

}  // namespace
}  // namespace twin
