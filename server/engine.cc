#include "server/engine.h"

#include <ATen/ATen.h>

#include <map>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "core/merge/twin_weights.h"
#include "core/model/hf_config.h"
#include "core/model/hf_decoder.h"
#include "core/model/hf_decoder_config.h"
#include "core/model/hf_encoder.h"
#include "core/model/layer_params.h"
#include "core/model/task_heads.h"
#include "core/model/script_model.h"
#include "core/model/torch_runtime.h"
#include "core/router/router.h"
#include "core/router/router_input.h"
#include "core/status_macros.h"
#include "core/text/tokenizer.h"
#include "server/log.h"

namespace twin {

FusedModel::FusedModel(std::unique_ptr<ScriptModel> model, std::vector<double> weights,
                       uint64_t bytes, bool own_head)
    : model_(std::move(model)), weights_(std::move(weights)), bytes_(bytes), own_head_(own_head) {}

FusedModel::FusedModel(std::unique_ptr<DenseParams> body, std::vector<double> weights,
                       uint64_t bytes, std::unique_ptr<DenseParams> own_head)
    : body_(std::move(body)),
      head_(std::move(own_head)),
      weights_(std::move(weights)),
      bytes_(bytes),
      own_head_(head_ != nullptr) {}

FusedModel::~FusedModel() = default;
Engine::~Engine() = default;

namespace {
std::string FirstLine(const std::string& text) { return text.substr(0, text.find('\n')); }

std::map<std::string, at::Tensor> ByName(const NamedTensors& tensors) {
  return std::map<std::string, at::Tensor>(tensors.begin(), tensors.end());
}

}  // namespace

namespace {

// Another LayerParams's weights, by reference (theta* for a static generation step).
class ParamsRef : public LayerParams {
 public:
  explicit ParamsRef(const LayerParams& params) : params_(params) {}
  at::Tensor Linear(const std::string& name, const at::Tensor& x) const override {
    return params_.Linear(name, x);
  }
  std::vector<at::Tensor> Linears(const std::vector<std::string>& names,
                                  const at::Tensor& x) const override {
    return params_.Linears(names, x);
  }
  at::Tensor Embedding(const std::string& name, const at::Tensor& ids) const override {
    return params_.Embedding(name, ids);
  }
  at::Tensor LayerNorm(const std::string& name, const at::Tensor& x, double eps) const override {
    return params_.LayerNorm(name, x, eps);
  }
  at::Tensor RmsNorm(const std::string& name, const at::Tensor& x, double eps) const override {
    return params_.RmsNorm(name, x, eps);
  }
  bool Has(const std::string& name) const override { return params_.Has(name); }

