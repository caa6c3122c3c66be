// Benchmark inputs for `twin-client bench`: labelled examples of every task, and the mix of
// tasks the load generator draws from.
//
// A data directory holds, per task, either or both of:
//   <task>.test.safetensors  input_ids [N,L] (int64 or int32), optional attention_mask [N,L]
//                            (0/1; trailing padding is stripped), optional labels [N];
//   <task>.test.tsv          one example per line: label<TAB>text, where label is an index
//                            ("1") or a label name ("spam"); empty lines are skipped;
//   <task>.test.jsonl        generation prompts, one JSON object per line with a string
//                            "prompt" (other keys, such as the generative zoo's "target", are
//                            ignored); sent as text, with no label.
// The task name is the file name before ".test.". Errors name the file and the tensor or line.
//
//   ASSIGN_OR_RETURN(Workload workload, LoadWorkload("/data/bench"));
//   ASSIGN_OR_RETURN(TaskMix mix, TaskMix::Parse("spam=3,lang=1", workload.tasks));
//   WorkloadSampler sampler(&workload, &mix, /*seed=*/1);
//   const WorkItem& item = sampler.Next();
//
// Thread-safety: Workload and TaskMix are immutable after loading and safe to share;
// a WorkloadSampler is not thread-safe (give each worker its own, with its own seed).
#ifndef TWIN_CLIENT_WORKLOAD_H_
#define TWIN_CLIENT_WORKLOAD_H_

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "twinmerge/v1/twinmerge.pb.h"

namespace twin::client {

inline constexpr char kSafetensorsSuffix[] = ".test.safetensors";
inline constexpr char kTsvSuffix[] = ".test.tsv";
inline constexpr char kJsonlSuffix[] = ".test.jsonl";

// One example: the request to send (input only: text or tokens, no task), and the truth.
struct WorkItem {
  twinmerge::v1::InferRequest request;
  std::string task;
  int label_index = -1;  // -1 when the data names the label instead (or gives none)
  std::string label;     // the label's name when the data gives a name
  bool has_label() const { return label_index >= 0 || !label.empty(); }
};

struct Workload {
  std::vector<std::string> tasks;            // sorted
  std::vector<std::vector<WorkItem>> items;  // items[i]: the examples of tasks[i]
  size_t size() const;
};

// Loads every <task>.test.safetensors, <task>.test.tsv and <task>.test.jsonl in `dir`
// (NOT_FOUND when none; INVALID_ARGUMENT for a task whose files hold no example).
absl::StatusOr<Workload> LoadWorkload(const std::string& dir);
// One file each, as described above.
absl::StatusOr<std::vector<WorkItem>> LoadSafetensorsItems(const std::string& path,
                                                           const std::string& task);
absl::StatusOr<std::vector<WorkItem>> LoadTsvItems(const std::string& path,
                                                   const std::string& task);
absl::StatusOr<std::vector<WorkItem>> LoadJsonlItems(const std::string& path,
                                                     const std::string& task);

// Relative frequency of each task in the generated traffic.
class TaskMix {
 public:
  // "" = uniform over `tasks`; "task0=3,task1=1" = those weights, unnamed tasks never drawn.
  // Weights are finite and >= 0 with a positive sum; every name must be in `tasks`.
  static absl::StatusOr<TaskMix> Parse(const std::string& spec,
                                       const std::vector<std::string>& tasks);
  // Index into the tasks given to Parse().
  size_t Pick(std::mt19937_64& rng) const;
  const std::vector<double>& weights() const { return weights_; }

 private:
  std::vector<double> weights_;
  std::vector<double> cumulative_;  // running sums, for sampling
};

// Draws a task by the mix, then one of its examples uniformly.
class WorkloadSampler {
 public:
  // `workload` and `mix` (parsed for workload->tasks) must outlive the sampler.
  WorkloadSampler(const Workload* workload, const TaskMix* mix, uint64_t seed);
  const WorkItem& Next();

 private:
  const Workload* workload_;
  const TaskMix* mix_;
  std::mt19937_64 rng_;
};

}  // namespace twin::client

#endif  // TWIN_CLIENT_WORKLOAD_H_
