// The regular expressions of Hugging Face `Split` pre-tokenizers that this library knows,
// written by hand: the patterns use a look-ahead (`\s+(?!\S)`) that RE2 lacks, so each known
// pattern text is recognised exactly and cut by code with the same semantics (Oniguruma's
// leftmost-first alternation; \s = White_Space, \p{L} / \p{N} from ICU).
//
//   kGpt2    's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
//   kQwen2   (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}|
//            ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
//   kLlama3  the same with \p{N}{1,3} for \p{N}
//
//   if (auto pattern = FindSplitPattern(regex)) pieces = SplitWithPattern(*pattern, text);
//
// Every known pattern matches everywhere, so its matches cover the text: with the `Isolated`
// behaviour the pieces are the matches. Thread-safety: pure functions.
#ifndef TWIN_CORE_TEXT_SPLIT_PATTERN_H_
#define TWIN_CORE_TEXT_SPLIT_PATTERN_H_

#include <optional>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"

namespace twin {

enum class SplitPattern { kGpt2, kQwen2, kLlama3 };

// The known pattern whose text is exactly `regex`, if any.
std::optional<SplitPattern> FindSplitPattern(absl::string_view regex);

// The matches of `pattern` in `text`, in order; they cover the text.
std::vector<std::u32string> SplitWithPattern(SplitPattern pattern, std::u32string_view text);

}  // namespace twin

#endif  // TWIN_CORE_TEXT_SPLIT_PATTERN_H_
