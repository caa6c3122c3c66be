// The generative benchmark zoo (`twin-zoo --size smoke|lite --format llama`): a small Llama
// causal LM over bytes (llama_byte_model.h) pretrained with a next-byte loss on the byte zoo's
// corpora (the train splits' text of the corpora its tasks use, DATA.md), and one expert per
// generative task (causal_tasks.h) fine-tuned from it in full with the loss on the target only:
//
//   OUT/base/, OUT/<task>/          Hugging Face directories: config.json (llama,
//                                   LlamaForCausalLM, eos_token_id 256), model.safetensors,
//                                   tokenizer.json, tokenizer_config.json
//   OUT/<task>.router.txt           the train split's prompts, one a line (the router's data)
//   OUT/<task>.validation.jsonl     {"prompt", "target"} per line (causal_eval.h)
//   OUT/<task>.test.jsonl
//   OUT/merge.yaml                  base_model: base, models: <task> with router_data, n-gram
//                                   router; the merge job publishes base/'s tokenizer
//   OUT/zoo.md                      sizes, timings, scores, native parity
//
// Every id comes from OUT/base/tokenizer.json read by HfTokenizer. After writing each
// directory the zoo loads it with LoadHfCausalLm and compares HfDecoder::Logits with the
// trained module's forward on validation rows (LlamaZooReport: parity), then scores the base
// and the expert on the task's validation examples from the written directories
// (ScoreCausalLm).
//
// Thread-safety: free functions; not to be run concurrently on the same output directory.
#ifndef TWIN_BENCH_ZOO_LLAMA_ZOO_H_
#define TWIN_BENCH_ZOO_LLAMA_ZOO_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "bench/zoo/byte_transformer.h"
#include "bench/zoo/causal_eval.h"
#include "bench/zoo/hf_byte_zoo.h"
#include "bench/zoo/llama_byte_model.h"

namespace twin::zoo {

struct LlamaZooOptions {
  std::string size = "lite";  // name recorded in zoo.md
  ByteLlamaOptions model;
  TrainOptions pretrain;           // next-byte loss over every position of the corpora's texts
  TrainOptions finetune;           // per task, over the target's positions
  int64_t max_train_per_task = 0;  // corpus train rows read per task, 0 = all
  int64_t max_eval_examples = 0;   // validation examples scored per task, 0 = all
  std::vector<std::string> tasks;  // default kDefaultCausalTasks
  uint64_t seed = 7;
  std::string store;        // output URI written into merge.yaml (default OUT/store)
  double twin_ratio = 0.1;  // rank ratio written into merge.yaml
};

// "smoke" (seconds: the CTest's) or "lite" (a few minutes on 2 cores).
absl::StatusOr<LlamaZooOptions> LlamaZooPreset(const std::string& size);

struct LlamaZooTask {
  std::string name;
  std::string corpus;
  int64_t train_examples = 0;
  int64_t validation_examples = 0;
  int64_t test_examples = 0;
  CausalScores base;    // on the validation examples scored
  CausalScores expert;  // the same examples
  TrainStats training;
  HfNativeParity parity;  // the expert's directory against the module that wrote it
};

struct LlamaZooReport {
  int64_t parameters = 0;  // of one model (all share the shapes)
  int64_t pretrain_texts = 0;
  TrainStats pretraining;
  HfNativeParity base_parity;
  int64_t parity_rows = 0;     // rows compared per directory
  int64_t parity_max_len = 0;  // the longest of them, in ids
  std::vector<LlamaZooTask> tasks;
  double seconds = 0;
};

absl::StatusOr<LlamaZooReport> BuildLlamaByteZoo(const std::string& data_dir,
                                                 const std::string& out_dir,
                                                 const LlamaZooOptions& options);

}  // namespace twin::zoo

#endif  // TWIN_BENCH_ZOO_LLAMA_ZOO_H_
