#include "core/model/script_model.h"

#include <exception>

#include <torch/csrc/jit/ir/ir.h>
#include <torch/csrc/jit/passes/inliner.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "core/status_macros.h"

namespace twin {
namespace {

constexpr const char* kRequiredMethods[] = {"embed", "forward"};

// Splits "a.b.weight" into the owning submodule path and the attribute name.
std::pair<std::string, std::string> SplitOwner(const std::string& name) {
  const size_t dot = name.rfind('.');
  if (dot == std::string::npos) return {"", name};
  return {name.substr(0, dot), name.substr(dot + 1)};
}

absl::StatusOr<torch::jit::Module> FindSubmodule(const torch::jit::Module& root,
                                                 const std::string& path) {
  torch::jit::Module current = root;
  if (path.empty()) return current;
  for (absl::string_view part : absl::StrSplit(path, '.')) {
    auto child = current.attr(std::string(part), c10::IValue());
    if (!child.isModule()) {
      return absl::NotFoundError(absl::StrCat("no submodule '", part, "' in '", path, "'"));
    }
    current = child.toModule();
  }
  return current;
}

// The dotted parameter name that `value` reads, when it is a chain of prim::GetAttr from the
// graph's first input (self); "" otherwise.
std::string AttributePath(const torch::jit::Value* value, const torch::jit::Value* self) {
  std::vector<std::string> parts;
  while (value != self) {
    const torch::jit::Node* node = value->node();
    if (node->kind() != c10::prim::GetAttr) return "";
    parts.push_back(node->s(c10::attr::name));
    value = node->input(0);
  }
  std::string path;
  for (auto it = parts.rbegin(); it != parts.rend(); ++it) {
    if (!path.empty()) path += '.';
    path += *it;
  }
  return path;
}

// The parameter that embed() passes to aten::embedding together with its input_ids.
std::string FindEmbeddingParameter(const torch::jit::Module& module) {
  try {
    std::shared_ptr<torch::jit::Graph> graph = module.get_method("embed").graph()->copy();
    torch::jit::Inline(*graph);
    if (graph->inputs().size() < 2) return "";
    const torch::jit::Value* self = graph->inputs()[0];
    const torch::jit::Value* ids = graph->inputs()[1];
    for (const torch::jit::Node* node : graph->nodes()) {
      if (node->kind() == c10::aten::embedding && node->inputs().size() >= 2 &&
          node->input(1) == ids) {
        return AttributePath(node->input(0), self);
      }
    }
  } catch (const std::exception&) {
    // An unusual graph: the vocabulary stays unknown.
  }
  return "";
}

int64_t VocabAttribute(const torch::jit::Module& module) {
  try {
    if (!module.hasattr(kVocabSizeAttribute)) return 0;
    const c10::IValue value = module.attr(kVocabSizeAttribute);
    return value.isInt() && value.toInt() > 0 ? value.toInt() : 0;
  } catch (const std::exception&) {
    return 0;
  }
}

// One line of a LibTorch error for a Status: TorchScript interpreter errors start with a generic
// line and a traceback and end with the actual error ("RuntimeError: index out of range in
// self"), so that last line is kept; other errors keep their first line.
std::string ErrorLine(const std::string& what) {
  const std::string first = what.substr(0, what.find('\n'));
  if (!absl::StartsWith(first, "The following operation failed in the TorchScript interpreter")) {
    return first;
  }
  size_t end = what.find_last_not_of(" \n");
  if (end == std::string::npos) return first;
  const size_t begin = what.rfind('\n', end);
  return what.substr(begin == std::string::npos ? 0 : begin + 1, end + 1 - (begin + 1));
}

}  // namespace

ScriptModel::ScriptModel(torch::jit::Module module, std::string label)
    : module_(std::move(module)),
      label_(std::move(label)),
      router_features_method_(
          module_.find_method(kRouteFeaturesMethod).has_value() ? kRouteFeaturesMethod : "embed"),
      has_classify_(module_.find_method(kClassifyMethod).has_value()),
      vocab_attribute_(VocabAttribute(module_)),
      embedding_parameter_(vocab_attribute_ > 0 ? "" : FindEmbeddingParameter(module_)) {}

int64_t ScriptModel::VocabSize() const {
  if (vocab_attribute_ > 0) return vocab_attribute_;
  if (embedding_parameter_.empty()) return 0;
  absl::StatusOr<at::Tensor> table = Parameter(embedding_parameter_);
  if (!table.ok() || !table->defined() || table->dim() != 2) return 0;
  return table->size(0);
}

absl::StatusOr<std::unique_ptr<ScriptModel>> ScriptModel::Load(const std::string& path,
                                                               c10::Device device) {
  torch::jit::Module module;
  try {
    module = torch::jit::load(path, device);
  } catch (const std::exception& e) {
    std::string what = e.what();
    what = what.substr(0, what.find('\n'));
    return absl::InvalidArgumentError(
        absl::StrCat("cannot load TorchScript model ", path, ": ", what));
  }
  return Wrap(std::move(module), path);
}

absl::StatusOr<std::unique_ptr<ScriptModel>> ScriptModel::Wrap(torch::jit::Module module,
                                                               std::string label) {
  for (const char* method : kRequiredMethods) {
    if (!module.find_method(method).has_value()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "model ", label, " has no method '", method,
          "' (the model convention needs embed(input_ids, attention_mask) and "
          "forward(input_ids, attention_mask))"));
    }
  }
  module.eval();
  return std::unique_ptr<ScriptModel>(new ScriptModel(std::move(module), std::move(label)));
}

