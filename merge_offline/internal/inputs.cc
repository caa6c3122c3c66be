#include "merge_offline/internal/inputs.h"

#include <filesystem>
#include <fstream>
#include <iterator>
#include <set>
#include <string_view>

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "core/merge/merge_methods.h"
#include "core/model/hf_decoder.h"
#include "core/model/hf_encoder.h"
#include "core/model/script_model.h"
#include "core/io/sha256.h"
#include "core/status_macros.h"
#include "core/text/tokenizer.h"
#include "merge_offline/internal/causal_lm.h"

namespace twin::merge_internal {
namespace {

std::string ShapeString(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) absl::StrAppend(&s, i ? ", " : "", shape[i]);
  return s + "]";
}

at::Tensor TakeRows(const at::Tensor& t, const at::Tensor& rows) { return t.index_select(0, rows); }

// Whether the config.json of `dir` names a causal-LM family (the decoder loader then reads it
// in full, reporting any problem).
bool IsCausalLmDir(const std::string& dir) {
  std::ifstream in(std::filesystem::path(dir) / kHfConfigFile, std::ios::binary);
  const std::string text{std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
  return IsHfDecoderConfigText(text);
}

}  // namespace

absl::StatusOr<InputModel> OpenInputModel(const std::string& path, const std::string& work_dir,
                                          const std::string& stem) {
  InputModel model;
  model.path = path;
  if (!std::filesystem::exists(path)) {
    return absl::NotFoundError(absl::StrCat("model file ", path, " does not exist"));
  }
  if (std::filesystem::is_directory(path)) {
    if (!std::filesystem::exists(std::filesystem::path(path) / kHfConfigFile)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "model directory ", path, " has no ", kHfConfigFile,
          " (a Hugging Face model directory is expected)"));
    }
    std::vector<std::pair<std::string, at::Tensor>> tensors;
    model.hf = true;
    if (IsCausalLmDir(path)) {
      ASSIGN_OR_RETURN(HfCausalLm lm, LoadHfCausalLm(path));
      model.hf_decoder = true;
      model.hf_decoder_config = lm.decoder->config();
      tensors.assign(lm.weights.begin(), lm.weights.end());
    } else {
      ASSIGN_OR_RETURN(HfModel hf, LoadHfModel(path));
      model.hf_config = hf.encoder->config();
      tensors.assign(hf.body.begin(), hf.body.end());
      tensors.insert(tensors.end(), hf.head.begin(), hf.head.end());
    }
    // The digest of the directory: of its config and weight files' digests, in order.
    std::string digests;
    for (const char* name : {kHfConfigFile, kHfWeightsIndexFile, kHfWeightsFile}) {
      const std::string file = (std::filesystem::path(path) / name).string();
      if (!std::filesystem::exists(file)) continue;
      ASSIGN_OR_RETURN(std::string d, Sha256File(file));
      absl::StrAppend(&digests, name, "=", d, "\n");
    }
    model.sha256 = Sha256Hex(digests);
    const std::string tensors_path = absl::StrCat(work_dir, "/", stem, ".safetensors");
    RETURN_IF_ERROR(WriteSafetensors(tensors_path, tensors));
    ASSIGN_OR_RETURN(model.reader, SafetensorsReader::Open(tensors_path));
    return model;
  }
  ASSIGN_OR_RETURN(model.sha256, Sha256File(path));
  std::string tensors_path = path;
  if (absl::EndsWith(path, ".pt") || absl::EndsWith(path, ".pth")) {
    ASSIGN_OR_RETURN(auto script, ScriptModel::Load(path));
    tensors_path = absl::StrCat(work_dir, "/", stem, ".safetensors");
    RETURN_IF_ERROR(WriteSafetensors(tensors_path, script->NamedParameters()));
  } else if (!absl::EndsWith(path, ".safetensors")) {
    return absl::InvalidArgumentError(absl::StrCat(
        "model file ", path, ": unsupported format (expected .pt or .safetensors)"));
  }
  ASSIGN_OR_RETURN(model.reader, SafetensorsReader::Open(tensors_path));
  return model;
}

absl::StatusOr<at::Tensor> ReadTensor(const InputModel& model, const std::string& name,
                                      bool check_finite) {
  ASSIGN_OR_RETURN(at::Tensor t, model.reader->Get(name));
  if (!check_finite) return t;
  try {
    if (!AllFinite(t)) {
      return absl::InvalidArgumentError(
          absl::StrCat(model.path, ": tensor '", name, "' has NaN or Inf values"));
    }
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat(model.path, ": tensor '", name, "': ", e.what()));
  }
  return t;
}

