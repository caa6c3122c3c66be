#include "core/merge/twin_weights.h"

#include <ATen/ATen.h>

#include <cmath>
#include <cstring>
#include <exception>
#include <set>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/io/safetensors.h"
#include "core/merge/svd_compress.h"
#include "core/status_macros.h"

namespace twin {
namespace {

constexpr char kUsSuffix[] = ".us";
constexpr char kVSuffix[] = ".v";
constexpr char kDeltaSuffix[] = ".delta";

std::string ShapeString(at::IntArrayRef shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

// Half-precision theta* is fused in float32 (the GEMM accumulates many rank terms), float64
// stays float64.
at::ScalarType ComputeType(at::ScalarType shared) {
  return shared == at::kDouble ? at::kDouble : at::kFloat;
}

absl::Status CheckFactors(const std::string& task, const std::string& name,
                          const at::Tensor& shared, const at::Tensor& us, const at::Tensor& v) {
  const std::string where = absl::StrCat("task '", task, "' tensor '", name, "'");
  if (!us.defined() || !v.defined()) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": us or v is undefined"));
  }
  if (!at::isFloatingType(shared.scalar_type()) || !at::isFloatingType(us.scalar_type()) ||
      !at::isFloatingType(v.scalar_type())) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, ": shared tensor and factors must have floating dtypes"));
  }
  auto dims = MatrixDims(shared.sizes().vec());
  if (!dims.ok()) return Annotate(dims.status(), absl::StrCat(where, " cannot be factored"));
  const auto [m, n] = *dims;
  if (us.dim() != 2 || v.dim() != 2 || us.size(0) != m || v.size(0) != n ||
      us.size(1) != v.size(1)) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, ": factors us ", ShapeString(us.sizes()), " and v ",
                     ShapeString(v.sizes()), " do not fit the shared tensor's 2-D view [", m, ", ",
                     n, "] (expected [", m, ", r] and [", n, ", r])"));
  }
  return absl::OkStatus();
}

absl::Status CheckDense(const std::string& task, const std::string& name, const at::Tensor& shared,
                        const at::Tensor& delta) {
  const std::string where = absl::StrCat("task '", task, "' tensor '", name, "'");
  if (!delta.defined()) return absl::InvalidArgumentError(absl::StrCat(where, ": delta undefined"));
  if (!at::isFloatingType(shared.scalar_type()) || !at::isFloatingType(delta.scalar_type())) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, ": shared tensor and delta must have floating dtypes"));
  }
  if (!delta.sizes().equals(shared.sizes())) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, ": dense delta has shape ", ShapeString(delta.sizes()),
                     " but the shared tensor has shape ", ShapeString(shared.sizes())));
  }
  return absl::OkStatus();
}