std::vector<std::pair<std::string, at::Tensor>> ScriptModel::NamedParameters() const {
  std::vector<std::pair<std::string, at::Tensor>> out;
  for (const auto& p : module_.named_parameters(/*recurse=*/true)) {
    out.emplace_back(p.name, p.value);
  }
  return out;
}

absl::StatusOr<at::Tensor> ScriptModel::Parameter(const std::string& name) const {
  for (const auto& p : module_.named_parameters(/*recurse=*/true)) {
    if (p.name == name) return p.value;
  }
  return absl::NotFoundError(absl::StrCat("model ", label_, " has no parameter '", name, "'"));
}

absl::Status ScriptModel::SetParameter(const std::string& name, const at::Tensor& value) {
  auto [owner_path, attr] = SplitOwner(name);
  auto owner = FindSubmodule(module_, owner_path);
  if (!owner.ok()) {
    return absl::NotFoundError(absl::StrCat("model ", label_, " has no parameter '", name, "'"));
  }
  try {
    if (!owner->hasattr(attr) || !owner->type()->hasAttribute(attr) ||
        !owner->type()->is_parameter(owner->type()->getAttributeSlot(attr))) {
      return absl::NotFoundError(
          absl::StrCat("model ", label_, " has no parameter '", name, "'"));
    }
    at::Tensor detached = value.detach();
    owner->register_parameter(attr, detached, /*is_buffer=*/false);
  } catch (const std::exception& e) {
    return absl::InternalError(
        absl::StrCat("cannot set parameter '", name, "' of ", label_, ": ", e.what()));
  }
  return absl::OkStatus();
}

absl::Status ScriptModel::SetParameters(
    const std::vector<std::pair<std::string, at::Tensor>>& values) {
  for (const auto& [name, value] : values) RETURN_IF_ERROR(SetParameter(name, value));
  return absl::OkStatus();
}

absl::StatusOr<at::Tensor> ScriptModel::Call(const char* method,
                                             std::vector<c10::IValue> inputs) {
  try {
    c10::InferenceMode guard;
    c10::IValue out = module_.get_method(method)(std::move(inputs));
    if (!out.isTensor()) {
      return absl::InvalidArgumentError(
          absl::StrCat("model ", label_, ": ", method, "() did not return a tensor"));
    }
    return out.toTensor();
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(
        absl::StrCat("model ", label_, ": ", method, "() failed: ", ErrorLine(e.what())));
  }
}

absl::StatusOr<at::Tensor> ScriptModel::Embed(const at::Tensor& input_ids,
                                              const at::Tensor& attention_mask) {
  return Call("embed", {input_ids, attention_mask});
}

absl::StatusOr<at::Tensor> ScriptModel::RouterFeatures(const at::Tensor& input_ids,
                                                       const at::Tensor& attention_mask) {
  return Call(router_features_method_.c_str(), {input_ids, attention_mask});
}

absl::StatusOr<at::Tensor> ScriptModel::Forward(const at::Tensor& input_ids,
                                                const at::Tensor& attention_mask) {
  return Call("forward", {input_ids, attention_mask});
}

absl::StatusOr<at::Tensor> ScriptModel::Classify(const at::Tensor& features) {
  if (!has_classify_) {
    return absl::FailedPreconditionError(
        absl::StrCat("model ", label_, " has no method '", kClassifyMethod, "'"));
  }
  return Call(kClassifyMethod, {features});
}

namespace {
// classify(embed(x)) and forward(x) are the same computation when the methods agree, so they
// differ by rounding alone (a few units of float32 roundoff times the reduction length, orders
// of magnitude below this); a classify() that is not forward()'s head differs by the logits' own
// scale.
constexpr double kClassifyTolerance = 1e-3;
}  // namespace

absl::Status ScriptModel::CheckClassify(const at::Tensor& input_ids,
                                        const at::Tensor& attention_mask) {
  ASSIGN_OR_RETURN(at::Tensor forward, Forward(input_ids, attention_mask));
  ASSIGN_OR_RETURN(at::Tensor features, Embed(input_ids, attention_mask));
  ASSIGN_OR_RETURN(at::Tensor split, Classify(features));
  try {
    if (!split.sizes().equals(forward.sizes())) {
      return absl::InvalidArgumentError(absl::StrCat(
          "model ", label_, ": classify(embed(x)) gives ", c10::str(split.sizes()),
          " but forward(x) gives ", c10::str(forward.sizes())));
    }
    const at::Tensor f = forward.to(at::kDouble);
    const double scale = 1.0 + f.abs().max().item<double>();
    const double diff = (split.to(at::kDouble) - f).abs().max().item<double>();
    if (!(diff <= kClassifyTolerance * scale)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "model ", label_, ": classify(embed(x)) differs from forward(x) by ", diff,
          " (logits up to ", scale - 1.0, "); classify() must be forward()'s head alone"));
    }
  } catch (const std::exception& e) {
    std::string what = e.what();
    return absl::InternalError(absl::StrCat("model ", label_, ": classify() check failed: ",
                                            what.substr(0, what.find('\n'))));
  }
  return absl::OkStatus();
}

absl::Status ScriptModel::Save(const std::string& path) {
  try {
    module_.save(path);
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("cannot save model to ", path, ": ", e.what()));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<ScriptModel>> ScriptModel::Clone() const {
  try {
    return std::unique_ptr<ScriptModel>(new ScriptModel(module_.deepcopy(), label_));
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("cannot clone model ", label_, ": ", e.what()));
  }
}

}  // namespace twin
