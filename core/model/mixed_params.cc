#include "core/model/mixed_params.h"

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <cmath>
#include <functional>
#include <utility>

#include "absl/strings/str_cat.h"
#include "core/merge/twin_weights.h"

namespace twin {
namespace {

// t in `type`: t itself when it already is (no operator call, which costs as much as a small
// kernel on a decode step's tensors).
at::Tensor AsType(const at::Tensor& t, at::ScalarType type) {
  return t.scalar_type() == type ? t : t.to(type);
}

// A [B, n] per-row tensor viewed to broadcast against a [B, ..., n] tensor of `dims` dims.
at::Tensor RowsView(const at::Tensor& rows, int64_t dims) {
  std::vector<int64_t> shape(static_cast<size_t>(dims), 1);
  shape.front() = rows.size(0);
  shape.back() = rows.size(1);
  return rows.view(shape);
}

// theta*'s 1-D tensor `base` per row: base + w D, [B, T] @ [T, n].
at::Tensor ComputeRowVector(const at::Tensor& base, const at::Tensor& stack,
                            const at::Tensor& weights) {
  return AsType(at::addmm(AsType(base, stack.scalar_type()).unsqueeze(0),
                          AsType(weights, stack.scalar_type()), stack),
                base.scalar_type());
}

}  // namespace

const char* MixStrategyName(MixStrategy strategy) {
  return strategy == MixStrategy::kStacked ? "stacked" : "grouped";
}

absl::StatusOr<MixStrategy> ParseMixStrategy(const std::string& text) {
  if (text == "stacked") return MixStrategy::kStacked;
  if (text == "grouped") return MixStrategy::kGrouped;
  return absl::InvalidArgumentError(
      absl::StrCat("unknown mixing strategy '", text, "' (expected stacked or grouped)"));
}

MixedParams::MixedParams(const TwinWeights& twins, at::Tensor weights,
                         const std::vector<float>& host, MixStrategy strategy)
    : twins_(&twins), weights_(std::move(weights)), strategy_(strategy) {
  rows_ = weights_.size(0);
  const int64_t tasks = weights_.size(1);
  {
    // Which tasks any row uses, and the (row, task) pairs, from the host copy.
    const float* w = host.data();
    task_used_.assign(static_cast<size_t>(tasks), false);
    for (int64_t i = 0; i < rows_ * tasks; ++i) {
      if (w[i] != 0.0f) {
        task_used_[static_cast<size_t>(i % tasks)] = true;
        ++active_pairs_;
      }
    }
  }
  // One mixture for every row (a prompt chunk of one sequence, or rows of one weight set) that
  // uses at most 3/4 of the tasks: OneMixtureFor's path.
  bool single = true;
  for (int64_t r = 1; r < rows_ && single; ++r) {
    single = std::equal(host.begin(), host.begin() + tasks, host.begin() + r * tasks);
  }
  for (int64_t t = 0; single && t < tasks; ++t) {
    if (host[static_cast<size_t>(t)] != 0.0f) mixture_.emplace_back(t, host[static_cast<size_t>(t)]);
  }
  one_mixture_ = single && static_cast<int64_t>(mixture_.size()) * 4 <= tasks * 3;
  // The grouped strategy's rows per task; the stacked one reads every row of every column.
  for (int64_t t = 0; strategy_ == MixStrategy::kGrouped && t < tasks; ++t) {
    at::Tensor rows = at::nonzero(weights_.select(1, t)).squeeze(1);
    // The longest run of consecutive rows (a batch ordered by top task holds each task's
    // primary rows in one run): read and written in place; the others are gathered.
    const at::Tensor cpu = rows.to(at::kCPU).contiguous();
    const int64_t* r = cpu.data_ptr<int64_t>();
    const int64_t n = cpu.size(0);
    TaskRun run;
    int64_t offset = 0;  // where the run starts in `rows`
    for (int64_t i = 0, start = 0; i < n; ++i) {
      if (i + 1 == n || r[i + 1] != r[i] + 1) {
        if (i + 1 - start > run.length) {
          run.first = r[start];
          run.length = i + 1 - start;
          offset = start;
        }
        start = i + 1;
      }
    }
    if (run.length > 0 && run.length < n) {
      run.rest = at::cat({rows.narrow(0, 0, offset),
                          rows.narrow(0, offset + run.length, n - offset - run.length)});
    }
    const at::Tensor w = weights_.select(1, t);
    if (run.length > 0) run.first_weights = w.narrow(0, run.first, run.length).unsqueeze(1);
    if (run.rest.defined()) run.rest_weights = w.index_select(0, run.rest).unsqueeze(1);
    task_runs_.push_back(std::move(run));
    task_rows_.push_back(std::move(rows));
  }
  for (const auto& [name, stack] : twins.dense_stacks()) {
    row_vectors_.emplace(name, ComputeRowVector(Shared(name), stack, weights_));
  }
  if (strategy_ == MixStrategy::kStacked) {
    for (const auto& [name, stack] : twins.factor_stacks()) {
      // A group's member reads the group's weights (below) unless called alone.
      if (stack.grouped) continue;
      column_weights_.emplace(
          &stack, AsType(weights_.index_select(1, stack.column_task), stack.us.scalar_type()));
    }
    for (const auto& [name, group] : twins.linear_groups()) {
      group_weights_.emplace(
          &group, AsType(weights_.index_select(1, group.column_task), group.joint.scalar_type()));
    }
  }
}

absl::StatusOr<MixedParams> MixedParams::Create(const TwinWeights& twins, at::Tensor row_weights,
                                                MixStrategy strategy) {
  const int64_t tasks = static_cast<int64_t>(twins.num_tasks());
  if (!row_weights.defined() || row_weights.dim() != 2 || row_weights.size(1) != tasks ||
      row_weights.size(0) == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("row weights must be [rows > 0, ", tasks, "], got ",
                     row_weights.defined() ? c10::str(row_weights.sizes()) : std::string("none")));
  }
  if (!at::isFloatingType(row_weights.scalar_type())) {
    return absl::InvalidArgumentError("row weights must be floating point");
  }
  try {
    const at::Tensor host = row_weights.to(at::kCPU, at::kFloat).contiguous();
    return Create(twins,
                  std::vector<float>(host.data_ptr<float>(), host.data_ptr<float>() + host.numel()),
                  host.size(0), strategy);
  } catch (const c10::Error& e) {
    return absl::InternalError(absl::StrCat("row weights: ", e.what_without_backtrace()));
  }
}

