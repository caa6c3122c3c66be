#include "bench/eval/eval_inputs.h"

#include <ATen/ATen.h>

#include <filesystem>
#include <map>
#include <regex>

#include "absl/strings/str_cat.h"
#include "bench/zoo/byte_zoo.h"
#include "core/io/safetensors.h"
#include "core/model/hf_decoder.h"
#include "core/model/hf_decoder_config.h"
#include "core/model/hf_encoder.h"
#include "core/model/script_model.h"
#include "core/status_macros.h"
#include "core/store/artifact_set.h"
#include "core/store/object_store.h"
#include "core/text/hf_tokenizer.h"
#include "core/text/tokenizer.h"

namespace twin::eval {
namespace {

LabeledRows FirstRows(LabeledRows rows, int64_t max_rows) {
  if (max_rows <= 0 || rows.size() <= max_rows) return rows;
  rows.input_ids = rows.input_ids.slice(0, 0, max_rows);
  rows.attention_mask = rows.attention_mask.slice(0, 0, max_rows);
  rows.labels = rows.labels.slice(0, 0, max_rows);
  return rows;
}

absl::StatusOr<LabeledRows> ReadTestRows(const std::string& path, int64_t num_classes,
                                         int64_t max_rows) {
  ASSIGN_OR_RETURN(auto file, SafetensorsReader::Open(path));
  LabeledRows rows;
  ASSIGN_OR_RETURN(rows.input_ids, file->Get("input_ids", at::kLong));
  ASSIGN_OR_RETURN(rows.attention_mask, file->Get("attention_mask", at::kLong));
  ASSIGN_OR_RETURN(rows.labels, file->Get("labels", at::kLong));
  if (rows.input_ids.dim() != 2 || !rows.input_ids.sizes().equals(rows.attention_mask.sizes()) ||
      rows.labels.dim() != 1 || rows.labels.size(0) != rows.input_ids.size(0) ||
      rows.labels.size(0) == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": expected input_ids and attention_mask [N, L] and labels [N], N > 0"));
  }
  if (rows.labels.min().item<int64_t>() < 0 || rows.labels.max().item<int64_t>() >= num_classes) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": labels outside [0, ", num_classes, ")"));
  }
  return FirstRows(std::move(rows), max_rows);
}

absl::StatusOr<LabeledRows> ReadValidationRows(const std::string& path,
                                               std::vector<std::string> label_names,
                                               const Tokenizer& tokenizer, int64_t max_rows) {
  ASSIGN_OR_RETURN(zoo::TextSplit split, zoo::ReadTsvSplit(path, &label_names));
  if (max_rows > 0 && static_cast<int64_t>(split.texts.size()) > max_rows) {
    split.texts.resize(max_rows);
    split.labels.resize(max_rows);
  }
  auto batch = tokenizer.Encode(split.texts);
  if (!batch.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": ", batch.status().message()));
  }
  LabeledRows rows;
  rows.input_ids = batch->input_ids;
  rows.attention_mask = batch->attention_mask;
  rows.labels = at::tensor(split.labels, at::kLong);
  return rows;
}

// A zoo model's parameters: the Hugging Face directory ZOO/<stem> when it has a config.json
// (names normalised as twin-merge normalises them; a causal LM's as its decoder reads them),
// else the TorchScript file ZOO/<stem>.pt. *label: the path read.
absl::StatusOr<NamedTensors> ModelParameters(const std::string& zoo, const std::string& stem,
                                             bool causal_lm, std::string* label) {
  const std::string dir = absl::StrCat(zoo, "/", stem);
  if (causal_lm) {
    *label = dir;
    ASSIGN_OR_RETURN(HfCausalLm lm, LoadHfCausalLm(dir));
    return NamedTensors(lm.weights.begin(), lm.weights.end());
  }
  if (IsHfModelDir(dir)) {
    *label = dir;
    ASSIGN_OR_RETURN(HfModel model, LoadHfModel(dir));
    NamedTensors params(model.body.begin(), model.body.end());
    params.insert(params.end(), model.head.begin(), model.head.end());
    return params;
  }
  *label = dir + ".pt";
  ASSIGN_OR_RETURN(auto model, ScriptModel::Load(*label));
  return model->NamedParameters();
}

