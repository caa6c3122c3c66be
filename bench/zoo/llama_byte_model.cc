#include "bench/zoo/llama_byte_model.h"

#include <cmath>
#include <nlohmann/json.hpp>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "bench/zoo/byte_bpe.h"
#include "core/io/safetensors.h"
#include "core/model/hf_checkpoint.h"
#include "core/model/hf_config.h"
#include "core/model/hf_decoder.h"
#include "core/status_macros.h"

namespace twin::zoo {
namespace {

using Json = nlohmann::ordered_json;

constexpr double kInitStd = 0.02;  // transformers' initializer_range for Llama
constexpr int kJsonIndent = 2;
constexpr char kEos[] = "<|endoftext|>";
constexpr char kBos[] = "<|begin_of_text|>";
constexpr char kPad[] = "<|pad|>";
static_assert(kLlamaEosId == 256 && kLlamaPadId + 1 == kLlamaVocab,
              "the specials follow the 256 bytes");

// Llama 3's template: bos before the text (and before each text of a pair).
Json TemplatePostProcessor() {
  const Json bos = {{"SpecialToken", {{"id", kBos}, {"type_id", 0}}}};
  auto sequence = [](const char* id, int type) {
    return Json{{"Sequence", {{"id", id}, {"type_id", type}}}};
  };
  return {{"type", "TemplateProcessing"},
          {"single", {bos, sequence("A", 0)}},
          {"pair",
           {bos,
            sequence("A", 0),
            {{"SpecialToken", {{"id", kBos}, {"type_id", 1}}}},
            sequence("B", 1)}},
          {"special_tokens", {{kBos, {{"id", kBos}, {"ids", {kLlamaBosId}}, {"tokens", {kBos}}}}}}};
}

// The output projections of the residual branches, which start smaller (as GPT-2 does) so that
// the stack starts close to the identity.
bool IsResidualOutput(const std::string& name) {
  return absl::EndsWith(name, "o_proj.weight") || absl::EndsWith(name, "down_proj.weight");
}

}  // namespace

std::string ByteLlamaConfigJson(const ByteLlamaOptions& o) {
  Json c = {
      {"architectures", {"LlamaForCausalLM"}},
      {"model_type", "llama"},
      {"vocab_size", kLlamaVocab},
      {"hidden_size", o.dim},
      {"intermediate_size", o.ff_dim},
      {"num_hidden_layers", o.layers},
      {"num_attention_heads", o.heads},
      {"num_key_value_heads", o.kv_heads},
      {"hidden_act", "silu"},
      {"max_position_embeddings", o.max_len},
      {"rms_norm_eps", o.rms_norm_eps},
      {"rope_theta", o.rope_theta},
      {"rope_scaling", nullptr},
      {"tie_word_embeddings", o.tie_word_embeddings},
      {"attention_bias", false},
      {"mlp_bias", false},
      {"attention_dropout", 0.0},
      {"initializer_range", kInitStd},
      {"bos_token_id", kLlamaBosId},
      {"eos_token_id", kLlamaEosId},
      {"pad_token_id", kLlamaPadId},
      {"use_cache", true},
      {"torch_dtype", "float32"},
  };
  return c.dump(kJsonIndent) + "\n";
}

absl::StatusOr<HfDecoderConfig> ByteLlamaConfig(const ByteLlamaOptions& o) {
  if (o.layers < 1 || o.dim < 2 || o.heads < 1 || o.kv_heads < 1 || o.dim % o.heads != 0 ||
      o.heads % o.kv_heads != 0 || (o.dim / o.heads) % 2 != 0 || o.ff_dim < 1 || o.max_len < 2) {
    return absl::InvalidArgumentError(absl::StrCat(
        "byte llama: need layers, ff_dim >= 1, heads dividing dim into an even head_dim, "
        "kv_heads dividing heads and max_len >= 2; got layers=",
        o.layers, " dim=", o.dim, " heads=", o.heads, " kv_heads=", o.kv_heads,
        " ff_dim=", o.ff_dim, " max_len=", o.max_len));
  }
  return ParseHfDecoderConfig(ByteLlamaConfigJson(o), kHfConfigFile);
}

std::string ByteLlamaTokenizerJson() {
  return ByteBpeTokenizerJson({{kLlamaEosId, kEos}, {kLlamaBosId, kBos}, {kLlamaPadId, kPad}},
                              /*byte_offset=*/0, TemplatePostProcessor().dump());
}

std::string ByteLlamaTokenizerConfigJson(const ByteLlamaOptions& o) {
  Json c = {
      {"tokenizer_class", "PreTrainedTokenizerFast"},
      {"bos_token", kBos},
      {"eos_token", kEos},
      {"pad_token", kPad},
      {"add_bos_token", true},
      {"add_eos_token", false},
      {"model_max_length", o.max_len},
  };
  return c.dump(kJsonIndent) + "\n";
}

ByteLlamaImpl::ByteLlamaImpl(const HfDecoderConfig& config, at::Tensor inv_freq) : config_(config) {
  model_ = register_module("model", internal::LlamaBody(config, std::move(inv_freq)));
  if (!config.tie_word_embeddings) {
    lm_head_ = register_module(
        kHfLmHead,
        torch::nn::Linear(
            torch::nn::LinearOptions(config.hidden_size, config.vocab_size).bias(false)));
  }
}

at::Tensor ByteLlamaImpl::forward(const at::Tensor& ids) {
  const at::Tensor h = model_(ids);
  return lm_head_ ? lm_head_(h) : torch::linear(h, model_->embedding());
}

absl::StatusOr<ByteLlama> MakeByteLlama(const HfDecoderConfig& config, uint64_t seed) {
  if (config.qkv_bias || config.o_bias || config.mlp_bias || config.sliding_window > 0 ||
      config.hidden_act != HfActivation::kSilu) {
    return absl::InvalidArgumentError(
        absl::StrCat(config.path, ": the zoo's Llama has no biases, no sliding window and silu"));
  }
  ASSIGN_OR_RETURN(auto native, HfDecoder::Create(config));
  try {
    torch::NoGradGuard no_grad;
    torch::manual_seed(seed);
    ByteLlama model(config, native->inv_freq().clone());
    const double out_std = kInitStd / std::sqrt(2.0 * config.num_hidden_layers);
    for (auto& p : model->named_parameters(/*recurse=*/true)) {
      if (p.value().dim() < 2) continue;  // norms start at one
      p.value().normal_(0.0, IsResidualOutput(p.key()) ? out_std : kInitStd);
    }
    model->eval();
    return model;
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("building the byte llama failed: ", e.what()));
  }
}