// Sorts one twin blob's entries into factors, dense deltas and head tensors.
absl::Status CheckWeights(const std::vector<double>& weights,
                          const std::vector<std::string>& task_names) {
  if (weights.size() != task_names.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("got ", weights.size(), " fusion weights for ", task_names.size(), " tasks"));
  }
  for (size_t t = 0; t < weights.size(); ++t) {
    if (!std::isfinite(weights[t])) {
      return absl::InvalidArgumentError(
          absl::StrCat("fusion weight of task '", task_names[t], "' is not finite"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<TaskTwin> ReadTwinBlob(const TaskEntry& entry, const std::string& path,
                                      c10::Device device) {
  ASSIGN_OR_RETURN(auto reader, SafetensorsReader::Open(path));
  TaskTwin twin;
  twin.task = entry.name;
  const std::set<std::string> heads(entry.head_tensors.begin(), entry.head_tensors.end());
  std::map<std::string, at::Tensor> us, v;
  for (const std::string& key : reader->names()) {
    if (heads.count(key)) continue;
    ASSIGN_OR_RETURN(at::Tensor t, reader->Get(key));
    t = t.to(device);
    auto base = [&](const char* suffix) { return key.substr(0, key.size() - strlen(suffix)); };
    if (absl::EndsWith(key, kUsSuffix)) {
      us[base(kUsSuffix)] = t;
    } else if (absl::EndsWith(key, kVSuffix)) {
      v[base(kVSuffix)] = t;
    } else if (absl::EndsWith(key, kDeltaSuffix)) {
      twin.dense[base(kDeltaSuffix)] = t;
    } else {
      return absl::DataLossError(
          absl::StrCat("twin blob '", entry.twin_blob, "' has unexpected key '", key, "'"));
    }
  }
  for (const auto& [name, factor] : us) {
    auto it = v.find(name);
    if (it == v.end()) {
      return absl::DataLossError(absl::StrCat("twin blob '", entry.twin_blob, "' has '", name,
                                              kUsSuffix, "' without '", name, kVSuffix, "'"));
    }
    twin.factors[name] = {factor, it->second};
  }
  for (const auto& [name, factor] : v) {
    if (!us.count(name)) {
      return absl::DataLossError(absl::StrCat("twin blob '", entry.twin_blob, "' has '", name,
                                              kVSuffix, "' without '", name, kUsSuffix, "'"));
    }
  }
  for (const std::string& head : entry.head_tensors) {
    if (!reader->Contains(head)) {
      return absl::DataLossError(
          absl::StrCat("twin blob '", entry.twin_blob, "' lacks head tensor '", head, "'"));
    }
    ASSIGN_OR_RETURN(at::Tensor t, reader->Get(head));
    twin.head.emplace_back(head, t.to(device));
  }
  return twin;
}

}  // namespace

absl::StatusOr<std::unique_ptr<TwinWeights>> TwinWeights::Load(const LocalArtifactSet& set,
                                                               c10::Device device) {
  const Manifest& manifest = set.manifest;
  try {
    NamedTensors shared;
    ASSIGN_OR_RETURN(auto reader, SafetensorsReader::Open(set.PathOf(manifest.shared_blob)));
    for (const std::string& name : reader->names()) {
      ASSIGN_OR_RETURN(at::Tensor t, reader->Get(name));
      shared.emplace_back(name, t.to(device));
    }
    std::vector<TaskTwin> tasks;
    for (const TaskEntry& entry : manifest.tasks) {
      ASSIGN_OR_RETURN(TaskTwin twin, ReadTwinBlob(entry, set.PathOf(entry.twin_blob), device));
      tasks.push_back(std::move(twin));
    }
    auto weights = Create(std::move(shared), std::move(tasks));
    if (!weights.ok()) {
      return Annotate(weights.status(), absl::StrCat("artifact set version '", set.version, "'"));
    }
    return weights;
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("loading artifact set version '", set.version,
                                            "' from ", set.dir, " to ", device.str(), ": ",
                                            e.what()));
  }
}

absl::StatusOr<std::unique_ptr<TwinWeights>> TwinWeights::Create(NamedTensors shared,
                                                                 std::vector<TaskTwin> tasks) {
  std::unique_ptr<TwinWeights> tw(new TwinWeights());
  for (size_t i = 0; i < shared.size(); ++i) {
    const auto& [name, tensor] = shared[i];
    if (name.empty() || !tensor.defined()) {
      return absl::InvalidArgumentError(
          absl::StrCat("shared tensor ", i, " has an empty name or no data"));
    }
    if (!tw->shared_index_.emplace(name, i).second) {
      return absl::InvalidArgumentError(absl::StrCat("shared tensor '", name, "' appears twice"));
    }
  }
  try {
    for (TaskTwin& task : tasks) {
      if (task.task.empty()) return absl::InvalidArgumentError("a task has an empty name");
      for (const std::string& seen : tw->task_names_) {
        if (seen == task.task) {
          return absl::InvalidArgumentError(absl::StrCat("task '", task.task, "' appears twice"));
        }
      }
      auto shared_of = [&](const std::string& name) -> absl::StatusOr<const at::Tensor*> {
        auto it = tw->shared_index_.find(name);
        if (it == tw->shared_index_.end()) {
          return absl::InvalidArgumentError(absl::StrCat("task '", task.task, "' has a twin for '",
                                                         name, "', which is not a shared tensor"));
        }
        return &shared[it->second].second;
      };
      for (auto& [name, factor] : task.factors) {
        ASSIGN_OR_RETURN(const at::Tensor* base, shared_of(name));
        RETURN_IF_ERROR(CheckFactors(task.task, name, *base, factor.first, factor.second));
        factor.first = factor.first.to(base->device());
        factor.second = factor.second.to(base->device());
      }
      for (auto& [name, delta] : task.dense) {
        ASSIGN_OR_RETURN(const at::Tensor* base, shared_of(name));
        RETURN_IF_ERROR(CheckDense(task.task, name, *base, delta));
        delta = delta.to(base->device());
      }
      tw->task_names_.push_back(task.task);
    }
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("placing twin factors: ", e.what()));
  }
  tw->shared_ = std::move(shared);
  tw->tasks_ = std::move(tasks);
  try {
    tw->StackFactors();
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("stacking twin factors: ", e.what()));
  }
  return tw;
}