absl::StatusOr<MixedParams> MixedParams::Create(const TwinWeights& twins, std::vector<float> flat,
                                                int64_t rows, MixStrategy strategy) {
  for (float w : flat) {
    if (!std::isfinite(w) || w < 0) {
      return absl::InvalidArgumentError("row weights must be finite and non-negative");
    }
  }
  try {
    const int64_t tasks = static_cast<int64_t>(twins.num_tasks());
    at::Tensor w = at::from_blob(flat.data(), {rows, tasks}, at::kFloat);
    const at::Tensor* any = twins.shared().empty() ? nullptr : &twins.shared().front().second;
    // A copy the tensor owns (flat dies here), on the weights' device.
    w = w.to(any != nullptr ? any->device() : at::Device(at::kCPU), at::kFloat,
             /*non_blocking=*/false, /*copy=*/true);
    return MixedParams(twins, std::move(w), flat, strategy);
  } catch (const c10::Error& e) {
    return absl::InternalError(absl::StrCat("row weights: ", e.what_without_backtrace()));
  }
}

absl::StatusOr<MixedParams> MixedParams::Create(const TwinWeights& twins,
                                                const std::vector<std::vector<double>>& rows,
                                                MixStrategy strategy) {
  const size_t tasks = twins.num_tasks();
  std::vector<float> flat;
  flat.reserve(rows.size() * tasks);
  for (size_t r = 0; r < rows.size(); ++r) {
    if (rows[r].size() != tasks) {
      return absl::InvalidArgumentError(
          absl::StrCat("row ", r, " has ", rows[r].size(), " weights for ", tasks, " tasks"));
    }
    for (double w : rows[r]) flat.push_back(static_cast<float>(w));
  }
  if (rows.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("row weights must be [rows > 0, ", tasks, "], got none"));
  }
  return Create(twins, std::move(flat), static_cast<int64_t>(rows.size()), strategy);
}

bool MixedParams::Has(const std::string& name) const {
  return twins_->shared_tensor(name + ".weight") != nullptr;
}

const at::Tensor& MixedParams::Shared(const std::string& full_name) const {
  const at::Tensor* t = twins_->shared_tensor(full_name);
  TORCH_CHECK(t != nullptr, "missing tensor ", full_name);
  return *t;
}

at::Tensor MixedParams::TaskColumn(size_t task, int64_t dims) const {
  std::vector<int64_t> shape(static_cast<size_t>(dims), 1);
  shape.front() = rows_;
  return weights_.select(1, static_cast<int64_t>(task)).reshape(shape);
}