 private:
  const LayerParams& params_;
};

}  // namespace

absl::Status Engine::LoadNativeDecoder(const LocalArtifactSet& set) {
  const Manifest& m = set.manifest;
  const std::string path = set.PathOf(m.native.config_blob);
  ASSIGN_OR_RETURN(HfDecoderConfig config, LoadHfDecoderConfigFile(path));
  if (m.native.family != config.model_type) {
    return absl::InvalidArgumentError(
        absl::StrCat("version ", m.version, ": model.native.family is ", m.native.family, " but ",
                     path, " is a ", config.model_type, " config"));
  }
  ASSIGN_OR_RETURN(decoder_, HfDecoder::Create(config));
  const std::map<std::string, at::Tensor> shared = ByName(twin_->shared());
  std::vector<std::map<std::string, at::Tensor>> per_task;
  for (int t = 0; t < num_tasks(); ++t) per_task.push_back(ByName(twin_->head(t)));
  const std::string lm_head_prefix = absl::StrCat(kHfLmHead, ".");
  for (const std::string& name : decoder_->names()) {
    auto it = shared.find(name);
    std::vector<std::pair<std::string, const at::Tensor*>> copies;  // what the model will read
    if (it != shared.end()) {
      copies.emplace_back("theta*", &it->second);
    } else {
      const bool kept_per_task = !per_task.empty() && per_task[0].count(name) > 0;
      // An untied LM head may be kept per task: each sequence reads its task's.
      if (kept_per_task && absl::StartsWith(name, lm_head_prefix) && !config.tie_word_embeddings) {
        for (int t = 0; t < num_tasks(); ++t) {
          if (per_task[t].count(name) == 0) {
            return absl::InvalidArgumentError(absl::StrCat("version ", m.version, ": task '",
                                                           m.tasks[t].name, "' has no '", name,
                                                           "', which the other tasks keep"));
          }
        }
        lm_head_names_.insert(std::string(kHfLmHead));
        for (int t = 0; t < num_tasks(); ++t) {
          copies.emplace_back(absl::StrCat("task '", m.tasks[t].name, "'"),
                              &per_task[t].at(name));
        }
      } else {
        return absl::InvalidArgumentError(absl::StrCat(
            "version ", m.version, ": theta* has no '", name, "', which the ", m.native.family,
            " model reads",
            kept_per_task ? " (it is kept per task: generation reads only an untied LM head "
                            "per task; merge with a head_pattern that matches lm_head alone, or "
                            "none)"
                          : ""));
      }
    }
    const auto want = decoder_->tensor_spec().shapes.find(name);
    if (want == decoder_->tensor_spec().shapes.end()) continue;
    for (const auto& [owner, copy] : copies) {
      if (!copy->sizes().equals(want->second)) {
        return absl::InvalidArgumentError(absl::StrCat(
            "version ", m.version, ": ", owner, "'s '", name, "' is ", c10::str(copy->sizes()),
            " but ", path, " implies ", c10::str(at::IntArrayRef(want->second))));
      }
    }
  }
  if (task_lm_heads()) {
    for (int t = 0; t < num_tasks(); ++t) {
      std::map<std::string, at::Tensor> head;
      for (auto& [name, tensor] : per_task[t]) {
        if (absl::StartsWith(name, lm_head_prefix)) head.emplace(name, tensor);
      }
      heads_.push_back(std::make_unique<DenseParams>(std::move(head)));
    }
  }
  if (m.router.features != "ngram") {
    return absl::InvalidArgumentError(
        absl::StrCat("version ", m.version,
                     ": the router of a causal LM reads n-gram features of the "
                     "prompt, not ",
                     m.router.features));
  }
  // Each layer's q/k/v and gate/up side by side: one GEMM each, static or unfused.
  if (absl::StatusOr<int> packed = twin_->GroupLinears(decoder_->linear_groups()); !packed.ok()) {
    return Annotate(packed.status(), absl::StrCat("version ", m.version));
  }
  shared_params_ = std::make_unique<DenseParams>(ByName(twin_->shared()));
  vocab_size_ = config.vocab_size;
  const int64_t largest = tokenizer_->largest_id();
  if (largest >= vocab_size_) {
    LogLine(LogLevel::kWarning,
            absl::StrCat("version ", m.version, ": the tokenizer produces ids up to ", largest,
                         " but the model's vocabulary has ", vocab_size_,
                         " ids; prompts with ids beyond it are refused"));
  }
  return absl::OkStatus();
}

absl::Status Engine::CheckClassifier() const {
  if (!generative()) return absl::OkStatus();
  return absl::FailedPreconditionError(
      absl::StrCat("version ", version(), " is a causal language model: use Generate, not Infer"));
}

absl::StatusOr<std::unique_ptr<LayerParams>> Engine::GenerationParams(
    const std::vector<StepRow>& rows, bool shared_only) const {
  if (!generative()) {
    return absl::FailedPreconditionError(
        absl::StrCat("version ", version(), " is not a causal language model"));
  }
  std::vector<int> row_tasks;
  if (task_lm_heads()) {
    for (size_t b = 0; b < rows.size(); ++b) {
      if (rows[b].task < 0 || rows[b].task >= num_tasks()) {
        return absl::InvalidArgumentError(absl::StrCat(
            "version ", version(), " keeps its LM head per task: sequence ", b, " has task ",
            rows[b].task, ", not one of the ", num_tasks(), " tasks"));
      }
      row_tasks.push_back(rows[b].task);
    }
  }
  auto with_heads = [&](std::unique_ptr<LayerParams> body) -> std::unique_ptr<LayerParams> {
    if (!task_lm_heads()) return body;
    std::vector<const LayerParams*> heads;
    for (const auto& head : heads_) heads.push_back(head.get());
    return std::make_unique<TaskHeadParams>(std::move(body), std::move(heads),
                                            std::move(row_tasks), lm_head_names_);
  };
  if (shared_only) return with_heads(std::make_unique<ParamsRef>(*shared_params_));
  std::vector<std::vector<double>> weights;
  weights.reserve(rows.size());
  for (const StepRow& row : rows) weights.push_back(*row.weights);
  try {
    ASSIGN_OR_RETURN(MixedParams mixed,
                     MixedParams::Create(*twin_, weights, generation_mix_strategy_));
    return with_heads(std::make_unique<MixedParams>(std::move(mixed)));
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("generation weights: ", FirstLine(e.what())));
  }
}

