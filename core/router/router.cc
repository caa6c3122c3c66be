#include "core/router/router.h"

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include <cmath>
#include <exception>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/store/artifact_set.h"
#include "core/router/internal/router_mlp.h"
#include "core/io/safetensors.h"
#include "core/status_macros.h"

namespace twin {
namespace router_internal {

std::string ShapeString(at::IntArrayRef shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

std::vector<TensorShape> ExpectedTensors(const RouterSpec& spec) {
  const int64_t d = spec.input_dim;
  const int64_t h = spec.hidden_dim;
  std::vector<TensorShape> out;
  out.push_back({"input_mean", {d}});
  out.push_back({"input_std", {d}});
  for (int64_t i = 0; i < spec.num_hidden_layers; ++i) {
    const std::string prefix = absl::StrCat("blocks.", i, ".");
    const int64_t in = i == 0 ? d : h;
    out.push_back({prefix + "linear.weight", {h, in}});
    out.push_back({prefix + "linear.bias", {h}});
    out.push_back({prefix + "norm.weight", {h}});
    out.push_back({prefix + "norm.bias", {h}});
  }
  out.push_back({"out.weight", {spec.num_tasks, h}});
  out.push_back({"out.bias", {spec.num_tasks}});
  return out;
}

at::Tensor Forward(const RouterSpec& spec, const std::vector<at::Tensor>& tensors,
                   const at::Tensor& features, std::optional<at::Generator> dropout_generator) {
  const at::Tensor x = (features - tensors[kInputMeanIndex]) / tensors[kInputStdIndex];
  return ForwardAfterFirstLinear(
      spec, tensors, at::linear(x, tensors[kFirstBlockIndex], tensors[kFirstBlockIndex + 1]),
      std::move(dropout_generator));
}

at::Tensor ForwardAfterFirstLinear(const RouterSpec& spec, const std::vector<at::Tensor>& tensors,
                                   at::Tensor x, std::optional<at::Generator> dropout_generator) {
  const bool apply_dropout = dropout_generator.has_value() && spec.dropout > 0.0;
  for (int64_t i = 0; i < spec.num_hidden_layers; ++i) {
    const size_t base = kFirstBlockIndex + static_cast<size_t>(i) * kTensorsPerBlock;
    if (i > 0) x = at::linear(x, tensors[base], tensors[base + 1]);
    x = at::layer_norm(x, {spec.hidden_dim}, tensors[base + 2], tensors[base + 3],
                       spec.layer_norm_eps);
    x = at::leaky_relu(x, spec.leaky_relu_slope);
    if (apply_dropout) {
      // Inverted dropout with the caller's generator, so that training is reproducible from
      // its seed without touching LibTorch's global generator.
      const double keep = 1.0 - spec.dropout;
      at::Tensor mask = at::empty_like(x).bernoulli_(keep, *dropout_generator);
      x = x * mask / keep;
    }
  }
  const size_t out =
      kFirstBlockIndex + static_cast<size_t>(spec.num_hidden_layers) * kTensorsPerBlock;
  return at::linear(x, tensors[out], tensors[out + 1]);
}

}  // namespace router_internal

namespace {

using router_internal::ShapeString;

absl::Status CheckSpec(const RouterSpec& spec) {
  const std::pair<const char*, int64_t> dims[] = {{"input_dim", spec.input_dim},
                                                  {"hidden_dim", spec.hidden_dim},
                                                  {"num_hidden_layers", spec.num_hidden_layers},
                                                  {"num_tasks", spec.num_tasks}};
  for (const auto& [name, value] : dims) {
    if (value <= 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("router spec: ", name, " must be > 0, got ", value));
    }
  }
  if (spec.num_hidden_layers > kMaxRouterHiddenLayers) {
    return absl::InvalidArgumentError(absl::StrCat("router spec: num_hidden_layers is ",
                                                   spec.num_hidden_layers, "; the limit is ",
                                                   kMaxRouterHiddenLayers));
  }
  for (const auto& [name, value] : dims) {
    if (value > kMaxRouterWidth) {
      return absl::InvalidArgumentError(absl::StrCat("router spec: ", name, " is ", value,
                                                     "; the limit is ", kMaxRouterWidth));
    }
  }
  if (!(spec.dropout >= 0.0 && spec.dropout < 1.0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("router spec: dropout must be in [0, 1), got ", spec.dropout));
  }
  if (!std::isfinite(spec.leaky_relu_slope)) {
    return absl::InvalidArgumentError(
        absl::StrCat("router spec: leaky_relu_slope must be finite, got ", spec.leaky_relu_slope));
  }
  if (!(spec.layer_norm_eps > 0.0 && std::isfinite(spec.layer_norm_eps))) {
    return absl::InvalidArgumentError(absl::StrCat(
        "router spec: layer_norm_eps must be finite and > 0, got ", spec.layer_norm_eps));
  }
  return absl::OkStatus();
}

// Presence, uniqueness, dtype and shape of every tensor; returns them in canonical order.
absl::StatusOr<std::vector<at::Tensor>> MatchTensors(
    const std::vector<router_internal::TensorShape>& expected,
    const std::vector<std::pair<std::string, at::Tensor>>& tensors) {
  std::map<std::string, size_t> index;
  for (size_t i = 0; i < expected.size(); ++i) index[expected[i].name] = i;
  std::vector<at::Tensor> found(expected.size());
  for (const auto& [name, tensor] : tensors) {
    auto it = index.find(name);
    if (it == index.end()) {
      return absl::InvalidArgumentError(absl::StrCat("router: unexpected tensor '", name, "'"));
    }
    const router_internal::TensorShape& want = expected[it->second];
    if (found[it->second].defined()) {
      return absl::InvalidArgumentError(
          absl::StrCat("router: tensor '", name, "' appears more than once"));
    }
    if (!tensor.defined()) {
      return absl::InvalidArgumentError(absl::StrCat("router: tensor '", name, "' is undefined"));
    }
    if (!at::isFloatingType(tensor.scalar_type())) {
      return absl::InvalidArgumentError(absl::StrCat("router: tensor '", name, "' has dtype ",
                                                     c10::toString(tensor.scalar_type()),
                                                     "; expected a floating dtype"));
    }
    if (tensor.sizes() != at::IntArrayRef(want.shape)) {
      return absl::InvalidArgumentError(absl::StrCat("router: tensor '", name, "' has shape ",
                                                     ShapeString(tensor.sizes()), ", expected ",
                                                     ShapeString(want.shape)));
    }
    found[it->second] = tensor;
  }
  for (size_t i = 0; i < expected.size(); ++i) {
    if (!found[i].defined()) {
      return absl::InvalidArgumentError(absl::StrCat("router: missing tensor '", expected[i].name,
                                                     "' of shape ",
                                                     ShapeString(expected[i].shape)));
    }
  }
  return found;
}

}  // namespace

absl::StatusOr<std::unique_ptr<Router>> Router::Load(const LocalArtifactSet& set) {
  ASSIGN_OR_RETURN(auto file, SafetensorsReader::Open(set.PathOf(set.manifest.router.blob)));
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  for (const auto& name : file->names()) {
    ASSIGN_OR_RETURN(at::Tensor t, file->Get(name, at::kFloat));
    tensors.emplace_back(name, t);
  }
  return Create(set.manifest.router.spec, tensors);
}

absl::StatusOr<std::unique_ptr<Router>> Router::Create(
    const RouterSpec& spec, const std::vector<std::pair<std::string, at::Tensor>>& tensors) {
  RETURN_IF_ERROR(CheckSpec(spec));
  const std::vector<router_internal::TensorShape> expected = router_internal::ExpectedTensors(spec);
  ASSIGN_OR_RETURN(std::vector<at::Tensor> found, MatchTensors(expected, tensors));
  std::unique_ptr<Router> router(new Router());
  router->spec_ = spec;
  try {
    const c10::Device device = found[0].device();
    for (size_t i = 0; i < expected.size(); ++i) {
      const std::string& name = expected[i].name;
      if (found[i].device() != device) {
        return absl::InvalidArgumentError(absl::StrCat("router: tensor '", name, "' is on ",
                                                       found[i].device().str(), " but '",
                                                       expected[0].name, "' is on ", device.str()));
      }
      // An owned float32 copy: the router must not change when the caller's tensors do.
      at::Tensor t =
          found[i].detach().to(at::kFloat, /*non_blocking=*/false, /*copy=*/true).contiguous();
      if (!at::isfinite(t).all().item<bool>()) {
        return absl::InvalidArgumentError(
            absl::StrCat("router: tensor '", name, "' contains non-finite values"));
      }
      if (i == router_internal::kInputStdIndex && !(t > 0).all().item<bool>()) {
        return absl::InvalidArgumentError(absl::StrCat("router: tensor '", name,
                                                       "' must be > 0 everywhere (min ",
                                                       t.min().item<double>(), ")"));
      }
      router->tensors_.emplace_back(name, std::move(t));
    }
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("router: copying tensors failed: ", e.what()));
  }
  return router;
}

