// BERT (Devlin et al., 2019) as transformers' BertModel / BertForSequenceClassification: the
// shared encoder (hf_encoder.h) with positions 0..L-1, the pooler tanh(pooler.dense(h[:, 0]))
// as the features, and the head `classifier` on them.
//
// Thread-safety: immutable; every method may run concurrently.
#ifndef TWIN_CORE_MODEL_BERT_H_
#define TWIN_CORE_MODEL_BERT_H_

#include "core/model/hf_encoder.h"

namespace twin {

class BertModel final : public HfEncoder {
 public:
  // `config.family` must be kBert (HfEncoder::Create chooses).
  explicit BertModel(const HfEncoderConfig& config);

 private:
  at::Tensor PositionIds(const at::Tensor& input_ids) const override;
  at::Tensor Pool(const at::Tensor& hidden, const LayerParams& body) const override;
  at::Tensor Head(const at::Tensor& features, const LayerParams& head) const override;
};

}  // namespace twin

#endif  // TWIN_CORE_MODEL_BERT_H_
