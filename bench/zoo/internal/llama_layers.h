// The layers of the generative zoo's Llama (llama_byte_model.h), as torch::nn modules whose
// registered names are the checkpoint's: LlamaBody is "model." of LlamaForCausalLM.
//
// Thread-safety: modules must not be shared across threads while training.
#ifndef TWIN_BENCH_ZOO_INTERNAL_LLAMA_LAYERS_H_
#define TWIN_BENCH_ZOO_INTERNAL_LLAMA_LAYERS_H_

#include <torch/torch.h>

#include <cstdint>
#include <vector>

#include "core/model/hf_decoder_config.h"

namespace twin::zoo::internal {

// RMSNorm with a learned scale: weight * x / sqrt(mean(x^2) + eps), core/model's formula.
class LlamaRmsNormImpl : public torch::nn::Module {
 public:
  LlamaRmsNormImpl(int64_t dim, double eps);
  at::Tensor forward(const at::Tensor& x);

 private:
  at::Tensor weight_;
  double eps_;
};
TORCH_MODULE(LlamaRmsNorm);

class LlamaAttentionImpl : public torch::nn::Module {
 public:
  explicit LlamaAttentionImpl(const HfDecoderConfig& config);
  // x [B, L, dim]; cos, sin [L, head_dim] (the rotary angles of positions 0..L-1).
  at::Tensor forward(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin);

 private:
  int64_t heads_, kv_heads_, head_dim_;
  torch::nn::Linear q_proj_{nullptr}, k_proj_{nullptr}, v_proj_{nullptr}, o_proj_{nullptr};
};
TORCH_MODULE(LlamaAttention);

class LlamaMlpImpl : public torch::nn::Module {
 public:
  explicit LlamaMlpImpl(const HfDecoderConfig& config);
  at::Tensor forward(const at::Tensor& x);

 private:
  torch::nn::Linear gate_proj_{nullptr}, up_proj_{nullptr}, down_proj_{nullptr};
};
TORCH_MODULE(LlamaMlp);

class LlamaDecoderLayerImpl : public torch::nn::Module {
 public:
  explicit LlamaDecoderLayerImpl(const HfDecoderConfig& config);
  at::Tensor forward(const at::Tensor& h, const at::Tensor& cos, const at::Tensor& sin);

 private:
  LlamaRmsNorm input_layernorm_{nullptr}, post_attention_layernorm_{nullptr};
  LlamaAttention self_attn_{nullptr};
  LlamaMlp mlp_{nullptr};
};
TORCH_MODULE(LlamaDecoderLayer);

// LlamaModel: embeddings, layers and the final norm ("model." in the checkpoint).
class LlamaBodyImpl : public torch::nn::Module {
 public:
  // inv_freq: the rotary inverse frequencies [head_dim / 2] (HfDecoder::inv_freq).
  LlamaBodyImpl(const HfDecoderConfig& config, at::Tensor inv_freq);
  // The final normalised hidden states [B, L, dim] of ids [B, L] at positions 0..L-1.
  at::Tensor forward(const at::Tensor& ids);
  const at::Tensor& embedding() const { return embed_tokens_->weight; }

 private:
  at::Tensor inv_freq_;
  torch::nn::Embedding embed_tokens_{nullptr};
  std::vector<LlamaDecoderLayer> layers_;  // registered as the ModuleList "layers"
  LlamaRmsNorm norm_{nullptr};
};
TORCH_MODULE(LlamaBody);

}  // namespace twin::zoo::internal

#endif  // TWIN_BENCH_ZOO_INTERNAL_LLAMA_LAYERS_H_
