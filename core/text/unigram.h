// The Unigram model (SentencePiece's, as Hugging Face's `tokenizers` runs it): the
// segmentation of a piece of text into vocabulary pieces with the highest total score (Viterbi
// over code points). A position no one-character piece covers becomes the unknown token, scored
// the lowest piece score less 10; consecutive unknown characters are one unknown token, or with
// byte_fallback the <0xNN> tokens of their UTF-8 bytes when those all exist. Among equal scores
// the segmentation whose last piece starts first wins, as in Rust. A model without an unk_id
// (tokenizer.json's null) fails on such a position, as Rust does.
//
//   ASSIGN_OR_RETURN(auto unigram, Unigram::Create({{"<unk>", 0}, {"▁a", -1.5}, ...},
//                                                  /*unk_id=*/0, /*byte_fallback=*/true, what));
//   std::vector<int64_t> ids;
//   RETURN_IF_ERROR(unigram->Tokenize("▁abc", &ids));
//
// Thread-safety: immutable after Create; Tokenize is safe from any number of threads.
#ifndef TWIN_CORE_TEXT_UNIGRAM_H_
#define TWIN_CORE_TEXT_UNIGRAM_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "core/text/token_vocab.h"

namespace twin {

class Unigram {
 public:
  // `pieces` by id, with their scores. INVALID_ARGUMENT naming `what` when a piece is empty or
  // repeated, or unk_id is not a piece; std::nullopt: no unknown token.
  static absl::StatusOr<std::unique_ptr<Unigram>> Create(
      std::vector<std::pair<std::string, double>> pieces, std::optional<int64_t> unk_id,
      bool byte_fallback, absl::string_view what);

  // Appends the ids of `text` (UTF-8). INVALID_ARGUMENT naming the character when a position no
  // one-character piece covers meets a model without an unk_id.
  absl::Status Tokenize(absl::string_view text, std::vector<int64_t>* ids) const;
  const TokenVocab& vocab() const { return vocab_; }

 private:
  Unigram() = default;
  TokenVocab vocab_;
  std::vector<double> scores_;
  int64_t unk_id_ = -1;  // -1: none
  double unk_score_ = 0;
  bool byte_fallback_ = false;
  size_t max_piece_chars_ = 0;
  std::vector<int64_t> byte_ids_;  // byte -> id of <0xNN>, -1 when missing
};

}  // namespace twin

#endif  // TWIN_CORE_TEXT_UNIGRAM_H_
