// Byte-level BPE (GPT-2, RoBERTa), with the semantics of Hugging Face's ByteLevel
// pre-tokenizer and BPE model.
//
// Gpt2Split cuts text as GPT-2's pattern
//   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
// does (\s: White_Space); ByteLevelPreTokenize then spells each piece's UTF-8 bytes with
// GPT-2's printable byte alphabet (bytes_to_unicode). Bpe merges adjacent symbols by merge
// rank, lowest first and leftmost among equals, and remembers recent words.
//
//   ASSIGN_OR_RETURN(TokenVocab vocab, LoadVocabJson(dir + "/vocab.json"));
//   ASSIGN_OR_RETURN(auto merges, LoadMergesTxt(dir + "/merges.txt"));
//   ASSIGN_OR_RETURN(auto bpe, Bpe::Create(std::move(vocab), merges, {}, "merges.txt"));
//   std::vector<int64_t> ids;
//   for (const auto& piece : ByteLevelPreTokenize(text, {})) bpe->Tokenize(piece, &ids);
//
// Thread-safety: the functions are pure; Bpe is safe to share (its cache has its own lock).
#ifndef TWIN_CORE_TEXT_BPE_H_
#define TWIN_CORE_TEXT_BPE_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "core/text/token_vocab.h"

namespace twin {

// The pieces of GPT-2's pre-tokenization pattern, in order; they cover the text.
std::vector<std::u32string> Gpt2Split(std::u32string_view text);

// GPT-2's bytes_to_unicode: the code point that spells each byte.
char32_t ByteToUnicode(uint8_t byte);
// The UTF-8 bytes of `piece`, each spelled with ByteToUnicode, as UTF-8.
std::string ByteLevelEncode(std::u32string_view piece);

struct ByteLevelOptions {
  bool add_prefix_space = false;  // a ' ' before text that does not start with one
  bool use_regex = true;          // false: the whole text is one piece
};
std::vector<std::string> ByteLevelPreTokenize(std::u32string_view text,
                                              const ByteLevelOptions& options);

using BpeMerge = std::pair<std::string, std::string>;

// merges.txt: "left right" per line; a first line starting "#version" and empty lines are
// skipped. INVALID_ARGUMENT names the file and line of a line without exactly two tokens.
absl::StatusOr<std::vector<BpeMerge>> LoadMergesTxt(const std::string& path);

struct BpeOptions {
  // Symbols missing from the vocabulary become this token; unset: they are dropped.
  std::optional<std::string> unk_token;
  bool ignore_merges = false;  // a word that is itself in the vocabulary is one token
  // A character missing from the vocabulary becomes the tokens <0xNN> of its UTF-8 bytes
  // when they all exist (Llama, Mistral), else the unk token.
  bool byte_fallback = false;
  bool fuse_unk = false;  // consecutive unknown characters become one unk token
};

class Bpe {
 public:
  // INVALID_ARGUMENT naming `what` and the merge when a merge names a token (or makes one)
  // that is not in the vocabulary, or when the unk token is not in it.
  static absl::StatusOr<std::unique_ptr<Bpe>> Create(TokenVocab vocab,
                                                     const std::vector<BpeMerge>& merges,
                                                     BpeOptions options, absl::string_view what);

  // Appends the ids of one pre-tokenized word (UTF-8; each code point starts as one symbol).
  void Tokenize(absl::string_view word, std::vector<int64_t>* ids) const;

  const TokenVocab& vocab() const { return vocab_; }

 private:
  struct Merge {
    int64_t rank;
    int64_t merged_id;
  };
  using PairMap = absl::flat_hash_map<std::pair<int64_t, int64_t>, Merge>;

  Bpe(TokenVocab vocab, PairMap merges, BpeOptions options, std::optional<int64_t> unk_id)
      : vocab_(std::move(vocab)),
        merges_(std::move(merges)),
        options_(std::move(options)),
        unk_id_(unk_id) {}
  std::vector<int64_t> MergeWord(absl::string_view word) const;

  TokenVocab vocab_;
  PairMap merges_;
  BpeOptions options_;
  std::optional<int64_t> unk_id_;
  mutable absl::Mutex cache_mu_;
  mutable absl::flat_hash_map<std::string, std::vector<int64_t>> cache_
      ABSL_GUARDED_BY(cache_mu_);
};

}  // namespace twin

#endif  // TWIN_CORE_TEXT_BPE_H_
