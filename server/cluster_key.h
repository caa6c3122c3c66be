// Cluster keys: router weights quantised so that similar requests share one fused weight set
// (and one batch).
//
// Quantise(w): keep the top_k weights (ties broken by lower task index), renormalise them to
// sum 1, round each to a multiple of 1/grid with largest-remainder rounding so the rounded
// weights still sum to exactly 1 (floor every weight, then hand the leftover units to the
// largest remainders, lower task index first on ties), drop zeros. The key text lists
// "task_index=numerator" pairs in task order over the grid, e.g. "g10:0=7,2=3" for
// 0.7 * task0 + 0.3 * task2. With grid 0 the renormalised weights are kept exactly and printed
// with 9 significant digits: "exact:0=0.666666667,2=0.333333333".
//
//   ClusterKeyOptions o{.top_k = 2, .grid = 10};
//   // kept {0.62, 0.33} renormalise to {0.653, 0.347}, which round to 7/10 and 3/10.
//   ClusterKey k = QuantizeWeights({0.62, 0.05, 0.33}, o);   // k.text == "g10:0=7,2=3"
//
// Degenerate input (all zeros, or any negative, NaN or infinite weight, i.e. a broken router
// output) never fails: the key puts all weight on the largest finite weight (lowest index on
// ties; task 0 if none is finite). Options are checked by ValidateClusterKeyOptions; when
// they are not, QuantizeWeights treats a top_k outside [1, num_tasks] as "all" and a negative
// grid as 0.
//
// Thread-safety: pure functions.
#ifndef TWIN_SERVER_CLUSTER_KEY_H_
#define TWIN_SERVER_CLUSTER_KEY_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"

namespace twin {

struct ClusterKeyOptions {
  int top_k = 2;  // weights kept; 0 = all
  int grid = 10;  // weights are multiples of 1 / grid; 0 = no rounding (exact weights)
};

absl::Status ValidateClusterKeyOptions(const ClusterKeyOptions& options, int num_tasks);

struct ClusterKey {
  std::string text;             // canonical, usable as a map key
  std::vector<double> weights;  // quantised, one per task, sums to 1
  int top_task = 0;             // index of the largest quantised weight (lowest index on ties)
};

// `weights` are non-negative and finite (router softmax output); size = number of tasks.
ClusterKey QuantizeWeights(const std::vector<double>& weights, const ClusterKeyOptions& options);

// L1 distance between two quantised weight vectors of equal size; +infinity when the sizes
// differ (weights over different task sets are never near).
double WeightDistance(const std::vector<double>& a, const std::vector<double>& b);

}  // namespace twin

#endif  // TWIN_SERVER_CLUSTER_KEY_H_
