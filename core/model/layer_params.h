// How a native model's forward reads its weights. The model code (core/model/bert.h, ...) never
// touches tensors by name itself: every layer with weights asks a LayerParams for its result,
// so one forward serves three kinds of weights:
//
//   - DenseParams: one weight set (an expert, theta*, or a fused theta(w) from the cache);
//   - the unfused twin path (core/model/mixed_params.h): theta* plus each row's own mixture of
//     the task factors, exact per row, so one batch mixes rows with different router weights.
//
// Names are the checkpoint's tensor prefixes without ".weight"/".bias", e.g.
// "roberta.encoder.layer.0.attention.self.query". Shapes follow PyTorch: a linear's weight is
// [out, in], an embedding's [rows, dim], a LayerNorm's weight and bias [dim], an RMSNorm's weight
// [dim].
//
//   DenseParams p(tensors);                       // name -> tensor, e.g. from safetensors
//   at::Tensor y = p.Linear("pooler.dense", x);   // x [B, L, in] or [B, in]
//
// Row-dependent sources (mixed) require x's first dimension to be the batch's rows in the order
// their weights were given.
//
// Thread-safety: implementations are immutable once built; calls may run concurrently.
#ifndef TWIN_CORE_MODEL_LAYER_PARAMS_H_
#define TWIN_CORE_MODEL_LAYER_PARAMS_H_

#include <map>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

#include "absl/status/statusor.h"

namespace twin {

class LayerParams {
 public:
  virtual ~LayerParams() = default;

  // x W^T + b for the linear `name` (name.weight [out, in], name.bias [out] when present).
  // x: [B, ..., in]. Throws c10::Error on shape mismatch (callers catch at their boundary).
  virtual at::Tensor Linear(const std::string& name, const at::Tensor& x) const = 0;
  // Linear(names[i], x) for every name: linears of one input (a layer's q/k/v projections).
  // Sources that keep such weights side by side answer with one GEMM; the results may then be
  // views into one buffer (not contiguous). The default calls Linear once per name.
  virtual std::vector<at::Tensor> Linears(const std::vector<std::string>& names,
                                          const at::Tensor& x) const;
  // Rows `ids` of the table name.weight: ids [B, L] int64 -> [B, L, dim].
  virtual at::Tensor Embedding(const std::string& name, const at::Tensor& ids) const = 0;
  // LayerNorm over the last dimension with name.weight and name.bias.
  virtual at::Tensor LayerNorm(const std::string& name, const at::Tensor& x,
                               double eps) const = 0;
  // RMSNorm over the last dimension (Llama's): name.weight * x / sqrt(mean(x^2) + eps), in
  // float32 as transformers computes it.
  virtual at::Tensor RmsNorm(const std::string& name, const at::Tensor& x, double eps) const = 0;
  // Whether `name.weight` exists (optional layers such as BERT's pooler).
  virtual bool Has(const std::string& name) const = 0;
};

// One weight set held by name ("<name>.weight", "<name>.bias"). Linear/Embedding/LayerNorm on a
// missing name throw c10::Error naming it; models check their names once at load (Get/Has).
class DenseParams : public LayerParams {
 public:
  explicit DenseParams(std::map<std::string, at::Tensor> tensors);

  at::Tensor Linear(const std::string& name, const at::Tensor& x) const override;
  // One GEMM when the weights are consecutive rows of one buffer (and so are the biases, or
  // none has one), as TwinWeights::GroupLinears leaves theta*'s; else one per name.
  std::vector<at::Tensor> Linears(const std::vector<std::string>& names,
                                  const at::Tensor& x) const override;
  at::Tensor Embedding(const std::string& name, const at::Tensor& ids) const override;
  at::Tensor LayerNorm(const std::string& name, const at::Tensor& x, double eps) const override;
  at::Tensor RmsNorm(const std::string& name, const at::Tensor& x, double eps) const override;
  bool Has(const std::string& name) const override;

  // The tensor `full_name` ("<name>.weight"), or NOT_FOUND naming it.
  absl::StatusOr<at::Tensor> Get(const std::string& full_name) const;
  const std::map<std::string, at::Tensor>& tensors() const { return tensors_; }

 private:
  const at::Tensor& Require(const std::string& full_name) const;
  std::map<std::string, at::Tensor> tensors_;
};

// x / sqrt(mean(x^2) + eps) over the last dimension: RMSNorm before its weight.
at::Tensor RmsNormalize(const at::Tensor& x, double eps);

}  // namespace twin

#endif  // TWIN_CORE_MODEL_LAYER_PARAMS_H_