at::Tensor MixedParams::RowVector(const std::string& full_name) const {
  const at::Tensor& base = Shared(full_name);
  if (!twins_->has_dense(full_name)) return base;
  // Every 1-D tensor with a dense stack was computed by the constructor.
  auto precomputed = row_vectors_.find(full_name);
  if (precomputed != row_vectors_.end()) return precomputed->second;
  at::Tensor out = base.to(at::kFloat).reshape({1, -1}).repeat({rows_, 1});
  for (size_t t = 0; t < twins_->num_tasks(); ++t) {
    const at::Tensor* delta = twins_->dense_delta(t, full_name);
    if (delta == nullptr || !task_used_[t]) continue;
    out.add_(weights_.select(1, static_cast<int64_t>(t)).unsqueeze(1) *
             delta->to(at::kFloat).reshape({1, -1}));
  }
  return out.to(base.scalar_type());
}

void MixedParams::AddFactorTerms(const FactorStack& stack, const at::Tensor& input,
                                 const Projection& project, const at::Tensor& expand,
                                 at::Tensor& y) const {
  if (strategy_ == MixStrategy::kStacked) {
    at::Tensor z = project(input, 0, stack.us.size(1));
    z.mul_(RowsView(AsType(ColumnWeights(stack), z.scalar_type()), z.dim()));
    y.add_(AsType(at::matmul(z, expand.t()), y.scalar_type()));
    return;
  }
  for (size_t t = 0; t + 1 < stack.offset.size(); ++t) {
    const int64_t begin = stack.offset[t], rank = stack.offset[t + 1] - begin;
    const at::Tensor& rows = task_rows_[t];
    if (rank == 0 || rows.size(0) == 0) continue;
    const at::Tensor expand_t = expand.narrow(1, begin, rank).t();
    const TaskRun& run = task_runs_[t];
    // x's rows [first, first + length) of the batch, their terms added to y's same rows: in
    // place by one addmm when y's rows are one contiguous block of its type.
    {
      at::Tensor z = project(input.narrow(0, run.first, run.length), begin, rank);
      z.mul_(RowsView(AsType(run.first_weights, z.scalar_type()), z.dim()));
      at::Tensor target = y.narrow(0, run.first, run.length);
      if (target.is_contiguous() && target.scalar_type() == z.scalar_type()) {
        target.view({-1, target.size(-1)}).addmm_(z.reshape({-1, rank}), expand_t);
      } else {
        target.add_(AsType(at::matmul(z, expand_t), y.scalar_type()));
      }
    }
    // The other rows gathered, their terms scattered back.
    if (run.rest.defined()) {
      at::Tensor z = project(input.index_select(0, run.rest), begin, rank);
      z.mul_(RowsView(AsType(run.rest_weights, z.scalar_type()), z.dim()));
      y.index_add_(0, run.rest, AsType(at::matmul(z, expand_t), y.scalar_type()));
    }
  }
}

void MixedParams::AddDenseTerms(const std::string& full_name, int64_t dims,
                                const std::function<at::Tensor(const at::Tensor&)>& apply,
                                at::Tensor& y) const {
  if (!twins_->has_dense(full_name)) return;
  for (size_t t = 0; t < twins_->num_tasks(); ++t) {
    const at::Tensor* delta = twins_->dense_delta(t, full_name);
    if (delta == nullptr || !task_used_[t]) continue;
    y.add_(apply(*delta) * TaskColumn(t, dims));
  }
}

void MixedParams::AddLinearTerms(const std::string& full_name, const at::Tensor& x,
                                 at::Tensor& y) const {
  if (const FactorStack* stack = twins_->factor_stack(full_name)) {
    // x v: the input projected onto the task columns, then expanded by us.
    AddFactorTerms(
        *stack, AsType(x, stack->v.scalar_type()),
        [stack](const at::Tensor& in, int64_t begin, int64_t rank) {
          return at::matmul(in, stack->v.narrow(1, begin, rank));
        },
        stack->us, y);
  }
  AddDenseLinearTerms(full_name, x, y);
}

void MixedParams::AddEmbeddingTerms(const std::string& full_name, const at::Tensor& ids,
                                    at::Tensor& y) const {
  if (const FactorStack* stack = twins_->factor_stack(full_name)) {
    // us's rows of the ids, then expanded by v.
    AddFactorTerms(
        *stack, ids,
        [stack](const at::Tensor& in, int64_t begin, int64_t rank) {
          return at::embedding(stack->us.narrow(1, begin, rank), in);
        },
        stack->v, y);
  }
  AddDenseTerms(
      full_name, ids.dim() + 1,
      [&ids, &y](const at::Tensor& delta) { return at::embedding(delta.to(y.scalar_type()), ids); },
      y);
}