void TwinWeights::StackFactors() {
  at::NoGradGuard no_grad;
  std::set<std::string> names;
  for (const TaskTwin& task : tasks_) {
    for (const auto& [name, f] : task.factors) names.insert(name);
    for (const auto& [name, d] : task.dense) dense_names_.insert(name);
  }
  for (const std::string& name : dense_names_) {
    const at::Tensor& base = shared_[shared_index_.at(name)].second;
    if (base.dim() != 1) continue;
    at::Tensor stack = at::zeros({static_cast<int64_t>(tasks_.size()), base.size(0)},
                                 base.options().dtype(ComputeType(base.scalar_type())));
    for (size_t t = 0; t < tasks_.size(); ++t) {
      auto d = tasks_[t].dense.find(name);
      if (d != tasks_[t].dense.end()) stack[static_cast<int64_t>(t)].copy_(d->second);
    }
    dense_stacks_.emplace(name, std::move(stack));
  }
  for (const std::string& name : names) {
    const at::Tensor& base = shared_[shared_index_.at(name)].second;
    const at::ScalarType compute = ComputeType(base.scalar_type());
    FactorStack stack;
    stack.offset.push_back(0);
    std::vector<at::Tensor> us, v;
    std::vector<int64_t> column_task;
    for (size_t t = 0; t < tasks_.size(); ++t) {
      auto f = tasks_[t].factors.find(name);
      const int64_t rank = f == tasks_[t].factors.end() ? 0 : f->second.first.size(1);
      if (rank > 0) {
        us.push_back(f->second.first.to(compute));
        v.push_back(f->second.second.to(compute));
      }
      column_task.insert(column_task.end(), rank, static_cast<int64_t>(t));
      stack.offset.push_back(stack.offset.back() + rank);
    }
    if (us.empty()) continue;
    stack.us = at::cat(us, 1);
    stack.v = at::cat(v, 1);
    us.clear();
    v.clear();
    stack.column_task = at::tensor(column_task, at::kLong).to(base.device());
    if (base.dim() == 2 && base.scalar_type() == compute) {
      // theta*'s weight and v^T in one buffer; both become views into it.
      const int64_t m = base.size(0), r = stack.v.size(1);
      stack.joint = at::cat({base, stack.v.t()}, 0);
      stack.v = stack.joint.narrow(0, m, r).t();
      shared_[shared_index_.at(name)].second = stack.joint.narrow(0, 0, m);
      stack.joint_t = stack.joint.t();
      stack.us_t = stack.us.t();
    }
    // The tasks' own factors become views into the stack: no second copy.
    for (size_t t = 0; t < tasks_.size(); ++t) {
      auto f = tasks_[t].factors.find(name);
      if (f == tasks_[t].factors.end()) continue;
      const int64_t begin = stack.offset[t], rank = stack.offset[t + 1] - begin;
      f->second = {stack.us.narrow(1, begin, rank), stack.v.narrow(1, begin, rank)};
    }
    stacks_.emplace(name, std::move(stack));
  }
}

