#include "bench/eval/evaluator.h"

#include <ATen/ATen.h>

#include <map>
#include <utility>

#include "absl/strings/str_cat.h"
#include "core/model/hf_config.h"
#include "core/model/hf_encoder.h"
#include "core/model/layer_params.h"
#include "core/model/mixed_params.h"
#include "core/router/router_input.h"
#include "core/model/script_model.h"
#include "core/status_macros.h"

namespace twin::eval {
namespace {

// Wraps a LibTorch call that may throw.
template <typename Fn>
absl::StatusOr<at::Tensor> Guarded(const std::string& what, Fn fn) {
  try {
    c10::InferenceMode guard;
    return fn();
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat(what, ": ", e.what()));
  }
}

std::unique_ptr<DenseParams> Dense(const NamedTensors& tensors) {
  return std::make_unique<DenseParams>(
      std::map<std::string, at::Tensor>(tensors.begin(), tensors.end()));
}

}  // namespace

absl::StatusOr<EvalEngine> ParseEvalEngine(const std::string& text) {
  if (text == "auto") return EvalEngine::kAuto;
  if (text == "torchscript") return EvalEngine::kTorchScript;
  if (text == "native") return EvalEngine::kNative;
  return absl::InvalidArgumentError(
      absl::StrCat("engine '", text, "' is not auto, torchscript or native"));
}

double MeanOf(const at::Tensor& correct) {
  if (!correct.defined() || correct.numel() == 0) return 0.0;
  return correct.to(at::kDouble).mean().item<double>();
}

absl::StatusOr<std::unique_ptr<Evaluator>> Evaluator::Create(const EvalInputs* inputs,
                                                             int64_t batch_size,
                                                             EvalEngine engine) {
  if (batch_size < 1) return absl::InvalidArgumentError("batch_size must be >= 1");
  if (inputs->tasks.empty()) return absl::InvalidArgumentError("no tasks to evaluate");
  if (engine == EvalEngine::kNative && inputs->native_config_path.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("version ", inputs->version, " has no native model (model.native)"));
  }
  std::unique_ptr<Evaluator> ev(new Evaluator(inputs, batch_size));
  if (engine != EvalEngine::kTorchScript && !inputs->native_config_path.empty()) {
    ASSIGN_OR_RETURN(HfEncoderConfig config, LoadHfEncoderConfigFile(inputs->native_config_path));
    ASSIGN_OR_RETURN(ev->encoder_, HfEncoder::Create(config));
    ev->shared_ = Dense(inputs->shared);
    for (const NamedTensors& head : inputs->heads) ev->heads_.push_back(Dense(head));
  } else {
    ASSIGN_OR_RETURN(ev->model_, ScriptModel::Load(inputs->architecture_path));
  }
  for (const EvalTask& task : inputs->tasks) {
    ASSIGN_OR_RETURN(Rows test, SortedByLength(task.test, task.name));
    ASSIGN_OR_RETURN(Rows validation, SortedByLength(task.validation, task.name));
    ev->test_.push_back(std::move(test));
    ev->validation_.push_back(std::move(validation));
  }
  return ev;
}

Evaluator::Evaluator(const EvalInputs* inputs, int64_t batch_size)
    : inputs_(inputs), batch_size_(batch_size) {}

Evaluator::~Evaluator() = default;

absl::StatusOr<Evaluator::Rows> Evaluator::SortedByLength(const LabeledRows& rows,
                                                          const std::string& task) {
  Rows sorted;
  if (rows.size() == 0) return sorted;
  try {
    c10::InferenceMode guard;
    const int64_t len = rows.attention_mask.size(1);
    at::Tensor positions = at::arange(1, len + 1, at::kLong).unsqueeze(0);
    at::Tensor extent = (rows.attention_mask.ne(0).to(at::kLong) * positions).amax(1);
    at::Tensor order = std::get<1>(extent.sort(/*stable=*/true, /*dim=*/0, false));
    sorted.input_ids = rows.input_ids.index_select(0, order).contiguous();
    sorted.attention_mask = rows.attention_mask.index_select(0, order).contiguous();
    sorted.labels = rows.labels.index_select(0, order).contiguous();
    sorted.extent = extent.index_select(0, order).contiguous();
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("task ", task, ": sorting rows: ", e.what()));
  }
  return sorted;
}

