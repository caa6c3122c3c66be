#include "core/model/task_heads.h"

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <map>
#include <utility>

namespace twin {

TaskHeadParams::TaskHeadParams(std::unique_ptr<LayerParams> body,
                               std::vector<const LayerParams*> heads, std::vector<int> row_tasks,
                               std::set<std::string> head_names)
    : body_(std::move(body)),
      heads_(std::move(heads)),
      row_tasks_(std::move(row_tasks)),
      head_names_(std::move(head_names)) {
  TORCH_CHECK(body_ != nullptr, "TaskHeadParams: no body");
  for (size_t b = 0; b < row_tasks_.size(); ++b) {
    const int t = row_tasks_[b];
    TORCH_CHECK(t >= 0 && t < static_cast<int>(heads_.size()) && heads_[t] != nullptr, "row ", b,
                "'s task ", t, " has no head (", heads_.size(), " tasks)");
  }
}

void TaskHeadParams::RequireShared(const std::string& name) const {
  TORCH_CHECK(head_names_.count(name) == 0, "'", name,
              "' is kept per task; only linear layers may be");
}

at::Tensor TaskHeadParams::Linear(const std::string& name, const at::Tensor& x) const {
  if (head_names_.count(name) == 0) return body_->Linear(name, x);
  const int64_t rows = static_cast<int64_t>(row_tasks_.size());
  TORCH_CHECK(x.dim() >= 1 && x.size(0) == rows, "per-task layer '", name, "': input ",
              x.sizes(), " for ", rows, " rows");
  std::map<int, std::vector<int64_t>> by_task;
  for (int64_t b = 0; b < rows; ++b) by_task[row_tasks_[b]].push_back(b);
  if (by_task.size() == 1) return heads_[by_task.begin()->first]->Linear(name, x);
  at::Tensor out;
  for (const auto& [task, members] : by_task) {
    const at::Tensor index = at::tensor(members, at::kLong).to(x.device());
    const at::Tensor y = heads_[task]->Linear(name, x.index_select(0, index));
    if (!out.defined()) {
      std::vector<int64_t> sizes = y.sizes().vec();
      sizes[0] = rows;
      out = at::empty(sizes, y.options());
    }
    out.index_copy_(0, index, y);
  }
  return out;
}

std::vector<at::Tensor> TaskHeadParams::Linears(const std::vector<std::string>& names,
                                                const at::Tensor& x) const {
  for (const std::string& name : names) {
    if (head_names_.count(name) > 0) return LayerParams::Linears(names, x);
  }
  return body_->Linears(names, x);
}

at::Tensor TaskHeadParams::Embedding(const std::string& name, const at::Tensor& ids) const {
  RequireShared(name);
  return body_->Embedding(name, ids);
}

at::Tensor TaskHeadParams::LayerNorm(const std::string& name, const at::Tensor& x,
                                     double eps) const {
  RequireShared(name);
  return body_->LayerNorm(name, x, eps);
}

at::Tensor TaskHeadParams::RmsNorm(const std::string& name, const at::Tensor& x,
                                   double eps) const {
  RequireShared(name);
  return body_->RmsNorm(name, x, eps);
}

bool TaskHeadParams::Has(const std::string& name) const {
  if (head_names_.count(name) > 0) return !heads_.empty() && heads_[0]->Has(name);
  return body_->Has(name);
}

}  // namespace twin
