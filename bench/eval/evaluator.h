// Runs parameter sets over the labeled rows of EvalInputs, in batches, and says which rows each
// gets right with the true task's head.
//
// Every parameter set runs through one model: the artifact set's TorchScript architecture (the
// merged tensors are swapped in with SetParameters, and each task's head before its rows), or,
// for a version with a native model (manifest `model.native`), the native Hugging Face encoder
// (core/model/hf_encoder.h) reading the tensors directly. EvalEngine::kAuto takes the native
// model when the version has one.
// Rows are kept sorted by length so that each batch is trimmed to its longest row (the model
// convention makes padding irrelevant). Results are per task, in that internal row order, which
// only aggregate statistics (accuracies, routing agreement) should be drawn from.
//
// Task-unknown accuracy needs no second pass: a row whose routed task is wrong is wrong, and a
// row routed to its own task uses that task's head, so it is right exactly when it is right
// with the task given; the parameters (static merge, or fused from the router's weights) do not
// depend on which head is used.
//
// Per-row mixing weights (Fused): with TorchScript, rows are grouped by identical weight
// vectors over all tasks, each distinct vector is fused once (TwinWeights::Fuse, one GEMM per
// tensor) and its rows run in batches, task by task. With the native model nothing is fused:
// each batch runs the server's unfused path (core/model/mixed_params.h, theta* plus every row's
// own mixture inside each layer), which equals the fused weights up to rounding.
//
//   ASSIGN_OR_RETURN(auto ev, Evaluator::Create(&inputs, /*batch_size=*/256));
//   ASSIGN_OR_RETURN(Correct c, ev->Static(inputs.base, Split::kTest));   // base + own heads
//   double acc = MeanOf(c[0]);
//
// Thread-safety: not thread-safe (one module whose parameters are swapped).
#ifndef TWIN_BENCH_EVAL_EVALUATOR_H_
#define TWIN_BENCH_EVAL_EVALUATOR_H_

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "bench/eval/eval_inputs.h"
#include "core/merge/twin_weights.h"

namespace twin {
class DenseParams;
class HfEncoder;
class ScriptModel;
}  // namespace twin

namespace twin::eval {

enum class Split { kTest, kValidation };

// Per task, bool [n_t]: whether each row is predicted right with the true task's head.
using Correct = std::vector<at::Tensor>;

// Fraction of true entries (0 for an empty tensor).
double MeanOf(const at::Tensor& correct);

// (groups done, groups in all), called after each fused weight vector (native: each task).
using FuseProgress = std::function<void(int64_t, int64_t)>;

enum class EvalEngine { kAuto, kTorchScript, kNative };
// "auto" / "torchscript" / "native".
absl::StatusOr<EvalEngine> ParseEvalEngine(const std::string& text);

class Evaluator {
 public:
  // `inputs` must outlive the evaluator; batch_size >= 1. kNative for a version without a
  // native model is INVALID_ARGUMENT.
  static absl::StatusOr<std::unique_ptr<Evaluator>> Create(const EvalInputs* inputs,
                                                           int64_t batch_size,
                                                           EvalEngine engine = EvalEngine::kAuto);
  ~Evaluator();

  size_t num_tasks() const { return test_.size(); }
  // Whether the native model runs (then Fused mixes per row without fusing).
  bool native() const { return encoder_ != nullptr; }
  // "native" or "torchscript".
  const char* engine_name() const { return native() ? "native" : "torchscript"; }
  int64_t rows(size_t task, Split split) const;
  // Labels [n_t] in the internal row order.
  const at::Tensor& labels(size_t task, Split split) const;

  // `theta` (merged tensors only) for every task's rows.
  absl::StatusOr<Correct> Static(const NamedTensors& theta, Split split);
  // `theta` for one task's rows (an expert on its own task).
  absl::StatusOr<at::Tensor> StaticTask(const NamedTensors& theta, size_t task, Split split);

  // The published router's softmax weights, float [n_t, T] per task, from the shared expert's
  // pooled features (as the server computes them).
  absl::StatusOr<std::vector<at::Tensor>> RouterWeights(double temperature, Split split);

  // weights[t]: [n_t, T] mixing weights of task t's rows; each row runs with
  // twin.Fuse(its weights) (native: the same mixture per row, unfused). Returns the number of
  // distinct weight vectors in *fusions.
  absl::StatusOr<Correct> Fused(const TwinWeights& twin, const std::vector<at::Tensor>& weights,
                                Split split, const FuseProgress& progress, int64_t* fusions);

 private:
  struct Rows {
    at::Tensor input_ids, attention_mask, labels;
    at::Tensor extent;  // [n] int64: last real position + 1, ascending
  };
  Evaluator(const EvalInputs* inputs, int64_t batch_size);
  // Rows ordered by extent (last real position + 1), ascending.
  static absl::StatusOr<Rows> SortedByLength(const LabeledRows& rows, const std::string& task);
  const Rows& RowsOf(size_t task, Split split) const;
  absl::Status UseHead(size_t task);
  // Makes `theta` (merged tensors) the current body.
  absl::Status UseBody(const NamedTensors& theta);
  // Predictions of the current parameters on `index` (sorted row indices) of task's rows; with
  // `mix` (native only), row i runs with theta* plus its mixture row_weights[index[i]].
  struct Mix {
    const TwinWeights* twin;
    at::Tensor row_weights;  // [n_t, T] float32
  };
  absl::StatusOr<at::Tensor> Predict(size_t task, Split split, const at::Tensor& index,
                                     const Mix* mix = nullptr);
  absl::StatusOr<Correct> MixedPerRow(const TwinWeights& twin,
                                      const std::vector<at::Tensor>& weights, Split split,
                                      const FuseProgress& progress);

  const EvalInputs* inputs_;
  int64_t batch_size_;
  std::unique_ptr<ScriptModel> model_;                // TorchScript, or null
  std::unique_ptr<HfEncoder> encoder_;                // native, or null
  std::unique_ptr<DenseParams> body_;                 // native: the current body
  std::unique_ptr<DenseParams> shared_;               // native: theta* (router features)
  std::vector<std::unique_ptr<DenseParams>> heads_;   // native: per task
  int current_head_ = -1;
  std::vector<Rows> test_, validation_;
};

}  // namespace twin::eval

#endif  // TWIN_BENCH_EVAL_EVALUATOR_H_
