// A tiny Hugging Face zoo for the tests that merge and serve native models: a BERT base
// directory (config.json, model.safetensors, vocab.txt, tokenizer_config.json) and three
// experts (base + 0.2 x their own random deltas, each its own head of 2 + t classes, the second
// one sharded), each with a router text file of words only its task uses, and the merge.yaml
// that twin-merge takes for them.
//
//   HfTestZoo zoo = WriteHfTestZoo(dir.path(), {.ratio = 0.5});
//   auto config = ParseMergeConfig(zoo.merge_yaml, dir.path());
//
// Thread-safety: plain functions; seeds LibTorch's global generator.
#ifndef TWIN_TESTS_CORE_MODEL_HF_TEST_ZOO_H_
#define TWIN_TESTS_CORE_MODEL_HF_TEST_ZOO_H_

#include <ATen/core/Tensor.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "core/text/tokenizer.h"
#include "tests/core/model/hf_test_models.h"

namespace twin::testing {

struct HfTestZooOptions {
  double ratio = 0.5;       // twin.ratio
  int router_texts = 40;    // per task
  int64_t from_layer = 0;   // twin.from_layer
  std::string router_features = "ngram";
  std::string version = "v1";
};

struct HfTestZoo {
  HfTestModel base;                 // the base's shape (BERT, 100-word vocabulary)
  std::string base_dir;             // DIR/base
  std::vector<std::string> tasks;   // "spam", "topic", "mood"
  std::vector<std::string> expert_dirs;  // DIR/<task>
  std::string store;                // DIR/store, where the merge publishes
  std::string merge_yaml;           // twin-merge's config for all of the above
};

HfTestZoo WriteHfTestZoo(const std::string& dir, const HfTestZooOptions& options = {});

// The vocabulary of the zoo's base (exactly its 100 ids).
std::vector<std::string> HfTestZooVocabulary();
// n texts of task t's words (the n-gram router tells tasks apart by them).
std::vector<std::string> HfTestZooTexts(int task, int n);
// n texts of each of the three tasks, each with " deal sport" appended: the serving tests'
// traffic.
std::vector<std::string> HfTestZooServingTexts(int n);

// The tokenizer of the version LATEST in `store` names (fetched into cache_dir), built from
// its manifest as the server builds it.
absl::StatusOr<std::unique_ptr<Tokenizer>> PublishedTokenizer(const std::string& store,
                                                              const std::string& cache_dir);
// The logits [B, labels] of the model directory `dir`'s own native forward.
absl::StatusOr<at::Tensor> HfDirLogits(const std::string& dir, const at::Tensor& input_ids,
                                       const at::Tensor& attention_mask);

}  // namespace twin::testing

#endif  // TWIN_TESTS_CORE_MODEL_HF_TEST_ZOO_H_
