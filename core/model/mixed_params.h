// The unfused twin path: theta* plus each row's own mixture of the task factors, applied inside
// every layer, so that one batch holds rows with different router weights and the server keeps
// one model (theta* and the factors) however many mixtures it serves.
//
// For a linear with stacked factors us [out, R], v [in, R] (core/merge/twin_weights.h) and row
// weights w [B, T]:
//   y = x W*^T + b(w) + ((x v) * w[:, column_task]) us^T          exact for every row
// where b(w) = b* + w delta_b (dense deltas, per row). Embeddings gather us's rows instead of
// multiplying (E(w)[id] = E*[id] + (us[id] * w[:, column_task]) v^T), LayerNorms scale and shift
// by gamma(w), beta(w) per row, RMSNorms scale by gamma(w). A 2-D tensor stored dense adds
// sum_t w_t x D_t^T.
//
// Two strategies for the factor terms, equal up to rounding:
//   kStacked: one GEMM pair over all tasks' columns; cost independent of how many tasks a row
//             uses (the w = 0 columns cost as much as the others). Where the stack has a
//             joint buffer (core/merge/twin_weights.h), x W*^T and x v come from one GEMM and
//             the expansion is added by one addmm: three kernels per linear, few enough that a
//             small batch (a decode step) pays little over theta* alone;
//   kGrouped: per task, only the rows with w[row, t] != 0: its longest run of consecutive rows
//             in place (a batch ordered by top task, as the server orders unfused batches,
//             holds each task's primary rows in one run), the others gathered (index_select,
//             two GEMMs, index_add); cost proportional to the (row, task) pairs in use, so
//             top-k router weights pay k / T of the stacked cost, plus the gathers.
//
// Linears of one input packed by TwinWeights::GroupLinears (q/k/v, gate/up) run as one joint
// GEMM, one scale and one addmm for the whole group under kStacked (Linears()).
//
// Everything that depends on the weights alone (per-row norm weights and biases, the stacked
// strategy's per-column weights) is computed once by Create, so a MixedParams reused for
// several forwards of the same rows (decode steps of an unchanged batch) pays it once.
//
//   ASSIGN_OR_RETURN(MixedParams p, MixedParams::Create(twins, row_weights,
//   MixStrategy::kGrouped)); ASSIGN_OR_RETURN(at::Tensor f, encoder.Embed(ids, mask, p));   // rows
//   mix independently
//
// Thread-safety: immutable; holds a reference to `twins`, which must outlive it.
#ifndef TWIN_CORE_MODEL_MIXED_PARAMS_H_
#define TWIN_CORE_MODEL_MIXED_PARAMS_H_

#include <ATen/core/Tensor.h>

#include <functional>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "core/model/layer_params.h"

namespace twin {

class TwinWeights;
struct FactorStack;
struct LinearGroup;

enum class MixStrategy { kStacked, kGrouped };

// Tokens from which a one-mixture batch of kStacked computes only its used tasks' factors.
constexpr int64_t kOneMixtureMinTokens = 16;

// "stacked" / "grouped".
const char* MixStrategyName(MixStrategy strategy);
absl::StatusOr<MixStrategy> ParseMixStrategy(const std::string& text);

class MixedParams : public LayerParams {
 public:
  // row_weights: [B, num_tasks] floating, finite and non-negative (need not sum to 1).
  static absl::StatusOr<MixedParams> Create(const TwinWeights& twins, at::Tensor row_weights,
                                            MixStrategy strategy);
  // From per-row weight vectors (each of size num_tasks).
  static absl::StatusOr<MixedParams> Create(const TwinWeights& twins,
                                            const std::vector<std::vector<double>>& rows,
                                            MixStrategy strategy);

  at::Tensor Linear(const std::string& name, const at::Tensor& x) const override;
  // kStacked, names a LinearGroup of the twins: one GEMM through the group's joint buffer, one
  // scale, one addmm (block-diagonal us_t) or one per member; else one Linear per name.
  std::vector<at::Tensor> Linears(const std::vector<std::string>& names,
                                  const at::Tensor& x) const override;
  at::Tensor Embedding(const std::string& name, const at::Tensor& ids) const override;
  at::Tensor LayerNorm(const std::string& name, const at::Tensor& x, double eps) const override;
  at::Tensor RmsNorm(const std::string& name, const at::Tensor& x, double eps) const override;
  bool Has(const std::string& name) const override;

  int64_t rows() const { return rows_; }
  MixStrategy strategy() const { return strategy_; }
  // (row, task) pairs with a non-zero weight: what kGrouped pays for.
  int64_t active_pairs() const { return active_pairs_; }