// The first max_examples (0: all) examples of a JSONL file of (prompt, target) pairs, encoded
// for a model of max_len positions that ends a target with eos_id.
absl::StatusOr<std::vector<zoo::CausalExample>> ReadCausalExamples(const std::string& path,
                                                                   const HfTokenizer& tokenizer,
                                                                   int64_t eos_id, int64_t max_len,
                                                                   int64_t max_examples) {
  ASSIGN_OR_RETURN(std::vector<zoo::CausalPair> pairs, zoo::ReadCausalPairsJsonl(path));
  if (max_examples > 0 && static_cast<int64_t>(pairs.size()) > max_examples) {
    pairs.resize(max_examples);
  }
  if (pairs.empty()) return absl::InvalidArgumentError(absl::StrCat(path, ": no examples"));
  auto examples = zoo::EncodeCausalPairs(tokenizer, pairs, eos_id, max_len);
  if (!examples.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": ", examples.status().message()));
  }
  return examples;
}

// The version's tokenizer as a Hugging Face tokenizer (its files share one folder of the set).
absl::StatusOr<std::unique_ptr<HfTokenizer>> SetHfTokenizer(const LocalArtifactSet& set) {
  const TokenizerSpec& spec = set.manifest.tokenizer;
  if (spec.type != "hf" || spec.files.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "version ", set.version,
        ": a causal language model needs an hf tokenizer, the manifest's is '", spec.type, "'"));
  }
  const std::string& first = spec.files.front();
  const size_t slash = first.rfind('/');
  return HfTokenizer::Load(
      slash == std::string::npos ? set.dir : absl::StrCat(set.dir, "/", first.substr(0, slash)));
}

}  // namespace

absl::Status SplitParameters(const NamedTensors& params, const NamedTensors& order,
                             const std::string& head_pattern, const std::string& label,
                             NamedTensors* merged, NamedTensors* head) {
  std::regex head_re;
  try {
    head_re = std::regex(head_pattern);
  } catch (const std::regex_error& e) {
    return absl::InvalidArgumentError(
        absl::StrCat("head pattern '", head_pattern, "': ", e.what()));
  }
  std::map<std::string, at::Tensor> by_name;
  for (const auto& [name, t] : params) {
    if (std::regex_search(name, head_re)) {
      head->emplace_back(name, t);
    } else {
      by_name[name] = t;
    }
  }
  for (const auto& [name, want] : order) {
    auto it = by_name.find(name);
    if (it == by_name.end()) {
      return absl::InvalidArgumentError(absl::StrCat(label, " has no tensor '", name, "'"));
    }
    if (!it->second.sizes().equals(want.sizes())) {
      return absl::InvalidArgumentError(
          absl::StrCat(label, ": tensor '", name, "' has shape ", c10::str(it->second.sizes()),
                       ", the shared expert's is ", c10::str(want.sizes())));
    }
    merged->emplace_back(name, it->second.to(at::kFloat));
  }
  return absl::OkStatus();
}

