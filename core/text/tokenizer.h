// Text -> token ids for models whose manifest declares a tokenizer (TokenizerSpec).
//
// "bytes": [bos] + (byte + offset)..., truncated to max_length, padded with pad_id; the mask is
// 1 on real tokens. This is the zoo models' tokenizer.
// "hf": a Hugging Face tokenizer (core/text/hf_tokenizer.h) from the files spec.files names,
// all in one directory under `dir`; special tokens added, truncated to max_length, padded with
// the tokenizer's pad token (0 when it has none).
//
//   ASSIGN_OR_RETURN(auto tok, Tokenizer::Create(spec));
//   ASSIGN_OR_RETURN(TokenBatch b, tok->Encode({"hello", "world"}));
//
// Thread-safety: immutable; safe to share.
#ifndef TWIN_CORE_TEXT_TOKENIZER_H_
#define TWIN_CORE_TEXT_TOKENIZER_H_

#include <memory>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

#include "absl/status/statusor.h"
#include "core/store/manifest.h"

namespace twin {

class HfTokenizer;

struct TokenBatch {
  at::Tensor input_ids;       // [B, L] int64
  at::Tensor attention_mask;  // [B, L] int64
};

// Ids -> text, one id at a time (generation): Push returns the text no later id can change,
// Finish the rest; the pieces of a sequence concatenated are Tokenizer::Decode of its ids.
// Special tokens (BOS, EOS, pad) give no text.
class TextStream {
 public:
  virtual ~TextStream() = default;
  virtual std::string Push(int64_t id) = 0;
  virtual std::string Finish() = 0;
};

class Tokenizer {
 public:
  // `dir`: where the blobs named by spec.files are (the artifact set's directory); used by
  // type "hf" only.
  static absl::StatusOr<std::unique_ptr<Tokenizer>> Create(const TokenizerSpec& spec,
                                                           const std::string& dir = "");
  const TokenizerSpec& spec() const { return spec_; }
  // Pads to the longest row (at most max_length).
  absl::StatusOr<TokenBatch> Encode(const std::vector<std::string>& texts) const;
  // One text's ids, special tokens added, at most `max_length` (0: spec().max_length), no
  // padding.
  absl::StatusOr<std::vector<int64_t>> EncodeOne(const std::string& text,
                                                 int64_t max_length = 0) const;
  // Text of `ids` without special tokens ("bytes": ids that are not bytes, such as pad and
  // bos, give none).
  std::string Decode(const std::vector<int64_t>& ids) const;
  // A fresh stream decoder (same rules as Decode).
  std::unique_ptr<TextStream> NewTextStream() const;
  // The largest id this tokenizer can produce.
  int64_t largest_id() const;
  ~Tokenizer();

 private:
  explicit Tokenizer(TokenizerSpec spec);
  TokenizerSpec spec_;
  std::unique_ptr<HfTokenizer> hf_;  // type "hf"
};

// The largest id the tokenizer of `spec` can produce (bytes, pad and bos); -1 for "hf", whose
// vocabulary is in its files (Tokenizer::largest_id()).
int64_t LargestTokenId(const TokenizerSpec& spec);

// OK when every entry of the int64 tensor `ids` is in [0, vocab_size) (any non-negative id when
// vocab_size is 0, unknown); otherwise INVALID_ARGUMENT naming `what`, the first offending
// index and value, and the limit.
absl::Status CheckTokenIds(const at::Tensor& ids, int64_t vocab_size, const std::string& what);

}  // namespace twin

#endif  // TWIN_CORE_TEXT_TOKENIZER_H_
