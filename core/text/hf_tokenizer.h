// Hugging Face tokenizers loaded from a model directory, encoding text to ids the way the
// `tokenizers` library does: added/special tokens split out first, then normalizer,
// pre-tokenizer, model (WordPiece, BPE or Unigram) and post-processor.
//
// Load(dir) reads, in this order of preference:
//   tokenizer.json                 normalizer: BertNormalizer, Lowercase, NFD, NFC, NFKD,
//                                  NFKC, StripAccents, Prepend, Replace (string or " {2,}"),
//                                  Strip, Precompiled, Sequence;
//                                  pre_tokenizer: BertPreTokenizer, ByteLevel, WhitespaceSplit,
//                                  Split (GPT-2's, Qwen2's or Llama 3's regex), Metaspace,
//                                  Sequence; model: WordPiece, BPE (byte_fallback, fuse_unk),
//                                  Unigram (unk_id or null, byte_fallback);
//                                  post_processor: BertProcessing, RobertaProcessing,
//                                  TemplateProcessing, ByteLevel, Sequence; added_tokens;
//                                  decoder: ByteLevel, WordPiece, Replace, ByteFallback, Fuse,
//                                  Strip, Metaspace, Sequence;
//   tokenizer.model                SentencePiece (Llama 2, Mistral; read here, not through
//                                  libsentencepiece), as Hugging Face's LlamaTokenizerFast
//                                  converts it (tokenizer_config.json: add_bos_token, default
//                                  true; add_eos_token, default false; legacy; add_prefix_space):
//                                  "▁" prepended, BPE or Unigram with byte fallback, <s> ... ,
//                                  <0xNN> bytes decoded
//   spiece.model,                  T5's and XLM-RoBERTa's SentencePiece model, as Hugging
//   sentencepiece.bpe.model        Face's converters convert it (tokenizer_class or config.json's
//                                  model_type): the model's Precompiled rules, Metaspace,
//                                  Unigram; T5's extra_ids, XLM-RoBERTa's fairseq ids
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
// token, a truncated or corrupt tokenizer.model, ...) and for text that is not UTF-8; UNIMPLEMENTED for components this does not
// support. Unicode properties come from ICU.
// Decode turns ids back into text; HfTokenStream does it id by id.
// Thread-safety: immutable after Load; Encode and Decode are safe from any number of threads.
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
struct DecoderState;
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

  // The text of `ids` as Hugging Face's `tokenizers` decodes it: each id's token (an added
  // token's content, else the vocabulary's; ids without a token are dropped; special added
  // tokens too with skip_special_tokens), through the tokenizer.json's decoder (none: joined
  // by ' '). Byte sequences that are not UTF-8 become U+FFFD.
  std::string Decode(const std::vector<int64_t>& ids, bool skip_special_tokens = false) const;

  // The padding token's id, when the tokenizer has one.
  std::optional<int64_t> pad_id() const;
  std::optional<int64_t> TokenToId(absl::string_view token) const;
  // One more than the largest id (vocabulary and added tokens).
  int64_t vocab_size() const;
  // How many ids add_special_tokens adds to a text.
  int num_special_tokens() const;

 private:
  friend class HfTokenStream;
  explicit HfTokenizer(std::unique_ptr<const text_internal::TokenizerPipeline> pipeline);
  std::vector<std::string> TokensOf(const std::vector<int64_t>& ids, bool skip_special_tokens) const;
  std::unique_ptr<const text_internal::TokenizerPipeline> pipeline_;
};

// Decoding one id at a time, for generation: Push returns the text that no later id can
// change (a character whose bytes are split between tokens comes out whole, when its last byte
// arrives; an open run of <0xNN> byte tokens, when it ends), Finish what is left (a cut
// character as U+FFFD). The pieces of one sequence, concatenated, are Decode(ids) exactly.
// After Finish the stream starts a new sequence.
//
//   HfTokenStream stream(tokenizer.get(), /*skip_special_tokens=*/true);
//   for (int64_t id : generated) send(stream.Push(id));
//   send(stream.Finish());
//
// Thread-safety: one stream per sequence and thread; the tokenizer must outlive it.
class HfTokenStream {
 public:
  HfTokenStream(const HfTokenizer* tokenizer, bool skip_special_tokens);
  ~HfTokenStream();
  HfTokenStream(const HfTokenStream&) = delete;
  HfTokenStream& operator=(const HfTokenStream&) = delete;

  std::string Push(int64_t id);
  std::string Finish();

 private:
  const HfTokenizer* tokenizer_;
  bool skip_special_tokens_;
  std::unique_ptr<text_internal::DecoderState> state_;
};

}  // namespace twin

#endif  // TWIN_CORE_TEXT_HF_TOKENIZER_H_
