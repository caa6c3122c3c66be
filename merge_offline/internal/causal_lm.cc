#include "merge_offline/internal/causal_lm.h"

#include <tuple>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "core/model/hf_decoder.h"

namespace twin::merge_internal {
namespace {

std::string Bool(bool b) { return b ? "true" : "false"; }

// rope_scaling as a reader of config.json would write it.
std::string RopeScalingString(const HfDecoderConfig& c) {
  switch (c.rope_scaling) {
    case RopeScaling::kNone:
      return "none";
    case RopeScaling::kLinear:
      return absl::StrCat("linear (factor ", c.rope_factor, ")");
    case RopeScaling::kLlama3:
      return absl::StrCat("llama3 (factor ", c.rope_factor, ", low_freq_factor ",
                          c.rope_low_freq_factor, ", high_freq_factor ", c.rope_high_freq_factor,
                          ", original_max_position_embeddings ", c.rope_original_max_positions,
                          ")");
  }
  return "unknown";
}

}  // namespace

std::string HeadPatternFor(const MergeJobConfig& config, const InputModel& base) {
  if (base.hf_decoder && !config.head_pattern_given) return kNoHeadPattern;
  return config.head_pattern;
}

absl::Status CheckCausalLmJob(const MergeJobConfig& c, const InputModel& base,
                              const ModelLayout& layout) {
  const HfDecoderConfig& config = base.hf_decoder_config;
  if (!c.architecture.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("architecture: ", c.base_model, " is a ", config.model_type,
                     " causal language model, which the native engine runs; give no architecture"));
  }
  if (c.router_features == "model") {
    return absl::InvalidArgumentError(absl::StrCat(
        "router.features: model: ", c.base_model, " is a ", config.model_type,
        " causal language model, and decoders have no model features for the router; use "
        "ngram or auto"));
  }
  const std::string embeddings = absl::StrCat(kHfEmbedTokens, ".");
  for (const std::string& name : layout.head) {
    if (config.tie_word_embeddings && absl::StartsWith(name, embeddings)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "head_pattern '", c.head_pattern, "' keeps '", name, "' per task, but ", config.path,
          " ties the LM head to the embeddings (tie_word_embeddings): the tied "
          "table must be merged"));
    }
  }
  for (size_t i = 0; i < c.experts.size(); ++i) {
    if (!c.experts[i].labels.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("models[", i, "].labels: ", c.experts[i].path,
                       " is a causal language model; it generates text and has no labels"));
    }
  }
  return absl::OkStatus();
}

absl::Status CheckSameDecoder(const InputModel& base, const InputModel& expert) {
  const HfDecoderConfig& a = base.hf_decoder_config;
  const HfDecoderConfig& b = expert.hf_decoder_config;
  const std::vector<std::tuple<const char*, std::string, std::string>> fields = {
      {"model_type", a.model_type, b.model_type},
      {"vocab_size", absl::StrCat(a.vocab_size), absl::StrCat(b.vocab_size)},
      {"hidden_size", absl::StrCat(a.hidden_size), absl::StrCat(b.hidden_size)},
      {"intermediate_size", absl::StrCat(a.intermediate_size), absl::StrCat(b.intermediate_size)},
      {"num_hidden_layers", absl::StrCat(a.num_hidden_layers), absl::StrCat(b.num_hidden_layers)},
      {"num_attention_heads", absl::StrCat(a.num_attention_heads),
       absl::StrCat(b.num_attention_heads)},
      {"num_key_value_heads", absl::StrCat(a.num_key_value_heads),
       absl::StrCat(b.num_key_value_heads)},
      {"head_dim", absl::StrCat(a.head_dim), absl::StrCat(b.head_dim)},
      {"max_position_embeddings", absl::StrCat(a.max_position_embeddings),
       absl::StrCat(b.max_position_embeddings)},
      {"hidden_act", a.hidden_act_name, b.hidden_act_name},
      {"rms_norm_eps", absl::StrCat(a.rms_norm_eps), absl::StrCat(b.rms_norm_eps)},
      {"rope_theta", absl::StrCat(a.rope_theta), absl::StrCat(b.rope_theta)},
      {"rope_scaling", RopeScalingString(a), RopeScalingString(b)},
      {"tie_word_embeddings", Bool(a.tie_word_embeddings), Bool(b.tie_word_embeddings)},
      {"attention_bias (q/k/v_proj)", Bool(a.qkv_bias), Bool(b.qkv_bias)},
      {"attention_bias (o_proj)", Bool(a.o_bias), Bool(b.o_bias)},
      {"mlp_bias", Bool(a.mlp_bias), Bool(b.mlp_bias)},
      {"sliding_window", a.sliding_window ? absl::StrCat(a.sliding_window) : "none",
       b.sliding_window ? absl::StrCat(b.sliding_window) : "none"},
  };
  for (const auto& [field, x, y] : fields) {
    if (x == y) continue;
    return absl::InvalidArgumentError(absl::StrCat("expert ", b.path, ": ", field, " is ", y,
                                                   " but the base ", a.path, " has ", x));
  }
  return absl::OkStatus();
}

}  // namespace twin::merge_internal