const Evaluator::Rows& Evaluator::RowsOf(size_t task, Split split) const {
  return split == Split::kTest ? test_[task] : validation_[task];
}

int64_t Evaluator::rows(size_t task, Split split) const {
  const Rows& r = RowsOf(task, split);
  return r.labels.defined() ? r.labels.size(0) : 0;
}

const at::Tensor& Evaluator::labels(size_t task, Split split) const {
  return RowsOf(task, split).labels;
}

absl::Status Evaluator::UseHead(size_t task) {
  if (current_head_ == static_cast<int>(task)) return absl::OkStatus();
  if (!native()) RETURN_IF_ERROR(model_->SetParameters(inputs_->heads[task]));
  current_head_ = static_cast<int>(task);
  return absl::OkStatus();
}

absl::Status Evaluator::UseBody(const NamedTensors& theta) {
  if (!native()) return model_->SetParameters(theta);
  body_ = Dense(theta);
  return absl::OkStatus();
}

absl::StatusOr<at::Tensor> Evaluator::Predict(size_t task, Split split, const at::Tensor& index,
                                              const Mix* mix) {
  const Rows& r = RowsOf(task, split);
  const int64_t n = index.size(0);
  std::vector<at::Tensor> parts;
  for (int64_t start = 0; start < n; start += batch_size_) {
    at::Tensor idx = index.slice(0, start, std::min(n, start + batch_size_));
    // Indices are ascending and rows sorted by extent: the last row is the longest.
    const int64_t len = std::max<int64_t>(1, r.extent[idx[-1].item<int64_t>()].item<int64_t>());
    at::Tensor ids = r.input_ids.index_select(0, idx).slice(1, 0, len);
    at::Tensor mask = r.attention_mask.index_select(0, idx).slice(1, 0, len);
    absl::StatusOr<at::Tensor> logits;
    if (!native()) {
      logits = model_->Forward(ids, mask);
    } else if (mix == nullptr) {
      logits = encoder_->Forward(ids, mask, *body_, *heads_[task]);
    } else {
      ASSIGN_OR_RETURN(MixedParams mixed,
                       MixedParams::Create(*mix->twin, mix->row_weights.index_select(0, idx),
                                           MixStrategy::kGrouped));
      logits = encoder_->Forward(ids, mask, mixed, *heads_[task]);
    }
    if (!logits.ok()) {
      return absl::Status(logits.status().code(), absl::StrCat("task ", inputs_->tasks[task].name,
                                                               ": ", logits.status().message()));
    }
    ASSIGN_OR_RETURN(at::Tensor right, Guarded("scoring", [&] {
                       return logits->argmax(1).eq(r.labels.index_select(0, idx));
                     }));
    parts.push_back(right);
  }
  if (parts.empty()) return at::zeros({0}, at::kBool);
  return Guarded("scoring", [&] { return at::cat(parts); });
}

absl::StatusOr<at::Tensor> Evaluator::StaticTask(const NamedTensors& theta, size_t task,
                                                 Split split) {
  RETURN_IF_ERROR(UseBody(theta));
  RETURN_IF_ERROR(UseHead(task));
  return Predict(task, split, at::arange(rows(task, split), at::kLong));
}

absl::StatusOr<Correct> Evaluator::Static(const NamedTensors& theta, Split split) {
  Correct out;
  for (size_t t = 0; t < num_tasks(); ++t) {
    ASSIGN_OR_RETURN(at::Tensor right, StaticTask(theta, t, split));
    out.push_back(right);
  }
  return out;
}