absl::Status Engine::LoadNative(const LocalArtifactSet& set) {
  const Manifest& m = set.manifest;
  if (IsHfDecoderFamilyName(m.native.family)) return LoadNativeDecoder(set);
  const std::string path = set.PathOf(m.native.config_blob);
  ASSIGN_OR_RETURN(HfEncoderConfig config, LoadHfEncoderConfigFile(path));
  if (m.native.family != HfFamilyName(config.family)) {
    return absl::InvalidArgumentError(
        absl::StrCat("version ", m.version, ": model.native.family is ", m.native.family, " but ",
                     path, " is a ", HfFamilyName(config.family), " config"));
  }
  ASSIGN_OR_RETURN(encoder_, HfEncoder::Create(config));
  const std::map<std::string, at::Tensor> shared = ByName(twin_->shared());
  for (const std::string& name : encoder_->body_names()) {
    auto it = shared.find(name);
    if (it == shared.end()) {
      return absl::InvalidArgumentError(absl::StrCat("version ", m.version, ": theta* has no '",
                                                     name, "', which the ", m.native.family,
                                                     " model reads"));
    }
    const auto want = encoder_->tensor_spec().shapes.find(name);
    if (want != encoder_->tensor_spec().shapes.end() && !it->second.sizes().equals(want->second)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "version ", m.version, ": theta*'s '", name, "' is ", c10::str(it->second.sizes()),
          " but ", path, " implies ", c10::str(at::IntArrayRef(want->second))));
    }
  }
  for (int t = 0; t < num_tasks(); ++t) {
    std::map<std::string, at::Tensor> head = ByName(twin_->head(t));
    for (const std::string& name : encoder_->head_names()) {
      if (!head.count(name)) {
        return absl::InvalidArgumentError(absl::StrCat("version ", m.version, ": task '",
                                                       m.tasks[t].name, "' has no head tensor '",
                                                       name, "'"));
      }
    }
    heads_.push_back(std::make_unique<DenseParams>(std::move(head)));
  }
  shared_params_ = std::make_unique<DenseParams>(shared);
  vocab_size_ = config.vocab_size;
  splits_heads_ = true;
  if (m.router.features == "route_features") {
    return absl::InvalidArgumentError(absl::StrCat(
        "version ", m.version, ": the router reads route_features(), which the native ",
        m.native.family, " model does not define (use embed, ngram or prefix)"));
  }
  if (m.router.features == "prefix") {
    // Multi-stage merging: every request's forward continues from the routing prefix's hidden
    // states, which is exact only if no twin touches the prefix's tensors.
    if (m.router.prefix_layers > config.num_hidden_layers) {
      return absl::InvalidArgumentError(absl::StrCat(
          "version ", m.version, ": the router reads the hidden states after ",
          m.router.prefix_layers, " layers but the ", m.native.family, " model has ",
          config.num_hidden_layers));
    }
    for (const std::string& name : encoder_->body_names()) {
      if (encoder_->StageOf(name) < m.router.prefix_layers &&
          (twin_->factor_stack(name) != nullptr || twin_->has_dense(name))) {
        return absl::InvalidArgumentError(absl::StrCat(
            "version ", m.version, ": the router reads the first ", m.router.prefix_layers,
            " layers' hidden states under theta*, but the twins change '", name,
            "' inside that prefix (merge with twin.from_layer >= router prefix)"));
      }
    }
    prefix_layers_ = m.router.prefix_layers;
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<Engine>> Engine::Load(const LocalArtifactSet& set,
                                                     const EngineOptions& options) {
  std::unique_ptr<Engine> engine(new Engine());
  engine->manifest_ = set.manifest;
  ASSIGN_OR_RETURN(engine->device_name_, ResolveDevice(options.device));
  c10::Device device(engine->device_name_);

  ASSIGN_OR_RETURN(engine->twin_, TwinWeights::Load(set, device));
  ASSIGN_OR_RETURN(auto router, Router::Load(set));
  ASSIGN_OR_RETURN(engine->router_, router->To(device));
  ASSIGN_OR_RETURN(engine->tokenizer_, Tokenizer::Create(set.manifest.tokenizer, set.dir));
  engine->mix_strategy_ = options.mix_strategy;
  engine->generation_mix_strategy_ = options.generation_mix_strategy;
  engine->ngram_router_ = set.manifest.router.features == "ngram";
  engine->architecture_path_ = set.PathOf(set.manifest.architecture_blob);

  if (options.model != "auto" && options.model != "torchscript" && options.model != "native") {
    return absl::InvalidArgumentError(
        absl::StrCat("engine model '", options.model, "' is not auto, torchscript or native"));
  }
  const bool has_native = !set.manifest.native.family.empty();
  if (options.model == "torchscript" && IsHfDecoderFamilyName(set.manifest.native.family)) {
    return absl::FailedPreconditionError(absl::StrCat(
        "version ", set.manifest.version, " is a ", set.manifest.native.family,
        " causal language model, which only the native engine runs (serving.engine: auto or "
        "native)"));
  }
  if (options.model == "native" && !has_native) {
    return absl::FailedPreconditionError(absl::StrCat(
        "version ", set.manifest.version, " has no native model (model.native) to serve"));
  }
  if (set.manifest.router.features == "prefix" &&
      (!has_native || options.model == "torchscript" ||
       IsHfDecoderFamilyName(set.manifest.native.family))) {
    return absl::FailedPreconditionError(absl::StrCat(
        "version ", set.manifest.version,
        ": its router reads a prefix of the native encoder (router.features prefix), which "
        "only the native engine runs (serving.engine: auto or native)"));
  }
  if (has_native && options.model != "torchscript") {
    RETURN_IF_ERROR(engine->LoadNative(set));
    ASSIGN_OR_RETURN(at::Tensor probe,
                     engine->Features(at::zeros({1, 2}, at::kLong), at::ones({1, 2}, at::kLong)));
    if (probe.dim() != 2 || probe.size(1) != set.manifest.router.spec.input_dim) {
      return absl::InvalidArgumentError(
          absl::StrCat("version ", set.manifest.version, ": the router input ",
                       set.manifest.router.features, " gives ", c10::str(probe.sizes()),
                       " features but the router reads ", set.manifest.router.spec.input_dim));
    }
    return engine;
  }

  engine->architecture_path_ = set.PathOf(set.manifest.architecture_blob);
  ASSIGN_OR_RETURN(engine->template_, ScriptModel::Load(engine->architecture_path_, device));
  ASSIGN_OR_RETURN(engine->shared_model_, ScriptModel::Load(engine->architecture_path_, device));
  if (!engine->ngram_router_ &&
      engine->shared_model_->router_features_method() != set.manifest.router.features) {
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
    const int64_t largest = engine->tokenizer_->largest_id();
    if (largest >= engine->vocab_size_) {
      // Token requests and texts within the vocabulary still work; a text that encodes to an
      // id beyond it is refused per request (MakePayload), never passed to the model.
      LogLine(LogLevel::kWarning,
              absl::StrCat("version ", set.manifest.version, ": the tokenizer produces ids up to ",
                           largest, " but the model's vocabulary has ", engine->vocab_size_,
                           " ids; texts with ids beyond it are refused"));
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
  ASSIGN_OR_RETURN(at::Tensor probe, engine->Features(probe_ids, probe_mask));
  if (probe.dim() != 2 || probe.size(1) != set.manifest.router.spec.input_dim) {
    return absl::InvalidArgumentError(
        absl::StrCat("version ", set.manifest.version, ": the router input ",
                     engine->ngram_router_ ? std::string("ngram")
                                           : engine->shared_model_->router_features_method() + "()",
                     " gives ", c10::str(probe.sizes()), " features but the router reads ",
                     set.manifest.router.spec.input_dim));
  }
  if (engine->shared_model_->has_classify() && engine->num_tasks() > 0) {
    absl::Status split = engine->shared_model_->CheckClassify(probe_ids, probe_mask);
    if (!split.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("version ", set.manifest.version, ": ", split.message()));
    }
    engine->splits_heads_ = true;
  }
  return engine;
}

absl::StatusOr<at::Tensor> Engine::RouterWeights(const at::Tensor& input_ids,
                                                 const at::Tensor& attention_mask,
                                                 const std::vector<double>& temperatures,
                                                 at::Tensor* prefix_hidden) const {
  if (static_cast<int64_t>(temperatures.size()) != input_ids.size(0)) {
    return absl::InvalidArgumentError("one temperature per request is required");
  }
  // Every LibTorch call stays inside a try: this runs on worker threads, where an escaping
  // exception would end the process.
  try {
    c10::Device device(device_name_);
    ASSIGN_OR_RETURN(RouterInput in, RouterInputOf(input_ids, attention_mask));
    if (prefix_hidden != nullptr) *prefix_hidden = in.prefix_hidden;
    ASSIGN_OR_RETURN(at::Tensor logits, router_->Logits(in.features));
    c10::InferenceMode guard;
    at::Tensor temps = at::tensor(temperatures, at::kDouble).to(at::kFloat).to(logits.device());
    return at::softmax(logits / temps.unsqueeze(1), 1).to(at::kCPU).contiguous();
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("routing failed: ", FirstLine(e.what())));
  }
}

absl::StatusOr<RouterInput> Engine::RouterInputOf(const at::Tensor& input_ids,
                                                  const at::Tensor& attention_mask) const {
  c10::Device device(device_name_);
  if (ngram_router_) {
    // From the ids on the CPU: no forward of the model.
    ASSIGN_OR_RETURN(RouterInput in,
                     ComputeRouterInput(manifest_.router, {}, input_ids, attention_mask));
    in.features = in.features.to(device);
    return in;
  }
  RouterModel model;
  if (native()) {
    model.encoder = encoder_.get();
    model.shared = shared_params_.get();
  } else {
    model.script = shared_model_.get();
  }
  return ComputeRouterInput(manifest_.router, model, input_ids.to(device),
                            attention_mask.to(device));
}

absl::StatusOr<at::Tensor> Engine::Features(const at::Tensor& input_ids,
                                            const at::Tensor& attention_mask) const {
  ASSIGN_OR_RETURN(RouterInput in, RouterInputOf(input_ids, attention_mask));
  return in.features;
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
  if (native()) {
    return std::make_shared<FusedModel>(std::make_unique<DenseParams>(ByName(fused)), weights,
                                        bytes, nullptr);
  }
  ASSIGN_OR_RETURN(auto model, template_->Clone());
  RETURN_IF_ERROR(model->SetParameters(fused));
  return std::make_shared<FusedModel>(std::move(model), weights, bytes);
}

absl::StatusOr<std::shared_ptr<FusedModel>> Engine::SharedModel() const {
  if (native()) {
    return std::make_shared<FusedModel>(std::make_unique<DenseParams>(shared_params_->tensors()),
                                        std::vector<double>(num_tasks(), 0.0), 0, nullptr);
  }
  try {
    ASSIGN_OR_RETURN(auto model, template_->Clone());
    RETURN_IF_ERROR(model->SetParameters(twin_->shared()));
    // theta*'s own tensors: nothing beyond what the engine already holds.
    return std::make_shared<FusedModel>(std::move(model), std::vector<double>(num_tasks(), 0.0), 0);
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("theta* model: ", FirstLine(e.what())));
  }
}

