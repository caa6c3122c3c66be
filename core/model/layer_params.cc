#include "core/model/layer_params.h"

#include <utility>

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include "absl/strings/str_cat.h"

namespace twin {

DenseParams::DenseParams(std::map<std::string, at::Tensor> tensors)
    : tensors_(std::move(tensors)) {}

const at::Tensor& DenseParams::Require(const std::string& full_name) const {
  auto it = tensors_.find(full_name);
  TORCH_CHECK(it != tensors_.end(), "missing tensor ", full_name);
  return it->second;
}

absl::StatusOr<at::Tensor> DenseParams::Get(const std::string& full_name) const {
  auto it = tensors_.find(full_name);
  if (it == tensors_.end()) return absl::NotFoundError(absl::StrCat("missing tensor ", full_name));
  return it->second;
}

bool DenseParams::Has(const std::string& name) const {
  return tensors_.count(name + ".weight") > 0;
}

at::Tensor DenseParams::Linear(const std::string& name, const at::Tensor& x) const {
  const at::Tensor& w = Require(name + ".weight");
  auto b = tensors_.find(name + ".bias");
  return at::linear(x, w, b == tensors_.end() ? at::Tensor() : b->second);
}

at::Tensor DenseParams::Embedding(const std::string& name, const at::Tensor& ids) const {
  return at::embedding(Require(name + ".weight"), ids);
}

at::Tensor DenseParams::LayerNorm(const std::string& name, const at::Tensor& x,
                                  double eps) const {
  const at::Tensor& w = Require(name + ".weight");
  return at::layer_norm(x, {w.size(0)}, w, Require(name + ".bias"), eps);
}

at::Tensor RmsNormalize(const at::Tensor& x, double eps) {
  return x * at::rsqrt(x.pow(2).mean(-1, /*keepdim=*/true) + eps);
}

at::Tensor DenseParams::RmsNorm(const std::string& name, const at::Tensor& x, double eps) const {
  return Require(name + ".weight") * RmsNormalize(x, eps);
}

}  // namespace twin
