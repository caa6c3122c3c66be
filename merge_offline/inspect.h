// Reading a published artifact set back: fetch + verify every digest, summarise, and optionally
// evaluate Twin-Merging against the experts on labeled test files.
//
// Evaluation (per task, on <zoo_dir>/<task>.test.safetensors with input_ids, attention_mask,
// labels, and the expert <zoo_dir>/<task>.pt or the Hugging Face directory <zoo_dir>/<task>/):
// accuracy of the expert, of the shared expert
// alone (with the task's head), and of Twin-Merging (router weights from the shared model's
// features, weights fused per example, the task's head); routing accuracy is how often the
// router's top task is the true one. A causal LM version (Llama, Qwen2, Mistral) is verified
// and summarised; its evaluation is skipped, saying so in the summary (it has no labels).
//
// Thread-safety: pure functions.
#ifndef TWIN_MERGE_OFFLINE_INSPECT_H_
#define TWIN_MERGE_OFFLINE_INSPECT_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "core/store/object_store.h"

namespace twin {

struct TaskEvaluation {
  std::string task;
  int64_t examples = 0;
  double expert_accuracy = 0.0;
  double shared_accuracy = 0.0;
  double twin_accuracy = 0.0;
  double routing_accuracy = 0.0;
};

struct InspectResult {
  std::string version;
  std::string summary;  // human-readable, several lines
  std::vector<TaskEvaluation> evaluations;
};

struct InspectOptions {
  std::string version = "LATEST";
  std::string cache_dir;       // required
  std::string zoo_dir;         // empty = no evaluation
  int64_t max_examples = 200;  // per task
};

absl::StatusOr<InspectResult> InspectArtifactSet(ObjectStore* store,
                                                 const InspectOptions& options);

}  // namespace twin

#endif  // TWIN_MERGE_OFFLINE_INSPECT_H_
