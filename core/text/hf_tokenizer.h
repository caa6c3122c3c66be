// Hugging Face tokenizers loaded from a model directory, encoding text to ids the way the
// `tokenizers` library does: added/special tokens split out first, then normalizer,
// pre-tokenizer, model (WordPiece or byte-level BPE) and post-processor.
//
// Load(dir) reads, in this order of preference:
//   tokenizer.json                 normalizer: BertNormalizer, Lowercase, NFD, StripAccents,
//                                  Sequence; pre_tokenizer: BertPreTokenizer, ByteLevel,
//                                  WhitespaceSplit, Sequence; model: WordPiece, BPE;
//                                  post_processor: BertProcessing, RobertaProcessing,
//                                  TemplateProcessing, ByteLevel, Sequence; added_tokens;
//   vocab.txt                      BERT (tokenizer_config.json: do_lower_case, strip_accents,
//                                  tokenize_chinese_chars); [CLS] ... [SEP]
//   vocab.json + merges.txt        byte-level BPE; RoBERTa (<s> ... </s>) or GPT-2 (none) by
//                                  tokenizer_config.json's tokenizer_class, else RoBERTa when
//                                  the vocabulary has <s> and </s>; add_prefix_space
// and the special tokens (unk/cls/sep/pad/mask/bos/eos_token, additional_special_tokens) from
// tokenizer_config.json, overridden by special_tokens_map.json. Every named special token must
// be in the vocabulary.
//
//   ASSIGN_OR_RETURN(auto tok, HfTokenizer::Load("/models/bert-base-uncased"));
//   ASSIGN_OR_RETURN(HfEncoding e, tok->Encode("Hello, world!", {.max_length = 128}));
//   // e.ids == {101, 7592, 1010, 2088, 999, 102}, e.attention_mask == {1, 1, 1, 1, 1, 1}
//
// Errors: NOT_FOUND for a missing file; INVALID_ARGUMENT naming the file and key for bad
// content (malformed JSON, a merge naming a token not in the vocabulary, a missing special
// token, ...) and for text that is not UTF-8; UNIMPLEMENTED for components this does not
// support. Unicode properties come from ICU.
// Thread-safety: immutable after Load; Encode is safe from any number of threads.
#ifndef TWIN_CORE_TEXT_HF_TOKENIZER_H_
#define TWIN_CORE_TEXT_HF_TOKENIZER_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace twin {
namespace text_internal {
struct TokenizerPipeline;
}  // namespace text_internal

struct HfEncoding {
  std::vector<int64_t> ids;
  std::vector<int64_t> attention_mask;  // 1 on tokens, 0 on padding
};

struct HfEncodeOptions {
  // The most ids per text, special tokens included; the text's tokens are cut at the end to
  // fit. 0: no limit. (The model's max_position_embeddings, less any offset, is the caller's.)
  int max_length = 0;
  bool add_special_tokens = true;  // the post-processor's [CLS] ... [SEP] / <s> ... </s>
  bool pad_to_longest = false;     // EncodeBatch: pad every row to the longest with pad_id()
};

class HfTokenizer {
 public:
  static absl::StatusOr<std::unique_ptr<HfTokenizer>> Load(const std::string& dir);
  // A tokenizer.json's content; `what` names it in errors.
  static absl::StatusOr<std::unique_ptr<HfTokenizer>> FromTokenizerJson(absl::string_view json,
                                                                        absl::string_view what);
  ~HfTokenizer();

  absl::StatusOr<HfEncoding> Encode(absl::string_view text,
                                    const HfEncodeOptions& options = {}) const;
  absl::StatusOr<std::vector<HfEncoding>> EncodeBatch(const std::vector<std::string>& texts,
                                                      const HfEncodeOptions& options = {}) const;

  // The padding token's id, when the tokenizer has one.
  std::optional<int64_t> pad_id() const;
  std::optional<int64_t> TokenToId(absl::string_view token) const;
  // One more than the largest id (vocabulary and added tokens).
  int64_t vocab_size() const;
  // How many ids add_special_tokens adds to a text.
  int num_special_tokens() const;

 private:
  explicit HfTokenizer(std::unique_ptr<const text_internal::TokenizerPipeline> pipeline);
  std::unique_ptr<const text_internal::TokenizerPipeline> pipeline_;
};

}  // namespace twin

#endif  // TWIN_CORE_TEXT_HF_TOKENIZER_H_