absl::StatusOr<int> TwinWeights::GroupLinears(
    const std::vector<std::vector<std::string>>& groups) {
  int packed = 0;
  for (const std::vector<std::string>& names : groups) {
    if (names.size() < 2) {
      return absl::InvalidArgumentError(absl::StrCat(
          "a linear group needs at least two tensors, got ", names.size(),
          names.empty() ? std::string() : absl::StrCat(" (", names.front(), ")")));
    }
    if (std::set<std::string>(names.begin(), names.end()).size() != names.size()) {
      return absl::InvalidArgumentError(
          absl::StrCat("linear group of ", names.front(), ": a tensor is named twice"));
    }
    std::vector<FactorStack*> stacks;
    bool packable = true;
    for (const std::string& name : names) {
      if (shared_index_.count(name) == 0) {
        return absl::InvalidArgumentError(
            absl::StrCat("linear group: no shared tensor named '", name, "'"));
      }
      auto it = stacks_.find(name);
      if (it == stacks_.end() || !it->second.joint.defined() || groups_.count(name) > 0) {
        packable = false;
        continue;
      }
      stacks.push_back(&it->second);
    }
    if (!packable) continue;
    const at::Tensor& first = stacks.front()->joint;
    for (const FactorStack* stack : stacks) {
      if (stack->joint.size(1) != first.size(1) ||
          stack->joint.scalar_type() != first.scalar_type() ||
          stack->joint.device() != first.device()) {
        packable = false;
      }
    }
    if (!packable) continue;
    try {
      at::NoGradGuard no_grad;
      LinearGroup group;
      group.members = names;
      group.out_offset.push_back(0);
      group.rank_offset.push_back(0);
      std::vector<at::Tensor> rows, projections, tasks;
      int64_t diagonal = 0;  // elements of the diagonal blocks
      for (const FactorStack* stack : stacks) {
        const int64_t rank = stack->us.size(1), out = stack->joint.size(0) - rank;
        rows.push_back(stack->joint.narrow(0, 0, out));
        projections.push_back(stack->joint.narrow(0, out, rank));
        tasks.push_back(stack->column_task);
        group.out_offset.push_back(group.out_offset.back() + out);
        group.rank_offset.push_back(group.rank_offset.back() + rank);
        diagonal += out * rank;
      }
      const int64_t outs = group.out_offset.back(), rank = group.rank_offset.back();
      rows.insert(rows.end(), projections.begin(), projections.end());
      group.joint = at::cat(rows, 0);
      group.joint_t = group.joint.t();
      group.column_task = at::cat(tasks);
      const bool block = outs * rank - diagonal <= kBlockDiagonalMaxZeros;
      if (block) group.us_t = at::zeros({rank, outs}, first.options());
      // Every member's bias side by side, when each has a 1-D one of theta*'s weight type.
      std::vector<std::string> bias_names;
      for (const std::string& name : names) {
        if (!absl::EndsWith(name, ".weight")) {
          bias_names.clear();
          break;
        }
        const std::string bias =
            absl::StrCat(name.substr(0, name.size() - std::strlen(".weight")), ".bias");
        auto it = shared_index_.find(bias);
        if (it == shared_index_.end() ||
            shared_[it->second].second.dim() != 1 ||
            shared_[it->second].second.scalar_type() != first.scalar_type()) {
          bias_names.clear();
          break;
        }
        bias_names.push_back(bias);
      }
      if (!bias_names.empty()) {
        std::vector<at::Tensor> biases;
        for (const std::string& b : bias_names) biases.push_back(shared_[shared_index_.at(b)].second);
        group.bias = at::cat(biases);
        for (size_t i = 0; i < bias_names.size(); ++i) {
          const int64_t begin = group.out_offset[i], out = group.out_offset[i + 1] - begin;
          shared_[shared_index_.at(bias_names[i])].second = group.bias.narrow(0, begin, out);
        }
      }
      // The members' tensors become views into the group's buffers.
      for (size_t i = 0; i < stacks.size(); ++i) {
        FactorStack& stack = *stacks[i];
        const int64_t out_begin = group.out_offset[i], out = group.out_offset[i + 1] - out_begin;
        const int64_t r_begin = group.rank_offset[i], r = group.rank_offset[i + 1] - r_begin;
        shared_[shared_index_.at(names[i])].second = group.joint.narrow(0, out_begin, out);
        stack.v = group.joint.narrow(0, outs + r_begin, r).t();
        if (block) {
          at::Tensor diagonal_block = group.us_t.narrow(0, r_begin, r).narrow(1, out_begin, out);
          diagonal_block.copy_(stack.us.t());
          stack.us = diagonal_block.t();
          stack.us_t = diagonal_block;
        }
        stack.joint = at::Tensor();
        stack.joint_t = at::Tensor();
        stack.grouped = true;
        for (size_t t = 0; t < tasks_.size(); ++t) {
          auto f = tasks_[t].factors.find(names[i]);
          if (f == tasks_[t].factors.end()) continue;
          const int64_t begin = stack.offset[t], task_rank = stack.offset[t + 1] - begin;
          f->second = {stack.us.narrow(1, begin, task_rank), stack.v.narrow(1, begin, task_rank)};
        }
        group.stacks.push_back(&stack);
      }
      groups_.emplace(names.front(), std::move(group));
      ++packed;
    } catch (const std::exception& e) {
      return absl::InternalError(
          absl::StrCat("packing the linears of ", names.front(), ": ", e.what()));
    }
  }
  return packed;
}

