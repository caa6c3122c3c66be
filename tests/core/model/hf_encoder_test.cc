#include "core/model/hf_encoder.h"

#include <ATen/ATen.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <iostream>
#include <vector>

#include "core/model/hf_script.h"
#include "core/model/roberta.h"
#include "core/model/script_model.h"
#include "tests/core/model/hf_test_models.h"
#include "tests/testing/rounding.h"
#include "tests/testing/temp_dir.h"

namespace twin {
namespace {

using ::testing::ElementsAreArray;
using ::testing::HasSubstr;
using testing::HfTestModel;
using testing::TempDir;

int Depth(const HfTestModel& m) { return testing::HfForwardDepth(m); }
int64_t Width(const HfTestModel& m, int64_t len) { return testing::HfForwardWidth(m, len); }

// max |a - b| and the scale it is measured against, max(1, max |b|).
struct Diff {
  double abs = 0;
  double scale = 1;
  double relative() const { return abs / scale; }
};

Diff Compare(const at::Tensor& a, const at::Tensor& b) {
  EXPECT_EQ(a.sizes(), b.sizes());
  const at::Tensor bd = b.to(at::kDouble);
  return {(a.to(at::kDouble) - bd).abs().max().item<double>(),
          std::max(1.0, bd.abs().max().item<double>())};
}

// Largest relative difference seen by each test, printed for the record.
void Record(const std::string& what, const Diff& d, double tolerance) {
  std::cout << "[measured] " << what << ": max |diff| / scale = " << d.relative() << " (tolerance "
            << tolerance << ")\n";
}

void ExpectClose(const std::string& what, const at::Tensor& got, const at::Tensor& want,
                 double tolerance_at_scale_1) {
  const Diff d = Compare(got, want);
  EXPECT_LE(d.relative(), tolerance_at_scale_1) << what << ": " << d.abs << " at scale " << d.scale;
  Record(what, d, tolerance_at_scale_1);
}

struct Batch {
  at::Tensor ids, mask;
};

// Rows of `lengths` real tokens (the first is id 0, as <s> / [CLS]), padded to `len` with the
// pad id and mask 0. Real tokens avoid the pad id.
Batch MakeBatch(const HfTestModel& m, const std::vector<int64_t>& lengths, int64_t len,
                uint64_t seed) {
  at::manual_seed(seed);
  const int64_t rows = static_cast<int64_t>(lengths.size());
  Batch b{at::full({rows, len}, m.pad, at::kLong), at::zeros({rows, len}, at::kLong)};
  const at::Tensor random = at::randint(m.pad + 1, m.vocab, {rows, len}, at::kLong);
  for (int64_t r = 0; r < rows; ++r) {
    b.ids[r].narrow(0, 0, lengths[r]).copy_(random[r].narrow(0, 0, lengths[r]));
    b.ids[r][0] = 0;
    b.mask[r].narrow(0, 0, lengths[r]).fill_(1);
  }
  return b;
}

struct Loaded {
  HfModel model;
  std::map<std::string, at::Tensor> weights;  // body and head
};

Loaded Load(const TempDir& dir, const HfTestModel& m, int shards = 0) {
  testing::WriteHfTestDir(dir.path(), m, shards);
  auto model = LoadHfModel(dir.path());
  EXPECT_TRUE(model.ok()) << model.status();
  Loaded out{std::move(model).value(), {}};
  out.weights = out.model.body;
  out.weights.insert(out.model.head.begin(), out.model.head.end());
  return out;
}

at::Tensor Run(torch::jit::Module& m, const char* method, const Batch& b) {
  c10::InferenceMode guard;
  return m.get_method(method)({b.ids, b.mask}).toTensor();
}

// The native forward and the TorchScript module agree on a padded batch.
void ExpectParity(const HfTestModel& m, int shards) {
  const std::string what = m.model_type + " " + m.hidden_act + " shards=" + std::to_string(shards);
  TempDir dir;
  Loaded l = Load(dir, m, shards);
  ASSERT_NE(l.model.encoder, nullptr);
  auto script = MakeHfScriptModule(l.model.encoder->config(), l.weights);
  ASSERT_TRUE(script.ok()) << script.status();
  const int64_t len = 17;
  const Batch b = MakeBatch(m, {17, 9, 1, 13}, len, m.seed + 7);
  DenseParams body(l.model.body), head(l.model.head);
  const double tol = testing::ForwardError(Depth(m), Width(m, len), 1.0);

  auto hidden = l.model.encoder->Hidden(b.ids, b.mask, body);
  ASSERT_TRUE(hidden.ok()) << hidden.status();
  ExpectClose(what + " hidden", *hidden, Run(*script, "hidden", b), tol);
  auto features = l.model.encoder->Embed(b.ids, b.mask, body);
  ASSERT_TRUE(features.ok()) << features.status();
  ExpectClose(what + " embed", *features, Run(*script, "embed", b), tol);
  if (!m.classifier) return;
  auto logits = l.model.encoder->Forward(b.ids, b.mask, body, head);
  ASSERT_TRUE(logits.ok()) << logits.status();
  EXPECT_EQ(logits->sizes(), (std::vector<int64_t>{4, m.num_labels}));
  ExpectClose(what + " forward", *logits, Run(*script, "forward", b), tol);
}

TEST(HfEncoderTest, NativeMatchesTorchScriptForBothFamiliesSingleAndSharded) {
  for (const char* type : {"bert", "roberta"}) {
    for (int shards : {0, 3}) {
      HfTestModel m;
      m.model_type = type;
      ExpectParity(m, shards);
    }
  }
}

TEST(HfEncoderTest, NativeMatchesTorchScriptForEveryActivationAndBareModels) {
  for (const char* act : {"gelu_new", "gelu_pytorch_tanh", "relu", "silu"}) {
    HfTestModel m;
    m.hidden_act = act;
    m.seed = 3;
    ExpectParity(m, 0);
  }
  HfTestModel x;
  x.model_type = "xlm-roberta";
  x.seed = 4;
  ExpectParity(x, 2);
  for (const char* type : {"bert", "roberta"}) {
    HfTestModel bare;
    bare.model_type = type;
    bare.classifier = false;
    bare.prefixed = false;
    ExpectParity(bare, 0);
  }
}

TEST(HfEncoderTest, ScriptModuleFollowsTheModelConvention) {
  HfTestModel m;
  TempDir dir;
  Loaded l = Load(dir, m);
  auto module = MakeHfScriptModule(l.model.encoder->config(), l.weights);
  ASSERT_TRUE(module.ok()) << module.status();
  module->save(dir.Join("architecture.pt"));
  auto model = ScriptModel::Load(dir.Join("architecture.pt"));
  ASSERT_TRUE(model.ok()) << model.status();
  std::vector<std::string> names;
  for (const auto& [name, t] : (*model)->NamedParameters()) names.push_back(name);
  std::vector<std::string> want = l.model.encoder->body_names();
  want.insert(want.end(), l.model.encoder->head_names().begin(),
              l.model.encoder->head_names().end());
  std::sort(names.begin(), names.end());
  std::sort(want.begin(), want.end());
  EXPECT_EQ(names, want);
  EXPECT_TRUE((*model)->has_classify());
  EXPECT_EQ((*model)->VocabSize(), m.vocab);
  const Batch b = MakeBatch(m, {6, 3}, 6, 11);
  EXPECT_TRUE((*model)->CheckClassify(b.ids, b.mask).ok());
  // The fused path replaces weights by name.
  EXPECT_TRUE((*model)
                  ->SetParameter("roberta.encoder.layer.1.output.dense.bias", at::zeros({m.hidden}))
                  .ok());

  auto missing = l.weights;
  missing.erase("roberta.encoder.layer.0.attention.self.key.bias");
  auto bad = MakeHfScriptModule(l.model.encoder->config(), missing);
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(bad.status().message(), HasSubstr("bias"));
}

// Each row's output is the same alone, unpadded, and inside a batch padded to another length.
TEST(HfEncoderTest, RowsDoNotDependOnPadding) {
  for (const char* type : {"bert", "roberta"}) {
    HfTestModel m;
    m.model_type = type;
    TempDir dir;
    Loaded l = Load(dir, m);
    DenseParams body(l.model.body), head(l.model.head);
    const std::vector<int64_t> lengths = {5, 12, 1, 8};
    const int64_t len = 20;
    const Batch batch = MakeBatch(m, lengths, len, 5);
    auto all = l.model.encoder->Forward(batch.ids, batch.mask, body, head);
    ASSERT_TRUE(all.ok()) << all.status();
    const double tol = testing::ForwardError(Depth(m), Width(m, len), 1.0);
    for (size_t r = 0; r < lengths.size(); ++r) {
      const int64_t n = lengths[r];
      const Batch alone{batch.ids.narrow(0, r, 1).narrow(1, 0, n),
                        batch.mask.narrow(0, r, 1).narrow(1, 0, n)};
      auto one = l.model.encoder->Forward(alone.ids, alone.mask, body, head);
      ASSERT_TRUE(one.ok()) << one.status();
      ExpectClose(std::string(type) + " row " + std::to_string(r) + " alone", *one,
                  all->narrow(0, r, 1), tol);
    }
  }
}

TEST(HfEncoderTest, RobertaPositionsCountNonPadTokensAfterPaddingIdx) {
  const at::Tensor ids = at::tensor({0, 5, 7, 1, 1, 0, 1, 9, 1, 1}, at::kLong).view({2, 5});
  const at::Tensor pos = RobertaPositionIds(ids, /*padding_idx=*/1);
  EXPECT_THAT(std::vector<int64_t>(pos.data_ptr<int64_t>(), pos.data_ptr<int64_t>() + 10),
              ElementsAreArray({2, 3, 4, 1, 1, 2, 1, 3, 1, 1}));
}

TEST(HfEncoderTest, RobertaNeverReadsPositionsUpToPaddingIdx) {
  HfTestModel m;
  m.pad = 1;
  TempDir dir;
  Loaded l = Load(dir, m);
  EXPECT_EQ(l.model.encoder->max_input_length(), m.max_positions - m.pad - 1);
  const Batch b = MakeBatch(m, {38, 2}, 38, 9);
  DenseParams body(l.model.body);
  auto before = l.model.encoder->Hidden(b.ids, b.mask, body);
  ASSERT_TRUE(before.ok()) << before.status();
  // Row 0 of the position table is never a position; row 1 (padding_idx) only pad tokens take.
  auto edited = l.model.body;
  const std::string table = "roberta.embeddings.position_embeddings.weight";
  edited[table] = edited[table].clone();
  edited[table][0].fill_(100.0);
  edited[table][1].fill_(100.0);
  DenseParams changed(edited);
  auto after = l.model.encoder->Hidden(b.ids, b.mask, changed);
  ASSERT_TRUE(after.ok()) << after.status();
  EXPECT_TRUE(at::equal(after->narrow(0, 0, 1), before->narrow(0, 0, 1)));
  EXPECT_TRUE(
      at::equal(after->narrow(0, 1, 1).narrow(1, 0, 2), before->narrow(0, 1, 1).narrow(1, 0, 2)));
  EXPECT_FALSE(
      at::equal(after->narrow(0, 1, 1).narrow(1, 2, 36), before->narrow(0, 1, 1).narrow(1, 2, 36)));
  // 38 tokens fit (positions 2..39); 39 do not.
  const Batch too_long = MakeBatch(m, {39}, 39, 9);
  auto error = l.model.encoder->Hidden(too_long.ids, too_long.mask, body);
  EXPECT_EQ(error.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(error.status().message(), HasSubstr("38 positions"));
}


// Multi-stage merging: a forward that continues from a prefix's hidden states equals the whole
// forward, for both families and every split point; Prefix(all layers) is Hidden().
TEST(HfEncoderTest, ContinuingFromAPrefixEqualsTheWholeForward) {
  for (const char* type : {"bert", "roberta"}) {
    HfTestModel m;
    m.model_type = type;
    TempDir dir;
    Loaded l = Load(dir, m);
    const HfEncoder& encoder = *l.model.encoder;
    const int64_t len = 13;
    const Batch b = MakeBatch(m, {13, 5, 1, 9}, len, m.seed + 3);
    DenseParams body(l.model.body), head(l.model.head);
    auto whole = encoder.Forward(b.ids, b.mask, body, head);
    ASSERT_TRUE(whole.ok()) << whole.status();
    auto hidden = encoder.Hidden(b.ids, b.mask, body);
    ASSERT_TRUE(hidden.ok()) << hidden.status();
    // The same operations in the same order; bounded like any two forwards all the same.
    const double tol = testing::ForwardError(Depth(m), Width(m, len), 1.0);
    for (int64_t k = 0; k <= m.layers; ++k) {
      auto prefix = encoder.Prefix(b.ids, b.mask, body, k);
      ASSERT_TRUE(prefix.ok()) << prefix.status();
      EXPECT_EQ(prefix->sizes(), (std::vector<int64_t>{4, len, m.hidden}));
      auto rest = encoder.Forward(b.ids, b.mask, body, head, {k, *prefix});
      ASSERT_TRUE(rest.ok()) << rest.status();
      ExpectClose(std::string(type) + " from layer " + std::to_string(k), *rest, *whole, tol);
      if (k == m.layers) ExpectClose(std::string(type) + " full prefix", *prefix, *hidden, tol);
    }
  }
}

TEST(HfEncoderTest, AStartThatDoesNotFitTheBatchIsRefused) {
  HfTestModel m;
  TempDir dir;
  Loaded l = Load(dir, m);
  const HfEncoder& encoder = *l.model.encoder;
  const Batch b = MakeBatch(m, {6, 4}, 6, 5);
  DenseParams body(l.model.body);
  auto prefix = encoder.Prefix(b.ids, b.mask, body, 1);
  ASSERT_TRUE(prefix.ok()) << prefix.status();
  auto short_rows = encoder.Embed(b.ids, b.mask, body, {1, prefix->narrow(1, 0, 5)});
  EXPECT_EQ(short_rows.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(short_rows.status().message(), HasSubstr("starting hidden states"));
  auto integers = encoder.Embed(b.ids, b.mask, body, {1, prefix->to(at::kLong)});
  EXPECT_EQ(integers.status().code(), absl::StatusCode::kInvalidArgument);
  auto past_the_end = encoder.Embed(b.ids, b.mask, body, {m.layers + 1, *prefix});
  EXPECT_EQ(past_the_end.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(past_the_end.status().message(), HasSubstr("cannot start after"));
  auto too_deep = encoder.Prefix(b.ids, b.mask, body, m.layers + 1);
  EXPECT_EQ(too_deep.status().code(), absl::StatusCode::kInvalidArgument);
  auto negative = encoder.Prefix(b.ids, b.mask, body, -1);
  EXPECT_EQ(negative.status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(HfEncoderTest, StageOfNamesTheEmbeddingsEachLayerAndWhatFollows) {
  for (const char* type : {"bert", "roberta"}) {
    HfTestModel m;
    m.model_type = type;
    TempDir dir;
    Loaded l = Load(dir, m);
    const HfEncoder& encoder = *l.model.encoder;
    const std::string p = std::string(type) + ".";
    EXPECT_EQ(encoder.StageOf(p + "embeddings.word_embeddings.weight"), -1);
    EXPECT_EQ(encoder.StageOf(p + "embeddings.LayerNorm.bias"), -1);
    EXPECT_EQ(encoder.StageOf(p + "encoder.layer.0.attention.self.query.weight"), 0);
    EXPECT_EQ(encoder.StageOf(p + "encoder.layer.1.output.LayerNorm.weight"), 1);
    EXPECT_EQ(encoder.StageOf(p + "encoder.layer.7.output.dense.weight"), m.layers);  // no layer 7
    EXPECT_EQ(encoder.StageOf("classifier.dense.weight"), m.layers);
    int64_t staged = 0;
    for (const std::string& name : encoder.body_names()) {
      const int64_t stage = encoder.StageOf(name);
      EXPECT_GE(stage, -1) << name;
      EXPECT_LE(stage, m.layers) << name;
      staged += stage < m.layers;
    }
    // Everything but BERT's pooler belongs to the embeddings or a layer.
    EXPECT_EQ(static_cast<size_t>(staged),
              encoder.body_names().size() - (std::string(type) == "bert" ? 2 : 0));
  }
}

TEST(HfEncoderTest, MeanPoolAveragesTheKeptTokensOnly) {
  const at::Tensor hidden = at::arange(2 * 3 * 2, at::kFloat).view({2, 3, 2});
  const at::Tensor mask = at::tensor({1, 1, 0, 0, 0, 0}, at::kLong).view({2, 3});
  auto pooled = MeanPool(hidden, mask);
  ASSERT_TRUE(pooled.ok()) << pooled.status();
  // Row 0: the mean of (0, 1) and (2, 3); row 1 keeps no token and pools to zeros.
  EXPECT_TRUE(at::equal(*pooled, at::tensor({1.0f, 2.0f, 0.0f, 0.0f}).view({2, 2})));
  auto mismatched = MeanPool(hidden, mask.narrow(1, 0, 2));
  EXPECT_EQ(mismatched.status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace twin
