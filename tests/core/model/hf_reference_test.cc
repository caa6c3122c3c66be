// The native encoders against a reference written here from the papers' and transformers'
// definitions, in float64 scalar loops over one row at a time: no ATen op, no LayerParams, no
// TorchScript, so it shares no code (and no misreading of a tensor layout) with either
// implementation under test. Padded keys are skipped rather than masked with a large negative
// score; positions are counted token by token.
#include <ATen/ATen.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <iostream>
#include <map>
#include <string>
#include <tuple>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/model/hf_encoder.h"
#include "tests/core/model/hf_test_models.h"
#include "tests/testing/rounding.h"
#include "tests/testing/temp_dir.h"

namespace twin {
namespace {

using ::testing::HasSubstr;
using testing::HfTestModel;
using testing::TempDir;
using Vec = std::vector<double>;

class Reference {
 public:
  Reference(const HfTestModel& m, const std::map<std::string, at::Tensor>& weights)
      : m_(m), weights_(weights), prefix_(m.model_type == "bert" ? "bert." : "roberta.") {}

  // Hidden states of one row (all its tokens, padded or not), then features and logits.
  struct Output {
    std::vector<Vec> hidden;
    Vec features, logits;
  };

  Output Row(const std::vector<int64_t>& ids, const std::vector<int64_t>& mask) const {
    const size_t n = ids.size();
    const std::string e = prefix_ + "embeddings.";
    std::vector<Vec> h(n);
    int64_t real_so_far = 0;
    for (size_t i = 0; i < n; ++i) {
      int64_t position = static_cast<int64_t>(i);
      if (m_.model_type != "bert") {
        // RoBERTa: pad tokens sit at padding_idx; the k-th non-pad token at padding_idx + k.
        if (ids[i] != m_.pad) ++real_so_far;
        position = ids[i] == m_.pad ? m_.pad : m_.pad + real_so_far;
      }
      Vec x = Table(e + "word_embeddings", ids[i]);
      const Vec type = Table(e + "token_type_embeddings", 0);
      const Vec pos = Table(e + "position_embeddings", position);
      for (size_t j = 0; j < x.size(); ++j) x[j] += type[j] + pos[j];
      h[i] = Norm(e + "LayerNorm", x);
    }
    for (int64_t layer = 0; layer < m_.layers; ++layer) {
      h = Layer(absl::StrCat(prefix_, "encoder.layer.", layer, "."), h, mask);
    }
    Output out;
    out.hidden = h;
    if (m_.model_type == "bert") {
      out.features = Affine(prefix_ + "pooler.dense", h[0]);
      for (double& v : out.features) v = std::tanh(v);
      if (m_.classifier) out.logits = Affine("classifier", out.features);
    } else {
      out.features = h[0];
      if (m_.classifier) {
        Vec x = Affine("classifier.dense", out.features);
        for (double& v : x) v = std::tanh(v);
        out.logits = Affine("classifier.out_proj", x);
      }
    }
    return out;
  }

