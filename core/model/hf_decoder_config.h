// The decoder part of a Hugging Face `config.json`: the Llama architecture and the families that
// share it (Qwen2 with its q/k/v biases, Mistral with its sliding window), as causal language
// models. Only what the native forward supports is accepted; any other value is an error naming
// the file and the key.
//
//   ASSIGN_OR_RETURN(HfDecoderConfig config, LoadHfDecoderConfig("/models/qwen2-0.5b"));
//
// Required keys: model_type (llama, qwen2, mistral), vocab_size, hidden_size,
// intermediate_size, num_hidden_layers, num_attention_heads, max_position_embeddings.
// Optional keys with transformers' defaults: architectures (LlamaForCausalLM, Qwen2ForCausalLM,
// MistralForCausalLM; absent: the causal LM), num_key_value_heads (= num_attention_heads),
// head_dim (hidden_size / num_attention_heads), hidden_act "silu", rms_norm_eps (1e-6; Mistral
// 1e-6, Qwen2 1e-6), rope_theta 10000, rope_scaling (null, {"rope_type"|"type": "default" |
// "linear" | "llama3", "factor", and for llama3 "low_freq_factor", "high_freq_factor",
// "original_max_position_embeddings"}), tie_word_embeddings false, attention_bias false and
// mlp_bias false (Llama; Qwen2 has q/k/v biases always), sliding_window (Mistral, null: none;
// Qwen2 only with use_sliding_window, which is refused), bos_token_id, eos_token_id (an id or a
// list), pad_token_id. Other keys (dropout, torch_dtype, use_cache, ...) do not change inference.
//
// Thread-safety: plain functions and a value type.
#ifndef TWIN_CORE_MODEL_HF_DECODER_CONFIG_H_
#define TWIN_CORE_MODEL_HF_DECODER_CONFIG_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "core/model/hf_config.h"

namespace twin {

enum class HfDecoderFamily { kLlama, kQwen2, kMistral };

// How rotary frequencies are rescaled for long contexts (`rope_scaling`).
enum class RopeScaling {
  kNone,    // absent, or rope_type "default"
  kLinear,  // every frequency divided by factor
  kLlama3,  // Llama 3.1: low frequencies divided by factor, high kept, a smooth band between
};

struct HfDecoderConfig {
  std::string path;  // the config.json it was read from (messages)
  HfDecoderFamily family = HfDecoderFamily::kLlama;
  std::string model_type;    // "llama", "qwen2" or "mistral"
  std::string architecture;  // e.g. "Qwen2ForCausalLM"; "" when absent
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int64_t num_hidden_layers = 0;
  int64_t num_attention_heads = 0;
  int64_t num_key_value_heads = 0;
  int64_t head_dim = 0;
  int64_t max_position_embeddings = 0;
  HfActivation hidden_act = HfActivation::kSilu;
  std::string hidden_act_name = "silu";
  double rms_norm_eps = 1e-6;
  double rope_theta = 10000.0;
  RopeScaling rope_scaling = RopeScaling::kNone;
  double rope_factor = 1.0;  // linear and llama3
  double rope_low_freq_factor = 1.0;
  double rope_high_freq_factor = 4.0;
  int64_t rope_original_max_positions = 0;  // llama3's original_max_position_embeddings
  bool tie_word_embeddings = false;
  bool qkv_bias = false;  // q_proj, k_proj and v_proj have biases (Qwen2; Llama attention_bias)
  bool o_bias = false;    // o_proj has a bias (Llama attention_bias)
  bool mlp_bias = false;  // gate/up/down_proj have biases (Llama mlp_bias)
  int64_t sliding_window = 0;  // keys more than this many positions back are hidden; 0: none
  std::optional<int64_t> bos_token_id;
  std::vector<int64_t> eos_token_ids;
  std::optional<int64_t> pad_token_id;

  // Query heads per key/value head (grouped-query attention).
  int64_t kv_group() const { return num_attention_heads / num_key_value_heads; }
};

// "llama", "qwen2" or "mistral".
const char* HfDecoderFamilyName(HfDecoderFamily family);

// Whether `name` is a decoder family name ("llama", "qwen2" or "mistral").
bool IsHfDecoderFamilyName(absl::string_view name);

// Whether the config text names a decoder family this parser reads (a model_type of llama,
// qwen2 or mistral); false for anything else, encoders included, and for malformed JSON.
bool IsHfDecoderConfigText(absl::string_view json_text);

absl::StatusOr<HfDecoderConfig> ParseHfDecoderConfig(absl::string_view json_text,
                                                     const std::string& path);
absl::StatusOr<HfDecoderConfig> LoadHfDecoderConfigFile(const std::string& path);
// Reads and parses `dir`/config.json.
absl::StatusOr<HfDecoderConfig> LoadHfDecoderConfig(const std::string& dir);

}  // namespace twin

#endif  // TWIN_CORE_MODEL_HF_DECODER_CONFIG_H_