const LinearGroup* TwinWeights::linear_group(const std::vector<std::string>& weight_names) const {
  if (weight_names.empty()) return nullptr;
  auto it = groups_.find(weight_names.front());
  if (it == groups_.end() || it->second.members != weight_names) return nullptr;
  return &it->second;
}

const at::Tensor* TwinWeights::shared_tensor(const std::string& name) const {
  auto it = shared_index_.find(name);
  return it == shared_index_.end() ? nullptr : &shared_[it->second].second;
}

const FactorStack* TwinWeights::factor_stack(const std::string& name) const {
  auto it = stacks_.find(name);
  return it == stacks_.end() ? nullptr : &it->second;
}

const at::Tensor* TwinWeights::dense_stack(const std::string& name) const {
  auto it = dense_stacks_.find(name);
  return it == dense_stacks_.end() ? nullptr : &it->second;
}

const at::Tensor* TwinWeights::dense_delta(size_t task, const std::string& name) const {
  if (task >= tasks_.size()) return nullptr;
  auto it = tasks_[task].dense.find(name);
  return it == tasks_[task].dense.end() ? nullptr : &it->second;
}

absl::StatusOr<NamedTensors> TwinWeights::Fuse(const std::vector<double>& weights) const {
  RETURN_IF_ERROR(CheckWeights(weights, task_names_));
  NamedTensors fused;
  fused.reserve(shared_.size());
  for (const auto& [name, tensor] : shared_) {
    ASSIGN_OR_RETURN(at::Tensor t, FuseTensor(name, weights));
    fused.emplace_back(name, std::move(t));
  }
  return fused;
}

absl::StatusOr<at::Tensor> TwinWeights::FuseTensor(const std::string& name,
                                                   const std::vector<double>& weights) const {
  RETURN_IF_ERROR(CheckWeights(weights, task_names_));
  auto it = shared_index_.find(name);
  if (it == shared_index_.end()) {
    return absl::NotFoundError(absl::StrCat("no shared tensor named '", name, "'"));
  }
  const at::Tensor& base = shared_[it->second].second;
  try {
    at::NoGradGuard no_grad;
    const at::ScalarType compute = ComputeType(base.scalar_type());
    std::vector<at::Tensor> us_scaled, vs;
    std::vector<std::pair<double, const at::Tensor*>> dense;
    for (size_t t = 0; t < tasks_.size(); ++t) {
      if (weights[t] == 0.0) continue;
      auto f = tasks_[t].factors.find(name);
      if (f != tasks_[t].factors.end() && f->second.first.size(1) > 0) {
        us_scaled.push_back(f->second.first.to(compute) * weights[t]);
        vs.push_back(f->second.second.to(compute));
      }
      auto d = tasks_[t].dense.find(name);
      if (d != tasks_[t].dense.end()) dense.emplace_back(weights[t], &d->second);
    }
    // Nothing to add: hand out theta*'s own tensor rather than a copy.
    if (us_scaled.empty() && dense.empty()) return base;

    at::Tensor out = at::empty(base.sizes(), base.options().dtype(compute));
    out.copy_(base);
    if (!us_scaled.empty()) {
      ASSIGN_OR_RETURN(auto dims, MatrixDims(base.sizes().vec()));
      at::Tensor out2d = out.view({dims.first, dims.second});
      out2d.addmm_(at::cat(us_scaled, 1), at::cat(vs, 1).t());
    }
    for (const auto& [w, delta] : dense) out.add_(delta->to(compute), w);
    return out.to(base.scalar_type());
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("fusing tensor '", name, "': ", e.what()));
  }
}

uint64_t TwinWeights::shared_bytes() const {
  uint64_t total = 0;
  for (const auto& [name, tensor] : shared_) total += tensor.nbytes();
  return total;
}

uint64_t TwinWeights::twin_bytes() const {
  // The tasks' factors are views into the stacks: count the stacks.
  uint64_t total = 0;
  for (const auto& [name, stack] : stacks_) total += stack.us.nbytes() + stack.v.nbytes();
  // A block-diagonal group's zeros.
  for (const auto& [name, group] : groups_) {
    if (!group.us_t.defined()) continue;
    total += group.us_t.nbytes();
    for (const FactorStack* stack : group.stacks) total -= stack->us.nbytes();
  }
  for (const TaskTwin& task : tasks_) {
    for (const auto& [name, d] : task.dense) total += d.nbytes();
  }
  return total;
}

}  // namespace twin