 private:
  at::Tensor W(const std::string& name) const {
    return weights_.at(name).to(at::kDouble).contiguous();
  }
  Vec Table(const std::string& name, int64_t row) const {
    const at::Tensor t = W(name + ".weight");
    auto a = t.accessor<double, 2>();
    Vec out(t.size(1));
    for (int64_t j = 0; j < t.size(1); ++j) out[j] = a[row][j];
    return out;
  }
  // y_o = b_o + sum_i W[o][i] x_i (PyTorch's [out, in] layout).
  Vec Affine(const std::string& name, const Vec& x) const {
    const at::Tensor w = W(name + ".weight"), b = W(name + ".bias");
    auto wa = w.accessor<double, 2>();
    auto ba = b.accessor<double, 1>();
    Vec y(w.size(0));
    for (int64_t o = 0; o < w.size(0); ++o) {
      double s = ba[o];
      for (int64_t i = 0; i < w.size(1); ++i) s += wa[o][i] * x[i];
      y[o] = s;
    }
    return y;
  }
  // (x - mean) / sqrt(biased variance + eps) * gamma + beta.
  Vec Norm(const std::string& name, const Vec& x) const {
    const at::Tensor g = W(name + ".weight"), b = W(name + ".bias");
    auto ga = g.accessor<double, 1>();
    auto ba = b.accessor<double, 1>();
    double mean = 0, var = 0;
    for (double v : x) mean += v;
    mean /= x.size();
    for (double v : x) var += (v - mean) * (v - mean);
    var /= x.size();
    Vec y(x.size());
    for (size_t j = 0; j < x.size(); ++j) {
      y[j] = (x[j] - mean) / std::sqrt(var + m_.layer_norm_eps) * ga[j] + ba[j];
    }
    return y;
  }
  double Act(double x) const {
    if (m_.hidden_act == "gelu") return 0.5 * x * (1.0 + std::erf(x / std::sqrt(2.0)));
    if (m_.hidden_act == "relu") return x > 0 ? x : 0.0;
    if (m_.hidden_act == "silu") return x / (1.0 + std::exp(-x));
    const double kPi = std::acos(-1.0);  // gelu_new
    return 0.5 * x * (1.0 + std::tanh(std::sqrt(2.0 / kPi) * (x + 0.044715 * x * x * x)));
  }
  std::vector<Vec> Layer(const std::string& p, const std::vector<Vec>& h,
                         const std::vector<int64_t>& mask) const {
    const size_t n = h.size();
    const int64_t hd = m_.hidden / m_.heads;
    std::vector<Vec> q(n), k(n), v(n), ctx(n, Vec(m_.hidden, 0.0)), out(n);
    for (size_t i = 0; i < n; ++i) {
      q[i] = Affine(p + "attention.self.query", h[i]);
      k[i] = Affine(p + "attention.self.key", h[i]);
      v[i] = Affine(p + "attention.self.value", h[i]);
    }
    for (int64_t head = 0; head < m_.heads; ++head) {
      for (size_t i = 0; i < n; ++i) {
        // Softmax over the row's unmasked keys only.
        std::vector<double> score(n, 0.0);
        double top = -INFINITY, total = 0;
        for (size_t j = 0; j < n; ++j) {
          if (mask[j] == 0) continue;
          double s = 0;
          for (int64_t t = 0; t < hd; ++t) s += q[i][head * hd + t] * k[j][head * hd + t];
          score[j] = s / std::sqrt(static_cast<double>(hd));
          top = std::max(top, score[j]);
        }
        for (size_t j = 0; j < n; ++j) {
          score[j] = mask[j] == 0 ? 0.0 : std::exp(score[j] - top);
          total += score[j];
        }
        for (size_t j = 0; j < n; ++j) {
          for (int64_t t = 0; t < hd; ++t)
            ctx[i][head * hd + t] += score[j] / total * v[j][head * hd + t];
        }
      }
    }
    for (size_t i = 0; i < n; ++i) {
      Vec a = Affine(p + "attention.output.dense", ctx[i]);
      for (size_t j = 0; j < a.size(); ++j) a[j] += h[i][j];
      a = Norm(p + "attention.output.LayerNorm", a);
      Vec f = Affine(p + "intermediate.dense", a);
      for (double& x : f) x = Act(x);
      Vec y = Affine(p + "output.dense", f);
      for (size_t j = 0; j < y.size(); ++j) y[j] += a[j];
      out[i] = Norm(p + "output.LayerNorm", y);
    }
    return out;
  }

  const HfTestModel& m_;
  const std::map<std::string, at::Tensor>& weights_;
  const std::string prefix_;
};

at::Tensor ToTensor(const std::vector<Vec>& rows) {
  at::Tensor t = at::empty(
      {static_cast<int64_t>(rows.size()), static_cast<int64_t>(rows[0].size())}, at::kDouble);
  for (size_t i = 0; i < rows.size(); ++i) {
    for (size_t j = 0; j < rows[i].size(); ++j) t[i][j] = rows[i][j];
  }
  return t;
}

// One side is float32, the other float64 (whose own error is negligible): half of
// ForwardError's two-sided bound.
double Tolerance(const HfTestModel& m, int64_t len, double scale) {
  return 0.5 *
         testing::ForwardError(testing::HfForwardDepth(m), testing::HfForwardWidth(m, len), scale);
}

void ExpectMatchesReference(HfTestModel m) {
  TempDir dir;
  testing::WriteHfTestDir(dir.path(), m);
  auto model = LoadHfModel(dir.path());
  ASSERT_TRUE(model.ok()) << model.status();
  std::map<std::string, at::Tensor> all = model->body;
  all.insert(model->head.begin(), model->head.end());
  const Reference reference(m, all);

  // Row 0 is padded; row 1 holds a pad id inside its text (attended to: RoBERTa still gives it
  // position padding_idx and does not count it); row 2 fills the length.
  const int64_t p = m.pad;
  const std::vector<std::vector<int64_t>> ids = {{0, 7, 3, p, p}, {0, 4, p, 6, p}, {0, 9, 8, 5, 2}};
  const std::vector<std::vector<int64_t>> mask = {
      {1, 1, 1, 0, 0}, {1, 1, 1, 1, 0}, {1, 1, 1, 1, 1}};
  const int64_t rows = 3, len = 5;
  at::Tensor id_t = at::empty({rows, len}, at::kLong), mask_t = at::empty({rows, len}, at::kLong);
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t j = 0; j < len; ++j) {
      id_t[r][j] = ids[r][j];
      mask_t[r][j] = mask[r][j];
    }
  }
  DenseParams body(model->body), head(model->head);
  auto hidden = model->encoder->Hidden(id_t, mask_t, body);
  auto features = model->encoder->Embed(id_t, mask_t, body);
  auto logits = model->encoder->Forward(id_t, mask_t, body, head);
  ASSERT_TRUE(hidden.ok() && features.ok() && logits.ok()) << logits.status();
  std::vector<Vec> want_features, want_logits;
  double worst = 0;
  for (int64_t r = 0; r < rows; ++r) {
    const Reference::Output want = reference.Row(ids[r], mask[r]);
    want_features.push_back(want.features);
    want_logits.push_back(want.logits);
    const at::Tensor w = ToTensor(want.hidden);
    const double scale = std::max(1.0, w.abs().max().item<double>());
    const double diff = (hidden->select(0, r).to(at::kDouble) - w).abs().max().item<double>();
    EXPECT_LE(diff, Tolerance(m, len, scale)) << m.model_type << " hidden row " << r;
    worst = std::max(worst, diff / scale);
  }
  for (const auto& [name, got, want] :
       {std::make_tuple("features", *features, ToTensor(want_features)),
        std::make_tuple("logits", *logits, ToTensor(want_logits))}) {
    const double scale = std::max(1.0, want.abs().max().item<double>());
    const double diff = (got.to(at::kDouble) - want).abs().max().item<double>();
    EXPECT_LE(diff, Tolerance(m, len, scale)) << m.model_type << " " << name;
    worst = std::max(worst, diff / scale);
  }
  std::cout << "[measured] " << m.model_type << " " << m.hidden_act
            << " vs float64 reference: max |diff| / scale = " << worst << " (tolerance "
            << Tolerance(m, len, 1.0) << ")\n";
}