absl::StatusOr<std::shared_ptr<FusedModel>> Engine::LoadExpert(int task,
                                                               const std::string& path) const {
  if (task < 0 || task >= num_tasks()) {
    return absl::InvalidArgumentError(absl::StrCat("task index ", task, " out of range"));
  }
  if (generative()) {
    return absl::FailedPreconditionError(
        absl::StrCat("version ", version(),
                     " is a causal language model: serving.mode experts is not "
                     "available for it (use twin or static)"));
  }
  if (native()) return LoadNativeExpert(task, path);
  const std::string& name = manifest_.tasks[task].name;
  c10::Device device(device_name_);
  ASSIGN_OR_RETURN(auto model, ScriptModel::Load(path, device));
  try {
    std::map<std::string, at::Tensor> expected;
    for (auto& [param, value] : twin_->shared()) expected[param] = value;
    for (auto& [param, value] : twin_->head(task)) expected[param] = value;
    uint64_t bytes = 0;
    std::vector<double> weights(num_tasks(), 0.0);
    weights[task] = 1.0;
    const auto params = model->NamedParameters();
    std::map<std::string, at::Tensor> got(params.begin(), params.end());
    for (const auto& [param, value] : expected) {
      auto it = got.find(param);
      if (it == got.end()) {
        return absl::InvalidArgumentError(
            absl::StrCat("expert ", name, " (", path, ") has no parameter '", param, "'"));
      }
      if (!it->second.sizes().equals(value.sizes()) || it->second.dtype() != value.dtype()) {
        return absl::InvalidArgumentError(
            absl::StrCat("expert ", name, " (", path, "): parameter '", param, "' is ",
                         c10::str(it->second.sizes()), " ", std::string(it->second.dtype().name()),
                         " but the version's is ", c10::str(value.sizes()), " ",
                         std::string(value.dtype().name())));
      }
    }
    for (const auto& [param, value] : got) {
      if (!expected.count(param)) {
        return absl::InvalidArgumentError(
            absl::StrCat("expert ", name, " (", path, ") has parameter '", param,
                         "' that the version's architecture and ", name, "'s head do not have"));
      }
      bytes += value.nbytes();
    }
    return std::make_shared<FusedModel>(std::move(model), std::move(weights), bytes,
                                        /*own_head=*/true);
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("expert ", name, ": ", FirstLine(e.what())));
  }
}

