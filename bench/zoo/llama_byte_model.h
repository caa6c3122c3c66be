// The generative zoo's model: a small Llama causal LM over bytes, as a differentiable torch::nn
// module whose parameters carry Hugging Face's names, trained here and written as a model
// directory that transformers, the merge job and the native engine (core/model/hf_decoder.h)
// all read.
//
// Ids: byte b is id b; then <|endoftext|> 256 (eos, and the end of a pretraining text),
// <|begin_of_text|> 257 (bos, which the tokenizer's TemplateProcessing puts before every text)
// and <|pad|> 258. The tokenizer is a byte-level BPE without merges (byte_bpe.h), so every byte
// is one token and the served tokenizer and the one that made the training data are one file.
//
// Model (LlamaForCausalLM, transformers' eval-mode forward, no dropout):
//   h = embed_tokens[ids]; per layer: h += o_proj(attention(RMSNorm(h))),
//   h += down_proj(silu(gate_proj(x)) * up_proj(x)) with x = RMSNorm(h);
//   logits = embed_tokens(RMSNorm(h))^T (tied; lm_head when untied).
//   Attention: causal, rotary embeddings on q and k (rotate-half, the native engine's inverse
//   frequencies), grouped-query when kv_heads < heads, no biases.
// Parameter names: model.embed_tokens.weight, model.layers.<i>.input_layernorm.weight,
// model.layers.<i>.self_attn.{q,k,v,o}_proj.weight, model.layers.<i>.post_attention_layernorm
// .weight, model.layers.<i>.mlp.{gate,up,down}_proj.weight, model.norm.weight (+ lm_head.weight
// when untied): the checkpoint's names, so writing is a dump of named_parameters().
//
//   ASSIGN_OR_RETURN(HfDecoderConfig config, ByteLlamaConfig(options));
//   ASSIGN_OR_RETURN(ByteLlama model, MakeByteLlama(config, /*seed=*/7));
//   ASSIGN_OR_RETURN(TrainStats s, TrainNextToken(model, rows, train_options, "pretraining"));
//   RETURN_IF_ERROR(SaveByteLlama(model, options, "out/base"));
//
// Thread-safety: free functions; a module must not be shared across threads while training.
#ifndef TWIN_BENCH_ZOO_LLAMA_BYTE_MODEL_H_
#define TWIN_BENCH_ZOO_LLAMA_BYTE_MODEL_H_

#include <torch/torch.h>

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "bench/zoo/byte_transformer.h"
#include "bench/zoo/internal/llama_layers.h"
#include "core/model/hf_decoder_config.h"

namespace twin::zoo {

inline constexpr int64_t kLlamaEosId = 256;  // <|endoftext|>
inline constexpr int64_t kLlamaBosId = 257;  // <|begin_of_text|>
inline constexpr int64_t kLlamaPadId = 258;  // <|pad|>
inline constexpr int64_t kLlamaVocab = 259;
// Labels of positions that predict nothing (cross-entropy's ignore_index).
inline constexpr int64_t kNoLabel = -100;

struct ByteLlamaOptions {
  int64_t layers = 2;
  int64_t dim = 64;
  int64_t heads = 4;     // must divide dim
  int64_t kv_heads = 2;  // must divide heads; < heads is grouped-query attention
  int64_t ff_dim = 128;  // SwiGLU width (gate_proj, up_proj)
  int64_t max_len = 96;  // max_position_embeddings: bos, prompt, target and eos together
  double rope_theta = 10000.0;
  double rms_norm_eps = 1e-6;
  bool tie_word_embeddings = true;
};

// config.json (llama, LlamaForCausalLM, bos/eos/pad ids, float32).
std::string ByteLlamaConfigJson(const ByteLlamaOptions& options);
// That file parsed as the native loader parses it, so the module trained is the one written.
absl::StatusOr<HfDecoderConfig> ByteLlamaConfig(const ByteLlamaOptions& options);
// tokenizer.json (bytes, the three specials, TemplateProcessing "<|begin_of_text|> $A").
std::string ByteLlamaTokenizerJson();
// tokenizer_config.json: PreTrainedTokenizerFast, bos/eos/pad tokens, model_max_length.
std::string ByteLlamaTokenizerConfigJson(const ByteLlamaOptions& options);

class ByteLlamaImpl : public torch::nn::Module {
 public:
  // Built by MakeByteLlama, which checks the config and takes inv_freq from the native engine.
  ByteLlamaImpl(const HfDecoderConfig& config, at::Tensor inv_freq);
  // Logits [B, L, vocab] after every position of ids [B, L]. Attention is causal, so padding
  // after a row's tokens does not change the logits of the tokens before it.
  at::Tensor forward(const at::Tensor& ids);
  const HfDecoderConfig& config() const { return config_; }

 private:
  HfDecoderConfig config_;
  internal::LlamaBody model_{nullptr};
  torch::nn::Linear lm_head_{nullptr};  // untied only
};
TORCH_MODULE(ByteLlama);

// A model for `config` (a causal LM config without biases or sliding window), initialised as
// transformers initialises Llama (normal(0, 0.02) matrices, unit norms) from `seed`, with the
// residual branches' output projections scaled down by sqrt(2 * layers).
absl::StatusOr<ByteLlama> MakeByteLlama(const HfDecoderConfig& config, uint64_t seed);
// A new model with `trained`'s config and a copy of its weights (an expert's starting point).
absl::StatusOr<ByteLlama> CopyByteLlama(const ByteLlama& trained);

// Next-token training: data.input_ids [N, L] (padded), attention_mask [N, L], labels [N, L]
// (the id each position predicts, kNoLabel where none: the prompt and padding), cross-entropy
// averaged over the labelled positions of a batch; TrainParameters' loop and options.
absl::StatusOr<TrainStats> TrainNextToken(ByteLlama& model, const TokenizedExamples& data,
                                          const TrainOptions& options, const std::string& what);

// Writes tokenizer.json and tokenizer_config.json into `dir` (created if needed).
absl::Status WriteByteLlamaTokenizer(const ByteLlamaOptions& options, const std::string& dir);

// Writes `dir` (created if needed) as a Hugging Face model directory: config.json,
// model.safetensors (named_parameters, float32), tokenizer.json, tokenizer_config.json; each
// file replaced atomically. Errors name the file.
absl::Status SaveByteLlama(const ByteLlama& model, const ByteLlamaOptions& options,
                           const std::string& dir);

}  // namespace twin::zoo

#endif  // TWIN_BENCH_ZOO_LLAMA_BYTE_MODEL_H_
