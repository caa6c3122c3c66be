// The byte-level benchmark model in Hugging Face form: a RoBERTa encoder over a byte
// vocabulary, trained with the loops of byte_transformer.h and written as a model directory that
// transformers, the merge job and the native engine (core/model/hf_encoder.h) all read.
//
// Ids (RoBERTa's conventions, bytes for words): <s> 0, <pad> 1, </s> 2, <unk> 3, byte b ->
// kByteOffset + b; a text is <s> bytes </s>, cut to max_len ids. The tokenizer that produces
// them is a byte-level BPE without merges (HfByteTokenizerJson), so the served tokenizer and
// the one that made the training data are one file.
//
// Model: RobertaForSequenceClassification (post-LN, learned positions after the padding offset,
// gelu, head classifier.dense + tanh + classifier.out_proj on <s>) sized by
// ByteTransformerOptions (layers, dim, heads, ff_dim, max_len; dropout is not modelled:
// training runs without it). The trainable module is core/model/hf_script.h's TorchScript
// module, whose parameters carry the checkpoint names; for pretraining it also gets RoBERTa's
// lm_head (dense, gelu, layer_norm, decoder tied to the word embeddings, bias) and
// mlm_logits(ids, mask) -> [B, L, vocab], which PretrainMaskedBytes calls.
//
//   ASSIGN_OR_RETURN(HfEncoderConfig config, HfByteConfig(options, {"ham", "spam"}));
//   ASSIGN_OR_RETURN(auto encoder, MakeHfBytePretrainer(config, seed));
//   ASSIGN_OR_RETURN(TrainStats s, PretrainMaskedBytes(encoder, corpus, train));
//   ASSIGN_OR_RETURN(auto expert, MakeHfByteClassifier(encoder, config, seed));
//   ASSIGN_OR_RETURN(TrainStats f, FineTune(expert, examples, train));
//   RETURN_IF_ERROR(SaveHfByteModel(expert, options, config.labels, "out/spam"));
//
// Thread-safety: free functions; a module must not be shared across threads while training.
#ifndef TWIN_BENCH_ZOO_HF_BYTE_MODEL_H_
#define TWIN_BENCH_ZOO_HF_BYTE_MODEL_H_

#include <torch/script.h>

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "bench/zoo/byte_transformer.h"
#include "core/model/hf_config.h"

namespace twin::zoo {

inline constexpr int64_t kHfBosId = 0;  // <s>, also the classification token
inline constexpr int64_t kHfPadId = 1;  // <pad>, RoBERTa's padding_idx
inline constexpr int64_t kHfEosId = 2;  // </s>
inline constexpr int64_t kHfUnkId = 3;  // <unk>; no text produces it, so pretraining masks with it
inline constexpr char kHfLmHeadPrefix[] = "lm_head.";

// config.json of the model (model_type roberta, RobertaForSequenceClassification, id2label
// from `labels`, max_position_embeddings = max_len + 2, type_vocab_size 1, eps 1e-5, pad 1).
std::string HfByteConfigJson(const ByteTransformerOptions& options,
                             const std::vector<std::string>& labels);
// That file parsed as the loader parses it (so the module trained is the one written).
absl::StatusOr<HfEncoderConfig> HfByteConfig(const ByteTransformerOptions& options,
                                             const std::vector<std::string>& labels);

// tokenizer.json: the specials as added tokens, ByteLevel pre-tokenizer without the GPT-2
// split, BPE over the 256 byte symbols (ids kByteOffset..) without merges, RobertaProcessing.
std::string HfByteTokenizerJson();
// tokenizer_config.json: the special tokens, RobertaTokenizerFast, model_max_length.
std::string HfByteTokenizerConfigJson(const ByteTransformerOptions& options);

// A randomly initialised encoder (BERT's initialisation: normal(0, 0.02) matrices, zero biases,
// unit LayerNorms) without the classifier, with the lm_head and mlm_logits.
absl::StatusOr<torch::jit::Module> MakeHfBytePretrainer(const HfEncoderConfig& config,
                                                        uint64_t seed);

// A classifier for `config` (with its labels) whose body is a copy of `trained`'s body (any
// module of this file) and whose head is freshly initialised from `seed`.
absl::StatusOr<torch::jit::Module> MakeHfByteClassifier(const torch::jit::Module& trained,
                                                        const HfEncoderConfig& config,
                                                        uint64_t seed);

// Writes tokenizer.json and tokenizer_config.json into `dir` (created if needed).
absl::Status WriteHfByteTokenizer(const ByteTransformerOptions& options, const std::string& dir);

// Writes `dir` (created if needed) as a Hugging Face model directory: config.json,
// model.safetensors (every parameter but the lm_head, with checkpoint names), tokenizer.json and
// tokenizer_config.json. Each file is replaced atomically. Errors name the file.
absl::Status SaveHfByteModel(const torch::jit::Module& module, const ByteTransformerOptions& options,
                             const std::vector<std::string>& labels, const std::string& dir);

}  // namespace twin::zoo

#endif  // TWIN_BENCH_ZOO_HF_BYTE_MODEL_H_