absl::StatusOr<std::shared_ptr<FusedModel>> Engine::LoadNativeExpert(int task,
                                                                     const std::string& dir) const {
  const std::string& name = manifest_.tasks[task].name;
  ASSIGN_OR_RETURN(HfModel expert, LoadHfModel(dir));
  if (expert.encoder->config().family != encoder_->config().family) {
    return absl::InvalidArgumentError(
        absl::StrCat("expert ", name, " (", dir, ") is a ", expert.encoder->family_name(),
                     " model, the version's is ", encoder_->family_name()));
  }
  try {
    c10::Device device(device_name_);
    uint64_t bytes = 0;
    auto check = [&](std::map<std::string, at::Tensor>& got,
                     const std::map<std::string, at::Tensor>& expected) -> absl::Status {
      for (const auto& [param, value] : expected) {
        auto it = got.find(param);
        if (it == got.end()) {
          return absl::InvalidArgumentError(
              absl::StrCat("expert ", name, " (", dir, ") has no tensor '", param, "'"));
        }
        if (!it->second.sizes().equals(value.sizes())) {
          return absl::InvalidArgumentError(absl::StrCat(
              "expert ", name, " (", dir, "): tensor '", param, "' is ",
              c10::str(it->second.sizes()), " but the version's is ", c10::str(value.sizes())));
        }
        it->second = it->second.to(device, value.scalar_type());
        bytes += it->second.nbytes();
      }
      return absl::OkStatus();
    };
    RETURN_IF_ERROR(check(expert.body, shared_params_->tensors()));
    RETURN_IF_ERROR(check(expert.head, heads_[task]->tensors()));
    std::vector<double> weights(num_tasks(), 0.0);
    weights[task] = 1.0;
    return std::make_shared<FusedModel>(std::make_unique<DenseParams>(std::move(expert.body)),
                                        std::move(weights), bytes,
                                        std::make_unique<DenseParams>(std::move(expert.head)));
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("expert ", name, ": ", FirstLine(e.what())));
  }
}

