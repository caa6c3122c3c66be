// Tiny random Hugging Face encoder directories for the native-family tests: config.json plus
// model.safetensors, or an index and shards, written the way transformers' save_pretrained
// lays them out.
//
//   HfTestModel m;                       // RoBERTa, hidden 32, 2 layers, 4 heads
//   m.model_type = "bert";
//   auto weights = WriteHfTestDir(dir.path(), m);
//
// Thread-safety: plain functions; seeds LibTorch's global generator.
#ifndef TWIN_TESTS_CORE_MODEL_HF_TEST_MODELS_H_
#define TWIN_TESTS_CORE_MODEL_HF_TEST_MODELS_H_

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

namespace twin::testing {

struct HfTestModel {
  std::string model_type = "roberta";  // "bert", "roberta" or "xlm-roberta"
  bool classifier = true;              // *ForSequenceClassification, else the bare *Model
  int64_t vocab = 100;
  int64_t hidden = 32;
  int64_t layers = 2;
  int64_t heads = 4;
  int64_t intermediate = 64;
  int64_t max_positions = 40;
  int64_t type_vocab = 2;
  int64_t num_labels = 3;
  int64_t pad = 1;
  std::string hidden_act = "gelu";
  double layer_norm_eps = 1e-5;
  uint64_t seed = 1;
  bool prefixed = true;  // names as the classification model saves them ("roberta.")
};

using NamedTensors = std::vector<std::pair<std::string, at::Tensor>>;

// The config.json transformers would write for `m`.
nlohmann::json HfTestConfig(const HfTestModel& m);
// Random O(1) weights with the checkpoint names of `m` (prefixed or bare), in module order.
NamedTensors HfTestWeights(const HfTestModel& m);

void WriteHfConfig(const std::string& dir, const nlohmann::json& config);
// shards == 0: model.safetensors; shards >= 1: model.safetensors.index.json and
// model-0000i-of-0000n.safetensors, the tensors split into contiguous runs.
void WriteHfWeights(const std::string& dir, const NamedTensors& weights, int shards = 0);

// Both of the above; returns the weights written.
NamedTensors WriteHfTestDir(const std::string& dir, const HfTestModel& m, int shards = 0);

// The shape of the forward for rounding.h's ForwardError: the chained reductions (per layer the
// q/k/v projections, the scores, softmax's sum, the context, the attention output, a LayerNorm,
// the two feed-forward projections and a LayerNorm; outside the layers the embedding sum and
// its LayerNorm, the pooler or head dense, and the classifier) and the longest of them.
int HfForwardDepth(const HfTestModel& m);
int64_t HfForwardWidth(const HfTestModel& m, int64_t seq_len);

// The checkpoint name of a tensor of `m`, given its name inside the body ("encoder.layer.0...").
std::string BodyName(const HfTestModel& m, const std::string& name);

}  // namespace twin::testing

#endif  // TWIN_TESTS_CORE_MODEL_HF_TEST_MODELS_H_
