// Tiny random Hugging Face causal-LM directories (Llama, Qwen2, Mistral) for the decoder
// tests: config.json plus model.safetensors (or shards), with transformers' tensor names.
//
//   HfTestDecoder m;                    // Llama, hidden 32, 2 layers, 4 heads, 2 kv heads
//   m.model_type = "qwen2";
//   NamedTensors w = WriteHfDecoderDir(dir.path(), m);
//
// Thread-safety: plain functions; seeds LibTorch's global generator.
#ifndef TWIN_TESTS_CORE_MODEL_HF_DECODER_TEST_MODELS_H_
#define TWIN_TESTS_CORE_MODEL_HF_DECODER_TEST_MODELS_H_

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>

#include "tests/core/model/hf_test_models.h"

namespace twin::testing {

struct HfTestDecoder {
  std::string model_type = "llama";  // "llama", "qwen2" or "mistral"
  int64_t vocab = 96;
  int64_t hidden = 32;
  int64_t layers = 2;
  int64_t heads = 4;
  int64_t kv_heads = 2;
  int64_t head_dim = 0;  // 0: hidden / heads, not written
  int64_t intermediate = 48;
  int64_t max_positions = 64;
  double rms_norm_eps = 1e-6;
  double rope_theta = 10000.0;
  nlohmann::json rope_scaling = nullptr;
  bool tie = false;
  bool attention_bias = false;              // Llama only
  nlohmann::json sliding_window = nullptr;  // Mistral only; null: no window
  uint64_t seed = 1;
};

nlohmann::json HfDecoderTestConfig(const HfTestDecoder& m);
// Random weights with the checkpoint names of `m`, in module order; O(1) activations (weights
// scaled by 1 / sqrt(fan_in), norms near 1).
NamedTensors HfDecoderTestWeights(const HfTestDecoder& m);
NamedTensors WriteHfDecoderDir(const std::string& dir, const HfTestDecoder& m, int shards = 0);

// The forward's chained reductions for rounding.h's ForwardError (per layer: the norm, the
// q/k/v projections, the scores, softmax's sum, the context, o_proj, the norm, gate/up, down;
// then the final norm and the head) and the longest of them.
int HfDecoderDepth(const HfTestDecoder& m);
int64_t HfDecoderWidth(const HfTestDecoder& m, int64_t seq_len);

}  // namespace twin::testing

#endif  // TWIN_TESTS_CORE_MODEL_HF_DECODER_TEST_MODELS_H_