absl::Status Engine::CheckRuns(const std::vector<TaskRun>& runs, int64_t batch) const {
  int64_t total = 0;
  for (const TaskRun& run : runs) {
    if (run.task < 0 || run.task >= num_tasks()) {
      return absl::InvalidArgumentError(absl::StrCat("task index ", run.task, " out of range"));
    }
    if (run.rows <= 0) return absl::InvalidArgumentError("a task run has no rows");
    total += run.rows;
  }
  if (total != batch) {
    return absl::InvalidArgumentError(
        absl::StrCat("the task runs cover ", total, " rows of a batch of ", batch));
  }
  return absl::OkStatus();
}

HfStart Engine::StartOf(const at::Tensor& prefix_hidden) const {
  if (!prefix_hidden.defined() || prefix_layers_ == 0) return {};
  return {prefix_layers_, prefix_hidden.to(c10::Device(device_name_))};
}

absl::StatusOr<std::vector<at::Tensor>> Engine::NativeRuns(const at::Tensor& input_ids,
                                                           const at::Tensor& attention_mask,
                                                           const LayerParams& body,
                                                           const std::vector<TaskRun>& runs,
                                                           const at::Tensor& prefix_hidden) const {
  c10::Device device(device_name_);
  ASSIGN_OR_RETURN(at::Tensor features,
                   encoder_->Embed(input_ids.to(device), attention_mask.to(device), body,
                                   StartOf(prefix_hidden)));
  std::vector<at::Tensor> out;
  int64_t offset = 0;
  for (const TaskRun& run : runs) {
    ASSIGN_OR_RETURN(at::Tensor logits,
                     encoder_->Classify(features.narrow(0, offset, run.rows), *heads_[run.task]));
    out.push_back(logits.to(at::kCPU));
    offset += run.rows;
  }
  return out;
}

