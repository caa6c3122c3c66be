// twin-eval's evaluation: every method side by side on the same test rows, in one run.
//
// Methods (each with two head modes, see below):
//   base      the pretrained base's merged tensors with each expert's head
//   expert    each task's own expert (the upper bound)
//   linear    weight averaging of the experts
//   task_arithmetic, ties, dare_task_arithmetic
//             static merges (core/merge/merge_methods.h); lambda chosen on the validation split
//             from a grid (highest mean validation accuracy over tasks, the smaller lambda on
//             ties), or the method's default lambda when there are no validation rows
//   twin      Twin-Merging: the published shared expert and router, twin factors recomputed
//             per rank policy (twin_factors.h), fused per row with weights from
//               router   the learned router's softmax weights, exact (one fusion per distinct row)
//               oracle   one-hot on the true task (ablation)
//               key_gN   the server's cluster key (server/cluster_key.h) of the router weights
//                        with top_k and grid N (one fusion per distinct key)
// Head modes: "given" (the client names the task: the true task's head) and "unknown" (the
// router's top task picks the head, a wrong task counts as wrong; static methods and the
// router mode use the exact router's argmax, key modes the key's top task, oracle the truth).
//
// The normalized score of a method is 100 x its accuracy / the expert's task-given accuracy,
// averaged over tasks.
//
//   ASSIGN_OR_RETURN(EvalInputs in, LoadEvalInputs(sources));
//   ASSIGN_OR_RETURN(EvalResult r, RunEvaluation(in, EvalOptions{}));
//   std::string md = ResultMarkdown(r, command_line);   (eval_report.h)
//
// Thread-safety: RunEvaluation is reentrant (it owns its model); progress goes to stderr.
#ifndef TWIN_BENCH_EVAL_EVAL_H_
#define TWIN_BENCH_EVAL_EVAL_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "bench/eval/eval_inputs.h"
#include "core/merge/merge_methods.h"
#include "core/merge/svd_compress.h"

