#include "core/model/hf_script.h"

#include <cmath>
#include <exception>
#include <limits>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"

namespace twin {
namespace {

// One post-LN encoder layer, defined on each layer module (its own type). Attention is written
// with einsum over [B, L, heads, head_dim], without splitting into a head dimension first.
constexpr char kLayerSource[] = R"JIT(
def forward(self, h: Tensor, bias: Tensor) -> Tensor:
    B = h.size(0)
    L = h.size(1)
    q = torch.linear(h, self.attention.self.query.weight, self.attention.self.query.bias)
    k = torch.linear(h, self.attention.self.key.weight, self.attention.self.key.bias)
    v = torch.linear(h, self.attention.self.value.weight, self.attention.self.value.bias)
    q = q.reshape(B, L, {HEADS}, {HEAD_DIM})
    k = k.reshape(B, L, {HEADS}, {HEAD_DIM})
    v = v.reshape(B, L, {HEADS}, {HEAD_DIM})
    scores = torch.einsum("bqhd,bkhd->bhqk", [q, k]) / {SQRT_HEAD_DIM}
    p = torch.softmax(scores + bias, -1)
    ctx = torch.einsum("bhqk,bkhd->bqhd", [p, v]).reshape(B, L, {DIM})
    o = torch.linear(ctx, self.attention.output.dense.weight, self.attention.output.dense.bias)
    a = torch.layer_norm(o + h, [{DIM}], self.attention.output.LayerNorm.weight,
                         self.attention.output.LayerNorm.bias, {EPS})
    u = torch.linear(a, self.intermediate.dense.weight, self.intermediate.dense.bias)
    g = {ACT}
    y = torch.linear(g, self.output.dense.weight, self.output.dense.bias)
    return torch.layer_norm(y + a, [{DIM}], self.output.LayerNorm.weight,
                            self.output.LayerNorm.bias, {EPS})
)JIT";

constexpr char kHiddenSource[] = R"JIT(
def hidden(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
    pos = {POSITIONS}
    x = torch.embedding(self.{P}.embeddings.word_embeddings.weight, input_ids)
    x = x + torch.embedding(self.{P}.embeddings.token_type_embeddings.weight,
                            torch.zeros_like(input_ids))
    x = x + torch.embedding(self.{P}.embeddings.position_embeddings.weight, pos)
    h = torch.layer_norm(x, [{DIM}], self.{P}.embeddings.LayerNorm.weight,
                         self.{P}.embeddings.LayerNorm.bias, {EPS})
    bias = ((1.0 - attention_mask.float()) * {LOWEST}).unsqueeze(1).unsqueeze(2)
{LAYERS}    return h
)JIT";

// BERT counts positions from 0; RoBERTa numbers the non-pad tokens after padding_idx and gives
// pad tokens padding_idx itself.
constexpr char kBertPositions[] =
    "torch.arange(input_ids.size(1), device=input_ids.device)"
    ".unsqueeze(0).expand(input_ids.size(0), input_ids.size(1))";
constexpr char kRobertaPositions[] =
    "torch.where(input_ids != {PAD}, "
    "torch.cumsum((input_ids != {PAD}).long(), 1) + {PAD}, "
    "torch.zeros_like(input_ids) + {PAD})";

constexpr char kBertHeadSource[] = R"JIT(
def embed(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
    first = self.hidden(input_ids, attention_mask)[:, 0]
    return torch.tanh(torch.linear(first, self.bert.pooler.dense.weight,
                                   self.bert.pooler.dense.bias))
)JIT";
constexpr char kBertClassifySource[] = R"JIT(
def classify(self, features: Tensor) -> Tensor:
    return torch.linear(features, self.classifier.weight, self.classifier.bias)
)JIT";

constexpr char kRobertaHeadSource[] = R"JIT(
def embed(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
    return self.hidden(input_ids, attention_mask)[:, 0]
)JIT";
constexpr char kRobertaClassifySource[] = R"JIT(
def classify(self, features: Tensor) -> Tensor:
    x = torch.tanh(torch.linear(features, self.classifier.dense.weight,
                                self.classifier.dense.bias))
    return torch.linear(x, self.classifier.out_proj.weight, self.classifier.out_proj.bias)
)JIT";

constexpr char kForwardSource[] = R"JIT(
def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
    return self.classify(self.embed(input_ids, attention_mask))
)JIT";

