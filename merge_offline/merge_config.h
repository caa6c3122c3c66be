// merge.yaml: the twin-merge job's configuration, shaped like mergekit's.
//
//   merge_method: ties              # linear | task_arithmetic | ties | dare_task_arithmetic | dare_ties
//   base_model: models/base.pt      # TorchScript .pt, .safetensors with `architecture`, or a
//                                   # Hugging Face directory (config.json + model.safetensors
//                                   # or shards; BERT, RoBERTa, XLM-R): then the experts are
//                                   # directories of the same family, the architecture is built
//                                   # from the config, and the version gets a native model;
//                                   # or a causal LM directory (Llama, Qwen2, Mistral): no
//                                   # architecture, no labels, an n-gram router, run by the
//                                   # native engine only
//   architecture: models/arch.pt    # needed only when base_model is safetensors
//   models:
//     - model: experts/spam.pt      # .pt, or .safetensors with the base's architecture
//       name: spam                  # default: file name without extension
//       labels: [ham, spam]         # default: "0", "1", ...
//       router_data: data/spam.txt  # labeled examples for the router: .txt (one text a line,
//                                   # tokenized with `tokenizer`) or .safetensors (input_ids,
//                                   # attention_mask)
//       parameters: {weight: 1.0, density: 0.2, drop_rate: 0.9}
//   parameters: {lambda: 0.3, weight: 1.0, density: 0.2, drop_rate: 0.9}
//   head_pattern: "^(head|classifier)\\."    # tensors kept per task, never merged; for a
//                                   # causal LM the default matches nothing (embeddings and
//                                   # lm_head are merged), '^lm_head\.' keeps an untied LM
//                                   # head per task
//   tokenizer: {type: bytes, max_length: 128}   # type hf: the base directory's tokenizer
//                                   # files (the default for a Hugging Face base that has them)
//   twin: {rank_policy: ratio, ratio: 0.1, rank: 8, energy: 0.9, budget_bytes: 0, dtype: f32,
//          from_layer: 0}             # k > 0 (Hugging Face encoders): no twins for the
//                                     # embeddings and layers 0 .. k-1, whose task vectors
//                                     # live in theta* only (multi-stage merging)
//   router: {hidden_dim: 0, layers: 2, dropout: 0.1, max_epochs: 100, batch_size: 64,
//            learning_rate: 0.001, weight_decay: 0.01, validation_fraction: 0.2, patience: 10,
//            max_examples_per_task: 2000,
//            features: auto,            # ngram: hashed token n-gram counts from the ids (no
//                                       # model forward when serving; hidden_dim 0 then means
//                                       # 256); model: the architecture's route_features()
//                                       # (or embed()), a second forward per request; auto:
//                                       # train both, keep ngram unless model routes better by
//                                       # more than 1 point of held-out accuracy (for a
//                                       # causal LM auto means ngram, model is an error);
//                                       # prefix: the mean hidden state after the first
//                                       # twin.from_layer layers under theta* (a Hugging Face
//                                       # encoder, from_layer >= 1): the server routes on the
//                                       # forward's own prefix and continues from it
//            ngram: {max_order: 3, buckets: 2048}}
//   output: file:///var/lib/twin/artifacts
//   version: ""                      # default: UTC timestamp, e.g. 20261129T101500Z
//   seed: 42
//   threads: 0                       # intra-op threads, 0 = all cores
//
// Relative paths are resolved against the directory of the YAML file. Unknown keys anywhere
// are errors naming the key and its path.
//
// Thread-safety: plain value types.
#ifndef TWIN_MERGE_OFFLINE_MERGE_CONFIG_H_
#define TWIN_MERGE_OFFLINE_MERGE_CONFIG_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "core/store/manifest.h"
#include "core/merge/merge_methods.h"
#include "core/store/ngram_spec.h"
#include "core/router/router.h"
#include "core/merge/svd_compress.h"

namespace twin {

inline constexpr char kDefaultHeadPattern[] = "^(head|classifier)\\.";

struct ExpertConfig {
  std::string name;
  std::string path;
  std::vector<std::string> labels;  // empty = numbered from the head's size
  std::string router_data;
  double weight = 1.0;
  double density = 0.2;
  double drop_rate = 0.9;
};

struct MergeJobConfig {
  MergeMethod method = MergeMethod::kTaskArithmetic;
  double lambda = 0.3;  // default per method, see DefaultLambda()
  std::string base_model;
  std::string architecture;  // empty = base_model is a .pt
  std::vector<ExpertConfig> experts;
  std::string head_pattern = kDefaultHeadPattern;
  bool head_pattern_given = false;  // merge.yaml sets head_pattern (a causal LM's default: none)
  TokenizerSpec tokenizer;
  bool tokenizer_given = false;  // merge.yaml has a tokenizer section
  RankPolicy rank_policy;
  std::string twin_dtype = "F32";  // F32 | F16
  RouterTrainOptions router;
  int64_t router_max_examples_per_task = 2000;
  // "auto" (both, see above), "ngram" (n-gram counts of the ids), "model" (the
  // architecture's route_features(), else embed()) or "prefix" (see above).
  std::string router_features = "auto";
  // The first layer with twins (Hugging Face encoders); 0 = every tensor has twins.
  int64_t twin_from_layer = 0;
  NgramSpec router_ngram;
  std::string output;   // object store URI; required
  std::string version;  // empty = timestamp
  uint64_t seed = 42;
  int threads = 0;

  MergeOptions ToMergeOptions() const;
};

// Parses YAML text; `base_dir` resolves relative paths. Errors name the key ("models[2].name").
absl::StatusOr<MergeJobConfig> ParseMergeConfig(const std::string& yaml_text,
                                                const std::string& base_dir);
absl::StatusOr<MergeJobConfig> LoadMergeConfig(const std::string& path);

}  // namespace twin

#endif  // TWIN_MERGE_OFFLINE_MERGE_CONFIG_H_
