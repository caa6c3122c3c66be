// BERT's tokenizer pieces, with the semantics of Hugging Face's BertNormalizer,
// BertPreTokenizer and WordPiece model.
//
// BertNormalize: drops NUL, U+FFFD and control characters (C* but \t \n \r), turns whitespace
// into ' ', puts spaces around CJK ideographs, strips accents (NFD, then no Mn marks) and lower
// cases, each as the options say. BertPreTokenize: splits on whitespace and isolates each
// punctuation character (ASCII 33-47, 58-64, 91-96, 123-126 and Unicode P*). WordPiece: greedy
// longest-match-first over code points, "##" before every piece but the first; a word that
// cannot be covered, or is longer than max_input_chars_per_word code points, is one unk.
//
//   ASSIGN_OR_RETURN(TokenVocab vocab, LoadVocabTxt(dir + "/vocab.txt"));
//   ASSIGN_OR_RETURN(auto wp, WordPiece::Create(std::move(vocab), {}, "vocab.txt"));
//   std::vector<int64_t> ids;
//   for (const auto& word : BertPreTokenize(BertNormalize(text, {}))) wp->Tokenize(word, &ids);
//
// Thread-safety: the functions are pure; WordPiece is immutable after Create, safe to share.
#ifndef TWIN_CORE_TEXT_WORDPIECE_H_
#define TWIN_CORE_TEXT_WORDPIECE_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "core/text/token_vocab.h"

namespace twin {

struct BertNormalizerOptions {
  bool clean_text = true;            // drop controls, whitespace -> ' '
  bool handle_chinese_chars = true;  // spaces around CJK ideographs
  // Unset: strip exactly when lowercasing (Hugging Face's null).
  std::optional<bool> strip_accents;
  bool lowercase = true;
};

std::u32string BertNormalize(std::u32string_view text, const BertNormalizerOptions& options);

// Whitespace-separated words, each punctuation character its own piece.
std::vector<std::u32string> BertPreTokenize(std::u32string_view text);

struct WordPieceOptions {
  std::string unk_token = "[UNK]";
  std::string continuing_subword_prefix = "##";
  int max_input_chars_per_word = 100;
};

class WordPiece {
 public:
  // INVALID_ARGUMENT naming `what` when the unk token is not in the vocabulary or the options
  // are out of range.
  static absl::StatusOr<std::unique_ptr<WordPiece>> Create(TokenVocab vocab,
                                                           WordPieceOptions options,
                                                           absl::string_view what);

  // Appends the ids of one pre-tokenized word (nothing for an empty word).
  void Tokenize(std::u32string_view word, std::vector<int64_t>* ids) const;

  const TokenVocab& vocab() const { return vocab_; }
  int64_t unk_id() const { return unk_id_; }

 private:
  WordPiece(TokenVocab vocab, WordPieceOptions options, int64_t unk_id, size_t max_token_bytes)
      : vocab_(std::move(vocab)),
        options_(std::move(options)),
        unk_id_(unk_id),
        max_token_bytes_(max_token_bytes) {}

  TokenVocab vocab_;
  WordPieceOptions options_;
  int64_t unk_id_;
  size_t max_token_bytes_;  // the longest vocabulary entry, so no longer piece is looked up
};

}  // namespace twin

#endif  // TWIN_CORE_TEXT_WORDPIECE_H_
