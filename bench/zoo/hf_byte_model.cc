#include "bench/zoo/hf_byte_model.h"

#include <torch/torch.h>

#include <map>
#include <utility>

#include <nlohmann/json.hpp>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_replace.h"
#include "bench/zoo/byte_bpe.h"
#include "core/io/safetensors.h"
#include "core/model/hf_encoder.h"
#include "core/model/hf_script.h"
#include "core/status_macros.h"

namespace twin::zoo {
namespace {

using Json = nlohmann::ordered_json;

constexpr double kInitStd = 0.02;  // transformers' initializer_range for BERT and RoBERTa
constexpr double kLayerNormEps = 1e-5;
constexpr int64_t kTypeVocab = 1;  // RoBERTa has one token type
// Position rows below a token's first: RoBERTa numbers real tokens from padding_idx + 1.
constexpr int64_t kPositionOffset = kHfPadId + 1;
constexpr int kJsonIndent = 2;
const char* const kSpecialTokens[] = {"<s>", "<pad>", "</s>", "<unk>"};  // ids 0..3
static_assert(kByteOffset == 4, "the four special tokens precede the bytes");

// PretrainMaskedBytes writes its mask id into byte positions. In RoBERTa's ids that is </s>,
// which otherwise only ends a row (the tokenizer always closes with it), so a </s> before a
// row's last token is read as <unk>, the mask token of this vocabulary.
static_assert(kMaskId == kHfEosId, "mlm_logits maps the loop's mask id onto <unk>");
constexpr char kMlmSource[] = R"JIT(
def mlm_logits(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
    last = attention_mask.sum(1, keepdim=True) - 1
    pos = torch.cumsum(torch.ones_like(input_ids), 1) - 1
    ids = torch.where((input_ids == {EOS}) & (pos != last), torch.full_like(input_ids, {UNK}),
                      input_ids)
    h = torch.linear(self.hidden(ids, attention_mask), self.lm_head.dense.weight,
                     self.lm_head.dense.bias)
    h = torch.layer_norm(torch.gelu(h), [{DIM}], self.lm_head.layer_norm.weight,
                         self.lm_head.layer_norm.bias, {EPS})
    return torch.linear(h, self.roberta.embeddings.word_embeddings.weight, self.lm_head.bias)
)JIT";

at::Tensor InitialTensor(const std::string& name, const std::vector<int64_t>& shape) {
  if (absl::EndsWith(name, "LayerNorm.weight") || absl::EndsWith(name, "layer_norm.weight")) {
    return torch::ones(shape);
  }
  if (shape.size() == 1) return torch::zeros(shape);
  return torch::randn(shape) * kInitStd;
}

// Fresh tensors for the head's names of `config`'s spec (head) or the body's (!head).
absl::StatusOr<std::map<std::string, at::Tensor>> InitialWeights(const HfEncoderConfig& config,
                                                                 bool head) {
  ASSIGN_OR_RETURN(auto encoder, HfEncoder::Create(config));
  std::map<std::string, at::Tensor> weights;
  for (const auto& [name, shape] : encoder->tensor_spec().shapes) {
    if (absl::StartsWith(name, kHfHeadPrefix) == head) weights[name] = InitialTensor(name, shape);
  }
  return weights;
}

absl::Status AddLmHead(torch::jit::Module& module, const HfEncoderConfig& config) {
  const int64_t d = config.hidden_size;
  auto leaf = [](const std::string& type, std::vector<std::pair<std::string, at::Tensor>> ps) {
    torch::jit::Module m(type);
    for (auto& [name, t] : ps) m.register_parameter(name, t, /*is_buffer=*/false);
    return m;
  };
  try {
    torch::jit::Module head("HfByteLmHead");
    head.register_module("dense", leaf("HfByteLmHead_dense",
                                       {{"weight", InitialTensor("dense.weight", {d, d})},
                                        {"bias", torch::zeros({d})}}));
    head.register_module("layer_norm",
                         leaf("HfByteLmHead_layer_norm",
                              {{"weight", torch::ones({d})}, {"bias", torch::zeros({d})}}));
    head.register_parameter("bias", torch::zeros({config.vocab_size}), false);
    module.register_module("lm_head", head);
    module.define(absl::StrReplaceAll(
        kMlmSource, {{"{EOS}", absl::StrCat(kHfEosId)},
                     {"{UNK}", absl::StrCat(kHfUnkId)},
                     {"{DIM}", absl::StrCat(d)},
                     {"{EPS}", absl::StrFormat("%.17g", config.layer_norm_eps)}}));
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("adding the lm_head failed: ", e.what()));
  }
  return absl::OkStatus();
}

}  // namespace

std::string HfByteConfigJson(const ByteTransformerOptions& o,
                             const std::vector<std::string>& labels) {
  Json id2label = Json::object(), label2id = Json::object();
  for (size_t i = 0; i < labels.size(); ++i) {
    id2label[absl::StrCat(i)] = labels[i];
    label2id[labels[i]] = i;
  }
  Json c = {
      {"architectures", {"RobertaForSequenceClassification"}},
      {"model_type", "roberta"},
      {"vocab_size", kByteVocab},
      {"hidden_size", o.dim},
      {"num_hidden_layers", o.layers},
      {"num_attention_heads", o.heads},
      {"intermediate_size", o.ff_dim},
      {"hidden_act", "gelu"},
      {"max_position_embeddings", o.max_len + kPositionOffset},
      {"type_vocab_size", kTypeVocab},
      {"layer_norm_eps", kLayerNormEps},
      {"initializer_range", kInitStd},
      {"hidden_dropout_prob", 0.0},
      {"attention_probs_dropout_prob", 0.0},
      {"position_embedding_type", "absolute"},
      {"bos_token_id", kHfBosId},
      {"pad_token_id", kHfPadId},
      {"eos_token_id", kHfEosId},
      {"id2label", id2label},
      {"label2id", label2id},
      {"torch_dtype", "float32"},
  };
  return c.dump(kJsonIndent) + "\n";
}

