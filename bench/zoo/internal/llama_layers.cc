#include "bench/zoo/internal/llama_layers.h"

#include <cmath>
#include <limits>

#include "core/model/layer_params.h"

namespace twin::zoo::internal {
namespace {

torch::nn::Linear Projection(int64_t in, int64_t out) {
  return torch::nn::Linear(torch::nn::LinearOptions(in, out).bias(false));
}

// x * cos + rotate_half(x) * sin, rotate_half([x1, x2]) = [-x2, x1] over the last dimension's
// halves: transformers' (and the native engine's) rotary form.
at::Tensor Rotate(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) {
  const int64_t half = x.size(-1) / 2;
  const at::Tensor rotated = torch::cat({-x.narrow(-1, half, half), x.narrow(-1, 0, half)}, -1);
  return x * cos + rotated * sin;
}

}  // namespace

LlamaRmsNormImpl::LlamaRmsNormImpl(int64_t dim, double eps) : eps_(eps) {
  weight_ = register_parameter("weight", torch::ones({dim}));
}

at::Tensor LlamaRmsNormImpl::forward(const at::Tensor& x) {
  return weight_ * RmsNormalize(x, eps_);
}

LlamaAttentionImpl::LlamaAttentionImpl(const HfDecoderConfig& c)
    : heads_(c.num_attention_heads), kv_heads_(c.num_key_value_heads), head_dim_(c.head_dim) {
  q_proj_ = register_module("q_proj", Projection(c.hidden_size, heads_ * head_dim_));
  k_proj_ = register_module("k_proj", Projection(c.hidden_size, kv_heads_ * head_dim_));
  v_proj_ = register_module("v_proj", Projection(c.hidden_size, kv_heads_ * head_dim_));
  o_proj_ = register_module("o_proj", Projection(heads_ * head_dim_, c.hidden_size));
}

at::Tensor LlamaAttentionImpl::forward(const at::Tensor& x, const at::Tensor& cos,
                                       const at::Tensor& sin) {
  const int64_t batch = x.size(0), n = x.size(1);
  // [B, n, h * head_dim] -> [B, h, n, head_dim]
  auto split = [&](const at::Tensor& t, int64_t h) {
    return t.view({batch, n, h, head_dim_}).transpose(1, 2);
  };
  const at::Tensor q = Rotate(split(q_proj_(x), heads_), cos, sin);
  // Query head i reads key/value head i / (heads / kv_heads).
  const int64_t group = heads_ / kv_heads_;
  const at::Tensor k = Rotate(split(k_proj_(x), kv_heads_), cos, sin).repeat_interleave(group, 1);
  const at::Tensor v = split(v_proj_(x), kv_heads_).repeat_interleave(group, 1);
  const double scale = 1.0 / std::sqrt(static_cast<double>(head_dim_));
  const at::Tensor hidden = torch::ones({n, n}, torch::kBool).triu(1);  // keys after the query
  const at::Tensor scores = (torch::matmul(q, k.transpose(-1, -2)) * scale)
                                .masked_fill(hidden, std::numeric_limits<float>::lowest());
  const at::Tensor context = torch::matmul(torch::softmax(scores, -1), v);
  return o_proj_(context.transpose(1, 2).reshape({batch, n, heads_ * head_dim_}));
}

LlamaMlpImpl::LlamaMlpImpl(const HfDecoderConfig& c) {
  gate_proj_ = register_module("gate_proj", Projection(c.hidden_size, c.intermediate_size));
  up_proj_ = register_module("up_proj", Projection(c.hidden_size, c.intermediate_size));
  down_proj_ = register_module("down_proj", Projection(c.intermediate_size, c.hidden_size));
}

at::Tensor LlamaMlpImpl::forward(const at::Tensor& x) {
  return down_proj_(torch::silu(gate_proj_(x)) * up_proj_(x));
}

LlamaDecoderLayerImpl::LlamaDecoderLayerImpl(const HfDecoderConfig& c) {
  input_layernorm_ =
      register_module("input_layernorm", LlamaRmsNorm(c.hidden_size, c.rms_norm_eps));
  self_attn_ = register_module("self_attn", LlamaAttention(c));
  post_attention_layernorm_ =
      register_module("post_attention_layernorm", LlamaRmsNorm(c.hidden_size, c.rms_norm_eps));
  mlp_ = register_module("mlp", LlamaMlp(c));
}

at::Tensor LlamaDecoderLayerImpl::forward(const at::Tensor& h, const at::Tensor& cos,
                                          const at::Tensor& sin) {
  const at::Tensor a = h + self_attn_(input_layernorm_(h), cos, sin);
  return a + mlp_(post_attention_layernorm_(a));
}

LlamaBodyImpl::LlamaBodyImpl(const HfDecoderConfig& c, at::Tensor inv_freq)
    : inv_freq_(std::move(inv_freq)) {
  embed_tokens_ =
      register_module("embed_tokens", torch::nn::Embedding(c.vocab_size, c.hidden_size));
  torch::nn::ModuleList list;
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    layers_.push_back(LlamaDecoderLayer(c));
    list->push_back(layers_.back());
  }
  register_module("layers", list);
  norm_ = register_module("norm", LlamaRmsNorm(c.hidden_size, c.rms_norm_eps));
}

at::Tensor LlamaBodyImpl::forward(const at::Tensor& ids) {
  const int64_t n = ids.size(1);
  const at::Tensor angles =
      torch::arange(n, torch::kLong).to(torch::kFloat).unsqueeze(-1) * inv_freq_;
  const at::Tensor emb = torch::cat({angles, angles}, -1);  // [n, head_dim]
  const at::Tensor cos = emb.cos(), sin = emb.sin();
  at::Tensor h = embed_tokens_(ids);
  for (auto& layer : layers_) h = layer(h, cos, sin);
  return norm_(h);
}

}  // namespace twin::zoo::internal
