// The parts of a Hugging Face tokenizer (TokenizerPipeline) and how they are read from a
// tokenizer.json or from the older vocab.txt / vocab.json + merges.txt directories.
//
//   ASSIGN_OR_RETURN(TokenizerPipeline p, ParseTokenizerJson(text, "dir/tokenizer.json"));
//
// Thread-safety: pure functions; a TokenizerPipeline is immutable once built.
#ifndef TWIN_CORE_TEXT_INTERNAL_HF_CONFIG_H_
#define TWIN_CORE_TEXT_INTERNAL_HF_CONFIG_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "core/text/bpe.h"
#include "core/text/internal/added_tokens.h"
#include "core/text/internal/decoder.h"
#include "core/text/internal/precompiled.h"
#include "core/text/split_pattern.h"
#include "core/text/unigram.h"
#include "core/text/wordpiece.h"

namespace twin {
namespace text_internal {

struct NormalizerStep {
  enum class Kind {
    kBert,
    kLowercase,
    kNfd,
    kNfc,
    kNfkd,
    kNfkc,
    kStripAccents,
    kPrepend,
    kReplace,
    kReplaceSpaceRuns,  // Replace with the regex " {2,}": each run of two or more spaces
    kStrip,             // whitespace (White_Space) off the left and / or right end
    kPrecompiled,
  };
  Kind kind = Kind::kBert;
  BertNormalizerOptions bert;  // kBert only
  std::u32string text;         // kPrepend: what is prepended; kReplace: the string replaced
  std::u32string content;      // kReplace, kReplaceSpaceRuns: the replacement
  bool strip_left = true;      // kStrip
  bool strip_right = true;     // kStrip
  std::shared_ptr<const PrecompiledCharsmap> charsmap;  // kPrecompiled
};

struct MetaspaceOptions {
  char32_t replacement = 0x2581;  // U+2581 LOWER ONE EIGHTH BLOCK, for ' '
  enum class Prepend { kAlways, kFirst, kNever };
  // A replacement before a piece that does not start with one; kFirst: only at the start of
  // the text (not after an added token).
  Prepend prepend = Prepend::kAlways;
  bool split = true;  // pieces start at each replacement
};

struct PreTokenizerStep {
  enum class Kind { kBert, kWhitespaceSplit, kByteLevel, kSplit, kMetaspace };
  Kind kind = Kind::kBert;
  ByteLevelOptions byte_level;  // kByteLevel only; it is always the last step
  SplitPattern split = SplitPattern::kGpt2;  // kSplit only
  MetaspaceOptions metaspace;                // kMetaspace only
};

struct TokenizerPipeline {
  std::vector<NormalizerStep> normalizers;
  std::vector<PreTokenizerStep> pre_tokenizers;
  // Exactly one model.
  std::unique_ptr<WordPiece> wordpiece;
  std::unique_ptr<Bpe> bpe;
  std::unique_ptr<Unigram> unigram;
  // Added tokens, and splitters over the raw text (normalized == false) and over the
  // normalized text (normalized == true, content normalized). The splitters point into
  // added_tokens / normalized_added_tokens, which are not changed after they are built.
  std::vector<AddedToken> added_tokens;
  std::vector<AddedToken> normalized_added_tokens;
  AddedTokenSplitter raw_splitter;
  AddedTokenSplitter normalized_splitter;
  // The post-processor's ids around a single text.
  std::vector<int64_t> prefix_ids;
  std::vector<int64_t> suffix_ids;
  std::optional<int64_t> pad_id;
  int64_t vocab_size = 0;
  DecoderChain decoder;  // tokenizer.json's "decoder"; none: tokens joined by ' '
  // By id, for decoding (set by Finish): the token (an added token's content over the
  // vocabulary's), empty for an id without one; whether it is a special added token.
  std::vector<std::string> id_to_token;
  std::vector<bool> is_special;

  const TokenVocab& vocab() const {
    return wordpiece ? wordpiece->vocab() : bpe ? bpe->vocab() : unigram->vocab();
  }
  std::u32string Normalize(std::u32string_view text) const;
  // Builds the splitters, vocab_size and the id tables once the rest is set.
  void Finish();
};

absl::StatusOr<std::unique_ptr<TokenizerPipeline>> ParseTokenizerJson(absl::string_view text,
                                                                     absl::string_view what);
// A directory with vocab.txt (BERT).
absl::StatusOr<std::unique_ptr<TokenizerPipeline>> LoadWordPieceDir(const std::string& dir);
// A directory with vocab.json and merges.txt (GPT-2 / RoBERTa).
absl::StatusOr<std::unique_ptr<TokenizerPipeline>> LoadByteLevelBpeDir(const std::string& dir);
// A directory with tokenizer.model (SentencePiece: Llama 2, Mistral) and no tokenizer.json, as
// Hugging Face's LlamaTokenizerFast converts it (sentencepiece_dir.cc).
absl::StatusOr<std::unique_ptr<TokenizerPipeline>> LoadSentencePieceDir(const std::string& dir);
// The pad token named by the directory's tokenizer_config.json / special_tokens_map.json, if
// any; INVALID_ARGUMENT naming the file when it is not a token of `pipeline`.
absl::Status ApplySpecialTokenFiles(const std::string& dir, TokenizerPipeline* pipeline);

}  // namespace text_internal
}  // namespace twin

#endif  // TWIN_CORE_TEXT_INTERNAL_HF_CONFIG_H_