absl::StatusOr<std::vector<at::Tensor>> Engine::ForwardMixed(
    const at::Tensor& input_ids, const at::Tensor& attention_mask, const at::Tensor& row_weights,
    const std::vector<TaskRun>& runs, const at::Tensor& prefix_hidden) const {
  RETURN_IF_ERROR(CheckClassifier());
  if (!native()) {
    return absl::FailedPreconditionError(
        "the unfused path needs a native model; this version is served by TorchScript");
  }
  RETURN_IF_ERROR(CheckRuns(runs, input_ids.size(0)));
  try {
    ASSIGN_OR_RETURN(MixedParams mixed, MixedParams::Create(*twin_, row_weights, mix_strategy_));
    return NativeRuns(input_ids, attention_mask, mixed, runs, prefix_hidden);
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("unfused forward failed: ", FirstLine(e.what())));
  }
}

namespace {
uint64_t Bytes(const NamedTensors& tensors) {
  uint64_t bytes = 0;
  for (const auto& [name, value] : tensors) bytes += value.nbytes();
  return bytes;
}
}  // namespace

uint64_t Engine::shared_bytes() const { return twin_->shared_bytes(); }
uint64_t Engine::twin_bytes() const { return twin_->twin_bytes(); }
uint64_t Engine::head_bytes() const {
  uint64_t bytes = 0;
  for (int t = 0; t < num_tasks(); ++t) bytes += Bytes(twin_->head(t));
  return bytes;
}
uint64_t Engine::router_bytes() const { return Bytes(router_->tensors()); }

