#include "core/model/hf_decoder_config.h"

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "core/io/bounded_json.h"
#include "core/model/internal/config_reader.h"
#include "core/model/internal/json_file.h"
#include "core/status_macros.h"

namespace twin {
namespace {

using Json = nlohmann::json;
using internal::ConfigReader;

constexpr int kMaxConfigDepth = 8;
// MistralConfig's sliding_window when the key is absent (null means no window).
constexpr int64_t kMistralDefaultWindow = 4096;

struct FamilyInfo {
  HfDecoderFamily family;
  const char* model_type;
  const char* architecture;
};

constexpr FamilyInfo kFamilies[] = {
    {HfDecoderFamily::kLlama, "llama", "LlamaForCausalLM"},
    {HfDecoderFamily::kQwen2, "qwen2", "Qwen2ForCausalLM"},
    {HfDecoderFamily::kMistral, "mistral", "MistralForCausalLM"},
};

const FamilyInfo* FindFamily(const Json& json) {
  auto it = json.find("model_type");
  if (it == json.end() || !it->is_string()) return nullptr;
  for (const FamilyInfo& f : kFamilies) {
    if (it->get<std::string>() == f.model_type) return &f;
  }
  return nullptr;
}

absl::Status ParseArchitecture(const ConfigReader& r, const FamilyInfo& f, HfDecoderConfig& c) {
  const Json* value = r.Find("architectures");
  if (value == nullptr) return absl::OkStatus();
  if (!value->is_array() || value->empty() || !(*value)[0].is_string()) {
    return r.Error("architectures",
                   absl::StrCat("must be a list of class names, not ", ShortDump(*value)));
  }
  c.architecture = (*value)[0].get<std::string>();
  if (c.architecture != f.architecture) {
    return r.Error("architectures", absl::StrCat("names ", c.architecture, "; for model_type ",
                                                 f.model_type, " supported: ", f.architecture));
  }
  return absl::OkStatus();
}

absl::Status ParseSizes(const ConfigReader& r, HfDecoderConfig& c) {
  ASSIGN_OR_RETURN(c.vocab_size, r.RequiredInt("vocab_size", 1));
  ASSIGN_OR_RETURN(c.hidden_size, r.RequiredInt("hidden_size", 1));
  ASSIGN_OR_RETURN(c.intermediate_size, r.RequiredInt("intermediate_size", 1));
  ASSIGN_OR_RETURN(c.num_hidden_layers, r.RequiredInt("num_hidden_layers", 1));
  ASSIGN_OR_RETURN(c.num_attention_heads, r.RequiredInt("num_attention_heads", 1));
  ASSIGN_OR_RETURN(c.max_position_embeddings, r.RequiredInt("max_position_embeddings", 1));
  ASSIGN_OR_RETURN(c.num_key_value_heads,
                   r.OptionalInt("num_key_value_heads", 1, c.num_attention_heads));
  if (c.num_attention_heads % c.num_key_value_heads != 0) {
    return r.Error("num_key_value_heads",
                   absl::StrCat("(", c.num_key_value_heads, ") must divide num_attention_heads (",
                                c.num_attention_heads, ")"));
  }
  if (r.Find("head_dim") == nullptr && c.hidden_size % c.num_attention_heads != 0) {
    return r.Error("num_attention_heads",
                   absl::StrCat("(", c.num_attention_heads, ") must divide hidden_size (",
                                c.hidden_size, ") when head_dim is not given"));
  }
  ASSIGN_OR_RETURN(c.head_dim, r.OptionalInt("head_dim", 2, c.hidden_size / c.num_attention_heads));
  if (c.head_dim % 2 != 0) {
    return r.Error("head_dim",
                   absl::StrCat("must be even for rotary embeddings, not ", c.head_dim));
  }
  return absl::OkStatus();
}

absl::Status ParseRope(const ConfigReader& r, HfDecoderConfig& c) {
  ASSIGN_OR_RETURN(c.rope_theta, r.OptionalPositive("rope_theta", c.rope_theta));
  const Json* scaling = r.Find("rope_scaling");
  if (scaling == nullptr) return absl::OkStatus();
  if (!scaling->is_object()) {
    return r.Error("rope_scaling",
                   absl::StrCat("must be an object or null, not ", ShortDump(*scaling)));
  }
  const std::string path = absl::StrCat(r.path(), " rope_scaling");
  ConfigReader s(*scaling, path);
  // transformers reads "rope_type", and "type" from older configs.
  std::string type;
  if (s.Find("rope_type") != nullptr) {
    ASSIGN_OR_RETURN(type, s.OptionalString("rope_type", ""));
  } else {
    ASSIGN_OR_RETURN(type, s.OptionalString("type", "default"));
  }
  if (type == "default") return absl::OkStatus();
  if (type != "linear" && type != "llama3") {
    return r.Error("rope_scaling", absl::StrCat("has rope_type \"", type,
                                                "\"; supported: default, linear, llama3"));
  }
  ASSIGN_OR_RETURN(const Json* factor, s.Require("factor"));
  ASSIGN_OR_RETURN(c.rope_factor, s.Positive("factor", *factor));
  if (type == "linear") {
    c.rope_scaling = RopeScaling::kLinear;
    return absl::OkStatus();
  }
  c.rope_scaling = RopeScaling::kLlama3;
  ASSIGN_OR_RETURN(c.rope_low_freq_factor,
                   s.OptionalPositive("low_freq_factor", c.rope_low_freq_factor));
  ASSIGN_OR_RETURN(c.rope_high_freq_factor,
                   s.OptionalPositive("high_freq_factor", c.rope_high_freq_factor));
  if (!(c.rope_high_freq_factor > c.rope_low_freq_factor)) {
    return s.Error("high_freq_factor", absl::StrCat("(", c.rope_high_freq_factor,
                                                    ") must be larger than low_freq_factor (",
                                                    c.rope_low_freq_factor, ")"));
  }
  ASSIGN_OR_RETURN(c.rope_original_max_positions,
                   s.OptionalInt("original_max_position_embeddings", 1, 8192));
  return absl::OkStatus();
}

absl::Status ParseSemantics(const ConfigReader& r, const Json& json, HfDecoderConfig& c) {
  ASSIGN_OR_RETURN(c.hidden_act_name, r.OptionalString("hidden_act", c.hidden_act_name));
  std::optional<HfActivation> act = HfActivationFromName(c.hidden_act_name);
  if (!act.has_value()) {
    return r.Error("hidden_act", absl::StrCat("is \"", c.hidden_act_name,
                                              "\"; supported: ", HfActivationNames()));
  }
  c.hidden_act = *act;
  ASSIGN_OR_RETURN(c.rms_norm_eps, r.OptionalPositive("rms_norm_eps", c.rms_norm_eps));
  ASSIGN_OR_RETURN(c.tie_word_embeddings, r.OptionalBool("tie_word_embeddings", false));
  switch (c.family) {
    case HfDecoderFamily::kLlama: {
      ASSIGN_OR_RETURN(const bool attention_bias, r.OptionalBool("attention_bias", false));
      c.qkv_bias = c.o_bias = attention_bias;
      ASSIGN_OR_RETURN(c.mlp_bias, r.OptionalBool("mlp_bias", false));
      break;
    }
    case HfDecoderFamily::kQwen2: {
      c.qkv_bias = true;
      ASSIGN_OR_RETURN(const bool sliding, r.OptionalBool("use_sliding_window", false));
      if (sliding) {
        return r.Error("use_sliding_window",
                       "is true; per-layer sliding windows (max_window_layers) are not supported");
      }
      break;
    }
    case HfDecoderFamily::kMistral: {
      auto it = json.find("sliding_window");
      if (it == json.end()) {
        c.sliding_window = kMistralDefaultWindow;
      } else if (!it->is_null()) {
        ASSIGN_OR_RETURN(c.sliding_window, r.Int("sliding_window", *it, 1));
      }
      break;
    }
  }
  return absl::OkStatus();
}

absl::Status ParseTokens(const ConfigReader& r, HfDecoderConfig& c) {
  auto id = [&](const std::string& key, const Json& value) -> absl::StatusOr<int64_t> {
    ASSIGN_OR_RETURN(const int64_t v, r.Int(key, value, 0));
    if (v >= c.vocab_size) {
      return r.Error(key, absl::StrCat("(", v, ") must be below vocab_size (", c.vocab_size, ")"));
    }
    return v;
  };
  if (const Json* bos = r.Find("bos_token_id")) {
    ASSIGN_OR_RETURN(c.bos_token_id, id("bos_token_id", *bos));
  }
  if (const Json* pad = r.Find("pad_token_id")) {
    ASSIGN_OR_RETURN(c.pad_token_id, id("pad_token_id", *pad));
  }
  if (const Json* eos = r.Find("eos_token_id")) {
    if (eos->is_array()) {
      for (const Json& e : *eos) {
        ASSIGN_OR_RETURN(const int64_t v, id("eos_token_id", e));
        c.eos_token_ids.push_back(v);
      }
    } else {
      ASSIGN_OR_RETURN(const int64_t v, id("eos_token_id", *eos));
      c.eos_token_ids.push_back(v);
    }
  }
  return absl::OkStatus();
}

}  // namespace

const char* HfDecoderFamilyName(HfDecoderFamily family) {
  for (const FamilyInfo& f : kFamilies) {
    if (f.family == family) return f.model_type;
  }
  return "unknown";
}

bool IsHfDecoderFamilyName(absl::string_view name) {
  return name == "llama" || name == "qwen2" || name == "mistral";
}

bool IsHfDecoderConfigText(absl::string_view json_text) {
  JsonLimits limits;
  limits.max_depth = kMaxConfigDepth;
  absl::StatusOr<Json> json = ParseBoundedJson(json_text, limits, "config.json");
  return json.ok() && json->is_object() && FindFamily(*json) != nullptr;
}

absl::StatusOr<HfDecoderConfig> ParseHfDecoderConfig(absl::string_view json_text,
                                                     const std::string& path) {
  JsonLimits limits;
  limits.max_depth = kMaxConfigDepth;
  ASSIGN_OR_RETURN(const Json json, ParseBoundedJson(json_text, limits, path));
  if (!json.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": must be a JSON object"));
  }
  ConfigReader r(json, path);
  ASSIGN_OR_RETURN(const Json* model_type, r.Require("model_type"));
  const FamilyInfo* family = FindFamily(json);
  if (family == nullptr) {
    return r.Error("model_type", absl::StrCat("is ", ShortDump(*model_type),
                                              "; supported decoders: llama, qwen2, mistral"));
  }
  HfDecoderConfig c;
  c.path = path;
  c.family = family->family;
  c.model_type = family->model_type;
  RETURN_IF_ERROR(ParseArchitecture(r, *family, c));
  RETURN_IF_ERROR(ParseSizes(r, c));
  RETURN_IF_ERROR(ParseRope(r, c));
  RETURN_IF_ERROR(ParseSemantics(r, json, c));
  RETURN_IF_ERROR(ParseTokens(r, c));
  return c;
}

absl::StatusOr<HfDecoderConfig> LoadHfDecoderConfigFile(const std::string& path) {
  ASSIGN_OR_RETURN(const std::string text, internal::ReadBoundedFile(path, kMaxHfConfigBytes));
  return ParseHfDecoderConfig(text, path);
}

absl::StatusOr<HfDecoderConfig> LoadHfDecoderConfig(const std::string& dir) {
  return LoadHfDecoderConfigFile(absl::StrCat(dir, "/", kHfConfigFile));
}

}  // namespace twin
