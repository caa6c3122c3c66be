// A tiny Hugging Face causal-LM zoo for the tests that merge and serve generation: a Llama-family
// base directory (config.json, model.safetensors, a byte-level BPE tokenizer.json whose ids
// 0-255 are the bytes and 256 is <|endoftext|>, the config's eos) and three experts (base + 0.2
// x their own random deltas; the second one sharded), each with a router text file of prompts
// written in letters only its task uses, and the merge.yaml that twin-merge takes for them.
//
//   HfDecoderTestZoo zoo = WriteHfDecoderTestZoo(dir.path(), {.model_type = "qwen2"});
//   auto config = ParseMergeConfig(zoo.merge_yaml, dir.path());
//
// Thread-safety: plain functions; seeds LibTorch's global generator.
#ifndef TWIN_TESTS_CORE_MODEL_HF_DECODER_TEST_ZOO_H_
#define TWIN_TESTS_CORE_MODEL_HF_DECODER_TEST_ZOO_H_

#include <string>
#include <vector>

#include "tests/core/model/hf_decoder_test_models.h"

namespace twin::testing {

struct HfDecoderTestZooOptions {
  std::string model_type = "llama";
  bool tie = false;
  double ratio = 0.5;     // twin.ratio
  int router_texts = 40;  // per task
  std::string version = "v1";
};

inline constexpr int64_t kZooEosId = 256;

// merge.yaml's router: n-gram features of unigrams only (see WriteHfDecoderTestZoo).
inline constexpr char kHfDecoderTestZooRouter[] =
    "{max_epochs: 40, features: ngram, ngram: {max_order: 1, buckets: 256}}";

struct HfDecoderTestZoo {
  HfTestDecoder base;                    // vocab 260 (bytes, <|endoftext|>, 3 unused)
  std::string base_dir;                  // DIR/base
  std::vector<std::string> tasks;        // "alpha", "beta", "gamma"
  std::vector<std::string> expert_dirs;  // DIR/<task>
  std::string store;                     // DIR/store
  std::string merge_yaml;
};

HfDecoderTestZoo WriteHfDecoderTestZoo(const std::string& dir,
                                       const HfDecoderTestZooOptions& options = {});
// n prompts of task t (letters of its own alphabet, words of 2-6 letters).
std::vector<std::string> HfDecoderTestZooPrompts(int task, int n);
// The zoo's tokenizer.json.
std::string HfDecoderTestTokenizerJson();

}  // namespace twin::testing

#endif  // TWIN_TESTS_CORE_MODEL_HF_DECODER_TEST_ZOO_H_