at::Tensor MixedParams::ColumnWeights(const FactorStack& stack) const {
  auto it = column_weights_.find(&stack);
  if (it != column_weights_.end()) return it->second;
  return AsType(weights_.index_select(1, stack.column_task), stack.us.scalar_type());
}

at::Tensor MixedParams::ScaleColumns(const at::Tensor& z, const at::Tensor& cw) const {
  const int64_t per_row = z.size(0) / rows_;
  // Each row's column weights, over its per_row tokens (one when decoding).
  if (per_row == 1) return z * cw;
  return (z.view({rows_, per_row, z.size(1)}) * cw.unsqueeze(1)).view({-1, z.size(1)});
}

bool MixedParams::OneMixtureFor(const at::Tensor& x2) const {
  return one_mixture_ && x2.size(0) >= kOneMixtureMinTokens;
}

void MixedParams::AddTaskTerms(const at::Tensor& x2, const at::Tensor& joint_t, int64_t v_begin,
                               const std::vector<int64_t>& offset, const at::Tensor& us_t,
                               at::Tensor y) const {
  for (const auto& [task, w] : mixture_) {
    const int64_t begin = offset[static_cast<size_t>(task)];
    const int64_t rank = offset[static_cast<size_t>(task) + 1] - begin;
    if (rank == 0) continue;
    y.addmm_(at::mm(x2, joint_t.narrow(1, v_begin + begin, rank)), us_t.narrow(0, begin, rank),
             /*beta=*/1.0, /*alpha=*/w);
  }
}

at::Tensor MixedParams::JointLinear(const FactorStack& stack, const at::Tensor& x) const {
  const int64_t rank = stack.us.size(1);
  const int64_t out = stack.joint.size(0) - rank;
  const at::Tensor x2 = x.dim() == 2 ? x : x.reshape({-1, x.size(-1)});
  at::Tensor y;
  if (OneMixtureFor(x2)) {
    // x W*^T, then only the used tasks' columns, each scaled by its weight in the addmm.
    y = at::mm(x2, stack.joint_t.narrow(1, 0, out));
    AddTaskTerms(x2, stack.joint_t, out, stack.offset, stack.us_t, y);
  } else {
    // [N, out + R]: x W*^T, then x v.
    const at::Tensor both = at::mm(x2, stack.joint_t);
    const at::Tensor z = ScaleColumns(both.narrow(1, out, rank), ColumnWeights(stack));
    // In place over x W*^T's columns: no copy of them into a new output.
    y = both.narrow(1, 0, out).addmm_(z, stack.us_t);
  }
  if (x.dim() == 2) return y;
  std::vector<int64_t> shape = x.sizes().vec();
  shape.back() = out;
  return y.view(shape);
}

void MixedParams::AddDenseLinearTerms(const std::string& full_name, const at::Tensor& x,
                                      at::Tensor& y) const {
  AddDenseTerms(
      full_name, x.dim(),
      [&x](const at::Tensor& delta) { return at::linear(x, delta.to(x.scalar_type())); }, y);
}

void MixedParams::AddBias(const std::string& name, at::Tensor& y) const {
  if (twins_->shared_tensor(name + ".bias") == nullptr) return;
  const at::Tensor b = RowVector(name + ".bias");
  y.add_(b.dim() == 1 ? b : RowsView(b, y.dim()));
}

