// The Twin-Merging weights in memory: the shared expert theta* plus every task's factored
// exclusive knowledge, and the fusion theta(w) = theta* + sum_t w_t us_t v_t^T.
//
// Fusion is one GEMM per tensor: the task factors are scaled by w_t and concatenated along the
// rank axis, so [m, sum r_t] @ [sum r_t, n] is added to theta*. Tasks with w_t == 0 are skipped.
// Dense deltas (1-D tensors, or any tensor stored dense) are added as w_t * delta_t.
//
// Twin blob layout (per task, safetensors): "<name>.us" [m, r], "<name>.v" [n, r],
// "<name>.delta" (dense delta, original shape), and head tensors under their own names.
// A tensor with rank 0 and no delta has no entry.
//
// In memory every tensor's factors are stacked over the tasks (FactorStack): the per-task
// factors are column views into the stack, so the unfused path (core/model/mixed_params.h) can
// apply all tasks with two GEMMs and the stack costs no memory twice.
//
//   ASSIGN_OR_RETURN(auto tw, TwinWeights::Load(set, c10::Device(c10::kCPU)));
//   ASSIGN_OR_RETURN(auto fused, tw->Fuse({0.7, 0.3, 0.0}));   // all non-head tensors
//
// Thread-safety: immutable after Load(); Fuse() may be called concurrently.
#ifndef TWIN_CORE_MERGE_TWIN_WEIGHTS_H_
#define TWIN_CORE_MERGE_TWIN_WEIGHTS_H_

#include <ATen/core/Tensor.h>

#include <map>
#include <memory>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "core/store/artifact_set.h"

namespace twin {

using NamedTensors = std::vector<std::pair<std::string, at::Tensor>>;

struct TaskTwin {
  std::string task;
  std::map<std::string, std::pair<at::Tensor, at::Tensor>> factors;  // name -> (us, v)
  std::map<std::string, at::Tensor> dense;                           // name -> delta
  NamedTensors head;                                                 // task head tensors
};

// Every task's factors of one tensor side by side along the rank axis, in the compute type
// (float32, or float64 for a float64 theta*): us [m, R], v [n, R] with R the sum of the tasks'
// ranks; task t owns columns [offset[t], offset[t + 1]) and column_task[c] names the task of
// column c.
//
// For a 2-D theta* tensor W* [m, n] already in the compute type, `joint` [m + R, n] holds W*'s
// rows followed by v^T, so that one GEMM x joint^T gives both x W*^T and x v (the unfused
// linear); theta*'s tensor and v are then views into it (rows [0, m), and rows [m, m + R)
// transposed): no memory twice. Otherwise `joint` is undefined, and so it is for a member of a
// LinearGroup, whose joint buffer holds the member's rows.
struct FactorStack {
  at::Tensor us;
  at::Tensor v;
  at::Tensor joint;
  at::Tensor joint_t;  // joint^T and us^T as views made once (a GEMM's right side)
  at::Tensor us_t;
  at::Tensor column_task;       // [R] int64, on the factors' device
  std::vector<int64_t> offset;  // num_tasks + 1 entries
  bool grouped = false;         // a LinearGroup's member
};

// Linears that read one input (a decoder layer's q/k/v projections, its gate and up
// projections) packed side by side (TwinWeights::GroupLinears), so that the unfused path
// computes them all with one GEMM, one scale and one addmm instead of three kernels each, and
// theta* alone with one GEMM (DenseParams::Linears finds the members' weights adjacent).
//
// joint [outs + R, in] holds every member's theta* rows, then every member's v^T; the members'
// theta* weights, biases and factors become views into the group's buffers (no memory twice).
// When the zeros cost little (at most kBlockDiagonalMaxZeros elements), us_t [R, outs] is
// block diagonal with each member's us^T on the diagonal, so one addmm expands every member;
// otherwise us_t is undefined and each member's stack's own us_t is used.
struct LinearGroup {
  std::vector<std::string> members;             // weight names, in order
  std::vector<const FactorStack*> stacks;       // each member's stack
  std::vector<int64_t> out_offset;              // members + 1: member i's output columns
  std::vector<int64_t> rank_offset;             // members + 1: member i's factor columns
  at::Tensor joint;                             // [outs + R, in]
  at::Tensor joint_t;                           // joint^T, a view made once
  at::Tensor us_t;                              // [R, outs] block diagonal, or undefined
  at::Tensor bias;                              // [outs] when every member has a bias
  at::Tensor column_task;                       // [R] int64: the task of each factor column
};

// The most zero elements a group's block-diagonal us_t may hold: a few kernel launches' worth
// of multiply-adds per row, so that the one addmm saves more than the zeros cost.
constexpr int64_t kBlockDiagonalMaxZeros = 1 << 16;

class TwinWeights {
 public:
  // Reads shared.safetensors and every twin blob listed by the manifest, to `device`.
  static absl::StatusOr<std::unique_ptr<TwinWeights>> Load(const LocalArtifactSet& set,
                                                           c10::Device device);
  // From parts already in memory (tests, tools). Shapes are checked against `shared`.
  static absl::StatusOr<std::unique_ptr<TwinWeights>> Create(NamedTensors shared,
                                                             std::vector<TaskTwin> tasks);

