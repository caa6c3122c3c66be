// The tiny zoo: small TorchScript models that follow the model convention, and synthetic token
// tasks to fine-tune them on, built and trained in-process in seconds. The tests and the demo
// use it: experts that genuinely differ from their base, trained by gradient descent, saved as
// .pt files, with router examples and test splits as safetensors.
//
// Model: token embedding [vocab, dim] -> tanh(Linear dim->dim) -> masked mean pool = embed();
// forward() = Linear(head) over embed(), and classify(features) = that Linear alone (unless
// with_classify is false). Parameters: emb.weight, enc.weight, enc.bias,
// head.weight, head.bias.
//
// Task t of a zoo draws its tokens mostly from its own band of the vocabulary (so a router can
// tell tasks apart) and its label from which of `num_classes` sub-bands dominates.
//
// Thread-safety: free functions; a Module must not be shared across threads while training.
#ifndef TWIN_BENCH_ZOO_TINY_ZOO_H_
#define TWIN_BENCH_ZOO_TINY_ZOO_H_

#include <cstdint>
#include <string>
#include <vector>

#include <torch/script.h>

#include "absl/status/statusor.h"

namespace twin::zoo {

struct TinyModelOptions {
  int64_t vocab = 64;
  int64_t dim = 16;
  int64_t num_classes = 2;
  uint64_t seed = 1;
  bool with_classify = true;  // defines classify(features)
  // > 0: the int attribute vocab_size, which then overrides the table's rows as the model's
  // declared vocabulary; larger than `vocab`, it makes a model that fails inside forward() on
  // ids the server admits (tests of a failing model).
  int64_t declared_vocab = 0;
};

torch::jit::Module MakeTinyModel(const TinyModelOptions& options);

struct TinyTaskData {
  at::Tensor input_ids;       // [N, L] int64
  at::Tensor attention_mask;  // [N, L] int64
  at::Tensor labels;          // [N] int64
};

// `num_tasks` bands over the vocabulary; rows have random lengths in [seq_len/2, seq_len].
TinyTaskData MakeTinyTaskData(int64_t task, int64_t num_tasks, int64_t num_classes,
                              int64_t vocab, int64_t num_examples, int64_t seq_len,
                              uint64_t seed);

// Full fine-tuning with Adam on cross-entropy; returns the final training accuracy.
double TrainTinyModel(torch::jit::Module& module, const TinyTaskData& data, int64_t steps,
                      double learning_rate);

// Accuracy of module.forward on data.
double TinyAccuracy(torch::jit::Module& module, const TinyTaskData& data);

struct TinyZoo {
  std::string base_path;                  // base.pt
  std::vector<std::string> task_names;    // task0, task1, ...
  std::vector<std::string> expert_paths;  // <task>.pt
  std::vector<std::string> router_data;   // <task>.router.safetensors (input_ids, mask)
  std::vector<int64_t> num_classes;
  std::vector<TinyTaskData> test_data;    // per task, disjoint seed from training
  std::vector<std::string> test_paths;    // <task>.test.safetensors (input_ids, mask, labels)
};

struct TinyZooOptions {
  int64_t num_tasks = 3;
  int64_t vocab = 64;
  int64_t dim = 16;
  int64_t seq_len = 12;
  int64_t train_examples = 256;
  int64_t router_examples = 80;
  int64_t test_examples = 128;
  int64_t train_steps = 60;
  uint64_t seed = 7;
  bool with_classify = true;  // the models define classify(features)
  int64_t declared_vocab = 0;  // TinyModelOptions::declared_vocab of every model
};

// Builds base + experts (task t has 2 + t % 2 classes) under `dir` and returns the paths.
absl::StatusOr<TinyZoo> BuildTinyZoo(const std::string& dir, const TinyZooOptions& options);

}  // namespace twin::zoo

#endif  // TWIN_BENCH_ZOO_TINY_ZOO_H_