void Router::FoldInputStandardization() const {
  // Standardized, an input is z_j = -mean_j / std_j where it is zero, so
  //   W x' + b = (b + sum_j W_j z_j) + sum_{j: x_j != 0} W_j x_j / std_j.
  // The first sum is a constant. An input every training text had equally (its std clamped
  // near 0) would put a huge z_j into it that the second sum cancels: such inputs (|z_j| >
  // kDenseStandardized) stay out of the constant and are always read standardized, exactly as
  // the dense layer reads them.
  const auto& mean = tensors_[router_internal::kInputMeanIndex].second;
  const auto& stdev = tensors_[router_internal::kInputStdIndex].second;
  const at::Tensor z = (-mean.to(at::kDouble)) / stdev.to(at::kDouble);
  const at::Tensor dense = z.abs() > kDenseStandardized;
  const at::Tensor w = tensors_[router_internal::kFirstBlockIndex].second.to(at::kDouble);
  const at::Tensor b = tensors_[router_internal::kFirstBlockIndex + 1].second.to(at::kDouble);
  sparse_bias_ = (b + at::mv(w, at::where(dense, at::zeros_like(z), z))).to(at::kFloat);
  dense_inputs_ = dense;
  dense_mean_ = at::where(dense, mean, at::zeros_like(mean));
}

