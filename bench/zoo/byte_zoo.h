// The benchmark zoo on real corpora: reads the TSV splits written by extract_data.py, pretrains
// a byte-level Transformer (byte_transformer.h) with masked-byte modelling on the train splits'
// text, fine-tunes one expert per task in full, and writes everything twin-merge and
// twin-inspect need:
//
//   OUT/base.pt                    the pretrained encoder (with a 2-class head, as a base)
//   OUT/<task>.pt                  experts
//   OUT/<task>.router.safetensors  input_ids, attention_mask from the validation split
//   OUT/<task>.test.safetensors    input_ids, attention_mask, labels from the test split
//   OUT/merge.yaml                 tasks, label names, tokenizer, Twin-Merging settings
//   OUT/zoo.md                     sizes, timings and validation accuracies
//
// The test splits are read only to be tokenized into OUT: neither training nor router
// examples ever see them.
//
// Thread-safety: free functions; not to be run concurrently on the same output directory.
#ifndef TWIN_BENCH_ZOO_BYTE_ZOO_H_
#define TWIN_BENCH_ZOO_BYTE_ZOO_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "bench/zoo/byte_transformer.h"

namespace twin::zoo {

inline constexpr char kDefaultZooTasks[] = "lang,topic,spam,manual,code";

// One split of one task. Label ids index `label_names`.
struct TextSplit {
  std::vector<std::string> texts;
  std::vector<int64_t> labels;
};

// Undoes the TSV text escaping of extract_data.py: \\ \n \t. Any other escape is an error.
absl::StatusOr<std::string> UnescapeTsvText(std::string_view escaped);
// The escaping itself (backslash, newline, tab), for writing such files.
std::string EscapeTsvText(std::string_view text);

// Reads "label<TAB>text" lines. With an empty `label_names`, the sorted distinct labels of
// the file become the names; otherwise every label must be one of them (error names file:line).
absl::StatusOr<TextSplit> ReadTsvSplit(const std::string& path,
                                       std::vector<std::string>* label_names);

struct ByteZooOptions {
  std::string size = "lite";     // name recorded in zoo.md
  ByteTransformerOptions model;  // num_classes and with_mlm are set per stage
  TrainOptions pretrain;
  TrainOptions finetune;
  int64_t max_train_per_task = 0;  // 0 = all; rows are taken in file order
  std::vector<std::string> tasks;  // default kDefaultZooTasks
  uint64_t seed = 7;
  std::string store;        // output URI written into merge.yaml
  double twin_ratio = 0.1;  // rank ratio written into merge.yaml
};

// "lite" (whole zoo in under 2 minutes on 2 cores) or "full" (about 45 minutes).
absl::StatusOr<ByteZooOptions> ByteZooPreset(const std::string& size);

// Writes <out_dir>/<task>.router.safetensors (input_ids, attention_mask) for every task from
// `split` ("train" or "validation"), tokenized as the zoo tokenizes. BuildByteZoo writes the
// train split (several times more examples than validation, which stays free for choosing
// merge hyper-parameters). Only tokenizes: no training.
absl::Status WriteRouterData(const std::string& data_dir, const ByteZooOptions& options,
                             const std::string& out_dir, const std::string& split);

// Rewrites <zoo_dir>/base.pt and <zoo_dir>/<task>.pt with this build's module code (new
// methods such as route_features), keeping every trained parameter (RebuildWithCurrentCode).
// Each file is replaced atomically. Errors name the file.
absl::Status RebuildZooModels(const std::string& zoo_dir, const ByteZooOptions& options);

struct ByteZooTask {
  std::string name;
  std::vector<std::string> labels;
  int64_t train_examples = 0;
  int64_t validation_examples = 0;
  int64_t test_examples = 0;
  double validation_accuracy = 0;  // of the expert
  TrainStats training;
};

struct ByteZooReport {
  int64_t parameters = 0;  // of one expert, head included
  int64_t pretrain_texts = 0;
  TrainStats pretraining;
  std::vector<ByteZooTask> tasks;
  double seconds = 0;  // everything, files included
};

// Seconds per step of pretraining and of fine-tuning (on the first task) for options' model,
// measured over `steps` steps after one warm-up step; writes nothing. For sizing a preset.
struct StepTimes {
  double pretrain_seconds = 0;
  double finetune_seconds = 0;
};
absl::StatusOr<StepTimes> MeasureStepTimes(const std::string& data_dir,
                                           const ByteZooOptions& options, int64_t steps);

absl::StatusOr<ByteZooReport> BuildByteZoo(const std::string& data_dir, const std::string& out_dir,
                                           const ByteZooOptions& options);

}  // namespace twin::zoo

#endif  // TWIN_BENCH_ZOO_BYTE_ZOO_H_
