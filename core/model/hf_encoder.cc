#include "core/model/hf_encoder.h"

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include <cmath>
#include <exception>
#include <filesystem>
#include <limits>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "core/model/bert.h"
#include "core/model/internal/activation.h"
#include "core/model/roberta.h"
#include "core/status_macros.h"

namespace twin {
namespace {

// The additive mask of a padded key: transformers uses the dtype's lowest value, so that a
// row's padded keys get exactly zero weight and a row of padding alone stays finite.
constexpr float kMaskedScore = std::numeric_limits<float>::lowest();

// Buffers that some transformers versions save next to the weights.
const std::vector<std::string>& BufferSuffixes() {
  static const auto* kSuffixes = new std::vector<std::string>{".position_ids", ".token_type_ids"};
  return *kSuffixes;
}

// The embeddings and layers every family shares, normalised names -> shapes.
std::map<std::string, std::vector<int64_t>> SharedTensors(const HfEncoderConfig& c,
                                                          const std::string& prefix,
                                                          int64_t position_rows) {
  const int64_t d = c.hidden_size;
  std::map<std::string, std::vector<int64_t>> t;
  auto linear = [&](const std::string& name, int64_t out, int64_t in) {
    t[name + ".weight"] = {out, in};
    t[name + ".bias"] = {out};
  };
  auto norm = [&](const std::string& name) {
    t[name + ".weight"] = {d};
    t[name + ".bias"] = {d};
  };
  const std::string e = prefix + "embeddings.";
  t[e + "word_embeddings.weight"] = {c.vocab_size, d};
  t[e + "position_embeddings.weight"] = {position_rows, d};
  t[e + "token_type_embeddings.weight"] = {c.type_vocab_size, d};
  norm(e + "LayerNorm");
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
    const std::string l = absl::StrCat(prefix, "encoder.layer.", i, ".");
    linear(l + "attention.self.query", d, d);
    linear(l + "attention.self.key", d, d);
    linear(l + "attention.self.value", d, d);
    linear(l + "attention.output.dense", d, d);
    norm(l + "attention.output.LayerNorm");
    linear(l + "intermediate.dense", c.intermediate_size, d);
    linear(l + "output.dense", d, c.intermediate_size);
    norm(l + "output.LayerNorm");
  }
  return t;
}

std::string FirstLine(const char* what) {
  std::string s = what;
  return s.substr(0, s.find('\n'));
}

}  // namespace

absl::StatusOr<std::unique_ptr<HfEncoder>> HfEncoder::Create(const HfEncoderConfig& config) {
  switch (config.family) {
    case HfFamily::kBert:
      return std::unique_ptr<HfEncoder>(new BertModel(config));
    case HfFamily::kRoberta:
    case HfFamily::kXlmRoberta:
      return std::unique_ptr<HfEncoder>(new RobertaModel(config));
  }
  return absl::InvalidArgumentError("unknown encoder family");
}

HfEncoder::HfEncoder(HfEncoderConfig config, std::string prefix,
                     std::map<std::string, std::vector<int64_t>> family_tensors,
                     std::vector<std::string> ignored_prefixes, int64_t reserved_positions)
    : config_(std::move(config)),
      max_input_length_(config_.max_position_embeddings - reserved_positions) {
  spec_.family = HfFamilyName(config_.family);
  spec_.prefix = std::move(prefix);
  spec_.body_modules = {"embeddings", "encoder", "pooler"};
  spec_.shapes = SharedTensors(config_, spec_.prefix, config_.max_position_embeddings);
  spec_.shapes.merge(family_tensors);
  spec_.ignored_prefixes = std::move(ignored_prefixes);
  spec_.ignored_suffixes = BufferSuffixes();
  for (const auto& [name, shape] : spec_.shapes) {
    (absl::StartsWith(name, kHfHeadPrefix) ? head_names_ : body_names_).push_back(name);
  }
}

absl::Status HfEncoder::CheckInputs(const at::Tensor& ids, const at::Tensor& mask) const {
  if (!ids.defined() || ids.dim() != 2 || ids.scalar_type() != at::kLong || ids.size(0) < 1 ||
      ids.size(1) < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        family_name(), ": input_ids must be int64 [B, L] with B, L >= 1, not ",
        ids.defined() ? absl::StrCat(c10::toString(ids.scalar_type()), " ", c10::str(ids.sizes()))
                      : "undefined"));
  }
  if (!mask.defined() || !mask.sizes().equals(ids.sizes())) {
    return absl::InvalidArgumentError(absl::StrCat(
        family_name(), ": attention_mask must have input_ids' shape ", c10::str(ids.sizes()),
        ", not ", mask.defined() ? c10::str(mask.sizes()) : "undefined"));
  }
  if (ids.size(1) > max_input_length_) {
    return absl::InvalidArgumentError(absl::StrCat(family_name(), ": ", ids.size(1),
                                                   " tokens, more than the model's ",
                                                   max_input_length_, " positions"));
  }
  const int64_t lo = ids.min().item<int64_t>();
  const int64_t hi = ids.max().item<int64_t>();
  if (lo < 0 || hi >= config_.vocab_size) {
    return absl::InvalidArgumentError(absl::StrCat(family_name(), ": token id ", lo < 0 ? lo : hi,
                                                   " outside the vocabulary [0, ",
                                                   config_.vocab_size, ")"));
  }
  return absl::OkStatus();
}