absl::StatusOr<ModelLayout> CheckLayout(const InputModel& base,
                                        const std::vector<InputModel>& experts,
                                        const std::regex& head_pattern, bool require_head) {
  ModelLayout layout;
  for (const auto& name : base.reader->names()) {
    (std::regex_search(name, head_pattern) ? layout.head : layout.merged).push_back(name);
  }
  if (layout.head.empty() && require_head) {
    return absl::InvalidArgumentError(absl::StrCat(
        "base model ", base.path, ": no tensor matches the head pattern (set head_pattern)"));
  }
  if (layout.merged.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("base model ", base.path, ": every tensor matches the head pattern"));
  }
  const std::set<std::string> base_names(base.reader->names().begin(),
                                         base.reader->names().end());
  for (const auto& expert : experts) {
    for (const auto& name : expert.reader->names()) {
      if (!base_names.count(name)) {
        return absl::InvalidArgumentError(absl::StrCat(
            "expert ", expert.path, ": tensor '", name, "' is not in the base model ", base.path));
      }
    }
    for (const auto& name : base.reader->names()) {
      if (!expert.reader->Contains(name)) {
        return absl::InvalidArgumentError(
            absl::StrCat("expert ", expert.path, ": tensor '", name, "' of the base is missing"));
      }
    }
    for (const auto& name : layout.merged) {
      ASSIGN_OR_RETURN(TensorInfo b, base.reader->Info(name));
      ASSIGN_OR_RETURN(TensorInfo e, expert.reader->Info(name));
      if (b.shape != e.shape) {
        return absl::InvalidArgumentError(absl::StrCat(
            "expert ", expert.path, ": tensor '", name, "' has shape ", ShapeString(e.shape),
            " but the base has ", ShapeString(b.shape)));
      }
      if (e.dtype != DType::kF32 && e.dtype != DType::kF16 && e.dtype != DType::kBF16 &&
          e.dtype != DType::kF64) {
        return absl::InvalidArgumentError(absl::StrCat("expert ", expert.path, ": tensor '",
                                                       name, "' is not floating point (",
                                                       DTypeName(e.dtype), ")"));
      }
    }
  }
  return layout;
}

std::vector<std::string> HfTokenizerFiles(const std::string& dir) {
  auto exists = [&dir](const char* name) {
    return std::filesystem::is_regular_file(std::filesystem::path(dir) / name);
  };
  std::vector<std::string> files;
  for (const char* name : {"tokenizer.json", "tokenizer.model", "spiece.model",
                           "sentencepiece.bpe.model", "vocab.txt", "vocab.json", "merges.txt",
                           "tokenizer_config.json", "special_tokens_map.json",
                           "added_tokens.json"}) {
    // A SentencePiece model (Llama's tokenizer.model, T5's spiece.model, XLM-RoBERTa's
    // sentencepiece.bpe.model) is read only without a tokenizer.json.
    const std::string_view n(name);
    const bool sentencepiece =
        n == "tokenizer.model" || n == "spiece.model" || n == "sentencepiece.bpe.model";
    if (sentencepiece && exists("tokenizer.json")) continue;
    if (exists(name)) files.push_back(name);
  }
  return files;
}

