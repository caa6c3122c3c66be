// Native Hugging Face encoders (BERT, RoBERTa, XLM-RoBERTa): the engine owns the layers, so a
// forward can take its weights from any LayerParams (one dense weight set, or per-row mixtures
// of the twin factors). An HfEncoder holds the architecture only; weights come with each call.
//
// The forward is transformers' eval-mode forward:
//   embeddings = LayerNorm(word[ids] + token_type[0] + position[pos]), with pos = 0..L-1 (BERT)
//     or padding_idx + cumsum(ids != padding_idx) * (ids != padding_idx) (RoBERTa/XLM-R), so pad
//     tokens take position padding_idx;
//   each layer (post-LN): a = LayerNorm(h + O(softmax(Q K^T / sqrt(head_dim) + bias) V)),
//     h' = LayerNorm(a + W2 act(W1 a)), with bias = (1 - mask) * float32 lowest per key;
//   features (Embed): BERT tanh(pooler.dense(h[:, 0])) (the pooler is body, merged);
//     RoBERTa/XLM-R h[:, 0];
//   head (Classify, `classifier.*`, per task): BERT classifier(features); RoBERTa/XLM-R
//     classifier.out_proj(tanh(classifier.dense(features))).
// Families: bert.h, roberta.h. Each method validates its inputs, runs under
// c10::InferenceMode and returns LibTorch errors as a Status naming the family.
//
//   ASSIGN_OR_RETURN(HfModel model, LoadHfModel("/models/roberta-sst2"));
//   DenseParams body(model.body), head(model.head);
//   ASSIGN_OR_RETURN(at::Tensor logits, model.encoder->Forward(ids, mask, body, head));
//
// Multi-stage merging splits the forward at a layer k: Prefix() runs the embeddings and the
// first k layers, and a forward given that hidden state (HfStart) continues from layer k. The
// result equals the whole forward when `body` and the prefix's weights agree on every tensor
// of those layers (the twins start at layer k, so every mixture shares theta*'s prefix).
//
//   ASSIGN_OR_RETURN(at::Tensor h, encoder->Prefix(ids, mask, shared, k));  // routes on it
//   ASSIGN_OR_RETURN(at::Tensor f, encoder->Embed(ids, mask, mixed, {k, h}));
//
// Thread-safety: immutable after Create; every method may run concurrently.
#ifndef TWIN_CORE_MODEL_HF_ENCODER_H_
#define TWIN_CORE_MODEL_HF_ENCODER_H_

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "core/model/hf_checkpoint.h"
#include "core/model/hf_config.h"
#include "core/model/layer_params.h"

namespace twin {

// Parameters matching this belong to one task's head and are never merged.
inline constexpr char kHfHeadPrefix[] = "classifier.";

// Where a forward starts: from the embeddings (no hidden state), or from the hidden states
// [B, L, d] that Prefix(ids, mask, ..., layers) returned for the same ids and mask.
struct HfStart {
  int64_t layers = 0;
  at::Tensor hidden;
};

class HfEncoder {
 public:
  // The family's model for `config`.
  static absl::StatusOr<std::unique_ptr<HfEncoder>> Create(const HfEncoderConfig& config);
  virtual ~HfEncoder() = default;

  // input_ids int64 [B, L] in [0, vocab_size()), 1 <= L <= max_input_length();
  // attention_mask [B, L], 1 for tokens and 0 for padding.
  // Final hidden states [B, L, d].
  absl::StatusOr<at::Tensor> Hidden(const at::Tensor& input_ids, const at::Tensor& attention_mask,
                                    const LayerParams& body, const HfStart& start = {}) const;
  // Pooled features [B, d].
  absl::StatusOr<at::Tensor> Embed(const at::Tensor& input_ids, const at::Tensor& attention_mask,
                                   const LayerParams& body, const HfStart& start = {}) const;
  // The hidden states [B, L, d] after the embeddings and the first `layers` layers,
  // 0 <= layers <= num_hidden_layers.
  absl::StatusOr<at::Tensor> Prefix(const at::Tensor& input_ids, const at::Tensor& attention_mask,
                                    const LayerParams& body, int64_t layers) const;
  // The head on features [B, d] -> logits [B, num_labels]; FAILED_PRECONDITION for a bare model.
  absl::StatusOr<at::Tensor> Classify(const at::Tensor& features, const LayerParams& head) const;
  // Classify(Embed(...)).
  absl::StatusOr<at::Tensor> Forward(const at::Tensor& input_ids, const at::Tensor& attention_mask,
                                     const LayerParams& body, const LayerParams& head,
                                     const HfStart& start = {}) const;

