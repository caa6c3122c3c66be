// Inputs of the merge job: model files opened as safetensors readers (TorchScript .pt files are
// converted once into the work directory so every model streams tensor by tensor), the
// structural checks across base and experts, and the router's labeled examples.
//
// Thread-safety: not thread-safe; used by one job.
#ifndef TWIN_MERGE_OFFLINE_INTERNAL_INPUTS_H_
#define TWIN_MERGE_OFFLINE_INTERNAL_INPUTS_H_

#include <memory>
#include <regex>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "core/io/safetensors.h"
#include "core/model/hf_config.h"
#include "core/model/hf_decoder_config.h"
#include "core/store/manifest.h"

namespace twin::merge_internal {

struct InputModel {
  std::string path;
  std::string sha256;
  std::unique_ptr<SafetensorsReader> reader;
  // A Hugging Face directory: its config (the weights were normalised into the reader's file).
  bool hf = false;
  HfEncoderConfig hf_config;
  // A Hugging Face causal LM directory (Llama, Qwen2, Mistral): hf is set too, hf_config unused.
  bool hf_decoder = false;
  HfDecoderConfig hf_decoder_config;
};

// Opens a .pt (converted under work_dir as <stem>.safetensors), a .safetensors model file, or
// a Hugging Face model directory (config.json + model.safetensors or shards; its tensors,
// normalised to the family's names, written under work_dir as <stem>.safetensors): an encoder
// (BERT, RoBERTa, XLM-R: body and head) or a causal LM (Llama, Qwen2, Mistral: the tensors
// the decoder reads, no lm_head when tied). The digest of a directory covers its config and
// weight files.
absl::StatusOr<InputModel> OpenInputModel(const std::string& path, const std::string& work_dir,
                                          const std::string& stem);

// Reads tensor `name` of `model`. With `check_finite` (the job checks each tensor the first
// time it reads it, and only then) NaN/Inf values are INVALID_ARGUMENT naming file and tensor.
absl::StatusOr<at::Tensor> ReadTensor(const InputModel& model, const std::string& name,
                                      bool check_finite);

struct ModelLayout {
  std::vector<std::string> merged;  // non-head tensors, in base order
  std::vector<std::string> head;    // head tensors, in base order
};

// Splits the base's tensors by the head pattern and checks every expert against the base:
// same tensor names, same shapes for every non-head tensor. Errors name file and tensor; with
// `require_head`, so is a pattern that matches no tensor (a causal LM may have no head).
absl::StatusOr<ModelLayout> CheckLayout(const InputModel& base,
                                        const std::vector<InputModel>& experts,
                                        const std::regex& head_pattern, bool require_head);

// The Hugging Face tokenizer files of `dir` that exist (tokenizer.json; tokenizer.model,
// spiece.model or sentencepiece.bpe.model when there is no tokenizer.json; vocab.txt,
// vocab.json, merges.txt, tokenizer_config.json, special_tokens_map.json, added_tokens.json),
// by name.
std::vector<std::string> HfTokenizerFiles(const std::string& dir);
// Checks that the experts' configs describe the same body as the base's (family and every
// structural field); errors name both files and the field.
absl::Status CheckSameHfBody(const InputModel& base, const std::vector<InputModel>& experts);
struct TokenExamples {
  at::Tensor input_ids;       // [N, L] int64
  at::Tensor attention_mask;  // [N, L] int64
};

// Loads .safetensors (input_ids, attention_mask) or text (.txt: one example a line, empty lines
// skipped) examples; at most `max_examples`, chosen by a seeded shuffle when there are more.
// `tokenizer_dir`: where an "hf" tokenizer's files are.
absl::StatusOr<TokenExamples> LoadRouterExamples(const std::string& path,
                                                 const TokenizerSpec& tokenizer,
                                                 int64_t max_examples, uint64_t seed,
                                                 const std::string& tokenizer_dir = "");

}  // namespace twin::merge_internal

#endif  // TWIN_MERGE_OFFLINE_INTERNAL_INPUTS_H_