absl::StatusOr<HfEncoderConfig> HfByteConfig(const ByteTransformerOptions& o,
                                             const std::vector<std::string>& labels) {
  if (labels.empty()) return absl::InvalidArgumentError("an HF byte model needs a label");
  return ParseHfEncoderConfig(HfByteConfigJson(o, labels), kHfConfigFile);
}

std::string HfByteTokenizerJson() {
  std::vector<ByteBpeSpecial> specials;
  for (int64_t id = 0; id < kByteOffset; ++id) specials.push_back({id, kSpecialTokens[id]});
  const Json post_processor = {{"type", "RobertaProcessing"},
                               {"sep", {kSpecialTokens[kHfEosId], kHfEosId}},
                               {"cls", {kSpecialTokens[kHfBosId], kHfBosId}},
                               {"trim_offsets", true},
                               {"add_prefix_space", false}};
  return ByteBpeTokenizerJson(specials, kByteOffset, post_processor.dump());
}

std::string HfByteTokenizerConfigJson(const ByteTransformerOptions& o) {
  Json c = {
      {"tokenizer_class", "RobertaTokenizerFast"},
      {"bos_token", kSpecialTokens[kHfBosId]},
      {"cls_token", kSpecialTokens[kHfBosId]},
      {"eos_token", kSpecialTokens[kHfEosId]},
      {"sep_token", kSpecialTokens[kHfEosId]},
      {"pad_token", kSpecialTokens[kHfPadId]},
      {"unk_token", kSpecialTokens[kHfUnkId]},
      {"add_prefix_space", false},
      {"model_max_length", o.max_len},
  };
  return c.dump(kJsonIndent) + "\n";
}

absl::StatusOr<torch::jit::Module> MakeHfBytePretrainer(const HfEncoderConfig& config,
                                                        uint64_t seed) {
  HfEncoderConfig bare = config;
  bare.has_classifier = false;
  bare.architecture = "RobertaModel";
  torch::NoGradGuard no_grad;
  torch::manual_seed(seed);
  ASSIGN_OR_RETURN(auto weights, InitialWeights(bare, /*head=*/false));
  ASSIGN_OR_RETURN(torch::jit::Module module, MakeHfScriptModule(bare, weights));
  RETURN_IF_ERROR(AddLmHead(module, bare));
  module.eval();
  return module;
}

absl::StatusOr<torch::jit::Module> MakeHfByteClassifier(const torch::jit::Module& trained,
                                                        const HfEncoderConfig& config,
                                                        uint64_t seed) {
  torch::NoGradGuard no_grad;
  torch::manual_seed(seed);
  ASSIGN_OR_RETURN(auto weights, InitialWeights(config, /*head=*/true));
  ASSIGN_OR_RETURN(auto body, InitialWeights(config, /*head=*/false));
  try {
    std::map<std::string, at::Tensor> source;
    for (const auto& p : trained.named_parameters(/*recurse=*/true)) source[p.name] = p.value;
    for (auto& [name, tensor] : body) {
      auto it = source.find(name);
      if (it == source.end() || !it->second.sizes().equals(tensor.sizes())) {
        return absl::InvalidArgumentError(absl::StrCat(
            "HF byte classifier: the trained module has no '", name, "' of shape ",
            c10::str(tensor.sizes())));
      }
      weights[name] = it->second.detach().clone();
    }
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("copying the trained body failed: ", e.what()));
  }
  ASSIGN_OR_RETURN(torch::jit::Module module, MakeHfScriptModule(config, weights));
  module.eval();
  return module;
}

absl::Status WriteHfByteTokenizer(const ByteTransformerOptions& options, const std::string& dir) {
  RETURN_IF_ERROR(MakeDirectories(dir));
  RETURN_IF_ERROR(WriteFileAtomically(dir + "/tokenizer.json", HfByteTokenizerJson()));
  return WriteFileAtomically(dir + "/tokenizer_config.json", HfByteTokenizerConfigJson(options));
}

absl::Status SaveHfByteModel(const torch::jit::Module& module,
                             const ByteTransformerOptions& options,
                             const std::vector<std::string>& labels, const std::string& dir) {
  RETURN_IF_ERROR(WriteHfByteTokenizer(options, dir));
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  try {
    for (const auto& p : module.named_parameters(/*recurse=*/true)) {
      if (!absl::StartsWith(p.name, kHfLmHeadPrefix)) {
        tensors.emplace_back(p.name, p.value.detach().contiguous());
      }
    }
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("reading the parameters for ", dir, ": ", e.what()));
  }
  RETURN_IF_ERROR(WriteSafetensors(absl::StrCat(dir, "/", kHfWeightsFile), tensors,
                                   {{"format", "pt"}}));
  return WriteFileAtomically(absl::StrCat(dir, "/", kHfConfigFile),
                             HfByteConfigJson(options, labels));
}

}  // namespace twin::zoo