namespace twin::eval {

struct EvalOptions {
  std::vector<double> lambdas = {0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0};  // TA, DARE
  std::vector<double> ties_lambdas = {0.6, 0.8, 1.0, 1.2, 1.4};
  double ties_density = 0.2;
  double dare_drop_rate = 0.9;
  std::vector<double> ratios = {0.01, 0.05, 0.1, 0.25, 1.0};  // twin rank ratios
  double energy = 0.9;  // also the energy policy at this fraction; 0 = not
  std::vector<int> key_grids = {10, 4};
  int key_top_k = 2;                // the server's default
  double temperature = 1.0;         // router softmax, the server's default
  double target_normalized = 95.0;  // for the smallest rank ratio that keeps this score
  double min_expert_exact = 0.1;    // generative: tasks in the exact-match normalized score
  uint64_t seed = 7;                // DARE masks and randomized SVD
  int64_t batch_size = 256;         // rows per forward pass
  std::string engine = "auto";      // auto | torchscript | native (evaluator.h)
  bool progress = true;             // stderr
};

// One method in one configuration. Per task accuracies in task order.
struct MethodResult {
  std::string id;       // unique: "base", "expert", "linear", "task_arithmetic", "ties",
                        // "dare_task_arithmetic", "twin:ratio=0.1:router", ...
  std::string label;    // for tables
  std::string family;   // "base", "expert", "static", "twin"
  std::string policy;   // twin: PolicyLabel(); else empty
  std::string routing;  // twin: "router", "oracle", "key_g10", ...; else empty
  double lambda = -1;   // static merges with a lambda; -1 = none
  int64_t fusions = 0;  // twin: distinct weight vectors fused on the test rows
  std::vector<double> given;
  std::vector<double> unknown;
  // [task][class]: task-given accuracy over the task's test rows of each class (NaN: no rows).
  std::vector<std::vector<double>> class_given;
};

struct LambdaSearch {
  std::string method;
  std::vector<double> grid;
  std::vector<double> validation_mean;  // per grid point; empty without validation rows
  double chosen = 0;
};

// Routing accuracy per task (top task == true task) of one routing mode.
struct RoutingResult {
  std::string routing;  // "router", "key_g10", ...
  std::vector<double> accuracy;
  // [task][class]: routing accuracy over the task's test rows of each class (shows inputs that
  // look alike across tasks, e.g. one task's English rows among another's English task).
  std::vector<std::vector<double>> class_accuracy;
  // [true task][top task]: test rows; filled for the learned router only.
  std::vector<std::vector<int64_t>> confusion;
};

struct StorageResult {
  std::string policy;
  double kept_rank_fraction = 0;
  double mean_rel_error = 0;
  uint64_t shared_bytes = 0;
  uint64_t twin_bytes = 0;       // factors + dense deltas, float32
  uint64_t twin_fp16_bytes = 0;  // the same as float16
  uint64_t head_bytes = 0;       // all tasks' heads
  uint64_t router_bytes = 0;
  uint64_t experts_bytes = 0;  // T full experts (merged tensors + heads)
  uint64_t total_bytes() const { return shared_bytes + twin_bytes + head_bytes + router_bytes; }
  uint64_t total_fp16_bytes() const {
    return shared_bytes + twin_fp16_bytes + head_bytes + router_bytes;
  }
};

struct EvalResult {
  std::vector<std::string> tasks;
  std::vector<std::vector<std::string>> class_names;  // per task
  std::vector<int64_t> test_rows, validation_rows;
  std::string version, shared_method;
  std::string engine;  // "native" or "torchscript": the model that ran every method
  std::vector<MethodResult> methods;
  std::vector<LambdaSearch> searches;
  std::vector<RoutingResult> routing;
  std::vector<StorageResult> storage;  // one per twin policy, sweep order
  // Per routing mode, the smallest swept rank ratio from which every larger swept ratio keeps
  // a normalized score >= target_normalized, per head mode; -1 when the largest does not.
  struct MinRatio {
    std::string routing;
    double given = -1;
    double unknown = -1;
  };
  double target_normalized = 95.0;
  std::vector<MinRatio> min_ratios;
  double seconds = 0;

  const MethodResult* Find(const std::string& id) const;
};

// Mean over tasks of 100 * method accuracy / expert's task-given accuracy (tasks whose
// expert accuracy is 0 are skipped).
double NormalizedScore(const std::vector<double>& accuracy, const std::vector<double>& expert);
double Mean(const std::vector<double>& values);

// Ranges of ratios, energy, cluster keys, TIES density and DARE drop rate.
absl::Status ValidateEvalOptions(const EvalOptions& options, size_t num_tasks);

// A static merge of the inputs' experts over their base: `method` at `lambda`, with the
// options' TIES density, DARE drop rate and seed. Tensors in the base's order.
absl::StatusOr<NamedTensors> StaticMerge(const EvalInputs& inputs, const EvalOptions& options,
                                         MergeMethod method, double lambda);

struct TwinBuild;

// The bytes every rank policy shares: theta*, the heads, the router, and the T experts with
// their heads.
StorageResult FixedStorage(const EvalInputs& inputs);
// `fixed` with a twin build's policy, kept rank, error and factor bytes.
StorageResult TwinStorage(const StorageResult& fixed, const TwinBuild& build);

// The Twin-Merging rank policies a run sweeps: each of options.ratios, then the energy policy
// when options.energy > 0.
std::vector<RankPolicy> SweepPolicies(const EvalOptions& options);

// A searched static method's row label in the reports ("task arithmetic", "TIES (density
// 0.2)", ...).
std::string StaticMethodLabel(MergeMethod method, const EvalOptions& options);

// Classifier zoos only (inputs.generative() is INVALID_ARGUMENT: generative_eval.h).
absl::StatusOr<EvalResult> RunEvaluation(const EvalInputs& inputs, const EvalOptions& options);

}  // namespace twin::eval

#endif  // TWIN_BENCH_EVAL_EVAL_H_