absl::Status CheckSameHfBody(const InputModel& base, const std::vector<InputModel>& experts) {
  for (const InputModel& e : experts) {
    if (e.hf != base.hf) {
      return absl::InvalidArgumentError(absl::StrCat(
          "expert ", e.path, " is ", e.hf ? "a Hugging Face directory" : "a model file",
          " but the base ", base.path, " is ", base.hf ? "a Hugging Face directory" : "a model file",
          ": experts must share the base's format and family"));
    }
    if (!base.hf) continue;
    if (e.hf_decoder != base.hf_decoder) {
      auto kind = [](const InputModel& m) {
        return m.hf_decoder ? "a causal language model" : "an encoder";
      };
      return absl::InvalidArgumentError(
          absl::StrCat("expert ", e.path, " is ", kind(e), " but the base ", base.path, " is ",
                       kind(base), ": experts must share the base's family"));
    }
    if (base.hf_decoder) {
      RETURN_IF_ERROR(CheckSameDecoder(base, e));
      continue;
    }
    const HfEncoderConfig& a = base.hf_config;
    const HfEncoderConfig& b = e.hf_config;
    auto differ = [&](const char* field, const std::string& x,
                      const std::string& y) -> absl::Status {
      if (x == y) return absl::OkStatus();
      return absl::InvalidArgumentError(absl::StrCat("expert ", e.path, ": ", field, " is ", y,
                                                     " but the base ", base.path, " has ", x));
    };
    RETURN_IF_ERROR(differ("model family", HfFamilyName(a.family), HfFamilyName(b.family)));
    RETURN_IF_ERROR(differ("vocab_size", absl::StrCat(a.vocab_size), absl::StrCat(b.vocab_size)));
    RETURN_IF_ERROR(
        differ("hidden_size", absl::StrCat(a.hidden_size), absl::StrCat(b.hidden_size)));
    RETURN_IF_ERROR(differ("num_hidden_layers", absl::StrCat(a.num_hidden_layers),
                           absl::StrCat(b.num_hidden_layers)));
    RETURN_IF_ERROR(differ("num_attention_heads", absl::StrCat(a.num_attention_heads),
                           absl::StrCat(b.num_attention_heads)));
    RETURN_IF_ERROR(differ("intermediate_size", absl::StrCat(a.intermediate_size),
                           absl::StrCat(b.intermediate_size)));
    RETURN_IF_ERROR(differ("hidden_act", a.hidden_act_name, b.hidden_act_name));
    RETURN_IF_ERROR(differ("max_position_embeddings", absl::StrCat(a.max_position_embeddings),
                           absl::StrCat(b.max_position_embeddings)));
    RETURN_IF_ERROR(differ("type_vocab_size", absl::StrCat(a.type_vocab_size),
                           absl::StrCat(b.type_vocab_size)));
    RETURN_IF_ERROR(differ("layer_norm_eps", absl::StrCat(a.layer_norm_eps),
                           absl::StrCat(b.layer_norm_eps)));
    RETURN_IF_ERROR(
        differ("pad_token_id", absl::StrCat(a.pad_token_id), absl::StrCat(b.pad_token_id)));
  }
  return absl::OkStatus();
}

absl::StatusOr<TokenExamples> LoadRouterExamples(const std::string& path,
                                                 const TokenizerSpec& tokenizer,
                                                 int64_t max_examples, uint64_t seed,
                                                 const std::string& tokenizer_dir) {
  TokenExamples ex;
  if (!std::filesystem::exists(path)) {
    return absl::NotFoundError(absl::StrCat("router data ", path, " does not exist"));
  }
  if (absl::EndsWith(path, ".safetensors")) {
    ASSIGN_OR_RETURN(auto reader, SafetensorsReader::Open(path));
    auto ids = reader->Get("input_ids", at::kLong);
    auto mask = reader->Get("attention_mask", at::kLong);
    if (!ids.ok() || !mask.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "router data ", path, ": needs tensors 'input_ids' and 'attention_mask'"));
    }
    if (ids->dim() != 2 || !ids->sizes().equals(mask->sizes()) || ids->size(0) == 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "router data ", path, ": input_ids and attention_mask must be equal non-empty [N, L]"));
    }
    if (!at::logical_or(mask->eq(0), mask->eq(1)).all().item<bool>()) {
      return absl::InvalidArgumentError(
          absl::StrCat("router data ", path, ": attention_mask has values other than 0 and 1"));
    }
    ex.input_ids = *ids;
    ex.attention_mask = *mask;
  } else {
    std::ifstream in(path);
    std::vector<std::string> lines;
    for (std::string line; std::getline(in, line);) {
      if (!line.empty()) lines.push_back(line);
    }
    if (lines.empty()) {
      return absl::InvalidArgumentError(absl::StrCat("router data ", path, " has no examples"));
    }
    ASSIGN_OR_RETURN(auto tok, Tokenizer::Create(tokenizer, tokenizer_dir));
    ASSIGN_OR_RETURN(TokenBatch batch, tok->Encode(lines));
    ex.input_ids = batch.input_ids;
    ex.attention_mask = batch.attention_mask;
  }
  const int64_t n = ex.input_ids.size(0);
  if (n > max_examples) {
    auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
    at::Tensor rows = at::randperm(n, gen, at::kLong).slice(0, 0, max_examples);
    ex.input_ids = TakeRows(ex.input_ids, rows);
    ex.attention_mask = TakeRows(ex.attention_mask, rows);
  }
  return ex;
}

}  // namespace twin::merge_internal
