// The encoder part of a Hugging Face `config.json`: BERT, RoBERTa and XLM-RoBERTa, bare or
// with a sequence-classification head. Only what the native forward supports is accepted; any
// other value is an error naming the file and the key, so that a checkpoint is never run with
// semantics it was not trained with.
//
//   ASSIGN_OR_RETURN(HfEncoderConfig config, LoadHfEncoderConfig("/models/roberta-sst2"));
//   config.hidden_size / config.head_dim() / config.labels ...
//
// Required keys: model_type, vocab_size, hidden_size, num_hidden_layers, num_attention_heads,
// intermediate_size, max_position_embeddings. Optional keys take the Hugging Face defaults:
// architectures (absent: the bare model, no head), hidden_act "gelu", type_vocab_size 2,
// layer_norm_eps 1e-12, pad_token_id (0 for BERT, 1 for RoBERTa/XLM-R),
// position_embedding_type "absolute", id2label / label2id / num_labels (2 labels LABEL_0,
// LABEL_1), problem_type (absent or single_label_classification), is_decoder false.
// Other keys (dropout rates, torch_dtype, transformers_version, ...) are ignored: they do not
// change inference.
//
// Thread-safety: plain functions and a value type.
#ifndef TWIN_CORE_MODEL_HF_CONFIG_H_
#define TWIN_CORE_MODEL_HF_CONFIG_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace twin {

enum class HfFamily { kBert, kRoberta, kXlmRoberta };

// The feed-forward activation (`hidden_act`).
enum class HfActivation {
  kGelu,      // "gelu": x * Phi(x), with the error function
  kGeluTanh,  // "gelu_new", "gelu_pytorch_tanh": the tanh approximation
  kRelu,      // "relu"
  kSilu,      // "silu", "swish": x * sigmoid(x)
};

struct HfEncoderConfig {
  std::string path;  // the config.json it was read from (messages)
  HfFamily family = HfFamily::kBert;
  std::string model_type;       // "bert", "roberta" or "xlm-roberta", as written
  std::string architecture;     // e.g. "RobertaForSequenceClassification"; "" when absent
  bool has_classifier = false;  // a *ForSequenceClassification architecture
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t num_hidden_layers = 0;
  int64_t num_attention_heads = 0;
  int64_t intermediate_size = 0;
  HfActivation hidden_act = HfActivation::kGelu;
  std::string hidden_act_name = "gelu";
  int64_t max_position_embeddings = 0;
  int64_t type_vocab_size = 2;
  double layer_norm_eps = 1e-12;
  int64_t pad_token_id = 0;
  std::vector<std::string> labels;  // id2label, in id order; size() == num_labels

  int64_t num_labels() const { return static_cast<int64_t>(labels.size()); }
  int64_t head_dim() const { return hidden_size / num_attention_heads; }
};

// "bert", "roberta" or "xlm-roberta".
const char* HfFamilyName(HfFamily family);

// The activation a `hidden_act` value names, or nullopt; HfActivationNames() lists them.
std::optional<HfActivation> HfActivationFromName(const std::string& name);
std::string HfActivationNames();

// Parses the text of a config.json; `path` names it in errors.
absl::StatusOr<HfEncoderConfig> ParseHfEncoderConfig(absl::string_view json_text,
                                                     const std::string& path);
// Reads and parses the config file `path` (any name: an artifact set's blob).
absl::StatusOr<HfEncoderConfig> LoadHfEncoderConfigFile(const std::string& path);
// Reads and parses `dir`/config.json.
absl::StatusOr<HfEncoderConfig> LoadHfEncoderConfig(const std::string& dir);

// config.json larger than this is refused (real ones are a few KB; id2label of a large label
// set stays far below it).
inline constexpr size_t kMaxHfConfigBytes = 4u << 20;
inline constexpr char kHfConfigFile[] = "config.json";

}  // namespace twin

#endif  // TWIN_CORE_MODEL_HF_CONFIG_H_
