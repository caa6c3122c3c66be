#include "core/model/roberta.h"

#include <ATen/ATen.h>

namespace twin {
namespace {

std::map<std::string, std::vector<int64_t>> RobertaTensors(const HfEncoderConfig& c) {
  const int64_t d = c.hidden_size;
  std::map<std::string, std::vector<int64_t>> t;
  if (c.has_classifier) {
    t["classifier.dense.weight"] = {d, d};
    t["classifier.dense.bias"] = {d};
    t["classifier.out_proj.weight"] = {c.num_labels(), d};
    t["classifier.out_proj.bias"] = {c.num_labels()};
  }
  return t;
}

}  // namespace

at::Tensor RobertaPositionIds(const at::Tensor& input_ids, int64_t padding_idx) {
  const at::Tensor real = input_ids.ne(padding_idx).to(at::kLong);
  return at::cumsum(real, 1) * real + padding_idx;
}

// Ignored: the bare model's pooler (unused by the classification model) and the masked-LM head
// of a pretrained checkpoint. Positions 0..padding_idx are never taken by a token.
RobertaModel::RobertaModel(const HfEncoderConfig& config)
    : HfEncoder(config, "roberta.", RobertaTensors(config), {"roberta.pooler.", "lm_head."},
                /*reserved_positions=*/config.pad_token_id + 1) {}

at::Tensor RobertaModel::PositionIds(const at::Tensor& input_ids) const {
  return RobertaPositionIds(input_ids, config().pad_token_id);
}

at::Tensor RobertaModel::Pool(const at::Tensor& hidden, const LayerParams& body) const {
  return hidden.select(1, 0);
}

at::Tensor RobertaModel::Head(const at::Tensor& features, const LayerParams& head) const {
  return head.Linear("classifier.out_proj", at::tanh(head.Linear("classifier.dense", features)));
}

}  // namespace twin
