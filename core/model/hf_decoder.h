// Native Hugging Face causal language models of the Llama architecture (Llama, Qwen2, Mistral):
// the engine owns the layers, so a forward takes its weights from any LayerParams (one dense
// weight set, or per-row mixtures of the twin factors: rows are sequences, so sequences with
// different router weights decode in one batch). An HfDecoder holds the architecture only.
//
// The forward is transformers' eval-mode forward of *ForCausalLM:
//   h = embed_tokens[ids];
//   each layer (pre-norm): h += o_proj(attention(RMSNorm(h))), h += down(act(gate(x)) * up(x))
//     with x = RMSNorm(h); RMSNorm(x) = weight * x / sqrt(mean(x^2) + eps);
//   attention: q, k, v projections (biases per family), rotary embeddings on q and k (the
//     rotate-half form, inv_freq = 1 / theta^(2i / head_dim), rescaled per rope_scaling),
//     grouped-query (query head i reads key/value head i / kv_group), softmax(q k^T /
//     sqrt(head_dim)) over the keys at or before the query's position (and, with a sliding
//     window W, after position - W);
//   logits = lm_head(RMSNorm(h)), lm_head = embed_tokens when tie_word_embeddings.
//
// Sequences keep their keys and values in a KvCache. Extend() appends n_b >= 1 tokens to each
// sequence b of a batch, whatever its cache already holds: a prompt (prefill), one token
// (decode), a chunk of a long prompt, or a mix of these in one batch (iteration-level
// batching); the projections run batched over [B, max n_b] padded rows, attention per sequence
// over its own cache.
//
//   ASSIGN_OR_RETURN(HfCausalLm lm, LoadHfCausalLm("/models/qwen2-tiny"));
//   DenseParams params(lm.weights);
//   ASSIGN_OR_RETURN(KvCache cache, lm.decoder->NewCache(/*capacity=*/256));
//   ASSIGN_OR_RETURN(at::Tensor logits, lm.decoder->Extend({prompt}, params, {&cache}));
//   // logits [1, vocab] for the token after the prompt; then Extend({{next}}, ...) per token
//
// Thread-safety: an HfDecoder is immutable after Create and every method may run concurrently;
// a KvCache belongs to one sequence and is written by the Extend that holds it.
#ifndef TWIN_CORE_MODEL_HF_DECODER_H_
#define TWIN_CORE_MODEL_HF_DECODER_H_

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "core/model/hf_checkpoint.h"
#include "core/model/hf_decoder_config.h"
#include "core/model/layer_params.h"

namespace twin {

// One sequence's keys and values: per layer [num_key_value_heads, capacity, head_dim], float32,
// allocated in full when made, so that memory is bounded by capacity and reserved up front.
class KvCache {
 public:
  KvCache() = default;
  KvCache(KvCache&&) = default;
  KvCache& operator=(KvCache&&) = default;

  // Positions filled (prompt and generated tokens so far).
  int64_t length() const { return length_; }
  int64_t capacity() const { return capacity_; }
  // Bytes held (keys and values of every layer at full capacity).
  int64_t bytes() const;
  // Empties the cache for reuse by another sequence (its memory is kept).
  void Clear() { length_ = 0; }

 private:
  friend class HfDecoder;
  std::vector<at::Tensor> keys_;    // per layer
  std::vector<at::Tensor> values_;  // per layer
  int64_t length_ = 0;
  int64_t capacity_ = 0;
};

class HfDecoder {
 public:
  static absl::StatusOr<std::unique_ptr<HfDecoder>> Create(const HfDecoderConfig& config);
  ~HfDecoder();

  // A cache for one sequence of up to `capacity` positions, 1 <= capacity <=
  // max_position_embeddings.
  absl::StatusOr<KvCache> NewCache(int64_t capacity) const;
  // Bytes of a cache of `capacity` positions.
  int64_t CacheBytes(int64_t capacity) const;

  // Appends tokens[b] (non-empty, ids in [0, vocab_size)) to caches[b] for every sequence b and
  // returns the logits after each sequence's last new token, [B, vocab_size]; with
  // `all_logits`, the logits after every new token, [B, max_b |tokens[b]|, vocab_size] (rows
  // past a sequence's own count are zero). Rows of `params` are the sequences, in order.
  // INVALID_ARGUMENT (nothing written) when a cache would overflow its capacity, an id is out of
  // range, or the same cache appears twice.
  absl::StatusOr<at::Tensor> Extend(const std::vector<std::vector<int64_t>>& tokens,
                                    const LayerParams& params, const std::vector<KvCache*>& caches,
                                    bool all_logits = false) const;

  // The logits after every token of each sequence, computed from scratch with no cache kept:
  // [B, max |tokens[b]|, vocab_size].
  absl::StatusOr<at::Tensor> Logits(const std::vector<std::vector<int64_t>>& tokens,
                                    const LayerParams& params) const;

  const HfDecoderConfig& config() const { return config_; }
  const char* family_name() const { return HfDecoderFamilyName(config_.family); }
  const HfTensorSpec& tensor_spec() const { return spec_; }
  // Every tensor the model reads, sorted ("model.layers.0.mlp.up_proj.weight", ...).
  const std::vector<std::string>& names() const { return names_; }
  // The weights each layer reads from one input, by full name: its q/k/v projections and its
  // gate/up projections (TwinWeights::GroupLinears packs them; the forward asks for each
  // group through LayerParams::Linears).
  std::vector<std::vector<std::string>> linear_groups() const;
  int64_t vocab_size() const { return config_.vocab_size; }
  int64_t max_positions() const { return config_.max_position_embeddings; }
  // The rotary inverse frequencies [head_dim / 2], float32, after rope_scaling.
  const at::Tensor& inv_freq() const;

 private:
  explicit HfDecoder(HfDecoderConfig config);
  struct State;

  // The attention of layer `l` for the normalised hidden states x [B, n, d] of new tokens at
  // positions start[b] + j, whose rotary cos and sin are [B, 1, n, head_dim]; writes their keys
  // and values into the caches.
  at::Tensor Attention(int64_t l, const at::Tensor& x, const std::vector<int64_t>& counts,
                       const std::vector<int64_t>& starts, const at::Tensor& cos,
                       const at::Tensor& sin, const LayerParams& params,
                       const std::vector<KvCache*>& caches) const;
  at::Tensor Activation(const at::Tensor& x) const;
  absl::Status Failed(const char* method, const std::exception& e) const;

  HfDecoderConfig config_;
  HfTensorSpec spec_;
  std::vector<std::string> names_;
  std::unique_ptr<State> state_;
};

// A causal LM directory loaded: the architecture and its weights.
struct HfCausalLm {
  std::unique_ptr<HfDecoder> decoder;
  std::map<std::string, at::Tensor> weights;  // decoder->names()
  std::vector<std::string> ignored;           // harmless checkpoint tensors not read
};

// config.json + model.safetensors (or its shards) from `dir`; see hf_checkpoint.h.
absl::StatusOr<HfCausalLm> LoadHfCausalLm(const std::string& dir);

// The tensor names of a tied or untied LM head.
inline constexpr char kHfEmbedTokens[] = "model.embed_tokens";
inline constexpr char kHfLmHead[] = "lm_head";

}  // namespace twin

#endif  // TWIN_CORE_MODEL_HF_DECODER_H_