absl::StatusOr<EvalInputs> LoadEvalInputs(const EvalSources& s) {
  if (s.zoo_dir.empty()) return absl::InvalidArgumentError("the zoo directory is required");
  const std::string zoo = std::filesystem::absolute(s.zoo_dir).string();
  const std::string uri =
      s.store_uri.empty() ? absl::StrCat("file://", zoo, "/store") : s.store_uri;
  ASSIGN_OR_RETURN(auto store, OpenObjectStore(uri));
  ASSIGN_OR_RETURN(
      LocalArtifactSet set,
      FetchArtifactSet(store.get(), s.version, s.cache_dir.empty() ? zoo + "/cache" : s.cache_dir));
  const Manifest& m = set.manifest;
  EvalInputs in;
  in.version = set.version;
  in.shared_method = m.merge_method;
  if (!m.architecture_blob.empty()) in.architecture_path = set.PathOf(m.architecture_blob);
  ASSIGN_OR_RETURN(auto published, TwinWeights::Load(set, c10::kCPU));
  for (const auto& [name, t] : published->shared()) in.shared.emplace_back(name, t.to(at::kFloat));
  ASSIGN_OR_RETURN(in.router, Router::Load(set));
  in.router_input = set.manifest.router;
  ASSIGN_OR_RETURN(auto tokenizer, Tokenizer::Create(m.tokenizer, set.dir));

  in.head_pattern = m.head_pattern;
  const bool causal_lm = IsHfDecoderFamilyName(m.native.family);
  std::unique_ptr<HfTokenizer> hf_tokenizer;
  int64_t eos_id = -1, max_len = 0;
  if (causal_lm) {
    in.decoder_config_path = set.PathOf(m.native.config_blob);
    ASSIGN_OR_RETURN(HfDecoderConfig config, LoadHfDecoderConfigFile(in.decoder_config_path));
    if (config.eos_token_ids.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat(in.decoder_config_path, ": no eos_token_id, which ends every target"));
    }
    eos_id = config.eos_token_ids.front();
    max_len = config.max_position_embeddings;
    ASSIGN_OR_RETURN(hf_tokenizer, SetHfTokenizer(set));
  } else if (!m.native.family.empty()) {
    in.native_config_path = set.PathOf(m.native.config_blob);
    // Multi-stage versions (twin.from_layer k): the tensors below layer k keep no twins, in
    // the published set and in the twins recomputed here.
    const int64_t from_layer = m.rank_policy.value("from_layer", int64_t{0});
    if (from_layer > 0) {
      ASSIGN_OR_RETURN(HfEncoderConfig config, LoadHfEncoderConfigFile(in.native_config_path));
      ASSIGN_OR_RETURN(std::unique_ptr<HfEncoder> encoder, HfEncoder::Create(config));
      for (const auto& [name, tensor] : in.shared) {
        if (encoder->StageOf(name) < from_layer) in.shared_prefix.insert(name);
      }
    }
  }

  NamedTensors base_head;
  std::string base_path;
  ASSIGN_OR_RETURN(NamedTensors base, ModelParameters(zoo, "base", causal_lm, &base_path));
  RETURN_IF_ERROR(
      SplitParameters(base, in.shared, m.head_pattern, base_path, &in.base, &base_head));
  for (const TaskEntry& entry : m.tasks) {
    EvalTask task;
    task.name = entry.name;
    task.labels = entry.labels;
    std::string expert_path;
    ASSIGN_OR_RETURN(NamedTensors params,
                     ModelParameters(zoo, entry.name, causal_lm, &expert_path));
    NamedTensors merged, head;
    RETURN_IF_ERROR(
        SplitParameters(params, in.shared, m.head_pattern, expert_path, &merged, &head));
    in.experts.push_back(std::move(merged));
    in.heads.push_back(std::move(head));
    if (causal_lm) {
      const std::string stem = absl::StrCat(zoo, "/", entry.name);
      ASSIGN_OR_RETURN(task.causal_test, ReadCausalExamples(stem + ".test.jsonl", *hf_tokenizer,
                                                            eos_id, max_len, s.max_test));
      if (std::filesystem::exists(stem + ".validation.jsonl")) {
        ASSIGN_OR_RETURN(task.causal_validation,
                         ReadCausalExamples(stem + ".validation.jsonl", *hf_tokenizer, eos_id,
                                            max_len, s.max_validation));
      }
      in.tasks.push_back(std::move(task));
      continue;
    }
    ASSIGN_OR_RETURN(task.test,
                     ReadTestRows(absl::StrCat(zoo, "/", entry.name, ".test.safetensors"),
                                  static_cast<int64_t>(entry.labels.size()), s.max_test));
    if (!s.data_dir.empty()) {
      ASSIGN_OR_RETURN(
          task.validation,
          ReadValidationRows(absl::StrCat(s.data_dir, "/", entry.name, ".validation.tsv"),
                             entry.labels, *tokenizer, s.max_validation));
    }
    in.tasks.push_back(std::move(task));
  }
  return in;
}

}  // namespace twin::eval