 private:
  // weights [B, T] float32 on the twins' device; `host` the same values, row-major.
  MixedParams(const TwinWeights& twins, at::Tensor weights, const std::vector<float>& host,
              MixStrategy strategy);
  // From `rows` x num_tasks weights, row-major: checked on the host, then one copy to the
  // device.
  static absl::StatusOr<MixedParams> Create(const TwinWeights& twins, std::vector<float> flat,
                                            int64_t rows, MixStrategy strategy);
  // theta*'s tensor `full_name` (throws c10::Error naming it when absent).
  const at::Tensor& Shared(const std::string& full_name) const;
  // theta*'s 1-D tensor `full_name` per row: [B, n], or theta*'s own [n] when no task has a
  // delta for it.
  at::Tensor RowVector(const std::string& full_name) const;
  // in -> [rows, ..., rank]: the input projected onto the stack's columns [begin, begin+rank).
  using Projection = std::function<at::Tensor(const at::Tensor& in, int64_t begin, int64_t rank)>;
  // y += ((project(input) * w[:, column]) expand^T) over every task's columns: all at once
  // (stacked) or per task on its rows (grouped). expand: [out, R], us or v of the stack.
  void AddFactorTerms(const FactorStack& stack, const at::Tensor& input, const Projection& project,
                      const at::Tensor& expand, at::Tensor& y) const;
  // y += w_t apply(D_t) for every task with a dense delta of `full_name`; y has `dims` dims.
  void AddDenseTerms(const std::string& full_name, int64_t dims,
                     const std::function<at::Tensor(const at::Tensor&)>& apply,
                     at::Tensor& y) const;
  // y += the factor and dense terms of the 2-D tensor `full_name` applied to x (linear: x
  // [B, ..., in]; embedding: gathered rows).
  void AddLinearTerms(const std::string& full_name, const at::Tensor& x, at::Tensor& y) const;
  void AddEmbeddingTerms(const std::string& full_name, const at::Tensor& ids, at::Tensor& y) const;
  // w [B] of task t viewed to broadcast against a [B, ...] tensor of `dims` dimensions.
  at::Tensor TaskColumn(size_t task, int64_t dims) const;
  // w[:, column_task] of a stack, [B, R] in the stack's type (precomputed for kStacked).
  at::Tensor ColumnWeights(const FactorStack& stack) const;
  // x W*^T + ((x v) * w[:, column_task]) us^T through the stack's joint buffer.
  at::Tensor JointLinear(const FactorStack& stack, const at::Tensor& x) const;
  // Whether the linears on x2 [N, in] take the one-mixture path: every row has the same
  // weights, x2 holds at least kOneMixtureMinTokens tokens (a prompt chunk: enough rows for
  // the unused tasks' FLOPs to cost more than the extra kernels) and at most 3/4 of the tasks
  // are used. That path computes x W*^T and, per used task t, (x v_t) us_t^T scaled by w_t in
  // its addmm: r_t columns instead of every task's R.
  bool OneMixtureFor(const at::Tensor& x2) const;
  // y += w_t (x2 v_t) us_t^T for every used task: v_t is columns [v_begin + offset[t],
  // v_begin + offset[t + 1]) of joint_t, us_t^T rows [offset[t], offset[t + 1]) of us_t.
  void AddTaskTerms(const at::Tensor& x2, const at::Tensor& joint_t, int64_t v_begin,
                    const std::vector<int64_t>& offset, const at::Tensor& us_t,
                    at::Tensor y) const;
  // z [N, R] (N = rows x per-row tokens) scaled by each row's column weights cw [B, R].
  at::Tensor ScaleColumns(const at::Tensor& z, const at::Tensor& cw) const;
  // y += sum_t w_t x D_t^T for the 2-D tensor `full_name` stored dense.
  void AddDenseLinearTerms(const std::string& full_name, const at::Tensor& x,
                           at::Tensor& y) const;
  // y += the bias of the linear `name` (per row when a task has a delta of it), if it has one.
  void AddBias(const std::string& name, at::Tensor& y) const;

  // A task's longest run of consecutive rows: rows [first, first + length); `rest` holds its
  // other rows (undefined when there are none). first_weights [length, 1] and rest_weights
  // [rest, 1]: the task's weights of those rows, made once.
  struct TaskRun {
    int64_t first = 0;
    int64_t length = 0;
    at::Tensor rest;
    at::Tensor first_weights;
    at::Tensor rest_weights;
  };

  const TwinWeights* twins_;
  at::Tensor weights_;           // [B, T] float32
  std::vector<bool> task_used_;  // per task: whether any row's weight is non-zero
  // kGrouped only, per task: indices of rows with w != 0 ([0] if none), and its run.
  std::vector<at::Tensor> task_rows_;
  std::vector<TaskRun> task_runs_;
  // Create's precomputed terms: RowVector() of every 1-D tensor with a dense stack, and
  // ColumnWeights() of every factor stack (kStacked only).
  std::map<std::string, at::Tensor> row_vectors_;
  std::map<const FactorStack*, at::Tensor> column_weights_;
  // kStacked: w[:, column_task] of every linear group, [B, R].
  std::map<const LinearGroup*, at::Tensor> group_weights_;
  MixStrategy strategy_;
  int64_t rows_ = 0;
  int64_t active_pairs_ = 0;
  // Every row has the same weights: their used tasks and weights; one_mixture_ when they use
  // at most 3/4 of the tasks.
  std::vector<std::pair<int64_t, float>> mixture_;
  bool one_mixture_ = false;
};

}  // namespace twin

#endif  // TWIN_CORE_MODEL_MIXED_PARAMS_H_
