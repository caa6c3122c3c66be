#include "server/engine.h"

#include <ATen/ATen.h>

#include "absl/strings/str_cat.h"
#include "core/router.h"
#include "core/script_model.h"
#include "core/status_macros.h"
#include "core/tokenizer.h"
#include "core/torch_runtime.h"
#include "core/twin_weights.h"

namespace twin {

FusedModel::FusedModel(std::unique_ptr<ScriptModel> model, std::vector<double> weights,
                       uint64_t bytes)
    : model_(std::move(model)), weights_(std::move(weights)), bytes_(bytes) {}

FusedModel::~FusedModel() = default;
Engine::~Engine() = default;

namespace {
std::string FirstLine(const std::string& text) { return text.substr(0, text.find('\n')); }
}  // namespace

absl::StatusOr<std::unique_ptr<Engine>> Engine::Load(const LocalArtifactSet& set,
                                                     const EngineOptions& options) {
  std::unique_ptr<Engine> engine(new Engine());
  engine->manifest_ = set.manifest;
  ASSIGN_OR_RETURN(engine->device_name_, ResolveDevice(options.device));
  c10::Device device(engine->device_name_);

  ASSIGN_OR_RETURN(engine->twin_, TwinWeights::Load(set, device));
  ASSIGN_OR_RETURN(auto router, Router::Load(set));
  ASSIGN_OR_RETURN(engine->router_, router->To(device));
  ASSIGN_OR_RETURN(engine->tokenizer_, Tokenizer::Create(set.manifest.tokenizer));

  engine->architecture_path_ = set.PathOf(set.manifest.architecture_blob);
  ASSIGN_OR_RETURN(engine->template_, ScriptModel::Load(engine->architecture_path_, device));
  ASSIGN_OR_RETURN(engine->shared_model_, ScriptModel::Load(engine->architecture_path_, device));
  if (engine->shared_model_->router_features_method() != set.manifest.router.features) {
    return absl::InvalidArgumentError(absl::StrCat(
        "version ", set.manifest.version, ": the router was trained on ",
        set.manifest.router.features, "() features but the architecture's router input is ",
        engine->shared_model_->router_features_method(), "()"));
  }
  RETURN_IF_ERROR(engine->shared_model_->SetParameters(engine->twin_->shared()));
  if (engine->num_tasks() > 0) {
    RETURN_IF_ERROR(engine->shared_model_->SetParameters(engine->twin_->head(0)));
  }
  engine->vocab_size_ = engine->shared_model_->VocabSize();
  if (engine->vocab_size_ > 0) {
    const int64_t largest = LargestTokenId(set.manifest.tokenizer);
    if (largest >= engine->vocab_size_) {
      return absl::InvalidArgumentError(absl::StrCat(
          "version ", set.manifest.version, ": the tokenizer produces ids up to ", largest,
          " but the model's vocabulary has ", engine->vocab_size_, " ids"));
    }
  }
  // A router that cannot read the architecture's features fails here, not on every request.
  at::Tensor probe_ids, probe_mask;
  try {
    probe_ids = at::full({1, 2}, set.manifest.tokenizer.pad_id, at::kLong).to(device);
    probe_mask = at::ones({1, 2}, at::kLong).to(device);
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("router probe: ", e.what()));
  }
  ASSIGN_OR_RETURN(at::Tensor probe, engine->shared_model_->RouterFeatures(probe_ids, probe_mask));
  if (probe.dim() != 2 || probe.size(1) != set.manifest.router.spec.input_dim) {
    return absl::InvalidArgumentError(absl::StrCat(
        "version ", set.manifest.version, ": the architecture's ",
        engine->shared_model_->router_features_method(), "() gives ", c10::str(probe.sizes()),
        " features but the router reads ", set.manifest.router.spec.input_dim));
  }
  return engine;
}

absl::StatusOr<at::Tensor> Engine::RouterWeights(const at::Tensor& input_ids,
                                                 const at::Tensor& attention_mask,
                                                 const std::vector<double>& temperatures) const {
  if (static_cast<int64_t>(temperatures.size()) != input_ids.size(0)) {
    return absl::InvalidArgumentError("one temperature per request is required");
  }
  // Every LibTorch call stays inside a try: this runs on worker threads, where an escaping
  // exception would end the process.
  try {
    c10::Device device(device_name_);
    ASSIGN_OR_RETURN(at::Tensor features, shared_model_->RouterFeatures(
                                              input_ids.to(device), attention_mask.to(device)));
    ASSIGN_OR_RETURN(at::Tensor logits, router_->Logits(features));
    c10::InferenceMode guard;
    at::Tensor temps = at::tensor(temperatures, at::kDouble).to(at::kFloat).to(logits.device());
    return at::softmax(logits / temps.unsqueeze(1), 1).to(at::kCPU).contiguous();
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("routing failed: ", FirstLine(e.what())));
  }
}

absl::StatusOr<std::shared_ptr<FusedModel>> Engine::Fuse(const std::vector<double>& weights) const {
  try {
    return FuseUnchecked(weights);
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("fusion failed: ", FirstLine(e.what())));
  }
}

absl::StatusOr<std::shared_ptr<FusedModel>> Engine::FuseUnchecked(
    const std::vector<double>& weights) const {
  ASSIGN_OR_RETURN(NamedTensors fused, twin_->Fuse(weights));
  uint64_t bytes = 0;
  const NamedTensors& shared = twin_->shared();
  for (size_t i = 0; i < fused.size(); ++i) {
    // Tensors no task touches are theta*'s own storage and cost nothing extra.
    if (i < shared.size() && fused[i].second.is_same(shared[i].second)) continue;
    bytes += fused[i].second.nbytes();
  }
  ASSIGN_OR_RETURN(auto model, template_->Clone());
  RETURN_IF_ERROR(model->SetParameters(fused));
  return std::make_shared<FusedModel>(std::move(model), weights, bytes);
}

absl::StatusOr<at::Tensor> Engine::Forward(FusedModel& model, const at::Tensor& input_ids,
                                           const at::Tensor& attention_mask, int task) const {
  if (task < 0 || task >= num_tasks()) {
    return absl::InvalidArgumentError(absl::StrCat("task index ", task, " out of range"));
  }
  try {
    c10::Device device(device_name_);
    std::lock_guard<std::mutex> lock(model.mu_);
    RETURN_IF_ERROR(model.model_->SetParameters(twin_->head(task)));
    ASSIGN_OR_RETURN(at::Tensor logits,
                     model.model_->Forward(input_ids.to(device), attention_mask.to(device)));
    return logits.to(at::kCPU);
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("forward failed: ", FirstLine(e.what())));
  }
}

}  // namespace twin
