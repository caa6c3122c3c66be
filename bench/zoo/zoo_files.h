// The steps both benchmark zoos (byte_zoo.cc, TorchScript; hf_byte_zoo.cc, Hugging Face
// directories) share: reading their corpora, pretraining and fine-tuning with the same
// options and logs, and writing the per-task data files and merge.yaml's model list.
//
//   ASSIGN_OR_RETURN(ZooTask task, ReadZooTask("bench/zoo/work/data-lite", "spam", 0));
//   RETURN_IF_ERROR(WriteTextFile(out + "/merge.yaml", yaml));
//
// Thread-safety: plain functions.
#ifndef TWIN_BENCH_ZOO_ZOO_FILES_H_
#define TWIN_BENCH_ZOO_ZOO_FILES_H_

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "bench/zoo/byte_zoo.h"

namespace twin::zoo {

// The three splits of a task's corpus, in this order.
inline constexpr char kZooSplits[][12] = {"train", "validation", "test"};

struct ZooTask {
  std::string name;
  std::vector<std::string> labels;  // in order of first appearance over the splits
  TextSplit split[3];               // train, validation, test
};

// DIR/<task>.{train,validation,test}.tsv; the train split cut to its first max_train rows
// (0 = all). Fewer than 2 labels is INVALID_ARGUMENT naming the task.
absl::StatusOr<ZooTask> ReadZooTask(const std::string& dir, const std::string& task,
                                    int64_t max_train);
// Every task of o.tasks (ReadZooTask with o.max_train_per_task); fewer than 2 tasks is
// INVALID_ARGUMENT.
absl::StatusOr<std::vector<ZooTask>> ReadZooTasks(const std::string& dir,
                                                  const ByteZooOptions& o);
// The unlabeled pretraining corpus: every task's train texts, in task order.
TextSplit PretrainingCorpus(const std::vector<ZooTask>& tasks);

// Pretrains `module` on `corpus` with o.pretrain (seeded by o.seed), logging to stderr as
// `what` ("" or e.g. " (HF RoBERTa)").
absl::StatusOr<TrainStats> PretrainZooModel(torch::jit::Module& module,
                                            const TokenizedExamples& corpus,
                                            const ByteZooOptions& o, const std::string& what);
// Fine-tunes `expert` on `train` with o.finetune (seed `seed`) and scores it on
// `validation`: result->training and ->validation_accuracy, logged to stderr; counts the
// expert's parameters into report->parameters the first time.
absl::Status FineTuneZooExpert(torch::jit::Module& expert, const TokenizedExamples& train,
                               const TokenizedExamples& validation, const ByteZooOptions& o,
                               uint64_t seed, ByteZooTask* result, ByteZooReport* report);

// <prefix>.router.safetensors (the train rows' input_ids and attention_mask: the router
// learns from the train split, validation stays free for choosing lambdas) and
// <prefix>.test.safetensors (input_ids, attention_mask, labels).
absl::Status WriteZooTaskData(const std::string& prefix, const TokenizedExamples& train,
                              const TokenizedExamples& test);
// `store` (an option's), or file://<out_dir absolute>/store when it is empty.
std::string ZooStoreUri(const std::string& store, const std::string& out_dir);
// merge.yaml's `models:` entries, one per task: model <name><model_suffix>, its quoted labels
// and <name>.router.safetensors.
std::string ZooMergeYamlModels(const std::vector<ByteZooTask>& tasks,
                               const std::string& model_suffix);

// merge.yaml's settings after the models, as every zoo writes them: task arithmetic's lambda
// 0.3, the Twin rank ratio, the router (`router_features` "ngram", or "" for twin-merge's
// default; hidden width 256; up to 6000 train rows per task), the output store and the seed.
std::string ZooMergeYamlSettings(double twin_ratio, const std::string& router_features,
                                 const std::string& store, uint64_t seed);

// `s` as a double-quoted YAML scalar.
std::string YamlQuoted(const std::string& s);

// Writes `content` to `path`; INTERNAL naming the path when it cannot.
absl::Status WriteTextFile(const std::string& path, const std::string& content);

double SecondsSince(std::chrono::steady_clock::time_point start);

}  // namespace twin::zoo

#endif  // TWIN_BENCH_ZOO_ZOO_FILES_H_
