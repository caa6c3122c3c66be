// TrainRouter: stratified split, AdamW on cross-entropy, early stopping on validation accuracy
// (both weighted per task with balance_tasks).
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <c10/core/GradMode.h>
#include <c10/core/InferenceMode.h>
#include <torch/optim/adamw.h>

#include <algorithm>
#include <cmath>
#include <exception>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "core/router/internal/router_mlp.h"
#include "core/router/router.h"
#include "core/status_macros.h"

namespace twin {
namespace {

using router_internal::ShapeString;

// Floor for the per-feature standard deviation, so constant features do not divide by zero.
constexpr double kMinInputStd = 1e-6;
// The hidden width used when options.hidden_dim is 0, as a multiple of the input width.
constexpr int64_t kDefaultHiddenWidthFactor = 2;

absl::Status CheckOptions(const RouterTrainOptions& o) {
  auto bad = [](const std::string& what) {
    return absl::InvalidArgumentError(absl::StrCat("router training options: ", what));
  };
  if (o.hidden_dim < 0) return bad(absl::StrCat("hidden_dim must be >= 0, got ", o.hidden_dim));
  if (o.num_hidden_layers < 1) {
    return bad(absl::StrCat("num_hidden_layers must be >= 1, got ", o.num_hidden_layers));
  }
  if (!(o.dropout >= 0.0 && o.dropout < 1.0)) {
    return bad(absl::StrCat("dropout must be in [0, 1), got ", o.dropout));
  }
  if (o.max_epochs < 1) return bad(absl::StrCat("max_epochs must be >= 1, got ", o.max_epochs));
  if (o.batch_size < 1) return bad(absl::StrCat("batch_size must be >= 1, got ", o.batch_size));
  if (!(o.learning_rate > 0.0 && std::isfinite(o.learning_rate))) {
    return bad(absl::StrCat("learning_rate must be finite and > 0, got ", o.learning_rate));
  }
  if (!(o.weight_decay >= 0.0 && std::isfinite(o.weight_decay))) {
    return bad(absl::StrCat("weight_decay must be finite and >= 0, got ", o.weight_decay));
  }
  if (!(o.validation_fraction >= 0.0 && o.validation_fraction < 1.0)) {
    return bad(absl::StrCat("validation_fraction must be in [0, 1), got ", o.validation_fraction));
  }
  if (o.patience < 1) return bad(absl::StrCat("patience must be >= 1, got ", o.patience));
  return absl::OkStatus();
}

struct Dataset {
  at::Tensor features;            // [N, d] float32, CPU, contiguous, finite
  std::vector<int64_t> task_ids;  // [N], each in [0, num_tasks)
};

absl::StatusOr<Dataset> CheckInputs(const at::Tensor& features, const at::Tensor& task_ids,
                                    int64_t num_tasks) {
  if (num_tasks < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("router training: num_tasks must be >= 1, got ", num_tasks));
  }
  if (!features.defined() || features.dim() != 2 || features.size(0) == 0 ||
      features.size(1) == 0 || !at::isFloatingType(features.scalar_type())) {
    return absl::InvalidArgumentError(
        absl::StrCat("router training: features must be a non-empty floating tensor [N, d], got ",
                     features.defined() ? absl::StrCat(ShapeString(features.sizes()), " of dtype ",
                                                       c10::toString(features.scalar_type()))
                                        : "an undefined tensor"));
  }
  const int64_t n = features.size(0);
  if (!task_ids.defined() || task_ids.dim() != 1 || task_ids.scalar_type() != at::kLong ||
      task_ids.size(0) != n) {
    return absl::InvalidArgumentError(absl::StrCat(
        "router training: task_ids must be an int64 tensor [", n, "] (one per feature row), got ",
        task_ids.defined() ? absl::StrCat(ShapeString(task_ids.sizes()), " of dtype ",
                                          c10::toString(task_ids.scalar_type()))
                           : "an undefined tensor"));
  }
  Dataset data;
  // An owned copy: also turns inference tensors from the caller into ordinary ones.
  data.features = features.detach()
                      .to(at::kCPU, at::kFloat, /*non_blocking=*/false, /*copy=*/true)
                      .contiguous();
  const at::Tensor non_finite = at::nonzero(at::logical_not(at::isfinite(data.features)));
  if (non_finite.size(0) > 0) {
    const int64_t row = non_finite[0][0].item<int64_t>();
    const int64_t col = non_finite[0][1].item<int64_t>();
    return absl::InvalidArgumentError(absl::StrCat("router training: features[", row, ", ", col,
                                                   "] is not finite (",
                                                   data.features[row][col].item<double>(), ")"));
  }
  const at::Tensor ids = task_ids.detach().to(at::kCPU).contiguous();
  const int64_t* id = ids.data_ptr<int64_t>();
  data.task_ids.assign(id, id + n);
  std::vector<int64_t> counts(static_cast<size_t>(num_tasks), 0);
  for (int64_t i = 0; i < n; ++i) {
    if (id[i] < 0 || id[i] >= num_tasks) {
      return absl::InvalidArgumentError(absl::StrCat("router training: task_ids[", i, "] = ", id[i],
                                                     " is out of range [0, ", num_tasks, ")"));
    }
    ++counts[static_cast<size_t>(id[i])];
  }
  for (int64_t t = 0; t < num_tasks; ++t) {
    if (counts[static_cast<size_t>(t)] < 2) {
      return absl::InvalidArgumentError(absl::StrCat(
          "router training: task ", t, " has ", counts[static_cast<size_t>(t)],
          " example(s); every task needs at least 2 (one to train on, one to validate)"));
    }
  }
  return data;
}

struct Split {
  at::Tensor train;       // int64 row indices
  at::Tensor validation;  // int64 row indices, grouped by task
};

// Per task: shuffle its rows, hold out max(1, round(fraction * n_t)) of them for validation but
// always leave at least one for training.
Split StratifiedSplit(const std::vector<int64_t>& task_ids, int64_t num_tasks, double fraction,
                      at::Generator& generator) {
  std::vector<std::vector<int64_t>> rows(static_cast<size_t>(num_tasks));
  for (size_t i = 0; i < task_ids.size(); ++i) {
    rows[static_cast<size_t>(task_ids[i])].push_back(static_cast<int64_t>(i));
  }
  std::vector<int64_t> train, validation;
  for (const std::vector<int64_t>& task_rows : rows) {
    const int64_t n = static_cast<int64_t>(task_rows.size());
    const int64_t held_out =
        std::min(n - 1, std::max<int64_t>(1, std::llround(fraction * static_cast<double>(n))));
    const at::Tensor perm = at::randperm(n, generator, at::kLong);
    const int64_t* p = perm.data_ptr<int64_t>();
    for (int64_t k = 0; k < n; ++k) {
      (k < held_out ? validation : train).push_back(task_rows[static_cast<size_t>(p[k])]);
    }
  }
  return {at::tensor(train, at::kLong), at::tensor(validation, at::kLong)};
}

// Tensors in canonical order; everything after input_mean/input_std requires grad. Linear
// layers start as nn.Linear does (weight and bias uniform in +-1/sqrt(fan_in)), norms as
// the identity.
std::vector<at::Tensor> InitialTensors(const RouterSpec& spec, const at::Tensor& mean,
                                       const at::Tensor& std, at::Generator& generator) {
  std::vector<at::Tensor> tensors = {mean, std};
  auto add_linear = [&](int64_t out, int64_t in) {
    const double bound = 1.0 / std::sqrt(static_cast<double>(in));
    tensors.push_back(at::empty({out, in}, at::kFloat).uniform_(-bound, bound, generator));
    tensors.push_back(at::empty({out}, at::kFloat).uniform_(-bound, bound, generator));
  };
  for (int64_t i = 0; i < spec.num_hidden_layers; ++i) {
    add_linear(spec.hidden_dim, i == 0 ? spec.input_dim : spec.hidden_dim);
    tensors.push_back(at::ones({spec.hidden_dim}, at::kFloat));
    tensors.push_back(at::zeros({spec.hidden_dim}, at::kFloat));
  }
  add_linear(spec.num_tasks, spec.hidden_dim);
  for (size_t i = router_internal::kFirstBlockIndex; i < tensors.size(); ++i) {
    tensors[i].requires_grad_(true);
  }
  return tensors;
}

struct Score {
  double accuracy = 0.0;
  double loss = 0.0;
  // Higher accuracy wins; equal accuracy falls back to the lower loss.
  bool BetterThan(const Score& other) const {
    return accuracy > other.accuracy || (accuracy == other.accuracy && loss < other.loss);
  }
};

// Plain accuracy and loss, or with `task_weights` defined the task-balanced ones: each task's
// rows weigh 1 / (its row count), so every task counts the same whatever its size.
Score Evaluate(const RouterSpec& spec, const std::vector<at::Tensor>& tensors,
               const at::Tensor& features, const at::Tensor& task_ids,
               const at::Tensor& task_weights) {
  c10::NoGradGuard no_grad;
  const at::Tensor logits = router_internal::Forward(spec, tensors, features, std::nullopt);
  const at::Tensor hit = logits.argmax(1).eq(task_ids).to(at::kDouble);
  Score score;
  if (task_weights.defined()) {
    const at::Tensor w = task_weights.index_select(0, task_ids).to(at::kDouble);
    score.accuracy = ((hit * w).sum() / w.sum()).item<double>();
  } else {
    score.accuracy = hit.mean().item<double>();
  }
  score.loss = at::nll_loss(at::log_softmax(logits, 1), task_ids, task_weights).item<double>();
  return score;
}

// [num_tasks] float: mean row count over tasks / the task's row count (1 for every task when
// they are equal).
at::Tensor BalancedTaskWeights(const at::Tensor& task_ids, int64_t num_tasks) {
  const at::Tensor counts = at::bincount(task_ids, {}, num_tasks).to(at::kFloat);
  return (counts.sum() / static_cast<double>(num_tasks)) / counts.clamp_min(1.0);
}

// confusion[i][j]: validation rows of task i that `router` sends to task j.
absl::StatusOr<std::vector<std::vector<int64_t>>> Confusion(const Router& router,
                                                            const at::Tensor& features,
                                                            const at::Tensor& task_ids) {
  const int64_t num_tasks = router.spec().num_tasks;
  ASSIGN_OR_RETURN(at::Tensor logits, router.Logits(features));
  const at::Tensor predicted = logits.argmax(1).to(at::kCPU).contiguous();
  const int64_t* pred = predicted.data_ptr<int64_t>();
  const int64_t* truth = task_ids.data_ptr<int64_t>();
  std::vector<std::vector<int64_t>> confusion(static_cast<size_t>(num_tasks),
                                              std::vector<int64_t>(num_tasks, 0));
  for (int64_t i = 0; i < task_ids.size(0); ++i) {
    ++confusion[static_cast<size_t>(truth[i])][static_cast<size_t>(pred[i])];
  }
  return confusion;
}

absl::StatusOr<RouterTrainResult> Train(const at::Tensor& features, const at::Tensor& task_ids,
                                        int64_t num_tasks, const RouterTrainOptions& options) {
  // Training needs autograd even when the caller runs under InferenceMode or NoGradGuard.
  c10::InferenceMode not_inference(/*enabled=*/false);
  c10::AutoGradMode grad_enabled(/*enabled=*/true);
  ASSIGN_OR_RETURN(Dataset data, CheckInputs(features, task_ids, num_tasks));
  RouterSpec spec;
  spec.input_dim = data.features.size(1);
  spec.hidden_dim =
      options.hidden_dim > 0 ? options.hidden_dim : kDefaultHiddenWidthFactor * spec.input_dim;
  spec.num_hidden_layers = options.num_hidden_layers;
  spec.num_tasks = num_tasks;
  spec.dropout = options.dropout;

  at::Generator generator = at::make_generator<at::CPUGeneratorImpl>(options.seed);
  const Split split =
      StratifiedSplit(data.task_ids, num_tasks, options.validation_fraction, generator);
  const at::Tensor all_ids = at::tensor(data.task_ids, at::kLong);
  const at::Tensor train_x = data.features.index_select(0, split.train);
  const at::Tensor train_y = all_ids.index_select(0, split.train);
  const at::Tensor val_x = data.features.index_select(0, split.validation);
  const at::Tensor val_y = all_ids.index_select(0, split.validation);

  // Normalisation statistics come from the training rows only.
  const at::Tensor mean = train_x.mean(0);
  const at::Tensor std = train_x.std(0, /*unbiased=*/false).clamp_min(kMinInputStd);
  std::vector<at::Tensor> tensors = InitialTensors(spec, mean, std, generator);
  std::vector<at::Tensor> trainable(
      tensors.begin() + static_cast<std::ptrdiff_t>(router_internal::kFirstBlockIndex),
      tensors.end());
  torch::optim::AdamW optimizer(
      trainable,
      torch::optim::AdamWOptions(options.learning_rate).weight_decay(options.weight_decay));

  const int64_t n_train = train_x.size(0);
  const at::Tensor train_weights =
      options.balance_tasks ? BalancedTaskWeights(train_y, num_tasks) : at::Tensor();
  const at::Tensor val_weights =
      options.balance_tasks ? BalancedTaskWeights(val_y, num_tasks) : at::Tensor();
  Score best{-1.0, 0.0};
  std::vector<at::Tensor> best_tensors;
  int64_t epochs_run = 0;
  int64_t epochs_without_improvement = 0;
  for (int64_t epoch = 0; epoch < options.max_epochs; ++epoch) {
    const at::Tensor order = at::randperm(n_train, generator, at::kLong);
    for (int64_t start = 0; start < n_train; start += options.batch_size) {
      const at::Tensor rows = order.slice(0, start, std::min(start + options.batch_size, n_train));
      optimizer.zero_grad();
      const at::Tensor logits =
          router_internal::Forward(spec, tensors, train_x.index_select(0, rows), generator);
      at::nll_loss(at::log_softmax(logits, 1), train_y.index_select(0, rows), train_weights)
          .backward();
      optimizer.step();
    }
    ++epochs_run;
    const Score score = Evaluate(spec, tensors, val_x, val_y, val_weights);
    if (score.BetterThan(best)) {
      best = score;
      best_tensors.clear();
      for (const at::Tensor& t : tensors) best_tensors.push_back(t.detach().clone());
      epochs_without_improvement = 0;
    } else if (++epochs_without_improvement >= options.patience) {
      break;
    }
  }

  const std::vector<router_internal::TensorShape> names = router_internal::ExpectedTensors(spec);
  std::vector<std::pair<std::string, at::Tensor>> named;
  for (size_t i = 0; i < names.size(); ++i) named.emplace_back(names[i].name, best_tensors[i]);
  ASSIGN_OR_RETURN(std::unique_ptr<Router> router, Router::Create(spec, named));
  ASSIGN_OR_RETURN(auto confusion, Confusion(*router, val_x, val_y));

  RouterTrainResult result;
  result.entry.spec = spec;
  result.entry.train_examples = n_train;
  result.entry.validation_examples = val_x.size(0);
  result.entry.epochs_run = epochs_run;
  int64_t correct = 0;
  for (int64_t t = 0; t < num_tasks; ++t) correct += confusion[t][t];
  result.entry.validation_accuracy =
      static_cast<double>(correct) / static_cast<double>(val_x.size(0));
  result.entry.confusion = std::move(confusion);
  result.router = std::move(router);
  return result;
}

}  // namespace

absl::StatusOr<RouterTrainResult> TrainRouter(const at::Tensor& features,
                                              const at::Tensor& task_ids, int64_t num_tasks,
                                              const RouterTrainOptions& options) {
  RETURN_IF_ERROR(CheckOptions(options));
  try {
    return Train(features, task_ids, num_tasks, options);
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("router training failed: ", e.what()));
  }
}

}  // namespace twin