std::vector<at::Tensor> MixedParams::Linears(const std::vector<std::string>& names,
                                             const at::Tensor& x) const {
  std::vector<std::string> weights;
  for (const std::string& name : names) weights.push_back(name + ".weight");
  const LinearGroup* group =
      strategy_ == MixStrategy::kStacked ? twins_->linear_group(weights) : nullptr;
  if (group == nullptr || x.scalar_type() != group->joint.scalar_type() || x.numel() == 0) {
    return LayerParams::Linears(names, x);
  }
  TORCH_CHECK(x.size(0) == rows_, "linears ", names.front(), ": input has ", x.size(0),
              " rows, the mixture ", rows_);
  const int64_t outs = group->out_offset.back(), rank = group->rank_offset.back();
  const at::Tensor x2 = x.dim() == 2 ? x : x.reshape({-1, x.size(-1)});
  // The members' biases at once when none varies by row.
  bool shared_bias = group->bias.defined();
  for (const std::string& name : names) shared_bias = shared_bias && !twins_->has_dense(name + ".bias");
  std::vector<at::Tensor> out;
  if (OneMixtureFor(x2)) {
    // Every member's x W*^T in one GEMM, then each member's used tasks' columns.
    at::Tensor y = at::mm(x2, group->joint_t.narrow(1, 0, outs));
    if (shared_bias) y.add_(group->bias);
    for (size_t i = 0; i < names.size(); ++i) {
      const int64_t begin = group->out_offset[i], size = group->out_offset[i + 1] - begin;
      out.push_back(y.narrow(1, begin, size));
      AddTaskTerms(x2, group->joint_t, outs + group->rank_offset[i], group->stacks[i]->offset,
                   group->stacks[i]->us_t, out.back());
    }
  } else {
    // [N, outs + R]: every member's x W*^T, then every member's x v.
    const at::Tensor both = at::mm(x2, group->joint_t);
    const at::Tensor z = ScaleColumns(both.narrow(1, outs, rank), group_weights_.at(group));
    if (group->us_t.defined()) {
      at::Tensor y = both.narrow(1, 0, outs).addmm_(z, group->us_t);
      if (shared_bias) y.add_(group->bias);
      for (size_t i = 0; i < names.size(); ++i) {
        out.push_back(
            y.narrow(1, group->out_offset[i], group->out_offset[i + 1] - group->out_offset[i]));
      }
    } else {
      for (size_t i = 0; i < names.size(); ++i) {
        const int64_t begin = group->out_offset[i], size = group->out_offset[i + 1] - begin;
        const int64_t r_begin = group->rank_offset[i], r = group->rank_offset[i + 1] - r_begin;
        at::Tensor y = both.narrow(1, begin, size).addmm_(z.narrow(1, r_begin, r),
                                                          group->stacks[i]->us_t);
        if (shared_bias) y.add_(group->bias.narrow(0, begin, size));
        out.push_back(std::move(y));
      }
    }
  }
  for (size_t i = 0; i < names.size(); ++i) {
    if (x.dim() != 2) {
      std::vector<int64_t> shape = x.sizes().vec();
      shape.back() = out[i].size(1);
      out[i] = out[i].view(shape);
    }
    AddDenseLinearTerms(weights[i], x, out[i]);
    if (!shared_bias) AddBias(names[i], out[i]);
  }
  return out;
}

at::Tensor MixedParams::Linear(const std::string& name, const at::Tensor& x) const {
  TORCH_CHECK(x.size(0) == rows_, "linear ", name, ": input has ", x.size(0), " rows, the mixture ",
              rows_);
  const std::string weight = name + ".weight";
  const FactorStack* stack = twins_->factor_stack(weight);
  at::Tensor y;
  if (strategy_ == MixStrategy::kStacked && stack != nullptr && stack->joint.defined() &&
      x.scalar_type() == stack->joint.scalar_type() && x.numel() > 0) {
    y = JointLinear(*stack, x);
    AddDenseLinearTerms(weight, x, y);
  } else {
    y = at::linear(x, Shared(weight));
    AddLinearTerms(weight, x, y);
  }
  AddBias(name, y);
  return y;
}

at::Tensor MixedParams::Embedding(const std::string& name, const at::Tensor& ids) const {
  TORCH_CHECK(ids.size(0) == rows_, "embedding ", name, ": input has ", ids.size(0),
              " rows, the mixture ", rows_);
  const std::string weight = name + ".weight";
  at::Tensor y = at::embedding(Shared(weight), ids);
  AddEmbeddingTerms(weight, ids, y);
  return y;
}

at::Tensor MixedParams::LayerNorm(const std::string& name, const at::Tensor& x, double eps) const {
  TORCH_CHECK(x.size(0) == rows_, "layer norm ", name, ": input has ", x.size(0),
              " rows, the mixture ", rows_);
  at::Tensor g = RowVector(name + ".weight"), b = RowVector(name + ".bias");
  const int64_t n = Shared(name + ".weight").size(0);
  if (g.dim() == 1 && b.dim() == 1) return at::layer_norm(x, {n}, g, b, eps);
  at::Tensor y = at::layer_norm(x, {n}, {}, {}, eps);
  y.mul_(g.dim() == 1 ? g : RowsView(g, y.dim()));
  y.add_(b.dim() == 1 ? b : RowsView(b, y.dim()));
  return y;
}

at::Tensor MixedParams::RmsNorm(const std::string& name, const at::Tensor& x, double eps) const {
  TORCH_CHECK(x.size(0) == rows_, "rms norm ", name, ": input has ", x.size(0),
              " rows, the mixture ", rows_);
  const at::Tensor g = RowVector(name + ".weight");
  at::Tensor y = RmsNormalize(x, eps);
  y.mul_(g.dim() == 1 ? g : RowsView(g, y.dim()));
  return y;
}

}  // namespace twin
