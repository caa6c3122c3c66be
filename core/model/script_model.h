// A TorchScript model that follows the model convention (DESIGN.md): methods
// embed(input_ids, attention_mask) -> [B, d] and forward(input_ids, attention_mask) -> [B, C],
// optionally route_features(input_ids, attention_mask) -> [B, r] (the router's input; embed's
// output when the model has no such method) and classify(features) -> [B, C] (the head alone,
// so that forward(x) == classify(embed(x)); rows of several tasks then share one embed()),
// parameters addressed by dotted names.
//
//   ASSIGN_OR_RETURN(auto model, ScriptModel::Load("expert.pt"));
//   for (auto& [name, t] : model->NamedParameters()) ...
//   RETURN_IF_ERROR(model->SetParameter("head.weight", w));   // shape may change (heads)
//   ASSIGN_OR_RETURN(at::Tensor logits, model->Forward(ids, mask));
//
// LibTorch exceptions stop here: every method returns a Status naming the model and tensor.
// Inference runs under torch::InferenceMode.
//
// Thread-safety: Forward/Embed may run concurrently with each other; SetParameter must not run
// concurrently with anything else on the same model.
#ifndef TWIN_CORE_MODEL_SCRIPT_MODEL_H_
#define TWIN_CORE_MODEL_SCRIPT_MODEL_H_

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <torch/script.h>

#include "absl/status/statusor.h"

namespace twin {

class ScriptModel {
 public:
  // Loads a TorchScript archive; checks that `embed` and `forward` exist.
  static absl::StatusOr<std::unique_ptr<ScriptModel>> Load(const std::string& path,
                                                           c10::Device device = c10::kCPU);
  // Wraps an existing module (tests, the zoo).
  static absl::StatusOr<std::unique_ptr<ScriptModel>> Wrap(torch::jit::Module module,
                                                           std::string label);

  const std::string& label() const { return label_; }
  torch::jit::Module& module() { return module_; }

  // All parameters (recursively), dotted names, in module order.
  std::vector<std::pair<std::string, at::Tensor>> NamedParameters() const;
  absl::StatusOr<at::Tensor> Parameter(const std::string& name) const;
  // Replaces the parameter (may change its shape); the name must already exist.
  absl::Status SetParameter(const std::string& name, const at::Tensor& value);
  // Replaces every named parameter in `values`; all names must exist.
  absl::Status SetParameters(const std::vector<std::pair<std::string, at::Tensor>>& values);

  absl::StatusOr<at::Tensor> Embed(const at::Tensor& input_ids,
                                   const at::Tensor& attention_mask);
  // The router's input features: route_features() when the model defines it, else embed().
  absl::StatusOr<at::Tensor> RouterFeatures(const at::Tensor& input_ids,
                                            const at::Tensor& attention_mask);
  // "route_features" or "embed": the method RouterFeatures calls.
  const std::string& router_features_method() const { return router_features_method_; }
  absl::StatusOr<at::Tensor> Forward(const at::Tensor& input_ids,
                                     const at::Tensor& attention_mask);
  // Whether the model defines classify(features); Classify calls it on embed()'s output.
  bool has_classify() const { return has_classify_; }
  absl::StatusOr<at::Tensor> Classify(const at::Tensor& features);
  // Whether classify(embed(x)) reproduces forward(x) on this input (to 1e-3 of the logits'
  // scale: the same computation differs by rounding alone); the error names the shapes or the
  // difference. FailedPrecondition when the model has no classify().
  absl::Status CheckClassify(const at::Tensor& input_ids, const at::Tensor& attention_mask);

  // How many token ids the model accepts (ids must be in [0, VocabSize())): the module's int
  // attribute `vocab_size` when it has one, else the rows of the embedding table that embed()
  // indexes with its input_ids (found in its inlined graph; 0 while that parameter is
  // stripped), else 0: unknown.
  int64_t VocabSize() const;
  // The dotted name of that embedding table ("" when not found or when `vocab_size` is set).
  const std::string& embedding_parameter() const { return embedding_parameter_; }

  absl::Status Save(const std::string& path);
  // A deep copy whose parameters can be replaced independently.
  absl::StatusOr<std::unique_ptr<ScriptModel>> Clone() const;

 private:
  ScriptModel(torch::jit::Module module, std::string label);
  // Runs `method` under InferenceMode; a LibTorch error or a non-tensor result is a Status.
  absl::StatusOr<at::Tensor> Call(const char* method, std::vector<c10::IValue> inputs);
  torch::jit::Module module_;
  std::string label_;
  std::string router_features_method_;
  bool has_classify_ = false;
  int64_t vocab_attribute_ = 0;
  std::string embedding_parameter_;
};

// The optional model-convention method that gives the router its input features.
inline constexpr char kRouteFeaturesMethod[] = "route_features";
// The optional model-convention method that applies the head to embed()'s output.
inline constexpr char kClassifyMethod[] = "classify";
// The optional int attribute that declares the vocabulary size.
inline constexpr char kVocabSizeAttribute[] = "vocab_size";

}  // namespace twin

#endif  // TWIN_CORE_MODEL_SCRIPT_MODEL_H_