absl::StatusOr<ByteLlama> CopyByteLlama(const ByteLlama& trained) {
  ASSIGN_OR_RETURN(ByteLlama copy, MakeByteLlama(trained->config(), /*seed=*/0));
  try {
    torch::NoGradGuard no_grad;
    auto source = trained->named_parameters(/*recurse=*/true);
    for (auto& p : copy->named_parameters(/*recurse=*/true)) p.value().copy_(source[p.key()]);
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("copying the byte llama failed: ", e.what()));
  }
  return copy;
}

absl::StatusOr<TrainStats> TrainNextToken(ByteLlama& model, const TokenizedExamples& data,
                                          const TrainOptions& o, const std::string& what) {
  const at::Tensor& ids = data.input_ids;
  if (!ids.defined() || ids.dim() != 2 || ids.size(0) == 0 || !data.attention_mask.defined() ||
      !data.attention_mask.sizes().equals(ids.sizes()) || !data.labels.defined() ||
      !data.labels.sizes().equals(ids.sizes())) {
    return absl::InvalidArgumentError(absl::StrCat(
        what, ": input_ids, attention_mask and labels must be equal non-empty [N, L]"));
  }
  if (data.labels.ne(kNoLabel).sum(1).min().item<int64_t>() == 0) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": a row has no labelled position"));
  }
  const int64_t vocab = model->config().vocab_size;
  model->train();
  auto stats = TrainParameters(
      model->parameters(), ids.size(0), o, what, [&](const at::Tensor& rows, at::Generator&) {
        const at::Tensor mask = data.attention_mask.index_select(0, rows);
        const int64_t len = std::max<int64_t>(1, mask.sum(1).max().item<int64_t>());
        const at::Tensor logits = model(ids.index_select(0, rows).slice(1, 0, len));
        const at::Tensor labels = data.labels.index_select(0, rows).slice(1, 0, len);
        return torch::nn::functional::cross_entropy(
            logits.reshape({-1, vocab}), labels.reshape({-1}),
            torch::nn::functional::CrossEntropyFuncOptions().ignore_index(kNoLabel));
      });
  model->eval();
  return stats;
}

absl::Status WriteByteLlamaTokenizer(const ByteLlamaOptions& options, const std::string& dir) {
  RETURN_IF_ERROR(MakeDirectories(dir));
  RETURN_IF_ERROR(WriteFileAtomically(dir + "/tokenizer.json", ByteLlamaTokenizerJson()));
  return WriteFileAtomically(dir + "/tokenizer_config.json", ByteLlamaTokenizerConfigJson(options));
}

absl::Status SaveByteLlama(const ByteLlama& model, const ByteLlamaOptions& options,
                           const std::string& dir) {
  RETURN_IF_ERROR(WriteByteLlamaTokenizer(options, dir));
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  try {
    for (const auto& p : model->named_parameters(/*recurse=*/true)) {
      tensors.emplace_back(p.key(), p.value().detach().contiguous());
    }
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("reading the parameters for ", dir, ": ", e.what()));
  }
  RETURN_IF_ERROR(
      WriteSafetensors(absl::StrCat(dir, "/", kHfWeightsFile), tensors, {{"format", "pt"}}));
  return WriteFileAtomically(absl::StrCat(dir, "/", kHfConfigFile), ByteLlamaConfigJson(options));
}

}  // namespace twin::zoo
