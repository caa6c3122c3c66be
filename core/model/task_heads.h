// Per-task output layers over another LayerParams: a batch whose rows belong to different tasks
// reads the layers kept per task (merge.yaml's head_pattern; for a causal LM its untied LM head)
// from each row's own task, and every other layer from the shared body (theta*, a fused theta(w),
// or the unfused per-row mixtures).
//
//   TaskHeadParams params(std::move(body), {&head_a, &head_b}, /*row_tasks=*/{1, 0, 1},
//                         {"lm_head"});
//   at::Tensor logits = params.Linear("lm_head", h);  // rows 0 and 2 with head_b, 1 with head_a
//
// Rows are x's first dimension, in the order of row_tasks. Only linears may be per task.
// Thread-safety: immutable once built; calls may run concurrently.
#ifndef TWIN_CORE_MODEL_TASK_HEADS_H_
#define TWIN_CORE_MODEL_TASK_HEADS_H_

#include <memory>
#include <set>
#include <string>
#include <vector>

#include "core/model/layer_params.h"

namespace twin {

class TaskHeadParams : public LayerParams {
 public:
  // `heads[t]`: task t's layers (not owned; they outlive this); `row_tasks[b]`: row b's task,
  // an index into heads; `head_names`: the linears read from the heads.
  TaskHeadParams(std::unique_ptr<LayerParams> body, std::vector<const LayerParams*> heads,
                 std::vector<int> row_tasks, std::set<std::string> head_names);

  at::Tensor Linear(const std::string& name, const at::Tensor& x) const override;
  std::vector<at::Tensor> Linears(const std::vector<std::string>& names,
                                  const at::Tensor& x) const override;
  at::Tensor Embedding(const std::string& name, const at::Tensor& ids) const override;
  at::Tensor LayerNorm(const std::string& name, const at::Tensor& x, double eps) const override;
  at::Tensor RmsNorm(const std::string& name, const at::Tensor& x, double eps) const override;
  bool Has(const std::string& name) const override;

  const std::vector<int>& row_tasks() const { return row_tasks_; }

 private:
  // Throws c10::Error when `name` is per task: only Linear may read those.
  void RequireShared(const std::string& name) const;

  std::unique_ptr<LayerParams> body_;
  std::vector<const LayerParams*> heads_;
  std::vector<int> row_tasks_;
  std::set<std::string> head_names_;
};

}  // namespace twin

#endif  // TWIN_CORE_MODEL_TASK_HEADS_H_