absl::StatusOr<std::vector<at::Tensor>> Evaluator::RouterWeights(double temperature, Split split) {
  if (!native()) RETURN_IF_ERROR(model_->SetParameters(inputs_->shared));
  std::vector<at::Tensor> out;
  for (size_t t = 0; t < num_tasks(); ++t) {
    const Rows& r = RowsOf(t, split);
    const int64_t n = rows(t, split);
    std::vector<at::Tensor> parts;
    for (int64_t start = 0; start < n; start += batch_size_) {
      const int64_t end = std::min(n, start + batch_size_);
      const int64_t len = std::max<int64_t>(1, r.extent[end - 1].item<int64_t>());
      const at::Tensor ids = r.input_ids.slice(0, start, end).slice(1, 0, len);
      const at::Tensor mask = r.attention_mask.slice(0, start, end).slice(1, 0, len);
      RouterModel model;
      if (native()) {
        model.encoder = encoder_.get();
        model.shared = shared_.get();
      } else {
        model.script = model_.get();
      }
      ASSIGN_OR_RETURN(RouterInput in,
                       ComputeRouterInput(inputs_->router_input, model, ids, mask));
      ASSIGN_OR_RETURN(at::Tensor w, inputs_->router->Weights(in.features, temperature));
      parts.push_back(w);
    }
    ASSIGN_OR_RETURN(at::Tensor all, Guarded("router weights", [&] {
                       return parts.empty()
                                  ? at::zeros({0, static_cast<int64_t>(num_tasks())}, at::kFloat)
                                  : at::cat(parts).to(at::kFloat);
                     }));
    out.push_back(all);
  }
  return out;
}

absl::StatusOr<Correct> Evaluator::Fused(const TwinWeights& twin,
                                         const std::vector<at::Tensor>& weights, Split split,
                                         const FuseProgress& progress, int64_t* fusions) {
  if (weights.size() != num_tasks()) {
    return absl::InvalidArgumentError("one weight matrix per task is required");
  }
  // weight vector -> per task, the rows that use it (ascending, as Predict needs).
  std::map<std::vector<double>, std::vector<std::vector<int64_t>>> groups;
  Correct out;
  for (size_t t = 0; t < num_tasks(); ++t) {
    at::Tensor w = weights[t].to(at::kDouble).contiguous();
    const int64_t n = rows(t, split);
    if (w.dim() != 2 || w.size(0) != n || w.size(1) != static_cast<int64_t>(num_tasks())) {
      return absl::InvalidArgumentError(
          absl::StrCat("task ", inputs_->tasks[t].name, ": weights must be [rows, tasks]"));
    }
    const double* p = w.data_ptr<double>();
    for (int64_t i = 0; i < n; ++i) {
      auto& per_task = groups[std::vector<double>(p + i * w.size(1), p + (i + 1) * w.size(1))];
      per_task.resize(num_tasks());
      per_task[t].push_back(i);
    }
    out.push_back(at::zeros({n}, at::kBool));
  }
  if (fusions != nullptr) *fusions = static_cast<int64_t>(groups.size());
  if (native()) return MixedPerRow(twin, weights, split, progress);
  int64_t done = 0;
  for (const auto& [w, per_task] : groups) {
    ASSIGN_OR_RETURN(NamedTensors fused, twin.Fuse(w));
    RETURN_IF_ERROR(model_->SetParameters(fused));
    for (size_t t = 0; t < num_tasks(); ++t) {
      if (per_task[t].empty()) continue;
      RETURN_IF_ERROR(UseHead(t));
      at::Tensor index = at::tensor(per_task[t], at::kLong);
      ASSIGN_OR_RETURN(at::Tensor right, Predict(t, split, index));
      out[t].index_put_({index}, right);
    }
    if (progress) progress(++done, static_cast<int64_t>(groups.size()));
  }
  return out;
}

absl::StatusOr<Correct> Evaluator::MixedPerRow(const TwinWeights& twin,
                                               const std::vector<at::Tensor>& weights,
                                               Split split, const FuseProgress& progress) {
  Correct out;
  for (size_t t = 0; t < num_tasks(); ++t) {
    ASSIGN_OR_RETURN(at::Tensor w, Guarded("router weights", [&] {
                       return weights[t].to(at::kFloat).contiguous();
                     }));
    const Mix mix{&twin, w};
    ASSIGN_OR_RETURN(at::Tensor right,
                     Predict(t, split, at::arange(rows(t, split), at::kLong), &mix));
    out.push_back(right);
    if (progress) progress(static_cast<int64_t>(t) + 1, static_cast<int64_t>(num_tasks()));
  }
  return out;
}

}  // namespace twin::eval