  size_t num_tasks() const { return tasks_.size(); }
  const std::vector<std::string>& task_names() const { return task_names_; }
  const NamedTensors& shared() const { return shared_; }
  const NamedTensors& head(size_t task) const { return tasks_[task].head; }

  // theta(w) for every shared tensor, in shared() order. weights.size() == num_tasks() and
  // every weight finite, else INVALID_ARGUMENT. A tensor that no task with w_t != 0 touches is
  // theta*'s own tensor, not a copy: callers must not modify fused tensors in place.
  absl::StatusOr<NamedTensors> Fuse(const std::vector<double>& weights) const;
  absl::StatusOr<at::Tensor> FuseTensor(const std::string& name,
                                        const std::vector<double>& weights) const;

  // theta*'s tensor `name`, or nullptr.
  const at::Tensor* shared_tensor(const std::string& name) const;
  // The stacked factors of `name`, or nullptr when no task has factors for it.
  const FactorStack* factor_stack(const std::string& name) const;
  // Every tensor's stacked factors, by name.
  const std::map<std::string, FactorStack>& factor_stacks() const { return stacks_; }
  // Every 1-D tensor's dense_stack(), by name.
  const std::map<std::string, at::Tensor>& dense_stacks() const { return dense_stacks_; }
  // Every LinearGroup, by first member.
  const std::map<std::string, LinearGroup>& linear_groups() const { return groups_; }
  // Task `task`'s dense delta of `name`, or nullptr.
  const at::Tensor* dense_delta(size_t task, const std::string& name) const;
  // Every task's dense delta of the 1-D tensor `name` as rows of one [T, n] tensor in the
  // compute type (zeros for tasks without one; a small copy, not in twin_bytes()), or nullptr
  // (no delta, or not 1-D).
  const at::Tensor* dense_stack(const std::string& name) const;
  // Whether any task has a dense delta of `name`.
  bool has_dense(const std::string& name) const { return dense_names_.count(name) > 0; }

  // Packs each group of linear weight names (full names, "<prefix>.weight", all read by the
  // model from one input) into a LinearGroup. A group whose members are not all 2-D tensors
  // with factors in theta*'s type, of one input size, is left as it is (its linears run one by
  // one). Returns how many groups were packed; INVALID_ARGUMENT names an unknown tensor or a
  // group of fewer than two. Call it after Load/Create and before any other use: it rebinds
  // shared() and the factors to views of the new buffers.
  absl::StatusOr<int> GroupLinears(const std::vector<std::vector<std::string>>& groups);
  // The group whose members are exactly `weight_names`, in order, or nullptr.
  const LinearGroup* linear_group(const std::vector<std::string>& weight_names) const;

  // Bytes of theta* and of all twin factors + dense deltas (heads excluded).
  uint64_t shared_bytes() const;
  uint64_t twin_bytes() const;

 private:
  TwinWeights() = default;
  // Builds stacks_ and dense_names_ and turns the tasks' factors into views. Throws c10::Error.
  void StackFactors();
  NamedTensors shared_;
  std::map<std::string, size_t> shared_index_;
  std::vector<TaskTwin> tasks_;
  std::vector<std::string> task_names_;
  std::map<std::string, FactorStack> stacks_;
  std::set<std::string> dense_names_;
  std::map<std::string, at::Tensor> dense_stacks_;
  std::map<std::string, LinearGroup> groups_;  // by first member
};

}  // namespace twin

#endif  // TWIN_CORE_MERGE_TWIN_WEIGHTS_H_
