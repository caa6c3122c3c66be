// The Twin-Merging router: a small MLP over the shared model's pooled features that predicts
// which task an input belongs to, and its training.
//
// Architecture (RouterSpec): x' = (x - input_mean) / input_std, then num_hidden_layers blocks
// of Linear -> LayerNorm -> LeakyReLU -> Dropout (first d -> h, then h -> h), then Linear h -> T.
// Tensor names: "input_mean", "input_std", "blocks.<i>.linear.weight|bias",
// "blocks.<i>.norm.weight|bias", "out.weight|bias".
//
//   ASSIGN_OR_RETURN(auto router, Router::Create(spec, tensors));
//   ASSIGN_OR_RETURN(at::Tensor w, router->Weights(features, /*temperature=*/1.0));  // [B, T]
//
//   ASSIGN_OR_RETURN(RouterTrainResult r, TrainRouter(features, task_ids, T, options));
//
// Training: the labeled examples are split per task (stratified, seeded) into train and
// validation; AdamW on cross-entropy; after each epoch the validation accuracy is measured and
// the best epoch's weights are kept; training stops after `patience` epochs without
// improvement. Evaluation data never enters training.
//
// Thread-safety: a Router is immutable after Create() (but for the sparse first layer's
// constants, built once under std::call_once); Logits()/Weights() may run concurrently.
#ifndef TWIN_CORE_ROUTER_ROUTER_H_
#define TWIN_CORE_ROUTER_ROUTER_H_

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include <ATen/core/Tensor.h>

#include "absl/status/statusor.h"
#include "core/store/manifest.h"

namespace twin {

struct LocalArtifactSet;

class Router {
 public:
  // Checks every tensor's presence and shape against `spec`.
  static absl::StatusOr<std::unique_ptr<Router>> Create(
      const RouterSpec& spec, const std::vector<std::pair<std::string, at::Tensor>>& tensors);
  // The router of a fetched artifact set: its router blob (as float32) and the manifest's spec.
  static absl::StatusOr<std::unique_ptr<Router>> Load(const LocalArtifactSet& set);

  const RouterSpec& spec() const { return spec_; }
  // Logits [B, T] for features [B, input_dim] (inference: no dropout, no autograd).
  absl::StatusOr<at::Tensor> Logits(const at::Tensor& features) const;
  // softmax(logits / temperature); temperature > 0.
  absl::StatusOr<at::Tensor> Weights(const at::Tensor& features, double temperature) const;
  const std::vector<std::pair<std::string, at::Tensor>>& tensors() const { return tensors_; }
  // Moves all tensors to `device`.
  absl::StatusOr<std::unique_ptr<Router>> To(c10::Device device) const;

  // Logits() reads only the non-zero inputs of a batch with at most this share of them
  // (1 / kSparseInputFraction): the first layer's columns of those inputs, the standardized
  // zeros of the others folded into a constant; denser batches take the dense GEMM.
  static constexpr int64_t kSparseInputFraction = 8;
  // Inputs whose zero standardizes beyond this are always read (never folded): see
  // FoldInputStandardization.
  static constexpr double kDenseStandardized = 8.0;

 private:
  Router() = default;
  // sparse_bias_, dense_inputs_, dense_mean_ from tensors_ (once); throws c10::Error.
  void FoldInputStandardization() const;
  // The first block's linear output [B, hidden] for inputs x [B, input_dim] (float32) whose
  // non-zero entries `nonzero` marks.
  at::Tensor SparseFirstLinear(const at::Tensor& x, const at::Tensor& nonzero) const;

  RouterSpec spec_;
  std::vector<std::pair<std::string, at::Tensor>> tensors_;
  mutable std::once_flag fold_once_;
  mutable at::Tensor sparse_bias_;   // [hidden]: b + W z over the folded inputs (float64 sum)
  mutable at::Tensor dense_inputs_;  // [input] bool: inputs always read standardized
  mutable at::Tensor dense_mean_;    // [input]: their mean, 0 for the folded inputs
};

struct RouterTrainOptions {
  int64_t hidden_dim = 0;  // 0 = 2 * input_dim
  int64_t num_hidden_layers = 2;
  double dropout = 0.1;
  int64_t max_epochs = 100;
  int64_t batch_size = 64;
  double learning_rate = 1e-3;
  double weight_decay = 0.01;
  double validation_fraction = 0.2;  // per task, at least one example
  int64_t patience = 10;             // epochs without validation improvement
  // Weigh each task's examples by 1 / (its example count) in the loss and in the early-stopping
  // accuracy, so that tasks with more router data do not tilt the router towards themselves
  // (a uniform prior over tasks). validation_accuracy in the result stays the plain accuracy.
  bool balance_tasks = false;
  uint64_t seed = 0;
};

struct RouterTrainResult {
  std::unique_ptr<Router> router;
  RouterEntry entry;  // spec, validation accuracy, confusion, counts, epochs run
};

// features [N, d] float, task_ids [N] int64 in [0, num_tasks). Every task needs >= 2 examples.
absl::StatusOr<RouterTrainResult> TrainRouter(const at::Tensor& features,
                                              const at::Tensor& task_ids, int64_t num_tasks,
                                              const RouterTrainOptions& options);

}  // namespace twin

#endif  // TWIN_CORE_ROUTER_ROUTER_H_