at::Tensor Router::SparseFirstLinear(const at::Tensor& x, const at::Tensor& nonzero) const {
  // Built on the first sparse batch: a few vectors of the input's width.
  std::call_once(fold_once_, [this] { FoldInputStandardization(); });
  // The inputs any row has, and the always-read ones: one GEMM over those columns of W.
  const at::Tensor cols = (nonzero.any(0) | dense_inputs_).nonzero().squeeze(1);
  const at::Tensor& w = tensors_[router_internal::kFirstBlockIndex].second;  // [hidden, input]
  const at::Tensor& stdev = tensors_[router_internal::kInputStdIndex].second;
  const at::Tensor values =
      (x.index_select(1, cols) - dense_mean_.index_select(0, cols)) / stdev.index_select(0, cols);
  return at::addmm(sparse_bias_, values, w.index_select(1, cols).t());
}

absl::StatusOr<at::Tensor> Router::Logits(const at::Tensor& features) const {
  if (!features.defined() || features.dim() != 2 || features.size(1) != spec_.input_dim ||
      !at::isFloatingType(features.scalar_type())) {
    const std::string got = features.defined()
                                ? absl::StrCat(ShapeString(features.sizes()), " of dtype ",
                                               c10::toString(features.scalar_type()))
                                : "an undefined tensor";
    return absl::InvalidArgumentError(
        absl::StrCat("router: features must be a floating tensor of shape [B, ", spec_.input_dim,
                     "], got ", got));
  }
  try {
    c10::InferenceMode guard;
    std::vector<at::Tensor> params;
    params.reserve(tensors_.size());
    for (const auto& entry : tensors_) params.push_back(entry.second);
    const at::Tensor x = features.to(params[0].device(), at::kFloat);
    // Hashed n-gram counts are mostly zeros: the first layer then reads only the inputs the
    // batch has (about 150 of 2048 buckets for a 60-byte text) instead of a dense GEMM, which
    // packs the whole weight on every call.
    const at::Tensor nonzero = x.ne(0);
    if (nonzero.sum().item<int64_t>() * kSparseInputFraction <= x.numel()) {
      return router_internal::ForwardAfterFirstLinear(spec_, params,
                                                      SparseFirstLinear(x, nonzero), std::nullopt);
    }
    return router_internal::Forward(spec_, params, x, std::nullopt);
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("router: logits for features of shape ",
                                            ShapeString(features.sizes()), " failed: ", e.what()));
  }
}

absl::StatusOr<at::Tensor> Router::Weights(const at::Tensor& features, double temperature) const {
  if (!(std::isfinite(temperature) && temperature > 0.0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("router: temperature must be finite and > 0, got ", temperature));
  }
  ASSIGN_OR_RETURN(at::Tensor logits, Logits(features));
  try {
    c10::InferenceMode guard;
    return at::softmax(logits / temperature, /*dim=*/1);
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("router: softmax failed: ", e.what()));
  }
}

absl::StatusOr<std::unique_ptr<Router>> Router::To(c10::Device device) const {
  std::unique_ptr<Router> router(new Router());
  router->spec_ = spec_;
  try {
    for (const auto& [name, tensor] : tensors_) {
      router->tensors_.emplace_back(
          name, tensor.to(device, at::kFloat, /*non_blocking=*/false, /*copy=*/true));
    }
  } catch (const std::exception& e) {
    return absl::InternalError(
        absl::StrCat("router: moving tensors to ", device.str(), " failed: ", e.what()));
  }
  return router;
}

}  // namespace twin