at::Tensor HfEncoder::Activation(const at::Tensor& x) const {
  return internal::ApplyActivation(config_.hidden_act, x);
}

at::Tensor HfEncoder::SelfAttention(const std::string& name, const at::Tensor& h,
                                    const at::Tensor& bias, const LayerParams& body) const {
  const int64_t batch = h.size(0), len = h.size(1);
  const int64_t heads = config_.num_attention_heads, head_dim = config_.head_dim();
  // [B, L, d] -> [B, heads, L, head_dim]
  auto split = [&](const at::Tensor& x) {
    return x.view({batch, len, heads, head_dim}).transpose(1, 2);
  };
  const at::Tensor q = split(body.Linear(name + "query", h));
  const at::Tensor k = split(body.Linear(name + "key", h));
  const at::Tensor v = split(body.Linear(name + "value", h));
  const at::Tensor scores =
      at::matmul(q, k.transpose(-1, -2)) / std::sqrt(static_cast<double>(head_dim)) + bias;
  const at::Tensor context = at::matmul(at::softmax(scores, -1), v);
  return context.transpose(1, 2).reshape({batch, len, config_.hidden_size});
}

at::Tensor HfEncoder::Layer(const std::string& name, const at::Tensor& h, const at::Tensor& bias,
                            const LayerParams& body) const {
  const double eps = config_.layer_norm_eps;
  const at::Tensor context = SelfAttention(name + "attention.self.", h, bias, body);
  const at::Tensor a =
      body.LayerNorm(name + "attention.output.LayerNorm",
                     body.Linear(name + "attention.output.dense", context) + h, eps);
  const at::Tensor inner = Activation(body.Linear(name + "intermediate.dense", a));
  return body.LayerNorm(name + "output.LayerNorm", body.Linear(name + "output.dense", inner) + a,
                        eps);
}

at::Tensor HfEncoder::Encode(const at::Tensor& ids, const at::Tensor& mask,
                             const LayerParams& body, const HfStart& start, int64_t end) const {
  at::Tensor h = start.hidden;
  if (!h.defined()) {
    const std::string e = prefix() + "embeddings.";
    // Single-text input: every token has token type 0.
    h = body.Embedding(e + "word_embeddings", ids) +
        body.Embedding(e + "token_type_embeddings", at::zeros_like(ids));
    h = h + body.Embedding(e + "position_embeddings", PositionIds(ids));
    h = body.LayerNorm(e + "LayerNorm", h, config_.layer_norm_eps);
  }
  // [B, 1, 1, L]: the same for every head and query.
  const at::Tensor bias =
      ((1.0 - mask.to(h.scalar_type())) * kMaskedScore).unsqueeze(1).unsqueeze(2);
  for (int64_t i = start.hidden.defined() ? start.layers : 0; i < end; ++i) {
    h = Layer(absl::StrCat(prefix(), "encoder.layer.", i, "."), h, bias, body);
  }
  return h;
}

absl::Status HfEncoder::CheckStart(const at::Tensor& ids, const HfStart& start) const {
  if (!start.hidden.defined()) return absl::OkStatus();
  if (start.layers < 0 || start.layers > config_.num_hidden_layers) {
    return absl::InvalidArgumentError(absl::StrCat(family_name(), ": a forward cannot start after ",
                                                   start.layers, " of the model's ",
                                                   config_.num_hidden_layers, " layers"));
  }
  const at::Tensor& h = start.hidden;
  if (h.dim() != 3 || h.size(0) != ids.size(0) || h.size(1) != ids.size(1) ||
      h.size(2) != config_.hidden_size || !at::isFloatingType(h.scalar_type())) {
    return absl::InvalidArgumentError(absl::StrCat(
        family_name(), ": the starting hidden states must be floating [", ids.size(0), ", ",
        ids.size(1), ", ", config_.hidden_size, "], not ", c10::toString(h.scalar_type()), " ",
        c10::str(h.sizes())));
  }
  return absl::OkStatus();
}

int64_t HfEncoder::StageOf(const std::string& name) const {
  const std::string embeddings = prefix() + "embeddings.";
  if (absl::StartsWith(name, embeddings)) return -1;
  const std::string layers = prefix() + "encoder.layer.";
  if (absl::StartsWith(name, layers)) {
    const std::string rest = name.substr(layers.size());
    int64_t index = 0;
    if (absl::SimpleAtoi(rest.substr(0, rest.find('.')), &index) && index >= 0 &&
        index < config_.num_hidden_layers) {
      return index;
    }
  }
  return config_.num_hidden_layers;
}

