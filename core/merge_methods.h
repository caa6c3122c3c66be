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
// Thread-safety: pure functions.
#ifndef TWIN_CORE_MERGE_METHODS_H_
#define TWIN_CORE_MERGE_METHODS_H_

#include <cstdint>
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

}  // namespace twin

#endif  // TWIN_CORE_MERGE_METHODS_H_