// The activation of `u`, as the formulas transformers documents for each name.
std::string ActivationOf(HfActivation act) {
  switch (act) {
    case HfActivation::kGelu:
      return "0.5 * u * (1.0 + torch.erf(u * 0.70710678118654752))";
    case HfActivation::kGeluTanh:
      return "0.5 * u * (1.0 + torch.tanh(0.79788456080286536 * (u + 0.044715 * u * u * u)))";
    case HfActivation::kRelu:
      return "torch.relu(u)";
    case HfActivation::kSilu:
      return "u * torch.sigmoid(u)";
  }
  return "u";
}

// A double that reads back exactly.
std::string Literal(double v) { return absl::StrFormat("%.17g", v); }

// The parameter tree: "a.b.weight" -> node a, child b, parameter weight.
struct Node {
  std::map<std::string, at::Tensor> parameters;
  std::map<std::string, Node> children;
};

// Each module gets its own type, named after its path, so each layer can hold its own forward.
torch::jit::Module Build(const Node& node, const std::string& type_name) {
  torch::jit::Module m(type_name);
  for (const auto& [name, child] : node.children) {
    m.register_module(name, Build(child, absl::StrCat(type_name, "_", name)));
  }
  for (const auto& [name, t] : node.parameters) m.register_parameter(name, t, /*is_buffer=*/false);
  return m;
}

torch::jit::Module Submodule(const torch::jit::Module& root, const std::string& path) {
  torch::jit::Module m = root;
  for (absl::string_view part : absl::StrSplit(path, '.')) {
    m = m.attr(std::string(part)).toModule();
  }
  return m;
}

// TorchScript's compile errors span lines (the message, then the source it points at): one
// line, whitespace collapsed, bounded.
std::string OneLine(const char* what) {
  constexpr size_t kMaxErrorBytes = 400;
  std::string out;
  for (absl::string_view word : absl::StrSplit(what, absl::ByAnyChar(" \n\t"), absl::SkipEmpty())) {
    if (!out.empty()) out += ' ';
    absl::StrAppend(&out, word);
    if (out.size() > kMaxErrorBytes) return out.substr(0, kMaxErrorBytes) + "...";
  }
  return out;
}

}  // namespace

absl::StatusOr<torch::jit::Module> MakeHfScriptModule(
    const HfEncoderConfig& config, const std::map<std::string, at::Tensor>& weights) {
  const bool bert = config.family == HfFamily::kBert;
  const std::string body = bert ? "bert" : "roberta";
  Node root;
  for (const auto& [name, tensor] : weights) {
    std::vector<std::string> parts = absl::StrSplit(name, '.');
    Node* node = &root;
    for (size_t i = 0; i + 1 < parts.size(); ++i) node = &node->children[parts[i]];
    node->parameters[parts.back()] = tensor.detach();
  }
  const std::vector<std::pair<std::string, std::string>> values = {
      {"{HEADS}", absl::StrCat(config.num_attention_heads)},
      {"{HEAD_DIM}", absl::StrCat(config.head_dim())},
      {"{SQRT_HEAD_DIM}", Literal(std::sqrt(static_cast<double>(config.head_dim())))},
      {"{DIM}", absl::StrCat(config.hidden_size)},
      {"{EPS}", Literal(config.layer_norm_eps)},
      {"{ACT}", ActivationOf(config.hidden_act)},
      {"{P}", body},
      {"{PAD}", absl::StrCat(config.pad_token_id)},
      {"{LOWEST}", Literal(std::numeric_limits<float>::lowest())},
  };
  std::string layers;
  for (int64_t i = 0; i < config.num_hidden_layers; ++i) {
    absl::StrAppend(&layers, "    h = getattr(self.{P}.encoder.layer, \"", i,
                    "\").forward(h, bias)\n");
  }
  std::string hidden = absl::StrReplaceAll(
      kHiddenSource,
      {{"{LAYERS}", layers}, {"{POSITIONS}", bert ? kBertPositions : kRobertaPositions}});
  try {
    torch::jit::Module module = Build(root, "HfEncoderScript");
    for (int64_t i = 0; i < config.num_hidden_layers; ++i) {
      Submodule(module, absl::StrCat(body, ".encoder.layer.", i))
          .define(absl::StrReplaceAll(kLayerSource, values));
    }
    module.define(absl::StrReplaceAll(hidden, values));
    module.define(bert ? kBertHeadSource : kRobertaHeadSource);
    if (config.has_classifier) {
      module.define(bert ? kBertClassifySource : kRobertaClassifySource);
      module.define(kForwardSource);
    }
    module.register_attribute("vocab_size", c10::IntType::get(), config.vocab_size);
    module.eval();
    return module;
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(
        "TorchScript ", config.model_type, " module for ", config.path, ": ", OneLine(e.what())));
  }
}

}  // namespace twin
