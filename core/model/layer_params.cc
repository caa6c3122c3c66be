#include "core/model/layer_params.h"

#include <utility>

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include "absl/strings/str_cat.h"

namespace twin {
namespace {

// `tensors`, each contiguous and of one type and device, seen as one tensor when each starts
// where the previous one ends in a common storage (concatenated along dim 0); else undefined.
at::Tensor Adjacent(const std::vector<const at::Tensor*>& tensors) {
  const at::Tensor& first = *tensors.front();
  int64_t rows = 0;
  const char* next = static_cast<const char*>(first.data_ptr());
  for (const at::Tensor* t : tensors) {
    if (!t->is_contiguous() || t->dim() != first.dim() || t->scalar_type() != first.scalar_type() ||
        t->device() != first.device() || !t->storage().is_alias_of(first.storage()) ||
        static_cast<const char*>(t->data_ptr()) != next ||
        !t->sizes().slice(1).equals(first.sizes().slice(1))) {
      return at::Tensor();
    }
    rows += t->size(0);
    next += t->nbytes();
  }
  std::vector<int64_t> shape = first.sizes().vec();
  shape[0] = rows;
  return first.as_strided(shape, first.strides());
}

}  // namespace

std::vector<at::Tensor> LayerParams::Linears(const std::vector<std::string>& names,
                                             const at::Tensor& x) const {
  std::vector<at::Tensor> out;
  out.reserve(names.size());
  for (const std::string& name : names) out.push_back(Linear(name, x));
  return out;
}

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

std::vector<at::Tensor> DenseParams::Linears(const std::vector<std::string>& names,
                                             const at::Tensor& x) const {
  if (names.size() < 2) return LayerParams::Linears(names, x);
  std::vector<const at::Tensor*> weights, biases;
  for (const std::string& name : names) {
    weights.push_back(&Require(name + ".weight"));
    auto b = tensors_.find(name + ".bias");
    if (b != tensors_.end()) biases.push_back(&b->second);
  }
  at::Tensor joint = Adjacent(weights);
  at::Tensor bias;
  if (!biases.empty()) bias = biases.size() == weights.size() ? Adjacent(biases) : at::Tensor();
  if (!joint.defined() || joint.dim() != 2 || (!biases.empty() && !bias.defined())) {
    return LayerParams::Linears(names, x);
  }
  const at::Tensor y = at::linear(x, joint, bias);
  std::vector<at::Tensor> out;
  int64_t begin = 0;
  for (const at::Tensor* w : weights) {
    out.push_back(y.narrow(-1, begin, w->size(0)));
    begin += w->size(0);
  }
  return out;
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