absl::Status HfEncoder::Failed(const char* method, const std::exception& e) const {
  return absl::InvalidArgumentError(
      absl::StrCat(family_name(), " ", method, "() failed: ", FirstLine(e.what())));
}

absl::StatusOr<at::Tensor> HfEncoder::Hidden(const at::Tensor& ids, const at::Tensor& mask,
                                             const LayerParams& body, const HfStart& start) const {
  try {
    c10::InferenceMode guard;
    RETURN_IF_ERROR(CheckInputs(ids, mask));
    RETURN_IF_ERROR(CheckStart(ids, start));
    return Encode(ids, mask, body, start, config_.num_hidden_layers);
  } catch (const std::exception& e) {
    return Failed("Hidden", e);
  }
}

absl::StatusOr<at::Tensor> HfEncoder::Embed(const at::Tensor& ids, const at::Tensor& mask,
                                            const LayerParams& body, const HfStart& start) const {
  try {
    c10::InferenceMode guard;
    RETURN_IF_ERROR(CheckInputs(ids, mask));
    RETURN_IF_ERROR(CheckStart(ids, start));
    return Pool(Encode(ids, mask, body, start, config_.num_hidden_layers), body);
  } catch (const std::exception& e) {
    return Failed("Embed", e);
  }
}

absl::StatusOr<at::Tensor> HfEncoder::Prefix(const at::Tensor& ids, const at::Tensor& mask,
                                             const LayerParams& body, int64_t layers) const {
  if (layers < 0 || layers > config_.num_hidden_layers) {
    return absl::InvalidArgumentError(absl::StrCat(family_name(), ": a prefix of ", layers,
                                                   " layers; the model has ",
                                                   config_.num_hidden_layers));
  }
  try {
    c10::InferenceMode guard;
    RETURN_IF_ERROR(CheckInputs(ids, mask));
    return Encode(ids, mask, body, {}, layers);
  } catch (const std::exception& e) {
    return Failed("Prefix", e);
  }
}

absl::StatusOr<at::Tensor> HfEncoder::Classify(const at::Tensor& features,
                                               const LayerParams& head) const {
  if (!config_.has_classifier) {
    return absl::FailedPreconditionError(
        absl::StrCat(family_name(), ": ", config_.path, " describes ",
                     config_.architecture.empty() ? "the bare model" : config_.architecture,
                     ", which has no classification head"));
  }
  try {
    c10::InferenceMode guard;
    if (!features.defined() || features.dim() != 2 || features.size(1) != config_.hidden_size) {
      return absl::InvalidArgumentError(
          absl::StrCat(family_name(), ": features must be [B, ", config_.hidden_size, "], not ",
                       features.defined() ? c10::str(features.sizes()) : "undefined"));
    }
    return Head(features, head);
  } catch (const std::exception& e) {
    return Failed("Classify", e);
  }
}

absl::StatusOr<at::Tensor> HfEncoder::Forward(const at::Tensor& ids, const at::Tensor& mask,
                                              const LayerParams& body, const LayerParams& head,
                                              const HfStart& start) const {
  ASSIGN_OR_RETURN(at::Tensor features, Embed(ids, mask, body, start));
  return Classify(features, head);
}

absl::StatusOr<at::Tensor> MeanPool(const at::Tensor& hidden, const at::Tensor& mask) {
  if (!hidden.defined() || !mask.defined() || hidden.dim() != 3 || mask.dim() != 2 ||
      hidden.size(0) != mask.size(0) || hidden.size(1) != mask.size(1)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "mean pooling needs hidden states [B, L, d] and a mask [B, L], not ",
        hidden.defined() ? c10::str(hidden.sizes()) : "undefined", " and ",
        mask.defined() ? c10::str(mask.sizes()) : "undefined"));
  }
  try {
    c10::InferenceMode guard;
    const at::Tensor keep = mask.ne(0).to(at::kFloat).unsqueeze(2);  // [B, L, 1]
    const at::Tensor sum = (hidden.to(at::kFloat) * keep).sum(1);
    // A row that masks every token pools to zeros instead of 0 / 0.
    return sum / keep.sum(1).clamp_min(1.0);
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("mean pooling failed: ", FirstLine(e.what())));
  }
}

bool IsHfModelDir(const std::string& path) {
  std::error_code ec;
  return std::filesystem::is_regular_file(std::filesystem::path(path) / kHfConfigFile, ec);
}

absl::StatusOr<HfModel> LoadHfModel(const std::string& dir) {
  ASSIGN_OR_RETURN(const HfEncoderConfig config, LoadHfEncoderConfig(dir));
  HfModel model;
  ASSIGN_OR_RETURN(model.encoder, HfEncoder::Create(config));
  ASSIGN_OR_RETURN(HfCheckpoint checkpoint, LoadHfCheckpoint(dir, model.encoder->tensor_spec()));
  for (auto& [name, tensor] : checkpoint.tensors) {
    (absl::StartsWith(name, kHfHeadPrefix) ? model.head : model.body).emplace(name, tensor);
  }
  model.ignored = std::move(checkpoint.ignored);
  return model;
}

}  // namespace twin