absl::StatusOr<at::Tensor> Engine::Forward(FusedModel& model, const at::Tensor& input_ids,
                                           const at::Tensor& attention_mask, int task,
                                           const at::Tensor& prefix_hidden) const {
  RETURN_IF_ERROR(CheckClassifier());
  if (task < 0 || task >= num_tasks()) {
    return absl::InvalidArgumentError(absl::StrCat("task index ", task, " out of range"));
  }
  try {
    c10::Device device(device_name_);
    if (model.body_ != nullptr) {
      if (model.own_head_ && model.weights_[task] != 1.0) {
        return absl::InternalError(absl::StrCat("an expert model cannot answer task ", task));
      }
      // An expert's own layers differ from theta*'s prefix: it runs from its embeddings.
      ASSIGN_OR_RETURN(
          at::Tensor logits,
          encoder_->Forward(input_ids.to(device), attention_mask.to(device), *model.body_,
                            model.own_head_ ? *model.head_ : *heads_[task],
                            model.own_head_ ? HfStart{} : StartOf(prefix_hidden)));
      return logits.to(at::kCPU);
    }
    std::lock_guard<std::mutex> lock(model.mu_);
    if (model.own_head_) {
      if (task >= static_cast<int>(model.weights_.size()) || model.weights_[task] != 1.0) {
        return absl::InternalError(absl::StrCat("an expert model cannot answer task ", task));
      }
    } else {
      RETURN_IF_ERROR(model.model_->SetParameters(twin_->head(task)));
    }
    ASSIGN_OR_RETURN(at::Tensor logits,
                     model.model_->Forward(input_ids.to(device), attention_mask.to(device)));
    return logits.to(at::kCPU);
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("forward failed: ", FirstLine(e.what())));
  }
}

absl::StatusOr<std::vector<at::Tensor>> Engine::ForwardTasks(
    FusedModel& model, const at::Tensor& input_ids, const at::Tensor& attention_mask,
    const std::vector<TaskRun>& runs, const at::Tensor& prefix_hidden) const {
  RETURN_IF_ERROR(CheckClassifier());
  if (!splits_heads_ || model.own_head_) {
    return absl::FailedPreconditionError(
        "this model cannot serve several tasks in one forward (no classify() or an expert)");
  }
  RETURN_IF_ERROR(CheckRuns(runs, input_ids.size(0)));
  const int64_t total = input_ids.size(0);
  try {
    if (model.body_ != nullptr) {
      return NativeRuns(input_ids, attention_mask, *model.body_, runs, prefix_hidden);
    }
    c10::Device device(device_name_);
    std::lock_guard<std::mutex> lock(model.mu_);
    ASSIGN_OR_RETURN(at::Tensor features,
                     model.model_->Embed(input_ids.to(device), attention_mask.to(device)));
    if (features.dim() < 1 || features.size(0) != total) {
      return absl::InternalError(
          absl::StrCat("embed() returned ", c10::str(features.sizes()), " for a batch of ", total));
    }
    std::vector<at::Tensor> out;
    int64_t offset = 0;
    for (const TaskRun& run : runs) {
      RETURN_IF_ERROR(model.model_->SetParameters(twin_->head(run.task)));
      ASSIGN_OR_RETURN(at::Tensor logits,
                       model.model_->Classify(features.narrow(0, offset, run.rows)));
      out.push_back(logits.to(at::kCPU));
      offset += run.rows;
    }
    return out;
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("forward failed: ", FirstLine(e.what())));
  }
}

}  // namespace twin
