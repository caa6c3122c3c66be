#include "core/model/bert.h"

#include <ATen/ATen.h>

namespace twin {
namespace {

std::map<std::string, std::vector<int64_t>> BertTensors(const HfEncoderConfig& c) {
  const int64_t d = c.hidden_size;
  std::map<std::string, std::vector<int64_t>> t = {
      {"bert.pooler.dense.weight", {d, d}},
      {"bert.pooler.dense.bias", {d}},
  };
  if (c.has_classifier) {
    t["classifier.weight"] = {c.num_labels(), d};
    t["classifier.bias"] = {c.num_labels()};
  }
  return t;
}

}  // namespace

// "cls.": the pretraining heads (masked LM, next sentence) of a pretrained checkpoint.
BertModel::BertModel(const HfEncoderConfig& config)
    : HfEncoder(config, "bert.", BertTensors(config), {"cls."}, /*reserved_positions=*/0) {}

at::Tensor BertModel::PositionIds(const at::Tensor& input_ids) const {
  return at::arange(input_ids.size(1), input_ids.options()).unsqueeze(0).expand_as(input_ids);
}

at::Tensor BertModel::Pool(const at::Tensor& hidden, const LayerParams& body) const {
  return at::tanh(body.Linear(prefix() + "pooler.dense", hidden.select(1, 0)));
}

at::Tensor BertModel::Head(const at::Tensor& features, const LayerParams& head) const {
  return head.Linear("classifier", features);
}

}  // namespace twin
