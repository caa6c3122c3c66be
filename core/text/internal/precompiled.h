// The `Precompiled` normalizer of Hugging Face tokenizers: a SentencePiece model's normalization
// rules (nmt_nfkc, nmt_nfkc_cf, or a user's TSV rules), compiled by SentencePiece into its
// `precompiled_charsmap`, which tokenizer.json carries base64-encoded. XLM-RoBERTa, T5, ALBERT,
// mBART and their descendants use it.
//
// The charsmap is [trie size in bytes, u32 little-endian][the trie][the replacements]: the trie
// is a Darts-clone double array from UTF-8 key bytes to an offset into the replacements, each a
// UTF-8 string ended by NUL (or by the end of the data).
//
//   ASSIGN_OR_RETURN(auto charsmap, PrecompiledCharsmap::Parse(bytes, "tokenizer.json: ..."));
//   std::u32string normalized = charsmap->Normalize(text);
//
// Thread-safety: immutable once parsed; safe to share.
#ifndef TWIN_CORE_TEXT_INTERNAL_PRECOMPILED_H_
#define TWIN_CORE_TEXT_INTERNAL_PRECOMPILED_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace twin {
namespace text_internal {

class PrecompiledCharsmap {
 public:
  // A charsmap larger than this is refused (SentencePiece's nmt_nfkc is about 240 KB).
  static constexpr size_t kMaxBytes = size_t{16} << 20;

  // Parses and checks `blob`: the header and sizes, the replacements valid UTF-8, and every key
  // reachable in the trie (each step inside the array) leading to an offset inside the
  // replacements at the start of a character. INVALID_ARGUMENT naming `what` otherwise, so that
  // no lookup can leave the data.
  static absl::StatusOr<std::shared_ptr<const PrecompiledCharsmap>> Parse(absl::string_view blob,
                                                                         absl::string_view what);

  // Hugging Face's rule: the text's extended grapheme clusters in turn; a cluster shorter than
  // 6 UTF-8 bytes that some key is a prefix of becomes the replacement of the shortest such
  // key, whole; any other cluster goes character by character, each replaced when it is a key
  // and kept otherwise. (SentencePiece itself replaces the longest key at each position; the two
  // differ for a few clusters, such as "\r\n" or a ligature with a combining mark.)
  std::u32string Normalize(std::u32string_view text) const;

  // The replacement of the shortest key that is a prefix of `bytes`, if any.
  std::optional<absl::string_view> ShortestMatch(absl::string_view bytes) const;
  // The length and replacement of the longest key that is a prefix of `bytes`, if any.
  std::optional<std::pair<size_t, absl::string_view>> LongestMatch(absl::string_view bytes) const;

  // How many keys the trie holds.
  size_t num_keys() const { return num_keys_; }

 private:
  PrecompiledCharsmap() = default;
  absl::string_view ReplacementAt(uint32_t offset) const;

  std::vector<uint32_t> units_;
  std::string replacements_;
  size_t num_keys_ = 0;
};

}  // namespace text_internal
}  // namespace twin

#endif  // TWIN_CORE_TEXT_INTERNAL_PRECOMPILED_H_