  // The stage of the forward that reads body tensor `name`: -1 the embeddings, i layer i,
  // num_hidden_layers what follows the layers (BERT's pooler). A name outside body_names() is
  // num_hidden_layers too.
  int64_t StageOf(const std::string& name) const;

  const HfEncoderConfig& config() const { return config_; }
  const char* family_name() const { return HfFamilyName(config_.family); }
  // Every tensor the model reads, with its shape, and the checkpoint names to normalise/ignore.
  const HfTensorSpec& tensor_spec() const { return spec_; }
  // Full tensor names ("bert.encoder.layer.0.output.dense.weight"), sorted; head = kHfHeadPrefix.
  const std::vector<std::string>& body_names() const { return body_names_; }
  const std::vector<std::string>& head_names() const { return head_names_; }
  int64_t vocab_size() const { return config_.vocab_size; }
  // The longest input whose positions exist in the position table.
  int64_t max_input_length() const { return max_input_length_; }

 protected:
  // `family_tensors`: the tensors beyond the shared embeddings and layers (pooler, head);
  // `reserved_positions`: position rows no token can take (RoBERTa: padding_idx + 1).
  HfEncoder(HfEncoderConfig config, std::string prefix,
            std::map<std::string, std::vector<int64_t>> family_tensors,
            std::vector<std::string> ignored_prefixes, int64_t reserved_positions);

  // The family's parts; they throw c10::Error, which the public methods turn into a Status.
  virtual at::Tensor PositionIds(const at::Tensor& input_ids) const = 0;
  virtual at::Tensor Pool(const at::Tensor& hidden, const LayerParams& body) const = 0;
  virtual at::Tensor Head(const at::Tensor& features, const LayerParams& head) const = 0;

  const std::string& prefix() const { return spec_.prefix; }

 private:
  absl::Status CheckInputs(const at::Tensor& input_ids, const at::Tensor& attention_mask) const;
  absl::Status CheckStart(const at::Tensor& input_ids, const HfStart& start) const;
  // The embeddings (unless `start` has a hidden state) and layers start.layers .. end - 1:
  // [B, L, d].
  at::Tensor Encode(const at::Tensor& input_ids, const at::Tensor& attention_mask,
                    const LayerParams& body, const HfStart& start, int64_t end) const;
  at::Tensor Layer(const std::string& name, const at::Tensor& h, const at::Tensor& bias,
                   const LayerParams& body) const;
  at::Tensor SelfAttention(const std::string& name, const at::Tensor& h, const at::Tensor& bias,
                           const LayerParams& body) const;
  at::Tensor Activation(const at::Tensor& x) const;
  absl::Status Failed(const char* method, const std::exception& e) const;

  HfEncoderConfig config_;
  HfTensorSpec spec_;
  std::vector<std::string> body_names_;
  std::vector<std::string> head_names_;
  int64_t max_input_length_ = 0;
};

// A model directory loaded: the architecture and its weights, split into body and head.
struct HfModel {
  std::unique_ptr<HfEncoder> encoder;
  std::map<std::string, at::Tensor> body;  // encoder->body_names()
  std::map<std::string, at::Tensor> head;  // encoder->head_names(); empty for a bare model
  std::vector<std::string> ignored;        // harmless checkpoint tensors not read
};

// The router's input from a prefix's hidden states [B, L, d]: the mean over the tokens that
// `attention_mask` [B, L] keeps, float32 [B, d].
absl::StatusOr<at::Tensor> MeanPool(const at::Tensor& hidden, const at::Tensor& attention_mask);

// config.json + model.safetensors (or its shards) from `dir`; see hf_checkpoint.h.
absl::StatusOr<HfModel> LoadHfModel(const std::string& dir);
// Whether `path` is a Hugging Face model directory (it holds a config.json).
bool IsHfModelDir(const std::string& path);

}  // namespace twin

#endif  // TWIN_CORE_MODEL_HF_ENCODER_H_
