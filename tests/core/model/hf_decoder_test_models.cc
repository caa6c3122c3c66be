#include "tests/core/model/hf_decoder_test_models.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"

namespace twin::testing {
namespace {

std::string Architecture(const HfTestDecoder& m) {
  if (m.model_type == "qwen2") return "Qwen2ForCausalLM";
  if (m.model_type == "mistral") return "MistralForCausalLM";
  return "LlamaForCausalLM";
}

int64_t HeadDim(const HfTestDecoder& m) { return m.head_dim > 0 ? m.head_dim : m.hidden / m.heads; }

}  // namespace

int HfDecoderDepth(const HfTestDecoder& m) {
  constexpr int kStagesPerLayer = 10;
  constexpr int kOuterStages = 2;
  return kStagesPerLayer * static_cast<int>(m.layers) + kOuterStages;
}

int64_t HfDecoderWidth(const HfTestDecoder& m, int64_t seq_len) {
  return std::max({m.hidden, m.intermediate, m.heads * HeadDim(m), seq_len});
}

nlohmann::json HfDecoderTestConfig(const HfTestDecoder& m) {
  nlohmann::json c = {
      {"model_type", m.model_type},
      {"architectures", {Architecture(m)}},
      {"vocab_size", m.vocab},
      {"hidden_size", m.hidden},
      {"intermediate_size", m.intermediate},
      {"num_hidden_layers", m.layers},
      {"num_attention_heads", m.heads},
      {"num_key_value_heads", m.kv_heads},
      {"max_position_embeddings", m.max_positions},
      {"hidden_act", "silu"},
      {"rms_norm_eps", m.rms_norm_eps},
      {"rope_theta", m.rope_theta},
      {"rope_scaling", m.rope_scaling},
      {"tie_word_embeddings", m.tie},
      {"bos_token_id", 1},
      {"eos_token_id", 2},
      {"attention_dropout", 0.0},
      {"torch_dtype", "float32"},
      {"use_cache", true},
  };
  if (m.head_dim > 0) c["head_dim"] = m.head_dim;
  if (m.model_type == "llama") {
    c["attention_bias"] = m.attention_bias;
    c["mlp_bias"] = false;
  }
  if (m.model_type == "mistral") c["sliding_window"] = m.sliding_window;
  if (m.model_type == "qwen2") {
    c["use_sliding_window"] = false;
    c["sliding_window"] = 4096;
  }
  return c;
}

NamedTensors HfDecoderTestWeights(const HfTestDecoder& m) {
  at::manual_seed(m.seed);
  const int64_t d = m.hidden, hd = HeadDim(m), q = m.heads * hd, kv = m.kv_heads * hd,
                ff = m.intermediate;
  const bool qkv_bias = m.model_type == "qwen2" || (m.model_type == "llama" && m.attention_bias);
  const bool o_bias = m.model_type == "llama" && m.attention_bias;
  NamedTensors w;
  auto linear = [&](const std::string& name, int64_t out, int64_t in, bool bias) {
    w.emplace_back(name + ".weight", at::randn({out, in}) / std::sqrt(static_cast<double>(in)));
    if (bias) w.emplace_back(name + ".bias", 0.1 * at::randn({out}));
  };
  auto norm = [&](const std::string& name) {
    w.emplace_back(name + ".weight", 1.0 + 0.1 * at::randn({d}));
  };
  // Rows of norm about 1, as trained embeddings have: the residual stream is not dominated by
  // the input token (with a tied head it would predict that token again and again).
  w.emplace_back("model.embed_tokens.weight",
                 at::randn({m.vocab, d}) / std::sqrt(static_cast<double>(d)));
  for (int64_t l = 0; l < m.layers; ++l) {
    const std::string p = absl::StrCat("model.layers.", l, ".");
    norm(p + "input_layernorm");
    linear(p + "self_attn.q_proj", q, d, qkv_bias);
    linear(p + "self_attn.k_proj", kv, d, qkv_bias);
    linear(p + "self_attn.v_proj", kv, d, qkv_bias);
    linear(p + "self_attn.o_proj", d, q, o_bias);
    norm(p + "post_attention_layernorm");
    linear(p + "mlp.gate_proj", ff, d, false);
    linear(p + "mlp.up_proj", ff, d, false);
    linear(p + "mlp.down_proj", d, ff, false);
  }
  norm("model.norm");
  if (!m.tie) linear("lm_head", m.vocab, d, false);
  return w;
}

NamedTensors WriteHfDecoderDir(const std::string& dir, const HfTestDecoder& m, int shards) {
  WriteHfConfig(dir, HfDecoderTestConfig(m));
  NamedTensors w = HfDecoderTestWeights(m);
  WriteHfWeights(dir, w, shards);
  return w;
}

}  // namespace twin::testing
