#include "core/model/hf_decoder.h"

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <iostream>
#include <map>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/model/hf_decoder_config.h"
#include "core/model/layer_params.h"
#include "tests/core/model/hf_decoder_test_models.h"
#include "tests/testing/rounding.h"
#include "tests/testing/temp_dir.h"

namespace twin {
namespace {

using ::testing::HasSubstr;
using testing::HfTestDecoder;
using testing::NamedTensors;
using testing::TempDir;

using Sequences = std::vector<std::vector<int64_t>>;

std::map<std::string, at::Tensor> AsMap(const NamedTensors& w) {
  return std::map<std::string, at::Tensor>(w.begin(), w.end());
}

// max |a - b| over max(1, max |b|).
double Relative(const at::Tensor& a, const at::Tensor& b) {
  EXPECT_EQ(a.sizes(), b.sizes());
  const at::Tensor bd = b.to(at::kDouble);
  return (a.to(at::kDouble) - bd).abs().max().item<double>() /
         std::max(1.0, bd.abs().max().item<double>());
}

void ExpectClose(const std::string& what, const at::Tensor& got, const at::Tensor& want,
                 double tolerance) {
  const double r = Relative(got, want);
  EXPECT_LE(r, tolerance) << what;
  std::cout << "[measured] " << what << ": max |diff| / scale = " << r << " (tolerance "
            << tolerance << ")\n";
}

// An independent float64 forward of one sequence, written position by position and head by
// head from the reference implementation's definitions: rotary embeddings as rotations of the
// pairs (x_i, x_{i + half}) by position * inv_freq_i, a key visible to a query when it is at or
// before it (and within the sliding window), the grouped key/value head i / (heads / kv_heads).
// inv_freq comes from `inv_freq` (its formulas are checked separately).
at::Tensor ReferenceLogits(const HfTestDecoder& m, const std::map<std::string, at::Tensor>& w32,
                           const std::vector<int64_t>& ids, const at::Tensor& inv_freq,
                           int64_t window = 0) {
  std::map<std::string, at::Tensor> w;
  for (const auto& [k, v] : w32) w[k] = v.to(at::kDouble);
  const int64_t n = static_cast<int64_t>(ids.size());
  const int64_t hd = m.head_dim > 0 ? m.head_dim : m.hidden / m.heads, half = hd / 2;
  const int64_t group = m.heads / m.kv_heads;
  const at::Tensor freq = inv_freq.to(at::kDouble);
  auto lin = [&](const std::string& name, const at::Tensor& x) {
    at::Tensor y = at::matmul(x, w.at(name + ".weight").t());
    auto b = w.find(name + ".bias");
    return b == w.end() ? y : y + b->second;
  };
  auto rms = [&](const std::string& name, const at::Tensor& x) {
    return w.at(name + ".weight") * x / at::sqrt(x.pow(2).mean(-1, true) + m.rms_norm_eps);
  };
  auto rotate = [&](const at::Tensor& x, int64_t pos) {  // x [hd]
    at::Tensor out = x.clone();
    for (int64_t i = 0; i < half; ++i) {
      const double angle = static_cast<double>(pos) * freq[i].item<double>();
      const double a = x[i].item<double>(), b = x[i + half].item<double>();
      out[i] = a * std::cos(angle) - b * std::sin(angle);
      out[i + half] = b * std::cos(angle) + a * std::sin(angle);
    }
    return out;
  };
  at::Tensor h = at::stack(
      [&] {
        std::vector<at::Tensor> rows;
        for (int64_t id : ids) rows.push_back(w.at("model.embed_tokens.weight")[id]);
        return rows;
      }(),
      0);  // [n, d]
  for (int64_t l = 0; l < m.layers; ++l) {
    const std::string p = absl::StrCat("model.layers.", l, ".");
    const at::Tensor x = rms(p + "input_layernorm", h);
    const at::Tensor q = lin(p + "self_attn.q_proj", x), k = lin(p + "self_attn.k_proj", x),
                     v = lin(p + "self_attn.v_proj", x);
    at::Tensor context = at::zeros({n, m.heads * hd}, at::kDouble);
    for (int64_t head = 0; head < m.heads; ++head) {
      const int64_t kvh = head / group;
      for (int64_t i = 0; i < n; ++i) {
        const at::Tensor qi = rotate(q[i].narrow(0, head * hd, hd), i);
        std::vector<double> scores;
        std::vector<int64_t> keys;
        for (int64_t j = 0; j <= i; ++j) {
          if (window > 0 && i - j >= window) continue;
          const at::Tensor kj = rotate(k[j].narrow(0, kvh * hd, hd), j);
          scores.push_back(at::dot(qi, kj).item<double>() / std::sqrt(static_cast<double>(hd)));
          keys.push_back(j);
        }
        const double top = *std::max_element(scores.begin(), scores.end());
        double total = 0;
        for (double& s : scores) total += (s = std::exp(s - top));
        at::Tensor out = at::zeros({hd}, at::kDouble);
        for (size_t t = 0; t < keys.size(); ++t) {
          out += scores[t] / total * v[keys[t]].narrow(0, kvh * hd, hd);
        }
        context[i].narrow(0, head * hd, hd).copy_(out);
      }
    }
    h = h + lin(p + "self_attn.o_proj", context);
    const at::Tensor y = rms(p + "post_attention_layernorm", h);
    const at::Tensor g = lin(p + "mlp.gate_proj", y);
    h = h + lin(p + "mlp.down_proj", g * at::sigmoid(g) * lin(p + "mlp.up_proj", y));
  }
  const at::Tensor head = m.tie ? w.at("model.embed_tokens.weight") : w.at("lm_head.weight");
  return at::matmul(rms("model.norm", h), head.t());
}

Sequences RandomSequences(const HfTestDecoder& m, const std::vector<int64_t>& lengths,
                          uint64_t seed) {
  at::manual_seed(seed);
  Sequences out;
  for (int64_t n : lengths) {
    const at::Tensor t = at::randint(0, m.vocab, {n}, at::kLong);
    out.emplace_back(t.data_ptr<int64_t>(), t.data_ptr<int64_t>() + n);
  }
  return out;
}

double Tolerance(const HfTestDecoder& m, int64_t len, double scale) {
  return testing::ForwardError(testing::HfDecoderDepth(m), testing::HfDecoderWidth(m, len), 1.0) *
         std::max(1.0, scale);
}

struct Loaded {
  HfCausalLm lm;
  std::map<std::string, at::Tensor> weights;
};

Loaded Load(const TempDir& dir, const HfTestDecoder& m, int shards = 0) {
  const NamedTensors w = testing::WriteHfDecoderDir(dir.path(), m, shards);
  absl::StatusOr<HfCausalLm> lm = LoadHfCausalLm(dir.path());
  EXPECT_TRUE(lm.ok()) << lm.status();
  return {std::move(*lm), AsMap(w)};
}

HfTestDecoder Family(const std::string& type) {
  HfTestDecoder m;
  m.model_type = type;
  if (type == "qwen2") m.tie = true;
  return m;
}

class DecoderFamilyTest : public ::testing::TestWithParam<std::string> {};

TEST_P(DecoderFamilyTest, FullForwardMatchesIndependentReference) {
  TempDir dir;
  const HfTestDecoder m = Family(GetParam());
  Loaded l = Load(dir, m);
  DenseParams params(l.lm.weights);
  const Sequences seqs = RandomSequences(m, {9, 5}, 3);
  absl::StatusOr<at::Tensor> logits = l.lm.decoder->Logits(seqs, params);
  ASSERT_TRUE(logits.ok()) << logits.status();
  ASSERT_EQ(logits->sizes(), (std::vector<int64_t>{2, 9, m.vocab}));
  for (size_t b = 0; b < seqs.size(); ++b) {
    const int64_t n = static_cast<int64_t>(seqs[b].size());
    const at::Tensor want = ReferenceLogits(m, l.weights, seqs[b], l.lm.decoder->inv_freq());
    ExpectClose(absl::StrCat(GetParam(), " sequence ", b), (*logits)[b].narrow(0, 0, n), want,
                Tolerance(m, n, want.abs().max().item<double>()));
    if (n < 9) {
      EXPECT_EQ((*logits)[b].narrow(0, n, 9 - n).abs().max().item<float>(), 0.0f);
    }
  }
}

TEST_P(DecoderFamilyTest, DecodingWithTheCacheEqualsRecomputation) {
  TempDir dir;
  const HfTestDecoder m = Family(GetParam());
  Loaded l = Load(dir, m);
  DenseParams params(l.lm.weights);
  const Sequences seqs = RandomSequences(m, {12}, 5);
  absl::StatusOr<at::Tensor> full = l.lm.decoder->Logits(seqs, params);
  ASSERT_TRUE(full.ok()) << full.status();
  absl::StatusOr<KvCache> cache = l.lm.decoder->NewCache(16);
  ASSERT_TRUE(cache.ok()) << cache.status();
  // A prompt of 4, a chunk of 3, then one token at a time.
  std::vector<at::Tensor> steps;
  size_t pos = 0;
  for (size_t chunk : {4, 3, 1, 1, 1, 1, 1}) {
    const std::vector<int64_t> part(seqs[0].begin() + pos, seqs[0].begin() + pos + chunk);
    absl::StatusOr<at::Tensor> out = l.lm.decoder->Extend({part}, params, {&*cache});
    ASSERT_TRUE(out.ok()) << out.status();
    pos += chunk;
    ASSERT_EQ(cache->length(), static_cast<int64_t>(pos));
    const at::Tensor want = (*full)[0][pos - 1];
    ExpectClose(absl::StrCat(GetParam(), " after ", pos, " tokens"), (*out)[0], want,
                Tolerance(m, 12, want.abs().max().item<double>()));
  }
}

TEST_P(DecoderFamilyTest, MixedBatchEqualsSequencesOneByOne) {
  TempDir dir;
  const HfTestDecoder m = Family(GetParam());
  Loaded l = Load(dir, m);
  DenseParams params(l.lm.weights);
  const HfDecoder& dec = *l.lm.decoder;
  const Sequences seqs = RandomSequences(m, {6, 3, 8}, 7);
  // Alone: each sequence's prompt but its last token, then the last token.
  std::vector<at::Tensor> alone;
  for (const auto& s : seqs) {
    KvCache c = *dec.NewCache(10);
    ASSERT_TRUE(dec.Extend({{s.begin(), s.end() - 1}}, params, {&c}).ok());
    alone.push_back((*dec.Extend({{s.back()}}, params, {&c}))[0]);
  }
  // Together: sequence 0 and 2 prefilled first, then one batch in which 0 and 2 decode their
  // last token while 1 prefills its whole prompt.
  KvCache c0 = *dec.NewCache(10), c1 = *dec.NewCache(10), c2 = *dec.NewCache(10);
  ASSERT_TRUE(
      dec.Extend({{seqs[0].begin(), seqs[0].end() - 1}, {seqs[2].begin(), seqs[2].end() - 1}},
                 params, {&c0, &c2})
          .ok());
  ASSERT_TRUE(dec.Extend({{seqs[1].begin(), seqs[1].end() - 1}}, params, {&c1}).ok());
  absl::StatusOr<at::Tensor> together =
      dec.Extend({{seqs[0].back()}, {seqs[1].back()}, {seqs[2].back()}}, params, {&c0, &c1, &c2});
  ASSERT_TRUE(together.ok()) << together.status();
  for (int b = 0; b < 3; ++b) {
    ExpectClose(absl::StrCat(GetParam(), " row ", b), (*together)[b], alone[b],
                Tolerance(m, 8, alone[b].abs().max().item<double>()));
  }
  EXPECT_EQ(c0.length(), 6);
  EXPECT_EQ(c1.length(), 3);
  EXPECT_EQ(c2.length(), 8);
}

INSTANTIATE_TEST_SUITE_P(Families, DecoderFamilyTest,
                         ::testing::Values("llama", "qwen2", "mistral"));

TEST(HfDecoderTest, SlidingWindowHidesOldKeys) {
  TempDir dir;
  HfTestDecoder m = Family("mistral");
  m.sliding_window = 4;
  Loaded l = Load(dir, m);
  ASSERT_EQ(l.lm.decoder->config().sliding_window, 4);
  DenseParams params(l.lm.weights);
  const Sequences seqs = RandomSequences(m, {10}, 9);
  const at::Tensor want = ReferenceLogits(m, l.weights, seqs[0], l.lm.decoder->inv_freq(), 4);
  absl::StatusOr<at::Tensor> full = l.lm.decoder->Logits(seqs, params);
  ASSERT_TRUE(full.ok()) << full.status();
  const double tolerance = Tolerance(m, 10, want.abs().max().item<double>());
  ExpectClose("mistral window 4, full", (*full)[0], want, tolerance);
  // Token by token through the cache: the window applies to cached keys too.
  KvCache cache = *l.lm.decoder->NewCache(10);
  for (size_t i = 0; i < seqs[0].size(); ++i) {
    absl::StatusOr<at::Tensor> step = l.lm.decoder->Extend({{seqs[0][i]}}, params, {&cache});
    ASSERT_TRUE(step.ok()) << step.status();
    if (i == seqs[0].size() - 1)
      ExpectClose("mistral window 4, cached", (*step)[0], want[i], tolerance);
  }
  // And the window changes the answer (so the test can fail).
  const at::Tensor unwindowed = ReferenceLogits(m, l.weights, seqs[0], l.lm.decoder->inv_freq());
  EXPECT_GT(Relative((*full)[0][9], unwindowed[9]), 100 * tolerance);
}

TEST(HfDecoderTest, GroupedQueryAttentionEqualsRepeatedHeads) {
  // A GQA model equals the multi-head model whose k/v projections repeat each kv head for its
  // group of query heads.
  TempDir gqa_dir, mha_dir;
  HfTestDecoder gqa;
  gqa.heads = 4;
  gqa.kv_heads = 2;
  Loaded g = Load(gqa_dir, gqa);
  HfTestDecoder mha = gqa;
  mha.kv_heads = 4;
  testing::WriteHfConfig(mha_dir.path(), testing::HfDecoderTestConfig(mha));
  NamedTensors repeated;
  const int64_t hd = gqa.hidden / gqa.heads;
  for (const auto& [name, t] : g.weights) {
    const bool kv =
        name.find("k_proj") != std::string::npos || name.find("v_proj") != std::string::npos;
    repeated.emplace_back(name, kv ? t.view({gqa.kv_heads, hd, -1})
                                         .repeat_interleave(2, 0)
                                         .reshape({gqa.heads * hd, -1})
                                         .contiguous()
                                   : t);
  }
  testing::WriteHfWeights(mha_dir.path(), repeated);
  absl::StatusOr<HfCausalLm> m = LoadHfCausalLm(mha_dir.path());
  ASSERT_TRUE(m.ok()) << m.status();
  const Sequences seqs = RandomSequences(gqa, {7}, 11);
  DenseParams gp(g.lm.weights), mp(m->weights);
  const at::Tensor a = *g.lm.decoder->Logits(seqs, gp), b = *m->decoder->Logits(seqs, mp);
  ExpectClose("gqa vs repeated heads", a, b, Tolerance(gqa, 7, b.abs().max().item<double>()));
}

TEST(HfDecoderTest, RopeScalingFrequencies) {
  HfDecoderConfig c;
  c.head_dim = 16;
  c.rope_theta = 500000.0;
  c.num_hidden_layers = 1;
  c.num_attention_heads = 1;
  c.num_key_value_heads = 1;
  c.vocab_size = 4;
  c.hidden_size = 16;
  c.intermediate_size = 4;
  c.max_position_embeddings = 8;
  auto freqs = [&](const HfDecoderConfig& config) {
    auto d = HfDecoder::Create(config);
    EXPECT_TRUE(d.ok()) << d.status();
    return (*d)->inv_freq().to(at::kDouble);
  };
  const at::Tensor base = freqs(c);
  for (int64_t i = 0; i < 8; ++i) {
    EXPECT_NEAR(base[i].item<double>(), std::pow(500000.0, -2.0 * i / 16),
                1e-6 * std::pow(500000.0, -2.0 * i / 16));
  }
  HfDecoderConfig linear = c;
  linear.rope_scaling = RopeScaling::kLinear;
  linear.rope_factor = 4;
  EXPECT_LT(Relative(freqs(linear) * 4, base), 1e-6);
  // Llama 3.1's rule with an original context of 64: wavelengths above 64 / 1 are divided by
  // the factor, below 64 / 4 kept, between interpolated.
  HfDecoderConfig llama3 = c;
  llama3.rope_scaling = RopeScaling::kLlama3;
  llama3.rope_factor = 8;
  llama3.rope_low_freq_factor = 1;
  llama3.rope_high_freq_factor = 4;
  llama3.rope_original_max_positions = 64;
  const at::Tensor scaled = freqs(llama3);
  int low = 0, high = 0, medium = 0;
  for (int64_t i = 0; i < 8; ++i) {
    const double f = base[i].item<double>(), wavelen = 2 * M_PI / f, got = scaled[i].item<double>();
    double want = f;
    if (wavelen > 64) {
      want = f / 8;
      ++low;
    } else if (wavelen < 16) {
      ++high;
    } else {
      const double smooth = (64 / wavelen - 1) / (4 - 1);
      want = (1 - smooth) * f / 8 + smooth * f;
      ++medium;
    }
    EXPECT_NEAR(got, want, 1e-6 * want) << i;
  }
  EXPECT_GT(low, 0);
  EXPECT_GT(high, 0);
  EXPECT_GT(medium, 0);
}

TEST(HfDecoderTest, LinearRopeScalingForward) {
  TempDir dir;
  HfTestDecoder m;
  m.rope_scaling = {{"rope_type", "linear"}, {"factor", 2.0}};
  Loaded l = Load(dir, m);
  ASSERT_EQ(l.lm.decoder->config().rope_scaling, RopeScaling::kLinear);
  DenseParams params(l.lm.weights);
  const Sequences seqs = RandomSequences(m, {8}, 13);
  const at::Tensor want = ReferenceLogits(m, l.weights, seqs[0], l.lm.decoder->inv_freq());
  ExpectClose("linear rope", (*l.lm.decoder->Logits(seqs, params))[0], want,
              Tolerance(m, 8, want.abs().max().item<double>()));
}

TEST(HfDecoderTest, ShardedCheckpointAndIgnoredBuffers) {
  TempDir dir;
  HfTestDecoder m;
  m.tie = true;
  testing::WriteHfConfig(dir.path(), testing::HfDecoderTestConfig(m));
  NamedTensors w = testing::HfDecoderTestWeights(m);
  // Older checkpoints carry the rotary buffer; tied ones may still carry the head.
  w.emplace_back("model.layers.0.self_attn.rotary_emb.inv_freq", at::ones({4}));
  w.emplace_back("lm_head.weight", at::zeros({m.vocab, m.hidden}));
  testing::WriteHfWeights(dir.path(), w, /*shards=*/3);
  absl::StatusOr<HfCausalLm> lm = LoadHfCausalLm(dir.path());
  ASSERT_TRUE(lm.ok()) << lm.status();
  EXPECT_EQ(lm->ignored.size(), 2u);
  EXPECT_EQ(lm->weights.count("lm_head.weight"), 0u);
  // Tied: the logits are the embeddings' products, not the zero head's.
  DenseParams params(lm->weights);
  const at::Tensor logits = *lm->decoder->Logits(RandomSequences(m, {3}, 2), params);
  EXPECT_GT(logits.abs().max().item<float>(), 0.1f);
}

TEST(HfDecoderTest, ExtendRefusesBadInputWithoutWriting) {
  TempDir dir;
  Loaded l = Load(dir, HfTestDecoder());
  DenseParams params(l.lm.weights);
  const HfDecoder& dec = *l.lm.decoder;
  KvCache cache = *dec.NewCache(4);
  ASSERT_TRUE(dec.Extend({{5, 6}}, params, {&cache}).ok());
  auto refused = [&](const Sequences& t, const std::vector<KvCache*>& c, const std::string& what) {
    absl::StatusOr<at::Tensor> r = dec.Extend(t, params, c);
    ASSERT_FALSE(r.ok()) << what;
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << what;
    EXPECT_THAT(std::string(r.status().message()), HasSubstr(what));
  };
  refused({{1, 2, 3}}, {&cache}, "more than its cache's 4");
  refused({{96}}, {&cache}, "token id 96 outside the vocabulary");
  refused({{-1}}, {&cache}, "token id -1");
  refused({{}}, {&cache}, "no new tokens");
  refused({{1}, {2}}, {&cache, &cache}, "also another sequence's");
  refused({{1}}, {nullptr}, "no cache");
  refused({{1}}, {}, "one cache per sequence");
  EXPECT_EQ(cache.length(), 2);
  EXPECT_FALSE(dec.NewCache(0).ok());
  EXPECT_FALSE(dec.NewCache(65).ok());
  EXPECT_EQ(cache.bytes(), dec.CacheBytes(4));
  EXPECT_EQ(dec.CacheBytes(4), 2 * 2 * 2 * 4 * 8 * 4);  // layers, k and v, kv heads, pos, hd, fp32
}

// Config errors name the file and the key.
struct ConfigCase {
  std::string name;
  nlohmann::json patch;  // merged into a valid config; null values erase the key
  std::string message;
};

class DecoderConfigErrorTest : public ::testing::TestWithParam<ConfigCase> {};

TEST_P(DecoderConfigErrorTest, NamesTheKey) {
  nlohmann::json c = testing::HfDecoderTestConfig(HfTestDecoder());
  for (const auto& [k, v] : GetParam().patch.items()) {
    if (v.is_null()) {
      c.erase(k);
    } else {
      c[k] = v;
    }
  }
  absl::StatusOr<HfDecoderConfig> r = ParseHfDecoderConfig(c.dump(), "/m/config.json");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("/m/config.json"));
  EXPECT_THAT(std::string(r.status().message()), HasSubstr(GetParam().message));
}

INSTANTIATE_TEST_SUITE_P(
    Cases, DecoderConfigErrorTest,
    ::testing::Values(
        ConfigCase{"model_type", {{"model_type", "gpt2"}}, "supported decoders: llama"},
        ConfigCase{"missing", {{"hidden_size", nullptr}}, "missing required key 'hidden_size'"},
        ConfigCase{
            "kv_heads", {{"num_key_value_heads", 3}}, "'num_key_value_heads' (3) must divide"},
        ConfigCase{"architecture",
                   {{"architectures", {"LlamaForSequenceClassification"}}},
                   "supported: LlamaForCausalLM"},
        ConfigCase{"rope_type",
                   {{"rope_scaling", {{"rope_type", "yarn"}, {"factor", 2}}}},
                   "supported: default, linear, llama3"},
        ConfigCase{"rope_factor", {{"rope_scaling", {{"type", "linear"}}}}, "'factor'"},
        ConfigCase{"rope_theta", {{"rope_theta", -1}}, "'rope_theta' must be a positive number"},
        ConfigCase{"act", {{"hidden_act", "mish"}}, "'hidden_act' is \"mish\""},
        ConfigCase{"eos", {{"eos_token_id", {2, 500}}}, "'eos_token_id' (500) must be below"},
        ConfigCase{"head_dim", {{"head_dim", 7}}, "'head_dim' must be even"},
        ConfigCase{"tie", {{"tie_word_embeddings", "yes"}}, "'tie_word_embeddings' must be true"}),
    [](const auto& info) { return info.param.name; });

TEST(HfDecoderConfigTest, FamilyDefaults) {
  nlohmann::json c = testing::HfDecoderTestConfig(Family("mistral"));
  c.erase("sliding_window");
  absl::StatusOr<HfDecoderConfig> mistral = ParseHfDecoderConfig(c.dump(), "c");
  ASSERT_TRUE(mistral.ok()) << mistral.status();
  EXPECT_EQ(mistral->sliding_window, 4096);  // MistralConfig's default when absent
  c["sliding_window"] = nullptr;
  EXPECT_EQ(ParseHfDecoderConfig(c.dump(), "c")->sliding_window, 0);
  absl::StatusOr<HfDecoderConfig> qwen =
      ParseHfDecoderConfig(testing::HfDecoderTestConfig(Family("qwen2")).dump(), "c");
  ASSERT_TRUE(qwen.ok()) << qwen.status();
  EXPECT_TRUE(qwen->qkv_bias);
  EXPECT_FALSE(qwen->o_bias);
  EXPECT_EQ(qwen->sliding_window, 0);  // use_sliding_window false
  EXPECT_EQ(qwen->eos_token_ids, std::vector<int64_t>{2});
  nlohmann::json q = testing::HfDecoderTestConfig(Family("qwen2"));
  q["use_sliding_window"] = true;
  EXPECT_THAT(std::string(ParseHfDecoderConfig(q.dump(), "c").status().message()),
              HasSubstr("use_sliding_window"));
  EXPECT_TRUE(IsHfDecoderConfigText(q.dump()));
  EXPECT_FALSE(IsHfDecoderConfigText(R"({"model_type": "roberta"})"));
  EXPECT_FALSE(IsHfDecoderConfigText("not json"));
}

TEST(HfDecoderTest, CheckpointShapeDisagreeingWithConfigIsRefused) {
  TempDir dir;
  HfTestDecoder m;
  testing::WriteHfDecoderDir(dir.path(), m);
  HfTestDecoder other = m;
  other.kv_heads = 4;  // the config now implies larger k/v projections
  testing::WriteHfConfig(dir.path(), testing::HfDecoderTestConfig(other));
  absl::StatusOr<HfCausalLm> lm = LoadHfCausalLm(dir.path());
  ASSERT_FALSE(lm.ok());
  EXPECT_THAT(std::string(lm.status().message()), HasSubstr("k_proj.weight has shape [16, 32]"));
}

}  // namespace
}  // namespace twin
