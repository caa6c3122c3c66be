#include "server/cluster_key.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <numeric>

#include "absl/strings/str_cat.h"

namespace twin {
namespace {

// Beyond this the keys stop clustering anything: 1000 distinct levels per task.
constexpr int kMaxGrid = 1000;
// Renormalising decimal router outputs leaves noise of a few ulps; values (and remainders)
// this close are treated as equal so that the documented tie rules, not the noise, decide.
constexpr double kRoundingTolerance = 1e-9;
// %.9g: enough digits to tell apart weights that differ in any way that matters for fusion,
// few enough that the text is stable across platforms.
constexpr int kExactDigits = 9;

bool IsDegenerate(const std::vector<double>& weights) {
  bool any_positive = false;
  for (double w : weights) {
    if (!std::isfinite(w) || w < 0.0) return true;
    if (w > 0.0) any_positive = true;
  }
  return !any_positive;
}

// Index of the largest finite weight, lowest index on ties; 0 when none is finite.
int ArgmaxFinite(const std::vector<double>& weights) {
  int best = -1;
  for (int i = 0; i < static_cast<int>(weights.size()); ++i) {
    if (!std::isfinite(weights[i])) continue;
    if (best < 0 || weights[i] > weights[best]) best = i;
  }
  return best < 0 ? 0 : best;
}

// Indices of the `k` largest weights (lower index first on ties), in task order.
std::vector<int> TopK(const std::vector<double>& weights, int k) {
  std::vector<int> order(weights.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](int a, int b) { return weights[a] > weights[b]; });
  order.resize(k);
  std::sort(order.begin(), order.end());
  return order;
}

// Largest-remainder rounding of `shares` (summing to 1) to numerators summing to `grid`.
std::vector<int> RoundToGrid(const std::vector<double>& shares, int grid) {
  const int n = static_cast<int>(shares.size());
  std::vector<int> numerators(n);
  std::vector<double> remainders(n);
  int assigned = 0;
  for (int i = 0; i < n; ++i) {
    double units = shares[i] * grid;
    const double nearest = std::round(units);
    if (std::fabs(units - nearest) < kRoundingTolerance) units = nearest;
    numerators[i] = static_cast<int>(std::floor(units));
    // Snapped to the tolerance so that the sort below compares exactly (a strict ordering).
    remainders[i] = std::round((units - numerators[i]) / kRoundingTolerance) * kRoundingTolerance;
    assigned += numerators[i];
  }
  std::vector<int> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](int a, int b) { return remainders[a] > remainders[b]; });
  // The leftover is below n (each remainder is below 1); cycling only guards float noise.
  for (int left = grid - assigned, j = 0; left > 0 && n > 0; --left, ++j) {
    ++numerators[order[j % n]];
  }
  return numerators;
}

int TopTask(const std::vector<double>& weights) {
  int best = 0;
  for (int i = 1; i < static_cast<int>(weights.size()); ++i) {
    if (weights[i] > weights[best]) best = i;
  }
  return best;
}

std::string FormatExact(double value) {
  char buffer[32];
  std::snprintf(buffer, sizeof(buffer), "%.*g", kExactDigits, value);
  return buffer;
}

std::string KeyPrefix(int grid) { return grid > 0 ? absl::StrCat("g", grid, ":") : "exact:"; }

ClusterKey OneHotKey(int num_tasks, int task, int grid) {
  ClusterKey key;
  key.weights.assign(num_tasks, 0.0);
  if (num_tasks == 0) {
    key.text = KeyPrefix(grid);
    return key;
  }
  key.weights[task] = 1.0;
  key.top_task = task;
  key.text = absl::StrCat(KeyPrefix(grid), task, "=", grid > 0 ? absl::StrCat(grid) : "1");
  return key;
}

}  // namespace

absl::Status ValidateClusterKeyOptions(const ClusterKeyOptions& options, int num_tasks) {
  if (num_tasks < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("cluster key: num_tasks must be at least 1, got ", num_tasks));
  }
  if (options.top_k < 0 || options.top_k > num_tasks) {
    return absl::InvalidArgumentError(absl::StrCat("cluster key: top_k must be in [0, ", num_tasks,
                                                   "] (0 = all tasks), got ", options.top_k));
  }
  if (options.grid < 0 || options.grid > kMaxGrid) {
    return absl::InvalidArgumentError(absl::StrCat("cluster key: grid must be in [0, ", kMaxGrid,
                                                   "] (0 = exact weights), got ", options.grid));
  }
  return absl::OkStatus();
}

ClusterKey QuantizeWeights(const std::vector<double>& weights, const ClusterKeyOptions& options) {
  const int num_tasks = static_cast<int>(weights.size());
  const int grid = std::max(options.grid, 0);
  if (IsDegenerate(weights)) return OneHotKey(num_tasks, ArgmaxFinite(weights), grid);

  const int k = options.top_k >= 1 && options.top_k <= num_tasks ? options.top_k : num_tasks;
  const std::vector<int> kept = TopK(weights, k);
  // Scaled by the largest kept weight first so that huge finite inputs cannot overflow the sum.
  const double largest = weights[*std::max_element(
      kept.begin(), kept.end(), [&](int a, int b) { return weights[a] < weights[b]; })];
  double kept_sum = 0.0;
  for (int i : kept) kept_sum += weights[i] / largest;
  std::vector<double> shares;
  for (int i : kept) shares.push_back(weights[i] / largest / kept_sum);

  ClusterKey key;
  key.weights.assign(num_tasks, 0.0);
  key.text = KeyPrefix(grid);
  const std::vector<int> numerators = grid > 0 ? RoundToGrid(shares, grid) : std::vector<int>();
  bool first = true;
  for (size_t j = 0; j < kept.size(); ++j) {
    const bool zero = grid > 0 ? numerators[j] == 0 : shares[j] == 0.0;
    if (zero) continue;
    key.weights[kept[j]] = grid > 0 ? static_cast<double>(numerators[j]) / grid : shares[j];
    absl::StrAppend(&key.text, first ? "" : ",", kept[j], "=",
                    grid > 0 ? absl::StrCat(numerators[j]) : FormatExact(shares[j]));
    first = false;
  }
  key.top_task = TopTask(key.weights);
  return key;
}

double WeightDistance(const std::vector<double>& a, const std::vector<double>& b) {
  if (a.size() != b.size()) return std::numeric_limits<double>::infinity();
  double distance = 0.0;
  for (size_t i = 0; i < a.size(); ++i) distance += std::fabs(a[i] - b[i]);
  return distance;
}

}  // namespace twin