// A 1-layer, hidden-4 model of each family: small enough to follow by hand.
TEST(HfReferenceTest, TinyModelsMatchAnIndependentReference) {
  for (const char* type : {"bert", "roberta"}) {
    HfTestModel m;
    m.model_type = type;
    m.vocab = 10;
    m.hidden = 4;
    m.heads = 2;
    m.intermediate = 6;
    m.layers = 1;
    m.max_positions = 12;
    m.num_labels = 2;
    m.pad = type == std::string("bert") ? 0 : 1;
    m.layer_norm_eps = 1e-12;
    ExpectMatchesReference(m);
  }
}

TEST(HfReferenceTest, LargerModelsAndActivationsMatchTheReference) {
  for (const char* act : {"gelu", "gelu_new", "relu", "silu"}) {
    for (const char* type : {"bert", "roberta"}) {
      HfTestModel m;
      m.model_type = type;
      m.hidden_act = act;
      m.pad = type == std::string("bert") ? 0 : 1;
      ExpectMatchesReference(m);
    }
  }
}

TEST(HfReferenceTest, BadInputsAreErrorsNamingTheFamily) {
  HfTestModel m;
  TempDir dir;
  testing::WriteHfTestDir(dir.path(), m);
  auto model = LoadHfModel(dir.path());
  ASSERT_TRUE(model.ok()) << model.status();
  DenseParams body(model->body), head(model->head);
  const at::Tensor ids = at::zeros({2, 4}, at::kLong), mask = at::ones({2, 4}, at::kLong);
  struct Case {
    at::Tensor ids, mask;
    const char* message;
  };
  const Case cases[] = {
      {ids + m.vocab, mask, "outside the vocabulary"},
      {ids - 1, mask, "outside the vocabulary"},
      {ids.to(at::kInt), mask, "int64"},
      {ids.view({8}), mask.view({8}), "[B, L]"},
      {ids, at::ones({2, 5}, at::kLong), "attention_mask"},
      {at::zeros({1, 39}, at::kLong), at::ones({1, 39}, at::kLong), "positions"},
  };
  for (const Case& c : cases) {
    auto out = model->encoder->Forward(c.ids, c.mask, body, head);
    ASSERT_FALSE(out.ok()) << c.message;
    EXPECT_EQ(out.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(out.status().message(), HasSubstr("roberta"));
    EXPECT_THAT(out.status().message(), HasSubstr(c.message));
  }
  // A weight set without a tensor the forward reads: LibTorch's error, caught and named.
  auto partial = model->body;
  partial.erase("roberta.encoder.layer.1.output.LayerNorm.bias");
  auto out = model->encoder->Embed(ids, mask, DenseParams(partial));
  ASSERT_FALSE(out.ok());
  EXPECT_THAT(out.status().message(), HasSubstr("roberta Embed() failed"));
  EXPECT_THAT(out.status().message(), HasSubstr("roberta.encoder.layer.1.output.LayerNorm.bias"));
  auto features = model->encoder->Classify(at::zeros({2, 5}), head);
  EXPECT_THAT(features.status().message(), HasSubstr("[B, 32]"));

  HfTestModel bare = m;
  bare.classifier = false;
  TempDir bare_dir;
  testing::WriteHfTestDir(bare_dir.path(), bare);
  auto bare_model = LoadHfModel(bare_dir.path());
  ASSERT_TRUE(bare_model.ok()) << bare_model.status();
  auto no_head = bare_model->encoder->Classify(at::zeros({2, 32}), head);
  EXPECT_EQ(no_head.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(no_head.status().message(), HasSubstr("RobertaModel"));
}

}  // namespace
}  // namespace twin
