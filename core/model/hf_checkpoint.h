// Loading a Hugging Face checkpoint's weights: `model.safetensors`, or a sharded checkpoint
// (`model.safetensors.index.json`, whose weight_map names each tensor's shard). When both are
// present the single file is read, as transformers does.
//
// Names are normalised to one form, the form of a *ForSequenceClassification checkpoint:
//   - a checkpoint saved from the bare model ("encoder.layer.0...") gets the family's prefix
//     ("roberta.encoder.layer.0..."); names already prefixed and "classifier.*" stay;
//   - LayerNorm.gamma / LayerNorm.beta (older BERT checkpoints) become .weight / .bias.
// Two checkpoint names with one normal form are an error.
//
// Every tensor of the spec must be present with the expected shape (errors name the tensor, the
// expected and the actual shape) and a floating-point dtype; float16, bfloat16 and float64 are
// converted to float32. Extra tensors: the spec's harmless ones (buffers such as position_ids,
// pretraining heads, an unused pooler) are dropped and listed in `ignored`; any other extra
// tensor is an error, since it means the checkpoint is not the architecture the config
// describes (an adapter, another head, one layer more) and computing without it would be wrong
// silently.
//
// A sharded checkpoint is checked as a whole: every shard named by the index exists and is a
// valid safetensors file, every tensor the index names is in its shard, and every tensor of a
// shard is the one the index maps there (so no tensor is stored twice).
//
//   ASSIGN_OR_RETURN(HfCheckpoint ckpt, LoadHfCheckpoint(dir, encoder->tensor_spec()));
//
// Thread-safety: a pure function.
#ifndef TWIN_CORE_MODEL_HF_CHECKPOINT_H_
#define TWIN_CORE_MODEL_HF_CHECKPOINT_H_

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace twin {

// What one model needs from a checkpoint.
struct HfTensorSpec {
  std::string family;  // "bert", ... (messages)
  // The body's prefix in a checkpoint of the classification model, with its dot ("bert.").
  std::string prefix;
  // The body's top-level modules, which a bare-model checkpoint's names start with.
  std::vector<std::string> body_modules;
  // Every needed tensor, normalised name -> shape.
  std::map<std::string, std::vector<int64_t>> shapes;
  // Extra tensors dropped as harmless: normalised names starting or ending with these.
  std::vector<std::string> ignored_prefixes;
  std::vector<std::string> ignored_suffixes;
};

struct HfCheckpoint {
  std::map<std::string, at::Tensor> tensors;  // exactly the spec's names, float32, CPU
  std::vector<std::string> ignored;           // checkpoint names dropped as harmless
  std::vector<std::string> files;             // the safetensors files read
};

inline constexpr char kHfWeightsFile[] = "model.safetensors";
inline constexpr char kHfWeightsIndexFile[] = "model.safetensors.index.json";
// A shard index larger than this is refused (an index lists names only: a few hundred KB
// for the largest models).
inline constexpr size_t kMaxHfIndexBytes = 64u << 20;

absl::StatusOr<HfCheckpoint> LoadHfCheckpoint(const std::string& dir, const HfTensorSpec& spec);

// The normal form of a checkpoint tensor name under `spec` (see above).
std::string NormalizeHfTensorName(const std::string& name, const HfTensorSpec& spec);

}  // namespace twin

#endif  // TWIN_CORE_MODEL_HF_CHECKPOINT_H_
