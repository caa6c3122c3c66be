// RoBERTa (Liu et al., 2019) and XLM-RoBERTa (Conneau et al., 2020) as transformers'
// RobertaModel / RobertaForSequenceClassification (XLM-R is the same code): the shared encoder
// (hf_encoder.h) with positions counted after padding_idx (RobertaPositionIds), h[:, 0] as the
// features (the classification model has no pooler), and the head
// classifier.out_proj(tanh(classifier.dense(features))).
//
// Thread-safety: immutable; every method may run concurrently.
#ifndef TWIN_CORE_MODEL_ROBERTA_H_
#define TWIN_CORE_MODEL_ROBERTA_H_

#include "core/model/hf_encoder.h"

namespace twin {

// transformers' create_position_ids_from_input_ids: padding_idx + the running count of
// non-pad tokens at each non-pad token, padding_idx at pad tokens. Positions depend on the ids,
// not on the attention mask. ids int64 [B, L] -> int64 [B, L].
at::Tensor RobertaPositionIds(const at::Tensor& input_ids, int64_t padding_idx);

class RobertaModel final : public HfEncoder {
 public:
  // `config.family` must be kRoberta or kXlmRoberta (HfEncoder::Create chooses).
  explicit RobertaModel(const HfEncoderConfig& config);

 private:
  at::Tensor PositionIds(const at::Tensor& input_ids) const override;
  at::Tensor Pool(const at::Tensor& hidden, const LayerParams& body) const override;
  at::Tensor Head(const at::Tensor& features, const LayerParams& head) const override;
};

}  // namespace twin

#endif  // TWIN_CORE_MODEL_ROBERTA_H_
