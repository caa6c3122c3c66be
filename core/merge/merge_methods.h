// Static merge methods that build the shared expert theta* one tensor at a time.
//
// With base theta0, experts theta_t and task vectors tau_t = theta_t - theta0:
//   kLinear          theta* = sum_t w_t theta_t / sum_t w_t             (weight averaging)
//   kTaskArithmetic  theta* = theta0 + lambda * sum_t w_t tau_t
//   kTies            trim each tau_t to its top density_t fraction by magnitude, elect the sign
//                    of sum_t w_t trim(tau_t) per element, average (weighted by w_t) the entries
//                    that agree with the elected sign, theta* = theta0 + lambda * that mean
//   kDareTaskArithmetic / kDareTies
//                    DARE first: drop each entry of tau_t with probability drop_rate_t and
//                    rescale survivors by 1 / (1 - drop_rate_t); then task arithmetic, or
//                    TIES' sign election and disjoint mean (no extra trim)
// TIES keeps ceil(density * numel) entries (at least 1); entries tied in magnitude with the
// last kept one are all kept, so a few more may survive when magnitudes repeat.
// DARE masks are Bernoulli draws on the CPU from a generator seeded by a mix of
// (seed, tensor_index, expert index): reproducible and independent of tensor order.
// Inputs must have equal shapes, floating dtypes and finite values, else INVALID_ARGUMENT
// naming the expert. Negative weights are accepted only by the task arithmetic methods.
// All math in float32 (float64 inputs stay float64); the result has the base's dtype.
//
//   MergeOptions opts; opts.method = MergeMethod::kTies; opts.lambda = 1.0;
//   ASSIGN_OR_RETURN(at::Tensor merged, MergeTensor(base, experts, opts, /*tensor_index=*/i));
//
// TensorMerger is the streaming form for callers that hold one expert at a time: memory stays
// at a few tensors of the base's size whatever the number of experts. MergeTensor runs on it.
//
// Thread-safety: the functions are pure; a TensorMerger is not thread-safe (one per tensor).
#ifndef TWIN_CORE_MERGE_MERGE_METHODS_H_
#define TWIN_CORE_MERGE_MERGE_METHODS_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

#include "absl/status/statusor.h"

namespace twin {

enum class MergeMethod { kLinear, kTaskArithmetic, kTies, kDareTaskArithmetic, kDareTies };

// "linear", "task_arithmetic", "ties", "dare_task_arithmetic", "dare_ties".
absl::StatusOr<MergeMethod> ParseMergeMethod(const std::string& name);
const char* MergeMethodName(MergeMethod method);
// Default lambda: 0.3 for task arithmetic (as the Twin-Merging paper), 1.0 for TIES variants.
double DefaultLambda(MergeMethod method);

struct MergeOptions {
  MergeMethod method = MergeMethod::kTaskArithmetic;
  double lambda = 0.3;
  // Per expert; empty means 1.0 / 0.2 / 0.9 for every expert.
  std::vector<double> weights;      // w_t
  std::vector<double> densities;    // TIES: fraction of entries kept, (0, 1]
  std::vector<double> drop_rates;   // DARE: drop probability, [0, 1)
  uint64_t seed = 0;                // DARE masks: seeded by (seed, tensor_index, expert index)
};

// Checks ranges and vector lengths against `num_experts`.
absl::Status ValidateMergeOptions(const MergeOptions& options, size_t num_experts);

// Merges one tensor. `base` is unused by kLinear but must still match shapes.
absl::StatusOr<at::Tensor> MergeTensor(const at::Tensor& base,
                                       const std::vector<at::Tensor>& experts,
                                       const MergeOptions& options, uint64_t tensor_index);

// True when no entry is NaN or Inf (always true for non-floating tensors). One pass over the
// data without temporaries for contiguous CPU tensors.
bool AllFinite(const at::Tensor& t);

struct TensorMergerOptions {
  // Do the math in float64. MergeTensor sets it when the base or any expert is float64; a
  // float64 base always computes in float64. A float64 expert added to a float32 merger is
  // INVALID_ARGUMENT rather than silently rounded.
  bool float64_math = false;
  // Check the base (in Create) and each expert (in its first pass) for NaN/Inf. Turn it off
  // only when the caller has checked them already.
  bool check_finite = true;
};

// Merges one tensor from experts added one at a time; the result equals MergeTensor's.
// Linear and the task arithmetic methods take one pass: Add() each expert once. The TIES
// methods take two (passes() == 2), since no entry can be averaged before every expert has
// voted on its sign: Add() every expert once (trimmed / dropped task vectors summed with their
// weights elect the sign), then every expert again with the same tensor (sum and weight of the
// entries that agree). Each pass recomputes the expert's trim or DARE mask, which depend only
// on (options, tensor_index, expert). Within a pass experts may come in any order: in index
// order the result is bit-identical to MergeTensor's, in another it differs by float rounding.
//
//   ASSIGN_OR_RETURN(auto merger, TensorMerger::Create(base, options, i, experts.size()));
//   for (int pass = 0; pass < merger->passes(); ++pass) {
//     for (size_t t = 0; t < experts.size(); ++t) RETURN_IF_ERROR(merger->Add(t, Read(t)));
//   }
//   ASSIGN_OR_RETURN(at::Tensor merged, merger->Finish());
//
// Errors (INVALID_ARGUMENT) name the expert index: shape or dtype unlike the base's, NaN/Inf,
// an index out of range or added twice in a pass. Finish() before every pass is complete is
// FAILED_PRECONDITION. Holds about three tensors of the base's size in the compute dtype.
class TensorMerger {
 public:
  static absl::StatusOr<std::unique_ptr<TensorMerger>> Create(
      const at::Tensor& base, const MergeOptions& options, uint64_t tensor_index,
      size_t num_experts, const TensorMergerOptions& merger_options = {});

  // 1, or 2 for kTies and kDareTies.
  int passes() const { return passes_; }
  // Adds expert `expert`'s tensor to the current pass; a pass ends once every expert is in.
  absl::Status Add(size_t expert, const at::Tensor& tensor);
  // The merged tensor, with the base's dtype. The merger is spent afterwards.
  absl::StatusOr<at::Tensor> Finish();

 private:
  TensorMerger() = default;
  // Task vector of `expert` after DARE's drop-and-rescale or TIES' trim.
  at::Tensor TaskVector(size_t expert, const at::Tensor& theta) const;
  void Accumulate(size_t expert, const at::Tensor& tensor);
  absl::Status CheckExpert(size_t expert, const at::Tensor& tensor) const;
  std::string Describe() const;

  MergeOptions options_;
  uint64_t tensor_index_ = 0;
  size_t num_experts_ = 0;
  bool check_finite_ = true;
  int passes_ = 1;
  int pass_ = 0;
  bool finished_ = false;
  std::vector<double> weights_;
  std::vector<bool> added_;  // in the current pass
  size_t added_count_ = 0;
  at::Tensor base_;    // as given: dtype and device of the result
  at::Tensor theta0_;  // base in the compute dtype
  at::ScalarType compute_{};
  // Linear: sum_t w_t theta_t. Task arithmetic: sum_t w_t tau_t. TIES pass 1: sum_t w_t tau_t,
  // replaced by its sign (the elected sign) when the pass ends.
  at::Tensor sum_;
  at::Tensor numerator_;    // TIES pass 2: sum of w_t tau_t over agreeing entries
  at::Tensor denominator_;  // TIES pass 2: sum of w_t over agreeing entries
};

}  // namespace twin

#endif  // TWIN_CORE_MERGE_MERGE_METHODS_H_
