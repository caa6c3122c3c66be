#include "core/model/hf_config.h"

#include <cmath>
#include <map>
#include <nlohmann/json.hpp>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/io/bounded_json.h"
#include "core/model/internal/config_reader.h"
#include "core/model/internal/json_file.h"
#include "core/status_macros.h"

namespace twin {
namespace {

using Json = nlohmann::json;
using internal::ConfigReader;

// config.json is an object of scalars with a few nested maps (id2label, task_specific_params).
constexpr int kMaxConfigDepth = 8;

struct FamilyInfo {
  HfFamily family;
  const char* model_type;
  const char* classifier_architecture;
  const char* bare_architecture;
  int64_t default_pad_token_id;
};

constexpr FamilyInfo kFamilies[] = {
    {HfFamily::kBert, "bert", "BertForSequenceClassification", "BertModel", 0},
    {HfFamily::kRoberta, "roberta", "RobertaForSequenceClassification", "RobertaModel", 1},
    {HfFamily::kXlmRoberta, "xlm-roberta", "XLMRobertaForSequenceClassification", "XLMRobertaModel",
     1},
};

const std::map<std::string, HfActivation>& Activations() {
  static const auto* kMap = new std::map<std::string, HfActivation>{
      {"gelu", HfActivation::kGelu},
      {"gelu_new", HfActivation::kGeluTanh},
      {"gelu_pytorch_tanh", HfActivation::kGeluTanh},
      {"relu", HfActivation::kRelu},
      {"silu", HfActivation::kSilu},
      {"swish", HfActivation::kSilu},
  };
  return *kMap;
}

absl::StatusOr<const FamilyInfo*> ParseFamily(const ConfigReader& r) {
  ASSIGN_OR_RETURN(const Json* value, r.Require("model_type"));
  if (value->is_string()) {
    for (const FamilyInfo& f : kFamilies) {
      if (value->get<std::string>() == f.model_type) return &f;
    }
  }
  return r.Error("model_type",
                 absl::StrCat("is ", ShortDump(*value), "; supported: bert, roberta, xlm-roberta"));
}

absl::Status ParseArchitecture(const ConfigReader& r, const FamilyInfo& f, HfEncoderConfig& c) {
  const Json* value = r.Find("architectures");
  if (value == nullptr) return absl::OkStatus();  // the bare model
  if (!value->is_array() || value->empty() || !(*value)[0].is_string()) {
    return r.Error("architectures",
                   absl::StrCat("must be a list of class names, not ", ShortDump(*value)));
  }
  c.architecture = (*value)[0].get<std::string>();
  if (c.architecture == f.classifier_architecture) {
    c.has_classifier = true;
  } else if (c.architecture != f.bare_architecture) {
    return r.Error(
        "architectures",
        absl::StrCat("names ", c.architecture, "; for model_type ", f.model_type,
                     " supported: ", f.classifier_architecture, ", ", f.bare_architecture));
  }
  return absl::OkStatus();
}

// id2label (ids "0".."n-1"), checked against num_labels and label2id when they are given.
absl::Status ParseLabels(const ConfigReader& r, HfEncoderConfig& c) {
  constexpr int64_t kDefaultNumLabels = 2;  // PretrainedConfig's default
  ASSIGN_OR_RETURN(const int64_t num_labels, r.OptionalInt("num_labels", 1, -1));
  if (const Json* id2label = r.Find("id2label")) {
    if (!id2label->is_object() || id2label->empty()) {
      return r.Error("id2label", "must be a non-empty object of id -> label");
    }
    std::map<int64_t, std::string> by_id;
    for (const auto& [key, label] : id2label->items()) {
      int64_t id = 0;
      if (!absl::SimpleAtoi(key, &id) || id < 0 || !label.is_string()) {
        return r.Error("id2label", absl::StrCat("has entry \"", key, "\": ", ShortDump(label),
                                                "; ids must be integers, labels strings"));
      }
      by_id[id] = label.get<std::string>();
    }
    const int64_t n = static_cast<int64_t>(by_id.size());
    if (by_id.rbegin()->first != n - 1) {
      return r.Error("id2label", absl::StrCat("must number its ", n, " labels 0..", n - 1));
    }
    for (auto& [id, label] : by_id) c.labels.push_back(std::move(label));
    if (num_labels >= 0 && num_labels != n) {
      return r.Error("num_labels", absl::StrCat("is ", num_labels, " but id2label has ", n));
    }
  } else {
    const int64_t n = num_labels >= 0 ? num_labels : kDefaultNumLabels;
    for (int64_t i = 0; i < n; ++i) c.labels.push_back(absl::StrCat("LABEL_", i));
  }
  if (const Json* label2id = r.Find("label2id")) {
    bool consistent = label2id->is_object() && label2id->size() == c.labels.size();
    for (size_t id = 0; consistent && id < c.labels.size(); ++id) {
      auto it = label2id->find(c.labels[id]);
      consistent = it != label2id->end() && it->is_number_integer() &&
                   it->get<int64_t>() == static_cast<int64_t>(id);
    }
    if (!consistent) {
      return r.Error("label2id", absl::StrCat("is not the inverse of id2label (",
                                              absl::StrJoin(c.labels, ", "), ")"));
    }
  }
  ASSIGN_OR_RETURN(const std::string problem, r.OptionalString("problem_type", ""));
  if (!problem.empty() && problem != "single_label_classification") {
    return r.Error("problem_type",
                   absl::StrCat("is \"", problem, "\"; supported: single_label_classification"));
  }
  return absl::OkStatus();
}

absl::Status ParseSizes(const ConfigReader& r, const FamilyInfo& f, HfEncoderConfig& c) {
  ASSIGN_OR_RETURN(c.vocab_size, r.RequiredInt("vocab_size", 1));
  ASSIGN_OR_RETURN(c.hidden_size, r.RequiredInt("hidden_size", 1));
  ASSIGN_OR_RETURN(c.num_hidden_layers, r.RequiredInt("num_hidden_layers", 1));
  ASSIGN_OR_RETURN(c.num_attention_heads, r.RequiredInt("num_attention_heads", 1));
  ASSIGN_OR_RETURN(c.intermediate_size, r.RequiredInt("intermediate_size", 1));
  ASSIGN_OR_RETURN(c.max_position_embeddings, r.RequiredInt("max_position_embeddings", 1));
  ASSIGN_OR_RETURN(c.type_vocab_size, r.OptionalInt("type_vocab_size", 1, c.type_vocab_size));
  if (c.hidden_size % c.num_attention_heads != 0) {
    return r.Error("num_attention_heads",
                   absl::StrCat("(", c.num_attention_heads, ") must divide hidden_size (",
                                c.hidden_size, ")"));
  }
  ASSIGN_OR_RETURN(c.pad_token_id, r.OptionalInt("pad_token_id", 0, f.default_pad_token_id));
  // RoBERTa numbers positions after padding_idx, so the id must exist and leave positions.
  if (c.family != HfFamily::kBert &&
      (c.pad_token_id >= c.vocab_size || c.pad_token_id + 1 >= c.max_position_embeddings)) {
    return r.Error("pad_token_id",
                   absl::StrCat("(", c.pad_token_id, ") must be below vocab_size (", c.vocab_size,
                                ") and leave positions below max_position_embeddings (",
                                c.max_position_embeddings, ")"));
  }
  if (const Json* eps = r.Find("layer_norm_eps")) {
    if (!eps->is_number() || !(eps->get<double>() > 0.0) || !std::isfinite(eps->get<double>())) {
      return r.Error("layer_norm_eps",
                     absl::StrCat("must be a positive number, not ", ShortDump(*eps)));
    }
    c.layer_norm_eps = eps->get<double>();
  }
  return absl::OkStatus();
}

absl::Status ParseSemantics(const ConfigReader& r, HfEncoderConfig& c) {
  ASSIGN_OR_RETURN(c.hidden_act_name, r.OptionalString("hidden_act", c.hidden_act_name));
  std::optional<HfActivation> act = HfActivationFromName(c.hidden_act_name);
  if (!act.has_value()) {
    return r.Error("hidden_act", absl::StrCat("is \"", c.hidden_act_name,
                                              "\"; supported: ", HfActivationNames()));
  }
  c.hidden_act = *act;
  ASSIGN_OR_RETURN(const std::string position,
                   r.OptionalString("position_embedding_type", "absolute"));
  if (position != "absolute") {
    return r.Error("position_embedding_type",
                   absl::StrCat("is \"", position, "\"; supported: absolute"));
  }
  if (const Json* decoder = r.Find("is_decoder"); decoder != nullptr && *decoder != false) {
    return r.Error("is_decoder", "must be false: only bidirectional encoders are supported");
  }
  return absl::OkStatus();
}

}  // namespace

std::optional<HfActivation> HfActivationFromName(const std::string& name) {
  auto it = Activations().find(name);
  if (it == Activations().end()) return std::nullopt;
  return it->second;
}

std::string HfActivationNames() {
  std::vector<std::string> names;
  for (const auto& [name, act] : Activations()) names.push_back(name);
  return absl::StrJoin(names, ", ");
}

const char* HfFamilyName(HfFamily family) {
  for (const FamilyInfo& f : kFamilies) {
    if (f.family == family) return f.model_type;
  }
  return "unknown";
}

absl::StatusOr<HfEncoderConfig> ParseHfEncoderConfig(absl::string_view json_text,
                                                     const std::string& path) {
  JsonLimits limits;
  limits.max_depth = kMaxConfigDepth;
  ASSIGN_OR_RETURN(const Json json, ParseBoundedJson(json_text, limits, path));
  if (!json.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": must be a JSON object"));
  }
  ConfigReader r(json, path);
  HfEncoderConfig c;
  c.path = path;
  ASSIGN_OR_RETURN(const FamilyInfo* family, ParseFamily(r));
  c.family = family->family;
  c.model_type = family->model_type;
  RETURN_IF_ERROR(ParseArchitecture(r, *family, c));
  RETURN_IF_ERROR(ParseSizes(r, *family, c));
  RETURN_IF_ERROR(ParseSemantics(r, c));
  RETURN_IF_ERROR(ParseLabels(r, c));
  return c;
}

absl::StatusOr<HfEncoderConfig> LoadHfEncoderConfigFile(const std::string& path) {
  ASSIGN_OR_RETURN(const std::string text, internal::ReadBoundedFile(path, kMaxHfConfigBytes));
  return ParseHfEncoderConfig(text, path);
}

absl::StatusOr<HfEncoderConfig> LoadHfEncoderConfig(const std::string& dir) {
  return LoadHfEncoderConfigFile(absl::StrCat(dir, "/", kHfConfigFile));
}

}  // namespace twin
